"""Sparse (lexical) head: public ops in api.py, SparseBatch in batch.py, torch oracle in reference.py, kernels
in cpu.py (csrc/sparse/sparse_cpu.cpp), triton.py and cuda.py (csrc/sparse/sparse_cuda.cu)."""

from m3kernels import _backend
from m3kernels.sparse.api import BGE_M3_SPECIAL_IDS, lexical_scores, lexical_weights
from m3kernels.sparse.batch import SparseBatch

for _op in ("lexical_weights", "lexical_scores"):
    _backend.register(_op, "reference", _backend.always)
    _backend.register(_op, "cpu", _backend.cpu_kernels_unavailable, "m3kernels.sparse.cpu")
    _backend.register(_op, "triton", _backend.triton_unavailable, "m3kernels.sparse.triton")
    _backend.register(_op, "cuda", _backend.cuda_kernels_unavailable, "m3kernels.sparse.cuda")

__all__ = ["BGE_M3_SPECIAL_IDS", "SparseBatch", "lexical_scores", "lexical_weights"]
