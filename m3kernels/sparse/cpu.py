"""The sparse head on the C++ CPU kernels (csrc/sparse/sparse_cpu.cpp)."""

from __future__ import annotations

from m3kernels import _native
from m3kernels.sparse.ops import define_backend, new_pool_outputs, new_scores, scores_args


def pool(hidden, ids, off, lens, weight, bias, skip, max_len=0, id_bound=0):
    """The pool of ops.py on the CPU kernel, which needs no bounds (max_len and id_bound are unused)."""
    hidden, ids, weight, skip = (
        hidden.contiguous(),
        ids.contiguous(),
        weight.float().contiguous(),
        skip.contiguous(),
    )
    b = off.shape[0]
    out_ids, out_vals, out_src, counts = new_pool_outputs(hidden, b)
    _native.C.lexical_pool_cpu(
        _native.addr(hidden),
        _native.DTYPE_CODES[hidden.dtype],
        hidden.shape[1],
        _native.addr(ids),
        _native.addr(off),
        _native.addr(lens),
        b,
        _native.addr(weight),
        float(bias),
        _native.addr(skip),
        skip.numel(),
        _native.addr(out_ids),
        _native.addr(out_vals),
        _native.addr(out_src),
        _native.addr(counts),
        _native.threads(),
    )
    return out_ids, out_vals, out_src, counts


def scores(q_indptr, q_ids, q_vals, d_indptr, d_ids, d_vals, pairwise):
    out = new_scores(q_vals, q_indptr.shape[0] - 1, d_indptr.shape[0] - 1, pairwise)
    args = scores_args(q_indptr, q_ids, q_vals, d_indptr, d_ids, d_vals, pairwise, out)
    _native.C.lexical_scores_cpu(*args, _native.threads())
    return out


pool_op, pool_eager_op, scores_op = define_backend("cpu", pool, scores)
