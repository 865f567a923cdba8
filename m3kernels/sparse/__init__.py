"""Sparse (lexical) head: public ops in api.py, SparseBatch in batch.py, torch oracle in reference.py, kernels
in cpu.py (csrc/sparse/sparse_cpu.cpp), triton.py and cuda.py (csrc/sparse/sparse_cuda.cu)."""

from m3kernels import _backend
from m3kernels.sparse import cpu  # noqa: F401  (registers the "cpu" backend)
from m3kernels.sparse.api import BGE_M3_SPECIAL_IDS, lexical_scores, lexical_weights
from m3kernels.sparse.batch import SparseBatch

for _op in ("lexical_weights", "lexical_scores"):
    _backend.register(_op, "reference", _backend.always)
    _backend.register(_op, "triton", _backend.triton_unavailable)
    _backend.register(_op, "cuda", _backend.cuda_kernels_unavailable)

__all__ = ["BGE_M3_SPECIAL_IDS", "SparseBatch", "lexical_scores", "lexical_weights"]
