"""Shared test utilities: devices, backends to test, random ragged inputs, tolerances."""

from __future__ import annotations

import os

import torch

from m3kernels import _backend

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"
# fp32 / fp16 everywhere; bf16 only on a real GPU (the Triton interpreter stores bf16 as uint16).
KERNEL_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])
# Every kernel dtype, for tests over fast_backends() (which never include the Triton interpreter).
ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def backends(op: str, device: torch.device = DEVICE) -> list[str]:
    """Kernel backends (not the reference) that can run op on device here."""
    table = _backend.availability(device)[op]
    return [b for b, why in table.items() if why is None and b != "reference"]


def cu_from_lengths(lengths: list[int], device: torch.device = DEVICE) -> torch.Tensor:
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device)


def tol(dtype: torch.dtype) -> dict[str, float]:
    """Tolerance of a fp32-accumulating kernel against the float64 reference, inputs in dtype."""
    return {
        torch.float32: {"atol": 1e-4, "rtol": 1e-4},
        torch.float16: {"atol": 2e-2, "rtol": 2e-3},
        torch.bfloat16: {"atol": 1e-1, "rtol": 1e-2},
    }[dtype]


def fast_backends(op: str) -> list[str]:
    """backends(op) without the Triton interpreter (its kernels have their own tiny-shape test files)."""
    return [b for b in backends(op) if not (b == "triton" and INTERPRETER)]


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill with NaN (floats), True (bool) or a huge value (ints, capped to the dtype) so that unwritten outputs
    are noticed."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    if t.dtype == torch.bool:
        return t.fill_(True)
    return t.fill_(min(2**30, torch.iinfo(t.dtype).max))


def poison_allocations(monkeypatch) -> None:
    """Make torch.empty / empty_like return poisoned memory for the rest of the test, so a kernel that leaves
    part of its (Python-allocated) output unwritten is caught."""
    empty, empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison_(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison_(empty_like(*a, **k)))
