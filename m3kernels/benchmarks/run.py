"""`m3k bench`: run the op benchmarks on one device and write the report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from m3kernels.benchmarks import attention, encode, maxsim, report, roofline, sparse
from m3kernels.benchmarks.harness import Row, run_case

# In run order: the suites holding most of the issues' targets first, so a run cut short keeps them.
SUITES = {"maxsim": maxsim, "attention": attention, "lexical": sparse, "encode": encode}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="m3k bench", description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ops", nargs="+", choices=list(SUITES), default=list(SUITES))
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repeats (under 2 minutes on 2 cores)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    args = ap.parse_args(argv)
    try:
        device = _bench_device(args.device)
    except ValueError as e:
        ap.error(str(e))
    if args.repeats is not None and args.repeats < 1:
        ap.error(f"--repeats must be >= 1; got {args.repeats}")
    torch.manual_seed(0)
    repeats = args.repeats or (5 if args.quick else 15) * (4 if device.type == "cuda" else 1)
    started = time.perf_counter()
    ceilings = roofline.measure(device, quick=args.quick)
    print(f"ceilings on {device}: {ceilings['gflops']:.0f} GFLOP/s matmul, {ceilings['gbps']:.1f} GB/s copy")
    info = report.machine_info(device, ceilings)
    rows: list[Row] = []
    try:
        for name in sorted(args.ops, key=list(SUITES).index):
            _run_suite(name, device, args.quick, repeats, ceilings, started, rows, info, args.out)
    except KeyboardInterrupt:  # a time limit's SIGINT: keep what was measured
        print(f"\ninterrupted after {time.perf_counter() - started:.0f}s; the report holds the cases finished")
        report.write(rows, info, args.out, plots=False)
        return 130
    paths = report.write(rows, info, args.out)
    print()
    print(report.table(rows))
    print(f"\n{len(rows)} rows in {time.perf_counter() - started:.0f}s; wrote {', '.join(str(p) for p in paths)}")
    return 0


def _bench_device(name: str) -> torch.device:
    """The device to benchmark on. A CUDA device becomes the current one: the harness's events, syncs and streams
    are those of the current device, so `cuda:1` timed from device 0 would time the wrong one."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device: {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this torch has no CUDA device (torch {torch.__version__})")
        if device.index is not None:
            if device.index >= torch.cuda.device_count():
                raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
            torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: expected cpu, cuda or cuda:N")
    return device


def _run_suite(name: str, device: torch.device, quick: bool, repeats: int, ceilings: dict[str, float],
               started: float, rows: list[Row], info: dict[str, object], out: Path) -> None:
    """Appends one suite's rows to rows; the report is rewritten after every case (without plots), so that a run
    stopped later keeps them. A suite that fails adds an error row and the run goes on with the next one."""
    suite = SUITES[name]
    try:
        if hasattr(suite, "rows"):  # measured in subprocesses (end to end), not as in-process providers
            print(f"[{time.perf_counter() - started:6.1f}s] {name}", flush=True)
            rows += suite.rows(device, quick)
        else:
            for case in suite.cases(device, quick):
                print(f"[{time.perf_counter() - started:6.1f}s] {case.op}: {case.shape}", flush=True)
                rows += run_case(case, device, repeats, ceilings)
                del case  # its inputs go before the next case's are built
                report.write(rows, info, out, plots=False)
    except Exception as exc:
        print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
        rows.append(Row(name, "-", "suite", "error", note=f"{type(exc).__name__}: {exc}"[:200]))
    report.write(rows, info, out, plots=False)
