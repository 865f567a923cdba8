"""Eager autograd without the torch.library layer: the functions an op registers as its autograd, wrapped in a
torch.autograd.Function (see _backend.op_layer for when each runs)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable


def autograd_function(
    name: str, forward: Callable, setup_context: Callable, backward: Callable, *, torch_backward: bool = False
) -> Callable:
    """``apply`` of a torch.autograd.Function made of forward(*inputs) -> outputs, setup_context(ctx, inputs, output)
    and backward(ctx, *output_grads) -> one gradient (or None) per input: the pieces torch.library's
    register_autograd takes, so that an eager call records the same graph as the op without its dispatch (~90 us
    of host time per op call on an H200 machine, bench/RESULTS.md). A backward of kernels is once differentiable
    (a second backward raises, as through the op); torch_backward: the backward is torch ops, which autograd
    differentiates again."""
    function = type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward if torch_backward else once_differentiable(backward)),
    })
    return function.apply
