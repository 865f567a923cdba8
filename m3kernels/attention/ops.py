"""torch.library custom ops for the attention kernel backends.

Every kernel backend provides:
    forward(q, k, v, cu_seqlens int32 [B+1], max_seqlen, scale)
        -> (out [T, heads, D] input dtype, lse fp32 [heads, T] (or [0] for a backend defined with saves_lse=False))
    backward(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, scale) -> (dq, dk, dv) in the input dtype
``define_backend`` wraps them as ``m3k::attention_varlen_<name>`` with fake tensors and autograd, and as the same
autograd on a plain torch.autograd.Function for eager calls (m3kernels._eager).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from m3kernels import _eager


def define_backend(
    name: str,
    forward: Callable[..., tuple[Tensor, Tensor]],
    backward: Callable[..., tuple[Tensor, Tensor, Tensor]],
    *,
    saves_lse: bool = True,
):
    @torch.library.custom_op(f"m3k::attention_varlen_{name}", mutates_args=())
    def fwd(
        q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_seqlen: int, scale: float
    ) -> tuple[Tensor, Tensor]:
        return forward(q, k, v, cu_seqlens, max_seqlen, scale)

    @fwd.register_fake
    def _(q, k, v, cu_seqlens, max_seqlen, scale):
        lse_shape = (q.shape[1], q.shape[0]) if saves_lse else (0,)
        return torch.empty_like(q), q.new_empty(lse_shape, dtype=torch.float32)

    @torch.library.custom_op(f"m3k::attention_varlen_{name}_backward", mutates_args=())
    def bwd(
        dout: Tensor,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        out: Tensor,
        lse: Tensor,
        cu_seqlens: Tensor,
        max_seqlen: int,
        scale: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        return backward(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, scale)

    @bwd.register_fake
    def _(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, scale):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def setup_context(ctx, inputs, output):
        q, k, v, cu_seqlens, max_seqlen, scale = inputs
        ctx.max_seqlen, ctx.scale = max_seqlen, scale
        ctx.save_for_backward(q, k, v, output[0], output[1], cu_seqlens)

    def autograd_backward(eager: bool):
        def gradients(ctx, dout, _dlse):
            q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
            dout = dout.contiguous()
            run = backward if eager and _eager.direct_backward(dout, q, k, v) else bwd
            dq, dk, dv = run(dout, q, k, v, out, lse, cu_seqlens, ctx.max_seqlen, ctx.scale)
            return dq, dk, dv, None, None, None

        return gradients

    fwd.register_autograd(autograd_backward(eager=False), setup_context=setup_context)
    eager_op = _eager.autograd_function(f"AttentionVarlen_{name}", forward, setup_context, autograd_backward(True))
    return fwd, eager_op
