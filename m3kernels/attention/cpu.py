"""Attention on CPU tensors: torch's own SDPA (its flash CPU kernel) once per sequence, no padding.
Backward: the attention gradient formulas per sequence and head."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from m3kernels.attention.ops import define_backend


def _sdpa(q, k, v, scale):
    # [n, heads, D] -> contiguous [1, heads, n, D] (SDPA's CPU flash kernel is faster on it) and back.
    out = F.scaled_dot_product_attention(*(x.transpose(0, 1).contiguous()[None] for x in (q, k, v)), scale=scale)
    return out[0].transpose(0, 1)


def forward(q, k, v, cu_seqlens, max_seqlen, scale):
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for a, b in itertools.pairwise(bounds):
        if b > a:
            out[a:b] = _sdpa(q[a:b], k[a:b], v[a:b], scale)
    return out, q.new_empty((0,), dtype=torch.float32)


def backward(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, scale):
    """Per sequence and head: P = softmax(s q k^T), dV = P^T dO, dS = P * (dO v^T - rowsum(dO * O)),
    dQ = s dS k, dK = s dS^T q (fp32, one [n, n] block at a time)."""
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    bounds = cu_seqlens.tolist()
    for a, b in itertools.pairwise(bounds):
        for h in range(q.shape[1]):
            qs, ks, vs, os_, gs = (x[a:b, h].float() for x in (q, k, v, out, dout))
            p = torch.softmax((qs @ ks.T) * scale, dim=-1)
            ds = p * (gs @ vs.T - (gs * os_).sum(-1, keepdim=True))
            dq[a:b, h] = (ds @ ks * scale).to(q.dtype)
            dk[a:b, h] = (ds.T @ qs * scale).to(k.dtype)
            dv[a:b, h] = (p.T @ gs).to(v.dtype)
    return dq, dk, dv


op, eager_op = define_backend("cpu", forward, backward, saves_lse=False)
