"""Builds m3kernels._C with its CUDA kernels compiled for the host emulation of csrc/emu/cuda_emu.h (g++, no CUDA
toolkit, no GPU), so that the CUDA backend's tests run on a CPU machine:

    M3K_CUDA_EMU_MODULE="$(python3 tests/cuda_emu.py)" python3 -m pytest tests/test_cuda_backend.py

prints the path of the built module, cached under build/cuda_emu/<hash of the sources and flags>/.
m3kernels/_native.py loads that file instead of m3kernels._C when M3K_CUDA_EMU_MODULE names it; its CUDA backend
then takes CPU tensors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sources() -> list[Path]:
    """The sources of m3kernels._C (CMakeLists.txt's globs), CUDA kernels included."""
    return sorted([*ROOT.glob("python/*.cpp"), *ROOT.glob("csrc/*/*_cpu.cpp"), *ROOT.glob("csrc/*/*_cuda.cu")])


def _flags(asan: bool) -> list[str]:
    import pybind11

    # -fno-strict-aliasing: CUDA code reads registers and shared memory through other types, as nvcc allows.
    return [
        "-std=c++17", "-O2", "-fno-strict-aliasing", "-fPIC", "-fopenmp", "-DM3K_CUDA_EMU", "-DM3K_WITH_CUDA=1",
        "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
        f"-I{ROOT / 'csrc/emu/include'}", f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'python'}",
        f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}",
    ] + (["-fsanitize=address", "-fno-omit-frame-pointer", "-g", "-w"] if asan else [])  # -w: pybind11


def build(asan: bool = False) -> Path:
    """The emulated module's path, compiled if its sources or flags changed; asan: with AddressSanitizer, which
    then has to be preloaded (LD_PRELOAD="$(g++ -print-file-name=libasan.so)")."""
    cxx = os.environ.get("CXX", "g++")
    flags = _flags(asan)
    digest = hashlib.sha256(" ".join([cxx, *flags]).encode())
    headers = sorted([*ROOT.glob("csrc/**/*.h"), *ROOT.glob("csrc/**/*.cuh"), *ROOT.glob("python/*.h")])
    for path in [*_sources(), *headers]:
        digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    out_dir = ROOT / "build" / "cuda_emu" / digest.hexdigest()[:16]
    module = out_dir / f"_C{sysconfig.get_config_var('EXT_SUFFIX')}"
    if module.exists():
        return module
    out_dir.mkdir(parents=True, exist_ok=True)

    def compile_one(src: Path) -> Path:
        obj = out_dir / (src.name + ".o")
        lang = ["-x", "c++"] if src.suffix == ".cu" else []
        subprocess.run([cxx, *flags, *lang, "-c", str(src), "-o", str(obj)], check=True)
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, _sources()))
    tmp = module.with_suffix(".tmp")
    link = ["-fsanitize=address"] if asan else []
    subprocess.run([cxx, "-shared", "-fopenmp", *link, *map(str, objects), "-o", str(tmp)], check=True)
    tmp.rename(module)
    return module


if __name__ == "__main__":
    try:
        print(build(asan="--asan" in sys.argv[1:]))
    except subprocess.CalledProcessError as exc:
        sys.exit(f"cuda_emu: build failed: {exc}")
