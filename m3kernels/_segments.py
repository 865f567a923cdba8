"""Offsets and lengths of N equal-length items (padded inputs without a mask)."""

from __future__ import annotations

import torch
from torch import Tensor


def uniform_segments(n: int, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """int32 [n] offsets (0, length, 2 * length, ...) and int32 [n] lengths (all `length`) on device, built on the
    current stream (two launches). Not cached: a cache would hand the same tensors to other streams, inference
    mode, fake-tensor tracing and autograd alike."""
    if length > 0:
        off = torch.arange(0, n * length, length, dtype=torch.int32, device=device)
    else:
        off = torch.zeros(n, dtype=torch.int32, device=device)
    return off, torch.full((n,), length, dtype=torch.int32, device=device)
