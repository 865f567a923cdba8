"""The compiled module m3kernels._C (optional) and the helpers that hand tensors to it as raw addresses."""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
from collections.abc import Iterator

import torch


def _load_emulated(path: str):
    """The build of _C at path (tests/cuda_emu.py: CUDA kernels compiled for the host emulation of csrc/emu)."""
    loader = importlib.machinery.ExtensionFileLoader("m3kernels_cuda_emu._C", path)
    spec = importlib.util.spec_from_file_location(loader.name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


# python/bindings.h's kAbiVersion of the bindings this code calls (a build from older sources has another).
ABI_VERSION = 4

try:
    if os.environ.get("M3K_CUDA_EMU_MODULE"):
        C = _load_emulated(os.environ["M3K_CUDA_EMU_MODULE"])
    else:
        from m3kernels import _C as C

    IMPORT_ERROR: str | None = None
    if getattr(C, "abi_version", None) != ABI_VERSION:
        IMPORT_ERROR = (
            f"{C.__file__} is stale: built from other sources (binding version {getattr(C, 'abi_version', None)}, "
            f"this code needs {ABI_VERSION}); rebuild it (`pip install --no-build-isolation -e .`; the emulated CUDA "
            "build: tests/cuda_emu.py)"
        )
        C = None
except ImportError as exc:  # the package still works on the reference backend
    C = None
    IMPORT_ERROR = str(exc)

# Element type codes of csrc/common/dtype.h.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def have_cpu_kernels() -> bool:
    return C is not None


def have_cuda_kernels() -> bool:
    return C is not None and bool(C.with_cuda)


def cuda_emulated() -> bool:
    """Whether _C's CUDA kernels are the host emulation's build (M3K_CUDA_EMU_MODULE): they take CPU tensors."""
    return C is not None and bool(getattr(C, "cuda_emulated", False))


@contextlib.contextmanager
def cuda_launch(device: torch.device) -> Iterator[int]:
    """Makes device current for a launch of the CUDA kernels and yields the handle of its current stream (0 for
    the host emulation's CPU tensors)."""
    if cuda_emulated():
        yield 0
        return
    with torch.cuda.device(device):
        yield torch.cuda.current_stream(device).cuda_stream


def addr(t: torch.Tensor | None) -> int:
    """Address of a contiguous tensor's data (0 for None); the caller keeps the tensor alive."""
    if t is None:
        return 0
    assert t.is_contiguous(), "kernels take contiguous tensors"
    return t.data_ptr()


def threads() -> int:
    return torch.get_num_threads()
