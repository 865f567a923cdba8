"""Helpers shared by the op benchmarks: which of our backends run here, and peer imports with reasons."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import torch

from m3kernels import _backend


def our_backends(op: str, device: torch.device) -> list[str]:
    """Our kernel backends that run op on device (the interpreter-only Triton path is skipped on CPU)."""
    table = _backend.availability(device)[op]
    return [b for b, why in table.items() if why is None and b != "reference" and not
            (b == "triton" and device.type == "cpu")]


def import_peer(module: str) -> tuple[object | None, str | None]:
    """(module, None) or (None, reason) for an optional peer package; none with M3K_BENCH_PEERS=0 (a rerun after
    a peer broke the CUDA context: an illegal address fails every later call of the process)."""
    if os.environ.get("M3K_BENCH_PEERS") == "0":
        return None, "skipped: M3K_BENCH_PEERS=0"
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # peers may fail in many ways (ImportError, missing .so, CUDA init)
        return None, f"not importable: {type(exc).__name__}: {str(exc)[:120]} (see bench/peers_env.sh)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# The suffix of a row timing one of our backends captured once in a CUDA graph and replayed: its kernels only (no
# host work, and none of the value checks, which are off while capturing): a figure besides the eager row, not the
# one the targets are checked on.
GRAPH_SUFFIX = ", CUDA graph replay"


# The suffix of a row timing one of our backends inside trusted_inputs(): the eager call without its value checks
# (no device sync), as the BGE-M3 model and a stack that validated its inputs once call the ops. Besides the eager
# row, not the one the targets are checked on.
TRUSTED_SUFFIX = ", data checks off (trusted_inputs)"


def trusted(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn run inside m3kernels.trusted_inputs(): the op without the value checks that read the device."""
    from m3kernels import _checks

    def run() -> Any:
        with _checks.trusted_inputs():
            return fn()

    return run


def graph_replay(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn captured in a CUDA graph at the first call (after one eager call, which compiles its kernels), then
    replayed on every call: the device time of fn's kernels without its host work, which is what a serving stack
    that captures the op sees. The value checks are off while capturing (no device reads are allowed then), so the
    replay also leaves out their small kernels and read-back."""
    state: dict[str, Any] = {}

    def run() -> Any:
        if "graph" not in state:
            fn()
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                state["out"] = fn()
            state["graph"] = graph
        state["graph"].replay()
        return state["out"]

    return run
