"""Helpers shared by the Triton kernel modules: the launch device, and work-arounds for the Triton interpreter
(TRITON_INTERPRET=1), applied once by every Triton kernel module.

Triton 3.6's interpreter keeps scalars as 1-element arrays and converts loop bounds with ``int()``, which
NumPy >= 2.4 rejects ("only 0-dimensional arrays can be converted to Python scalars"), so ``range(n)`` over a
runtime scalar fails. The patch reads the single element instead. Compiled (GPU) kernels are untouched.
"""

from __future__ import annotations

import contextlib
import os

import torch


def patch_interpreter() -> None:
    if os.environ.get("TRITON_INTERPRET", "0") != "1":
        return
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "m3k_fixed", False):
        return

    def patch(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patch.m3k_fixed = True
    interpreter._patch_lang_tensor = patch


def device_context(t: torch.Tensor):
    """Makes t's GPU current while launching (Triton launches on the current device); no-op on CPU."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
