"""Eager autograd without the torch.library layer: the functions an op registers as its autograd, wrapped in a
torch.autograd.Function (see _backend.op_layer for when each runs)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from m3kernels import _backend


def autograd_function(name: str, forward: Callable, setup_context: Callable, backward: Callable) -> Callable:
    """``apply`` of a torch.autograd.Function made of forward(*inputs) -> outputs, setup_context(ctx, inputs, output)
    and backward(ctx, *output_grads) -> one gradient (or None) per input: the pieces torch.library's
    register_autograd takes, so that an eager call records the same graph as the op without its dispatch (~90 us
    of host time per op call on an H200 machine, bench/RESULTS.md). A backward that runs kernels picks them with
    direct_backward."""
    function = type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
    })
    return function.apply


def direct_backward(*tensors: torch.Tensor) -> bool:
    """Whether a backward on these tensors (the incoming gradient and the saved inputs) may call the backend's
    backward function directly rather than its torch.library backward op: not when the backward is itself recorded
    (create_graph: the op then raises that it has no double backward, as it always did), traced (compiled autograd)
    or batched (the gradients of jacobian(vectorize=True) or is_grads_batched have no storage), which the op
    handles."""
    return _backend.op_layer(*tensors) == "direct" and all(torch._C._has_storage(t) for t in tensors)
