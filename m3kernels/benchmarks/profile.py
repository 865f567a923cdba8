"""Where one call of each m3k op spends its time: host (Python, checks, launches) vs device.

    python -m m3kernels.benchmarks.profile [--ops maxsim,attention_varlen,...] [--rows 12] [--out FILE]
    (or bench/profile_ops.py)

For every m3k provider of the `m3k bench --quick` cases it prints: the event-timed median of one call (as the
benchmark measures it), the same with the data checks skipped (``trusted_inputs()``), the host time of one call
(perf_counter, no sync after it), the device time of its kernels, and torch.profiler's top rows by self CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from m3kernels.benchmarks import attention, maxsim, sparse
from m3kernels.benchmarks.common import GRAPH_SUFFIX, TRUSTED_SUFFIX, trusted
from m3kernels.benchmarks.harness import _time_once


def _median_ms(fn, device: torch.device, n: int = 10) -> float:
    return statistics.median(_time_once(fn, device) for _ in range(n))


def _host_ms(fn, device: torch.device, n: int = 10) -> float:
    times = []
    for _ in range(n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def profile(fn, device: torch.device, rows: int) -> tuple[float, str]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(3):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    device_us = sum(e.self_device_time_total for e in events) / 3 if device.type == "cuda" else 0.0
    return device_us / 1e3, events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)


def _mean_host_us(fn, device: torch.device, n: int = 200) -> float:
    for _ in range(10):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    elapsed = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize()
    return elapsed / n * 1e6


def launch_costs(device: torch.device) -> list[str]:
    """Host microseconds per call of the layers of one MaxSim call on a tiny problem (the kernels take a few
    microseconds, so the loop measures the host): one aten launch, one bare Triton launch, the backend function,
    its torch.library op, the public op with and without its data checks."""
    import m3kernels
    from m3kernels.maxsim import triton as kernels

    q, d = torch.randn(32, 128, device=device, dtype=torch.float16), torch.randn(64, 128, device=device,
                                                                                 dtype=torch.float16)
    cu_q = torch.tensor([0, 32], dtype=torch.int32, device=device)
    cu_d = torch.tensor([0, 30, 64], dtype=torch.int32, device=device)
    q_off, q_len, d_off, d_len = cu_q[:-1], cu_q[1:] - cu_q[:-1], cu_d[:-1], cu_d[1:] - cu_d[:-1]
    layers = {
        "aten fill_ (one launch)": lambda: q.new_empty(64).fill_(1),
        "triton segment_ids (one bare launch)": lambda: kernels.segment_ids(d_off, d_len, 64),
        "maxsim triton.forward (backend function)": lambda: kernels.forward(q, q_off, q_len, d, d_off, d_len,
                                                                            False, False),
        "maxsim triton.op (torch.library op)": lambda: kernels.op(q, q_off, q_len, d, d_off, d_len, False, False,
                                                                  False),
        "maxsim_varlen trusted (public, no data checks)": trusted(
            lambda: m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="triton")),
        "maxsim_varlen (public, default)": lambda: m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="triton"),
    }
    return [f"{name:50s} {_mean_host_us(fn, device):8.1f} us" for name, fn in layers.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", default="maxsim,attention_varlen,lexical_weights",
                   help="comma-separated op-name prefixes of the benchmark cases")
    p.add_argument("--rows", type=int, default=12, help="profiler rows per provider (0: no profile)")
    p.add_argument("--out", help="also write the report to this file")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    wanted = tuple(args.ops.split(","))
    if args.out:
        open(args.out, "w").close()

    def say(s: str = "") -> None:  # the file grows line by line: a run cut off by a time limit keeps its lines
        print(s, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(s + "\n")

    summary = []
    if device.type == "cuda":
        say("== host cost per call, tiny MaxSim problem (mean of 200 calls)")
        for line in launch_costs(device):
            say(line)
    for module, prefix in ((maxsim, "maxsim"), (attention, "attention"), (sparse, "lexical")):
        if not any(w.startswith(prefix) or prefix.startswith(w) for w in wanted):
            continue  # building a module's cases allocates its inputs
        for case in module.cases(device, quick=True):
            if not case.op.startswith(wanted):
                continue
            for prov in case.providers:
                if prov.fn is None or not prov.name.startswith("m3k:") or prov.name.endswith(GRAPH_SUFFIX) or \
                        prov.name.endswith(TRUSTED_SUFFIX):  # profiled as the "trusted" figure of the eager row
                    continue
                label = f"{case.op} | {case.shape} | {prov.name}"
                try:
                    for _ in range(3):
                        prov.fn()
                    full = _median_ms(prov.fn, device)
                    trusted_ms = _median_ms(trusted(prov.fn), device)
                    host = _host_ms(prov.fn, device)
                    dev_ms, table = profile(prov.fn, device, args.rows) if args.rows else (0.0, "")
                except Exception as exc:  # one failing provider must not cost the others their figures
                    summary.append(f"{label} | error: {type(exc).__name__}: {str(exc)[:120]}")
                    say(f"== {summary[-1]}")
                    continue
                summary.append(f"{label} | call {full:.3f} ms | trusted {trusted_ms:.3f} ms | host {host:.3f} ms | "
                               f"kernels {dev_ms:.3f} ms")
                say(f"== {summary[-1]}")
                say(table)
            del case  # its inputs go before the next case's are built
    say("== summary (call: event-timed one call; trusted: data checks skipped; host: perf_counter of the Python "
        "call; kernels: device time per call)")
    for s in summary:
        say(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
