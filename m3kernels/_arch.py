"""The compute capability the Triton kernels compile for. Some tile tables differ between Ampere / Ada (sm_8x:
`mma.sync`, 99-164 KiB of shared memory) and Hopper (sm_90: `wgmma`), where a tile's registers differ most."""

from __future__ import annotations

import functools

import torch


def compute_capability(device: torch.device) -> int | None:
    """10 * major + minor of a CUDA device (e.g. 90), None off CUDA (the interpreter). Callers look it up through
    this module, so .ci/compile_triton.py can stand in every target's architecture with one patch."""
    if device.type != "cuda":
        return None
    return _capability(torch.cuda.current_device() if device.index is None else device.index)


@functools.cache
def _capability(index: int) -> int:  # read once per device: the lookup sits on every call's host path
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def is_sm8x(device: torch.device) -> bool:
    """Ampere or Ada (sm_80 .. sm_89)."""
    arch = compute_capability(device)
    return arch is not None and 80 <= arch < 90
