"""Varlen bidirectional attention in plain torch: the oracle the kernels are tested against."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor


def attention_varlen(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    scale: float,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """q, k, v [T, heads, D]; per sequence softmax(q k^T * scale) v, no mask inside a sequence.
    Computed in compute_dtype (default: the input dtype); returns that dtype."""
    dtype = compute_dtype or q.dtype
    out = []
    bounds = cu_seqlens.tolist()
    for a, b in itertools.pairwise(bounds):
        qs, ks, vs = (x[a:b].to(dtype).transpose(0, 1) for x in (q, k, v))  # [heads, n, D]
        p = torch.softmax((qs @ ks.transpose(1, 2)) * scale, dim=-1)
        out.append((p @ vs).transpose(0, 1))
    return torch.cat(out) if out else q.new_zeros(q.shape, dtype=dtype)
