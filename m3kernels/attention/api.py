"""Public varlen attention op (FlashAttention's varlen convention, bidirectional)."""

from __future__ import annotations

import math

from torch import Tensor

from m3kernels import _backend, _checks
from m3kernels.attention import reference


def attention_varlen(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    max_seqlen: int,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """Bidirectional (non-causal) attention within each packed sequence.

    Args:
        q, k, v: [total_tokens, heads, head_dim], one dtype (float16 / bfloat16 / float32; float64 on the
            reference backend) and device.
        cu_seqlens: int32 (or int64) [B+1] offsets (0, ..., total_tokens), non-decreasing.
        max_seqlen: int >= the longest sequence (used to size the kernel grid).
        scale: softmax scale, default 1 / sqrt(head_dim).

    Returns:
        [total_tokens, heads, head_dim] in the input dtype: for tokens i of sequence s,
        ``out_i = sum_{j in s} softmax_j(q_i . k_j * scale) v_j``. Differentiable in q, k and v.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _checks.tensor(name, t, ndim=3, dtypes=_checks.FLOAT_DTYPES)
    _checks.same_dtype("q", q, "k", k)
    _checks.same_dtype("q", q, "v", v)
    device = _checks.same_device(q=q, k=k, v=v)
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k and v must have one shape [total, heads, head_dim]; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[1] == 0 or q.shape[2] == 0:
        raise ValueError(f"q must have heads >= 1 and head_dim >= 1; got shape {tuple(q.shape)}")
    cu = _checks.cu_seqlens("cu_seqlens", cu_seqlens, q.shape[0])
    _checks.same_device(q=q, cu_seqlens=cu)
    max_seqlen = _checks.int_arg("max_seqlen", max_seqlen)
    scale = 1.0 / math.sqrt(q.shape[2]) if scale is None else float(scale)
    name = _backend.resolve("attention_varlen", backend, device, q.dtype)
    _checks.kernel_dtype(name, "q", q)
    checks = _checks.data_checks_enabled()
    # The Triton kernels clamp the offsets they read, and with fewer than 2^31 elements per tensor every
    # in-sequence offset fits their int32 arithmetic whatever max_seqlen says: they may run first and the values
    # be read after the launch (one sync, overlapping the kernel). The other backends (host code on CPU tensors,
    # the reference) and larger inputs get them read before.
    deferred = checks and name == "triton" and q.numel() < _DEFER_BELOW_ELEMENTS
    if checks and not deferred:
        _check_values(cu_seqlens, q, k, v, max_seqlen)
    if name == "reference":
        out = reference.attention_varlen(q, k, v, cu, scale)
    else:
        module = _backend.kernel_module("attention_varlen", name)
        run = {"direct": module.forward, "autograd": module.eager_op, "op": module.op}[_backend.op_layer(q, k, v)]
        out, _lse = run(q.contiguous(), k.contiguous(), v.contiguous(), cu, max_seqlen, scale)
    if deferred:
        _check_values(cu_seqlens, q, k, v, max_seqlen)
    return out


_DEFER_BELOW_ELEMENTS = 2**31


def _check_values(cu_seqlens: Tensor, q: Tensor, k: Tensor, v: Tensor, max_seqlen: int) -> None:
    """The value checks, with one read-back: cu_seqlens, max_seqlen against the longest sequence, and NaN in the
    inputs (softmax kernels need not propagate NaN: a one-key row can come out finite)."""
    host_cu, *sums = _checks.read_back(cu_seqlens, *(_checks.float_sum(t) for t in (q, k, v)))
    lengths = _checks.cu_seqlens_values("cu_seqlens", host_cu, q.shape[0])
    longest = int(lengths.max())  # cu_seqlens has >= 2 entries
    if longest > max_seqlen:
        raise ValueError(f"max_seqlen ({max_seqlen}) is below the longest sequence in cu_seqlens ({longest})")
    _checks.raise_if_nan(sum(float(s) for s in sums), q=q, k=k, v=v)  # Python floats: an overflow is inf, silently
