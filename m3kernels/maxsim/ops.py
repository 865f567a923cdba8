"""torch.library custom ops for the MaxSim kernel backends (CPU, Triton, CUDA), with fakes and autograd.

Every kernel backend provides two plain functions over packed tokens:
    forward(q, q_off, q_len, d, d_off, d_len, pairwise, need_argmax) -> (scores fp32, argmax int32)
    backward(grad, q, q_off, q_len, d, d_off, d_len, argmax, pairwise, deterministic)
        -> (dq fp32 [Tq, H], dd fp32 [Td, H])
with the layout of csrc/maxsim/maxsim.h. ``define_backend`` wraps them as ``m3k::maxsim_<name>`` so that
torch.compile(fullgraph=True) traces through and autograd uses the saved argmax, and as the same autograd on a
plain torch.autograd.Function for eager calls (m3kernels._eager). ``deterministic=True`` asks the backward for
bitwise-reproducible gradients (no floating-point atomics).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from m3kernels import _eager

ForwardFn = Callable[..., tuple[Tensor, Tensor]]
BackwardFn = Callable[
    [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, bool, bool], tuple[Tensor, Tensor]
]


def new_outputs(q: Tensor, nq: int, nd: int, pairwise: bool, need_argmax: bool) -> tuple[Tensor, Tensor]:
    """Uninitialised outputs on q's device: scores fp32 [nq, nd] (or [n] pairwise) and argmax int32 [Tq, nd]
    (or [Tq] pairwise, or [0] without argmax)."""
    scores = torch.empty((nq,) if pairwise else (nq, nd), dtype=torch.float32, device=q.device)
    arg_shape = ((q.shape[0],) if pairwise else (q.shape[0], nd)) if need_argmax else (0,)
    return scores, torch.empty(arg_shape, dtype=torch.int32, device=q.device)


ROW_MAX_BUFFER = 1 << 26  # [Tq, Nd] row-max entries (256 MiB) above which inference takes the per-pair kernel


def use_row_blocks(nq: int, total_q: int, nd: int, pairwise: bool, need_argmax: bool, max_buffer: int) -> bool:
    """Whether a GPU forward scores several queries against all docs by row blocks (one program per block of
    query rows and doc, the rows' maxima summed per query by a second kernel through a [Tq, Nd] fp32 buffer)
    instead of per (query, doc) pair: all pairs of several queries, unless the buffer would exceed max_buffer
    entries without an argmax of that size being kept anyway."""
    return not pairwise and nq > 1 and (need_argmax or total_q * nd <= max_buffer)


def kernel_args(q: Tensor, q_off: Tensor, q_len: Tensor, d: Tensor, d_off: Tensor, d_len: Tensor, pairwise: bool,
                q_rows: int, d_rows: int):
    """The MaxSimProblem argument list of the compiled bindings (python/bindings.h) for contiguous tensors; q_rows
    and d_rows are the token rows the items must lie in (the CUDA kernels clamp them there), at most q's and d's."""
    from m3kernels import _native

    return (
        _native.addr(q),
        _native.DTYPE_CODES[q.dtype],
        _native.addr(d),
        _native.DTYPE_CODES[d.dtype],
        q.shape[1],
        _native.addr(q_off),
        _native.addr(q_len),
        q_off.shape[0],
        q_rows,
        _native.addr(d_off),
        _native.addr(d_len),
        d_off.shape[0],
        d_rows,
        pairwise,
    )


def define_backend(name: str, forward: ForwardFn, backward: BackwardFn):
    """Registers m3k::maxsim_<name> and m3k::maxsim_<name>_backward; returns the forward op and its eager twin
    (an autograd.Function's apply calling forward / backward directly), both taking the op's arguments."""

    @torch.library.custom_op(f"m3k::maxsim_{name}", mutates_args=())
    def fwd(
        q: Tensor,
        q_off: Tensor,
        q_len: Tensor,
        d: Tensor,
        d_off: Tensor,
        d_len: Tensor,
        pairwise: bool,
        need_argmax: bool,
        deterministic: bool,
    ) -> tuple[Tensor, Tensor]:
        return forward(q, q_off, q_len, d, d_off, d_len, pairwise, need_argmax)

    @fwd.register_fake
    def _(q, q_off, q_len, d, d_off, d_len, pairwise, need_argmax, deterministic):
        return new_outputs(q, q_off.shape[0], d_off.shape[0], pairwise, need_argmax)

    @torch.library.custom_op(f"m3k::maxsim_{name}_backward", mutates_args=())
    def bwd(
        grad: Tensor,
        q: Tensor,
        q_off: Tensor,
        q_len: Tensor,
        d: Tensor,
        d_off: Tensor,
        d_len: Tensor,
        argmax: Tensor,
        pairwise: bool,
        deterministic: bool,
    ) -> tuple[Tensor, Tensor]:
        return backward(grad, q, q_off, q_len, d, d_off, d_len, argmax, pairwise, deterministic)

    @bwd.register_fake
    def _(grad, q, q_off, q_len, d, d_off, d_len, argmax, pairwise, deterministic):
        return q.new_empty(q.shape, dtype=torch.float32), d.new_empty(d.shape, dtype=torch.float32)

    def setup_context(ctx, inputs, output):
        q, q_off, q_len, d, d_off, d_len, pairwise, need_argmax, deterministic = inputs
        ctx.pairwise, ctx.deterministic = pairwise, deterministic
        ctx.need_argmax = need_argmax
        ctx.save_for_backward(q, q_off, q_len, d, d_off, d_len, output[1])

    def autograd_backward(eager: bool):
        def gradients(ctx, grad_scores, _grad_argmax):
            q, q_off, q_len, d, d_off, d_len, argmax = ctx.saved_tensors
            if not ctx.need_argmax:
                raise RuntimeError("maxsim was called with need_argmax=False; its backward needs the argmax")
            grad = grad_scores.float().contiguous()
            run = backward if eager and _eager.direct_backward(grad, q, d) else bwd
            dq, dd = run(grad, q, q_off, q_len, d, d_off, d_len, argmax, ctx.pairwise, ctx.deterministic)
            return dq.to(q.dtype), None, None, dd.to(d.dtype), None, None, None, None, None

        return gradients

    fwd.register_autograd(autograd_backward(eager=False), setup_context=setup_context)
    eager_op = _eager.autograd_function(
        f"MaxSim_{name}", lambda *inputs: forward(*inputs[:-1]), setup_context, autograd_backward(eager=True)
    )
    return fwd, eager_op
