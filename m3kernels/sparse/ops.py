"""torch.library custom ops for the sparse-head kernel backends (CPU, Triton, CUDA).

Every kernel backend provides two plain functions:
    pool(hidden [T, H], ids int64 [T], off int32 [B], lens int32 [B], weight fp32 [H], bias fp32 [1],
         skip int64 [S], max_len, id_bound) -> (out_ids int64 [T], out_vals fp32 [T], out_src int64 [T],
         counts int64 [B])
        relu(h . w + b) max-pooled by id per text, compact per text as in csrc/sparse/sparse.h: text b's
        entries sit in slots off[b] .. off[b] + counts[b] (ids ascending); unused slots hold id -1,
        value 0, out_src -1.
        max_len > 0: no text is longer; id_bound > 0: every id is below it (0: unknown). Bounds the caller
        knows without reading the device; a backend may use them to skip a sync (the Triton pool does).
    scores(q_indptr, q_ids, q_vals, d_indptr, d_ids, d_vals, pairwise) -> fp32 [Nq, Nd] or [N]
``define_backend`` wraps them as ``m3k::lexical_pool_<name>`` / ``m3k::lexical_scores_<name>``. The backward
of the pool (to hidden, weight and bias through each entry's source token) is plain torch, shared by all
backends, and never builds a [B, L, vocab] tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from m3kernels import _eager

PoolFn = Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]]
ScoresFn = Callable[..., Tensor]


def pool_backward(
    grad_vals: Tensor, hidden: Tensor, weight: Tensor, out_src: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of out_vals = relu(h[src] . w + b) (the relu is active: kept values are > 0)."""
    valid = out_src >= 0
    g = torch.where(valid, grad_vals.float(), 0.0)
    src = out_src.clamp(min=0)
    h_src = hidden[src].float()
    d_hidden = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    d_hidden.index_add_(0, src, g[:, None] * weight.float()[None, :])
    d_weight = (g[:, None] * h_src).sum(0)
    return d_hidden, d_weight, g.sum().reshape(1)


def new_pool_outputs(hidden: Tensor, batch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pool outputs on hidden's device, every slot unused: out_ids int64 [T] (-1), out_vals fp32 [T] (0), out_src
    int64 [T] (-1) and counts int64 [B] (uninitialised)."""
    t, dev = hidden.shape[0], hidden.device
    return (torch.full((t,), -1, dtype=torch.int64, device=dev), torch.zeros(t, dtype=torch.float32, device=dev),
            torch.full((t,), -1, dtype=torch.int64, device=dev), torch.empty(batch, dtype=torch.int64, device=dev))


def new_scores(q_vals: Tensor, nq: int, nd: int, pairwise: bool) -> Tensor:
    """Uninitialised fp32 scores on q_vals' device: [nq, nd], or [n] pairwise."""
    return torch.empty((nq,) if pairwise else (nq, nd), dtype=torch.float32, device=q_vals.device)


def scores_args(q_indptr, q_ids, q_vals, d_indptr, d_ids, d_vals, pairwise: bool, out: Tensor) -> tuple:
    """The argument list of the compiled lexical-scores bindings for contiguous CSR tensors."""
    from m3kernels import _native

    a = _native.addr
    nq, nd = q_indptr.shape[0] - 1, d_indptr.shape[0] - 1
    return (a(q_indptr), a(q_ids), a(q_vals), nq, a(d_indptr), a(d_ids), a(d_vals), nd, pairwise, a(out))


def define_backend(name: str, pool: PoolFn, scores: ScoresFn):
    """Registers the two ops of a backend; returns (pool_op, its eager twin: the same autograd on a plain
    torch.autograd.Function (m3kernels._eager), scores_op). The scores have no autograd."""

    @torch.library.custom_op(f"m3k::lexical_pool_{name}", mutates_args=())
    def pool_op(
        hidden: Tensor, ids: Tensor, off: Tensor, lens: Tensor, weight: Tensor, bias: Tensor, skip: Tensor,
        max_len: int, id_bound: int,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return pool(hidden, ids, off, lens, weight, bias, skip, max_len, id_bound)

    @pool_op.register_fake
    def _(hidden, ids, off, lens, weight, bias, skip, max_len, id_bound):
        t = hidden.shape[0]
        return (
            ids.new_empty(t),
            hidden.new_empty(t, dtype=torch.float32),
            ids.new_empty(t),
            ids.new_empty(off.shape[0]),
        )

    def setup_context(ctx, inputs, output):
        hidden, _ids, _off, _lens, weight, _bias, _skip, _max_len, _id_bound = inputs
        ctx.save_for_backward(hidden, weight, output[2])

    def backward(ctx, _g_ids, g_vals, _g_src, _g_counts):
        hidden, weight, out_src = ctx.saved_tensors
        d_hidden, d_weight, d_bias = pool_backward(g_vals, hidden, weight, out_src)
        return d_hidden.to(hidden.dtype), None, None, None, d_weight.to(weight.dtype), d_bias, None, None, None

    pool_op.register_autograd(backward, setup_context=setup_context)
    pool_eager = _eager.autograd_function(f"LexicalPool_{name}", pool, setup_context, backward)  # torch ops only

    @torch.library.custom_op(f"m3k::lexical_scores_{name}", mutates_args=())
    def scores_op(
        q_indptr: Tensor,
        q_ids: Tensor,
        q_vals: Tensor,
        d_indptr: Tensor,
        d_ids: Tensor,
        d_vals: Tensor,
        pairwise: bool,
    ) -> Tensor:
        return scores(q_indptr, q_ids, q_vals, d_indptr, d_ids, d_vals, pairwise)

    @scores_op.register_fake
    def _(q_indptr, q_ids, q_vals, d_indptr, d_ids, d_vals, pairwise):
        return new_scores(q_vals, q_indptr.shape[0] - 1, d_indptr.shape[0] - 1, pairwise)

    return pool_op, pool_eager, scores_op
