"""Offsets and lengths of N equal-length items (padded inputs without a mask), cached per shape and device, so
that a padded call launches no kernels to build them. The cached tensors are shared: read them, never write."""

from __future__ import annotations

import functools

import torch
from torch import Tensor


def uniform_segments(n: int, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """int32 [n] offsets (0, length, 2 * length, ...) and int32 [n] lengths (all `length`) on device."""
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if torch.compiler.is_compiling() or capturing:  # traced graphs and graph pools get their own tensors
        return _build(n, length, device)
    return _cached(n, length, device)


def _build(n: int, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    off = torch.arange(n, dtype=torch.int32, device=device) * length
    return off, torch.full((n,), length, dtype=torch.int32, device=device)


@functools.lru_cache(maxsize=64)
def _cached(n: int, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    return _build(n, length, device)
