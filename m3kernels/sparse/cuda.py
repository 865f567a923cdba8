"""The sparse head on the hand-written CUDA kernels (csrc/sparse/sparse_cuda.cu), launched on the current stream."""

from __future__ import annotations

import torch

from m3kernels import _native
from m3kernels.sparse.ops import define_backend, new_pool_outputs, new_scores, scores_args


def pool(hidden, ids, off, lens, weight, bias, skip, max_len=0, id_bound=0):
    """relu(hidden [T, H] . weight + bias) max-pooled by id per text b (rows off[b] .. off[b] + lens[b]) into
    (out_ids int64 [T], out_vals fp32 [T], out_src int64 [T], counts int64 [B]), compact per text (ops.py).
    This kernel needs no bounds: max_len and id_bound are unused."""
    hidden, ids, skip = hidden.contiguous(), ids.to(torch.int64).contiguous(), skip.to(torch.int64).contiguous()
    weight, bias = weight.float().contiguous(), bias.float().reshape(1).contiguous()
    off, lens = off.to(torch.int32).contiguous(), lens.to(torch.int32).contiguous()
    t, b = hidden.shape[0], off.shape[0]
    dev = hidden.device
    out_ids, out_vals, out_src, counts = new_pool_outputs(hidden, b)
    workspace = torch.empty(_native.C.lexical_pool_cuda_workspace_bytes(t), dtype=torch.uint8, device=dev)
    with _native.cuda_launch(dev) as stream:
        _native.C.lexical_pool_cuda(
            _native.addr(hidden),
            _native.DTYPE_CODES[hidden.dtype],
            hidden.shape[1],
            t,
            _native.addr(ids),
            _native.addr(off),
            _native.addr(lens),
            b,
            _native.addr(weight),
            _native.addr(bias),
            _native.addr(skip),
            skip.numel(),
            _native.addr(out_ids),
            _native.addr(out_vals),
            _native.addr(out_src),
            _native.addr(counts),
            _native.addr(workspace),
            stream,
        )
    return out_ids, out_vals, out_src, counts


def scores(q_indptr, q_ids, q_vals, d_indptr, d_ids, d_vals, pairwise):
    """sum over shared ids of wq * wd for CSR rows: fp32 [Nq, Nd] (or [N] pairwise)."""
    q_indptr, q_ids, d_indptr, d_ids = (x.to(torch.int64).contiguous() for x in (q_indptr, q_ids, d_indptr, d_ids))
    q_vals, d_vals = q_vals.float().contiguous(), d_vals.float().contiguous()
    out = new_scores(q_vals, q_indptr.shape[0] - 1, d_indptr.shape[0] - 1, pairwise)
    args = scores_args(q_indptr, q_ids, q_vals, d_indptr, d_ids, d_vals, pairwise, out)
    with _native.cuda_launch(q_vals.device) as stream:
        _native.C.lexical_scores_cuda(*args, stream)
    return out


pool_op, pool_eager_op, scores_op = define_backend("cuda", pool, scores)
