"""Interleaved timing, peak extra memory and correctness checks shared by the op benchmarks."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Provider:
    """One contender: ``fn()`` runs the op on prepared inputs; ``unavailable`` says why it cannot run. ``floor``: not
    the op but a bound on it (e.g. a plain read of the same bytes), timed beside it and not checked; the text says
    what it measures and goes to the row's note. ``unpack``: turns fn's output into the case's format for the
    check, untimed (a padded formulation's output, say). ``tolerance``: this provider's own bound on the check
    (a baseline computing in a narrower dtype than the case's kernels), else the case's."""

    name: str
    fn: Callable[[], Any] | None
    unavailable: str | None = None
    is_reference: bool = False
    floor: str | None = None
    unpack: Callable[[Any], Any] | None = None
    tolerance: float | None = None


@dataclass
class Case:
    """One benchmark shape with its providers. ``check(output) -> max error`` compares to the reference;
    ``tolerance`` bounds it. ``flops`` / ``bytes`` (minimum bytes moved) feed the roofline column."""

    op: str
    shape: str
    providers: list[Provider]
    check: Callable[[Any], float]
    tolerance: float
    flops: float = 0.0
    bytes: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    device_time: bool = False  # GPU: time the kernels, not the host's launch path (see _time_once)


@dataclass
class Row:
    op: str
    shape: str
    provider: str
    status: str  # "ok", "wrong", "unavailable", "error"
    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    speedup_vs_reference: float | None = None
    peak_extra_mib: float | None = None
    achieved: float | None = None  # GFLOP/s or GB/s, whichever bounds the op
    achieved_unit: str = ""
    pct_of_ceiling: float | None = None
    max_error: float | None = None
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def _release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc), so the next allocation shows up in the resident set size."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Peak extra memory of a call: CUDA allocator peak on GPU, sampled resident set size on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _release_free_memory()
            self.base = _rss_bytes()
            self.peak = self.base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.0005)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self.peak = max(self.peak, _rss_bytes())
            self._stop.set()
            self._thread.join()

    @property
    def extra_mib(self) -> float:
        return max(self.peak - self.base, 0) / 2**20


_HEAD_START_BYTES = 256 * 2**20


def _time_once(fn: Callable[[], Any], device: torch.device, device_time: bool = False) -> float:
    """Milliseconds of one call. GPU: between CUDA events around the call, so a call's host work before its
    kernels counts. device_time=True first queues a 256 MiB memset (as triton.testing.do_bench does to flush
    L2), which keeps the GPU busy while the host launches: the events then time the kernels alone, the measure
    for a kernel that runs shorter than its launch path."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if device_time:
            _head_start(device).zero_()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


@functools.lru_cache(maxsize=1)
def _head_start(device: torch.device) -> torch.Tensor:
    return torch.empty(_HEAD_START_BYTES, dtype=torch.uint8, device=device)


def run_case(case: Case, device: torch.device, repeats: int, ceilings: dict[str, float]) -> list[Row]:
    """Checks every provider against the reference, then times the good ones interleaved (round-robin)."""
    rows: dict[str, Row] = {}
    timed: list[Provider] = []
    for p in case.providers:
        row = Row(case.op, case.shape, p.name, "unavailable", note=p.unavailable or "", params=case.params)
        rows[p.name] = row
        if p.fn is None:
            continue
        try:
            with PeakMemory(device) as mem:
                out = p.fn()
            err = 0.0 if p.floor else float(case.check(p.unpack(out) if p.unpack else out))
        except Exception as exc:  # a failing peer is reported, not fatal
            row.status, row.note = "error", f"{type(exc).__name__}: {exc}"[:200]
            continue
        row.max_error, row.peak_extra_mib = err, round(mem.extra_mib, 1)
        tolerance = case.tolerance if p.tolerance is None else p.tolerance
        if not err <= tolerance:
            row.status, row.note = "wrong", f"max error {err:.3g} > {tolerance:.3g}"
            continue
        row.status, row.note = "ok", p.floor or ""
        timed.append(p)
    samples: dict[str, list[float]] = {p.name: [] for p in timed}
    for _ in range(repeats):
        for p in list(timed):
            try:
                samples[p.name].append(_time_once(p.fn, device, case.device_time))
            except Exception as exc:  # e.g. out of memory on a later call: the other providers go on
                rows[p.name].status, rows[p.name].note = "error", f"while timing: {type(exc).__name__}: {exc}"[:200]
                timed.remove(p)
    ref_ms = next((statistics.median(samples[p.name]) for p in timed if p.is_reference), None)
    for p in timed:
        s = sorted(samples[p.name])
        row = rows[p.name]
        row.median_ms = statistics.median(s)
        row.p10_ms, row.p90_ms = s[len(s) // 10], s[(9 * len(s)) // 10]
        if ref_ms:
            row.speedup_vs_reference = ref_ms / row.median_ms
        seconds = row.median_ms / 1e3
        # Report against whichever ceiling binds: the time the op needs at peak FLOP/s or at peak bandwidth.
        flop_bound = case.flops / ceilings["gflops"] >= case.bytes / ceilings["gbps"]
        if case.flops and flop_bound:
            row.achieved, row.achieved_unit = case.flops / seconds / 1e9, "GFLOP/s"
            row.pct_of_ceiling = 100 * row.achieved / ceilings["gflops"]
        elif case.bytes:
            row.achieved, row.achieved_unit = case.bytes / seconds / 1e9, "GB/s"
            row.pct_of_ceiling = 100 * row.achieved / ceilings["gbps"]
    return list(rows.values())
