"""Integrations of m3kernels' ops into other libraries (transformers is optional and imported lazily)."""

from m3kernels.integrations.hf import ATTN_IMPLEMENTATION, enable_hf, padded_varlen_attention

__all__ = ["ATTN_IMPLEMENTATION", "enable_hf", "padded_varlen_attention"]
