"""Builds m3kernels._C by driving CMake (see CMakeLists.txt).

Environment switches:
  M3K_WITH_CUDA=auto|0|1   compile the CUDA kernels into _C (auto: torch has CUDA and nvcc is on PATH)
  M3K_NATIVE=1|0           -march=native for the CPU kernels (default 1)
  M3K_CUDA_ARCHS="80;90"   CUDA architectures
  MAX_JOBS=N               parallel build jobs
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _want_cuda() -> bool:
    choice = os.environ.get("M3K_WITH_CUDA", "auto").lower()
    if choice in ("0", "off", "false"):
        return False
    if choice in ("1", "on", "true"):
        return True
    if shutil.which("nvcc") is None:
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.version.cuda is not None


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        cuda = _want_cuda()
        cfg = [
            "cmake", str(ROOT), "-G", "Ninja",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DM3K_WITH_CUDA={'ON' if cuda else 'OFF'}",
            f"-DM3K_NATIVE={'OFF' if os.environ.get('M3K_NATIVE', '1') == '0' else 'ON'}",
            f"-DM3K_CUDA_ARCHS={os.environ.get('M3K_CUDA_ARCHS', '80;90')}",
        ]
        subprocess.run(cfg, cwd=build_dir, check=True)
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_dir, check=True)


setup(ext_modules=[CMakeExtension("m3kernels._C")], cmdclass={"build_ext": CMakeBuild})
