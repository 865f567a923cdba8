"""The machine's ceilings, measured in the same run as the benchmarks: matmul throughput and copy bandwidth."""

from __future__ import annotations

import time

import torch


def _best_ms(fn, device: torch.device, repeats: int) -> float:
    """Best of repeats calls (after a warm-up call). GPU: between CUDA events around the call alone (host timing
    around a launch + sync would add its ~10-20 us and understate the ceiling, inflating every "% of ceiling")."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def measure(device: torch.device, quick: bool = False) -> dict[str, float]:
    """{"gflops": fp32 (CPU) / fp16 (GPU) square matmul GFLOP/s, "gbps": device-to-device copy GB/s
    counting bytes read + written (GPU: a 1 GiB copy, best of 10)}."""
    n = (1024 if quick else 2048) if device.type == "cpu" else 8192
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    repeats = 5 if device.type == "cpu" else 10
    mm_ms = _best_ms(lambda: a @ b, device, repeats)
    numel = (64 * 2**20 if device.type == "cpu" else 2**30) // 4
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    copy_ms = _best_ms(lambda: dst.copy_(src), device, repeats)
    return {"gflops": 2 * n**3 / (mm_ms / 1e3) / 1e9, "gbps": 2 * src.numel() * 4 / (copy_ms / 1e3) / 1e9}
