"""`m3k bench`: run the op benchmarks on one device and write the report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from m3kernels.benchmarks import attention, encode, maxsim, report, roofline, sparse
from m3kernels.benchmarks.harness import run_case

SUITES = {"maxsim": maxsim, "lexical": sparse, "attention": attention, "encode": encode}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="m3k bench", description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ops", nargs="+", choices=sorted(SUITES), default=sorted(SUITES))
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repeats (under 2 minutes on 2 cores)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    repeats = args.repeats or (5 if args.quick else 15) * (4 if device.type == "cuda" else 1)
    started = time.perf_counter()
    ceilings = roofline.measure(device, quick=args.quick)
    print(f"ceilings on {device}: {ceilings['gflops']:.0f} GFLOP/s matmul, {ceilings['gbps']:.1f} GB/s copy")
    rows = []
    for name in args.ops:
        suite = SUITES[name]
        if hasattr(suite, "rows"):  # measured in subprocesses (end to end), not as in-process providers
            print(f"[{time.perf_counter() - started:6.1f}s] {name}", flush=True)
            rows += suite.rows(device, args.quick)
            continue
        for case in suite.cases(device, args.quick):
            print(f"[{time.perf_counter() - started:6.1f}s] {case.op}: {case.shape}", flush=True)
            rows += run_case(case, device, repeats, ceilings)
    info = report.machine_info(device, ceilings)
    paths = report.write(rows, info, args.out)
    print()
    print(report.table(rows))
    print(f"\n{len(rows)} rows in {time.perf_counter() - started:.0f}s; wrote {', '.join(str(p) for p in paths)}")
    return 0
