"""Varlen attention: public op in api.py, torch oracle in reference.py, backends cpu.py (SDPA per sequence)
and triton.py (FlashAttention-2 kernels)."""

from m3kernels import _backend
from m3kernels.attention.api import attention_varlen

_backend.register("attention_varlen", "reference", _backend.always)
_backend.register("attention_varlen", "cpu", _backend.cpu_tensors_only, "m3kernels.attention.cpu")
_backend.register("attention_varlen", "triton", _backend.triton_unavailable, "m3kernels.attention.triton")

__all__ = ["attention_varlen"]
