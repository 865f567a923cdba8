"""m3kernels: fused kernels for BGE-M3 (MaxSim, sparse lexical weights, varlen attention)."""

from m3kernels import _backend
from m3kernels.attention import attention_varlen
from m3kernels.maxsim import maxsim, maxsim_varlen
from m3kernels.sparse import BGE_M3_SPECIAL_IDS, SparseBatch, lexical_scores, lexical_weights

__version__ = "0.1.0"

_backend.load_kernels()


def __getattr__(name: str):
    # The model needs `tokenizers`; import it only when asked for.
    if name in ("BGEM3", "CheckpointError"):
        from m3kernels import model

        return getattr(model, name)
    raise AttributeError(f"module 'm3kernels' has no attribute {name!r}")


__all__ = [
    "BGEM3",
    "BGE_M3_SPECIAL_IDS",
    "CheckpointError",
    "SparseBatch",
    "attention_varlen",
    "lexical_scores",
    "lexical_weights",
    "maxsim",
    "maxsim_varlen",
]
