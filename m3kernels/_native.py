"""The compiled module m3kernels._C (optional) and the helpers that hand tensors to it as raw addresses."""

from __future__ import annotations

import torch

try:
    from m3kernels import _C as C

    IMPORT_ERROR: str | None = None
except ImportError as exc:  # the package still works on the reference backend
    C = None
    IMPORT_ERROR = str(exc)

# Element type codes of csrc/common/dtype.h.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def have_cpu_kernels() -> bool:
    return C is not None


def have_cuda_kernels() -> bool:
    return C is not None and bool(C.with_cuda)


def addr(t: torch.Tensor | None) -> int:
    """Address of a contiguous tensor's data (0 for None); the caller keeps the tensor alive."""
    if t is None:
        return 0
    assert t.is_contiguous(), "kernels take contiguous tensors"
    return t.data_ptr()


def threads() -> int:
    return torch.get_num_threads()
