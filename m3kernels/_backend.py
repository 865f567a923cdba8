"""Backend registry and selection.

Each op module registers the backends it implements with a predicate saying whether that backend can run on a
given device. ``backend="auto"`` (or the ``M3K_BACKEND`` environment variable) picks the first available in
the device's preference order; an explicitly requested backend that cannot run raises ``RuntimeError``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

BACKENDS = ("reference", "cpu", "triton", "cuda")
AUTO_ORDER = {"cuda": ("triton", "cuda", "reference"), "cpu": ("cpu", "reference")}

_registry: dict[str, dict[str, Callable[[torch.device], str | None]]] = {}


def register(op: str, backend: str, why_unavailable: Callable[[torch.device], str | None]) -> None:
    """why_unavailable(device) returns None when the backend can run op there, else the reason."""
    _registry.setdefault(op, {})[backend] = why_unavailable


def triton_unavailable(device: torch.device) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    if device.type == "cuda":
        return None
    if os.environ.get("TRITON_INTERPRET", "0") == "1" and device.type == "cpu":
        return None
    return f"triton kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1), got {device}"


def always(device: torch.device) -> str | None:
    return None


def cuda_kernels_unavailable(device: torch.device) -> str | None:
    from m3kernels import _native

    if not _native.have_cuda_kernels():
        return "m3kernels._C was built without CUDA kernels (build with torch+CUDA and nvcc on PATH)"
    return None if device.type == "cuda" else f"the CUDA kernels run on CUDA tensors, got {device}"


def resolve(op: str, backend: str, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """The backend to run op on tensors of this device (float64 tensors go to the reference under auto)."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        backend = os.environ.get("M3K_BACKEND", "auto") or "auto"
    table = _registry[op]
    if backend == "auto" and dtype == torch.float64:
        return "reference"
    if backend == "auto":
        for name in AUTO_ORDER.get(device.type, ("reference",)):
            if name in table and table[name](device) is None:
                return name
        return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend not in table:
        raise RuntimeError(f"{op} has no {backend!r} backend (it has: {', '.join(table)})")
    reason = table[backend](device)
    if reason is not None:
        raise RuntimeError(f"backend {backend!r} is unavailable for {op} on {device}: {reason}")
    return backend


def availability(device: torch.device) -> dict[str, dict[str, str | None]]:
    """{op: {backend: None if available else the reason}} for a device (used by `m3k info`)."""
    return {op: {b: fn(device) for b, fn in table.items()} for op, table in _registry.items()}
