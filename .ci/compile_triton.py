"""Compile-only CI check of every Triton kernel for real GPUs (sm_80, sm_86 and sm_90), on a machine without one.

The Triton interpreter that runs the tests here never reaches Triton's compiler, so it cannot see what only a
real compile rejects: tl.dot shape/dtype rules, bf16 lowering, shared memory beyond the card's limit, layouts
that spill. This script runs each op's *host* functions (the code that picks tiles, warps and stages from the
fixed config tables) over the configurations they can choose, with a stand-in Triton driver that reports a
GPU target and turns every launch into a compile (JITFunction.run(warmup=True)): the kernels go through
Triton's full pipeline down to a cubin (its bundled ptxas), nothing is executed. Outputs of the skipped
launches stay as allocated, and allocation returns zeros here (torch.empty / empty_like are patched): the host
code only needs them in range; inputs are never touched.

Fails (exit 1) on any compile error and on a kernel whose shared memory exceeds the target's per-block limit;
writes one row per compiled kernel variant (registers, stack frame, spill stores from Triton's bundled
`ptxas -v`; shared memory from the compile) to the report file (default build/triton_kernels.txt).

Usage: python .ci/compile_triton.py [report-file] [--archs 80,86,90]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: this is a real compile

import torch
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
from triton.runtime import driver
from triton.runtime.jit import JITFunction

from m3kernels import _arch

# Largest dynamic shared memory one block may opt into (CUDA programming guide, compute capabilities table).
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}


class CompileOnlyDriver(DriverBase):
    """A Triton driver for a GPU that is not there: reports the target, owns no device or stream."""

    def __init__(self, arch: int) -> None:
        super().__init__()
        self.target = GPUTarget("cuda", arch, 32)

    @classmethod
    def is_active(cls) -> bool:
        return False

    def map_python_to_cpp_type(self, ty: str) -> str:
        raise NotImplementedError("compile-only driver")

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_benchmarker(self):
        raise NotImplementedError("compile-only driver")

    def get_current_device(self) -> int:
        return self.target.arch  # one kernel cache per architecture

    def get_current_stream(self, device=None) -> int:
        return 0


@dataclass
class Variant:
    kernel: str
    arch: int
    config: str
    warps: int
    stages: int
    shared: int
    registers: int
    stack: int
    spills: int


compiled: dict[str, Variant] = {}  # by kernel hash: one row per distinct binary
_original_run = JITFunction.run


def _compile_instead_of_launch(self, *args, grid, warmup, **kwargs):
    kernel = _original_run(self, *args, grid=grid, warmup=True, **kwargs)
    if kernel.hash not in compiled:
        dtypes = sorted({str(a.dtype).removeprefix("torch.") for a in args if isinstance(a, torch.Tensor)})
        consts = [f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in kwargs.items() if k.isupper()]
        compiled[kernel.hash] = Variant(
            self.fn.__name__,
            kernel.metadata.target.arch,
            " ".join(["/".join(dtypes), *consts]),
            kernel.metadata.num_warps,
            kernel.metadata.num_stages,
            kernel.metadata.shared,
            *_resources(kernel),
        )
    return kernel


def _resources(kernel) -> tuple[int, int, int]:
    """(registers, stack frame bytes, spill-store bytes): ptxas -v on the kernel's PTX, as Triton runs it."""
    arch = kernel.metadata.target.arch
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
        ptx.write(kernel.asm["ptx"])
        ptx.flush()
        log = subprocess.run(
            [get_ptxas(arch).path, "-v", f"--gpu-name={sm_arch_from_capability(arch)}", ptx.name, "-o", os.devnull],
            check=True,
            capture_output=True,
            text=True,
        ).stderr
    regs = re.search(r"Used (\d+) registers", log)
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores", log)
    if regs is None or frame is None:
        raise RuntimeError(f"unexpected ptxas -v output:\n{log}")
    return int(regs[1]), int(frame[1]), int(frame[2])


def _i32(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


def _segments(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = [sum(lengths[:i]) for i in range(len(lengths))]
    return _i32(offsets), _i32(lengths)


DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def sweep_maxsim() -> None:
    """Every forward config (hidden-size bucket x dtype; one query: the per-pair kernel's query-length buckets,
    several: the row-block kernel, with and without argmax; pairwise), and the backward kernels in both modes,
    all-pairs and pairwise."""
    from m3kernels.maxsim import triton as k

    d_lens = [37, 64, 1, 200]

    def args(q_lens: list[int], h: int, dtype: torch.dtype) -> tuple:
        q = torch.randn(sum(q_lens), h).to(dtype)
        d = torch.randn(sum(d_lens), h).to(dtype)
        return (q, *_segments(q_lens), d, *_segments(d_lens))

    for dtype in DTYPES:
        for h in (100, 128, 1024):
            for q_lens in ([9], [32], [64], [32, 20, 33, 31]):  # one query: BLOCK_Q buckets 16, 32, 64; row blocks
                k.forward(*args(q_lens, h, dtype), False, True)
            for pairwise, need_argmax in ((True, True), (True, False), (False, False)):
                k.forward(*args([32, 20, 33, 31], h, dtype), pairwise, need_argmax)
            k.forward(*args([32], h, dtype), False, False)  # one query, scores only: the rerank launch
            for deterministic in (False, True):
                pair_args = args([32, 20, 33, 31], h, dtype)
                k.backward(torch.randn(4), *pair_args, torch.zeros(116, dtype=torch.int32), True, deterministic)
                all_args = args([32, 20, 33, 31], h, dtype)
                k.backward(torch.randn(4, 4), *all_args, torch.zeros(116, 4, dtype=torch.int32), False, deterministic)


def sweep_sparse() -> None:
    """Token weights per dtype and hidden size (tail and power of two), pooling, and the score kernel."""
    from m3kernels.sparse import triton as k

    for dtype in DTYPES:
        for h in (100, 1024):
            hidden = torch.randn(306, h).to(dtype)
            ids = torch.randint(0, 250002, (306,))
            w, b = torch.randn(h).to(dtype), torch.randn(1).to(dtype)
            k.pool(hidden, ids, *_segments([5, 300, 1]), w, b, torch.tensor([0, 2]))
            k.pool(hidden, ids, *_segments([5, 300, 1]), w, b, torch.tensor([0, 2]), 512, 250002)  # one kernel, L=512
    for lengths in ([9], [2048, 3]):  # the per-text pool's sort blocks: 16 (smallest), 512 (above), 2048 (largest)
        hidden = torch.randn(sum(lengths), 64)
        ids = torch.randint(0, 250002, (sum(lengths),))
        for bounds in ((), (max(lengths), 250002)):  # token weights + per-text pool; one kernel
            k.pool(hidden, ids, *_segments(lengths), torch.randn(64), torch.randn(1), torch.tensor([0, 2]), *bounds)
    for pairwise in (False, True):
        csr = [(torch.tensor([0, 3, 3, 7]), torch.arange(7), torch.rand(7)) for _ in range(2)]
        k.scores(*csr[0], *csr[1], pairwise)


def sweep_attention() -> None:
    """Forward and backward per dtype and head_dim (32, 64 = BGE-M3, 80 = padded tail, 128)."""
    from m3kernels.attention import triton as k

    for dtype in DTYPES:
        for head_dim in (32, 64, 80, 128):
            q, kk, v = (torch.randn(301, 4, head_dim).to(dtype) for _ in range(3))
            out, lse = k.forward(q, kk, v, _i32([0, 7, 300, 301]), 293, head_dim**-0.5)
            q, kk, v, out = (torch.randn(301, 4, head_dim).to(dtype) for _ in range(4))
            lse = torch.randn(4, 301)
            k.backward(torch.randn_like(out), q, kk, v, out, lse, _i32([0, 7, 300, 301]), 293, head_dim**-0.5)


# Kernels every sweep must have compiled for each input dtype (a sweep that silently skips a launch, e.g. after
# an early return on empty input, must fail CI rather than shrink the check).
EXPECTED = {
    "_maxsim_fwd_kernel": DTYPES, "_maxsim_rows_fwd_kernel": DTYPES, "_segment_sum_kernel": (torch.float32,),
    "_maxsim_bwd_q_kernel": DTYPES, "_maxsim_bwd_d_kernel": DTYPES,
    "_token_weights_kernel": DTYPES, "_lexical_scores_kernel": (torch.float32,), "_pool_texts_kernel": (torch.float32,),
    "_weights_pool_kernel": DTYPES,
    "_fwd_kernel": DTYPES, "_delta_kernel": DTYPES, "_dkdv_kernel": DTYPES, "_dq_kernel": DTYPES,
}


def missing_variants(arch: int) -> list[str]:
    """(kernel, dtype) pairs of EXPECTED without a compiled variant for arch. A variant's input dtype is its one
    16-bit dtype, or float32 when it has none."""
    seen = set()
    for v in compiled.values():
        if v.arch == arch:
            names = v.config.split(" ")[0].split("/")
            half = [n for n in names if n in ("float16", "bfloat16")]
            seen.add((v.kernel, half[0] if half else "float32"))
    return [
        f"{kernel} {str(dtype).removeprefix('torch.')} sm_{arch}"
        for kernel, dtypes in EXPECTED.items()
        for dtype in dtypes
        if (kernel, str(dtype).removeprefix("torch.")) not in seen
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="?", default="build/triton_kernels.txt")
    parser.add_argument("--archs", default="80,86,90",
                        help="compute capabilities, comma-separated (86: the 99 KiB shared-memory limit of sm_86/89)")
    args = parser.parse_args()
    JITFunction.run = _compile_instead_of_launch
    empty, empty_like = torch.empty, torch.empty_like
    torch.empty = lambda *a, **k: empty(*a, **k).zero_()
    torch.empty_like = lambda *a, **k: empty_like(*a, **k).zero_()
    missing: list[str] = []
    for arch in (int(a) for a in args.archs.split(",")):
        driver.set_active(CompileOnlyDriver(arch))
        # The tile tables of the target's architecture (the host code reads it from the CUDA device, absent here).
        with mock.patch.object(_arch, "compute_capability", lambda device, arch=arch: arch):
            for sweep in (sweep_maxsim, sweep_sparse, sweep_attention):
                sweep()
        missing += missing_variants(arch)
    rows = sorted(compiled.values(), key=lambda v: (v.kernel, v.arch, v.config))
    lines = [
        f"{v.kernel} sm_{v.arch} [{v.config}] warps={v.warps} stages={v.stages}: {v.registers} registers, "
        f"{v.stack} B stack frame, {v.spills} B spill stores, {v.shared} B shared"
        for v in rows
    ]
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n")
    too_big = [
        f"{v.kernel} sm_{v.arch} [{v.config}]: {v.shared} B shared > {SHARED_LIMIT[v.arch]} B"
        for v in rows
        if v.shared > SHARED_LIMIT.get(v.arch, 48 * 1024)
    ]
    for line in too_big:
        print(f"compile_triton: {line}", file=sys.stderr)
    spilling = sum(v.spills > 0 for v in rows)
    print(
        f"compile_triton: {len(rows)} kernel variants for sm_{', sm_'.join(args.archs.split(','))}; "
        f"{spilling} that spill registers; report in {report}",
        file=sys.stderr,
    )
    for line in missing:
        print(f"compile_triton: no compiled variant of {line}", file=sys.stderr)
    return 1 if too_big or missing else 0


if __name__ == "__main__":
    sys.exit(main())
