"""Helpers shared by the op benchmarks: which of our backends run here, and peer imports with reasons."""

from __future__ import annotations

import importlib

import torch

from m3kernels import _backend


def our_backends(op: str, device: torch.device) -> list[str]:
    """Our kernel backends that run op on device (the interpreter-only Triton path is skipped on CPU)."""
    table = _backend.availability(device)[op]
    return [b for b, why in table.items() if why is None and b != "reference" and not
            (b == "triton" and device.type == "cpu")]


def import_peer(module: str) -> tuple[object | None, str | None]:
    """(module, None) or (None, reason) for an optional peer package."""
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # peers may fail in many ways (ImportError, missing .so, CUDA init)
        return None, f"not importable: {type(exc).__name__}: {str(exc)[:120]} (see bench/peers_env.sh)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
