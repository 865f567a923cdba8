"""m3kernels: fused kernels for BGE-M3 (MaxSim, sparse lexical weights, varlen attention)."""

from m3kernels import _backend
from m3kernels.attention import attention_varlen
from m3kernels.maxsim import maxsim, maxsim_varlen
from m3kernels.sparse import BGE_M3_SPECIAL_IDS, SparseBatch, lexical_scores, lexical_weights

__version__ = "0.1.0"

_backend.load_kernels()

__all__ = [
    "BGE_M3_SPECIAL_IDS",
    "SparseBatch",
    "attention_varlen",
    "lexical_scores",
    "lexical_weights",
    "maxsim",
    "maxsim_varlen",
]
