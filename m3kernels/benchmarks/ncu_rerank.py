"""The MaxSim rerank forward kernels, one launch each, for Nsight Compute to read their hardware counters (a
developer tool; a step of bench/gpu_check.sh).

The CUDA kernel's per-pair forward ran 1.44x slower than Triton's at the rerank target shape on an H200 (1.92 vs
1.34 ms, bench/RESULTS.md), and timings alone do not say why. This launches Triton's kernel and the CUDA kernel
with several of its tile shapes, per pair and as token tiles, on the rerank shape (one fp16 query of 32 tokens
against 10,000 docs of U[64,512] tokens, H=1024), each warmed up first and then once between cudaProfilerStart /
Stop, so that

    ncu --profile-from-start off --clock-control none -k regex:maxsim_fwd --section SpeedOfLight \\
        --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \\
        python -m m3kernels.benchmarks.ncu_rerank [--tiles 0,7,15,20,t0,t15]

profiles exactly those launches (clock control off: the card's clocks are left as they are). Without ncu it
prints each launch's time by CUDA events (one launch: a sanity figure, not a benchmark).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import torch


def launches(tiles: list[str], device: torch.device, small: bool = False) -> list[tuple[str, Callable[[], Any]]]:
    """(label, run) per kernel: Triton's per-pair forward, then the CUDA forward with each tile that fits here (when
    the CUDA kernels are built; "15": tile 15 per pair, "t15": as token tiles), on the rerank shape (small: 5 docs of
    U[3,20] tokens, H=160, for the interpreter)."""
    from m3kernels import _backend
    from m3kernels.benchmarks import tune
    from m3kernels.maxsim import triton as triton_kernels

    n_docs, lo, hi, hidden = (5, 3, 20, 160) if small else (10_000, 64, 512, 1024)
    lengths = torch.randint(lo, hi + 1, (n_docs,), generator=torch.Generator().manual_seed(0)).tolist()
    args = tune._maxsim_inputs([32], lengths, hidden, torch.float16, device)
    runs = [("triton", lambda: triton_kernels.forward(*args, False, False))]
    if not _backend.cuda_kernels_unavailable(device):
        cuda_kernels, _, smem_limit = tune._cuda_kernels(device)
        for spec in tiles:
            tokens, tile = spec.startswith("t"), int(spec.removeprefix("t"))
            label = f"cuda tile {tile}{' as token tiles' if tokens else ''}"
            if cuda_kernels.tile_smem(tile) > smem_limit:
                print(f"{label}: skipped, needs more shared memory than this card has", file=sys.stderr)
                continue
            setting = {"_TOKENS_TILE": tile} if tokens else {"_TOKENS_TILE": None, "_FWD_TILE": tile}

            def run(setting: dict = setting) -> Any:
                with tune.swap_attrs(cuda_kernels, tuple(setting), tuple(setting.values())):
                    return cuda_kernels.forward(*args, False, False)

            runs.append((label, run))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", default="0,7,15,20,t0,t15",
                        help="CUDA forward tiles to launch (indices into kFwdTileShapes; tN: tile N as token tiles), "
                             "comma-separated")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("ncu_rerank needs a CUDA GPU", file=sys.stderr)
        return 2
    runs = launches([t.strip() for t in args.tiles.split(",") if t.strip()], torch.device("cuda"))
    for _, run in runs:  # compile, load and warm up outside the profiled range
        run()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    for label, run in runs:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        print(f"{label}: {start.elapsed_time(end):.3f} ms (one launch)")
    torch.cuda.cudart().cudaProfilerStop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
