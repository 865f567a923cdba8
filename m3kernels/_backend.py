"""Backend registry and selection.

Each op module registers the backends it implements with a predicate saying whether that backend can run on a
given device. ``backend="auto"`` picks the first available in the device's preference order; the ``M3K_BACKEND``
environment variable replaces auto in the ops that have the backend it names. An explicitly requested backend
that cannot run raises ``RuntimeError``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import torch
from torch.utils import _python_dispatch

BACKENDS = ("reference", "cpu", "triton", "cuda")
AUTO_ORDER = {"cuda": ("triton", "cuda", "reference"), "cpu": ("cpu", "reference")}

_registry: dict[str, dict[str, Callable[[torch.device], str | None]]] = {}
_module_paths: dict[tuple[str, str], str] = {}
_modules: dict[tuple[str, str], object] = {}
_import_errors: dict[tuple[str, str], str] = {}


def register(
    op: str, backend: str, why_unavailable: Callable[[torch.device], str | None], module: str | None = None
) -> None:
    """why_unavailable(device) returns None when the backend can run op there, else the reason; module is the
    kernel module (imported by load_kernels) for the kernel backends."""
    _registry.setdefault(op, {})[backend] = why_unavailable
    if module is not None:
        _module_paths[(op, backend)] = module


def _usable_here(backend: str) -> bool:
    if backend == "triton":
        return triton_unavailable(torch.device("cuda")) is None and (
            torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1"
        )
    if backend == "cuda":
        from m3kernels import _native

        return _native.have_cuda_kernels()
    return True


def load_kernels() -> None:
    """Imports the kernel modules this process can use, once, at package import: torch.compile then finds
    them in a dict instead of tracing an import. A module that fails to import makes its backend unavailable
    with the error as the reason."""
    for key, path in _module_paths.items():
        if key in _modules or key in _import_errors or not _usable_here(key[1]):
            continue
        try:
            _modules[key] = importlib.import_module(path)
        except Exception as exc:  # reported by `m3k info` and by resolve()
            _import_errors[key] = f"{path} failed to import: {type(exc).__name__}: {exc}"


def kernel_module(op: str, backend: str):
    """The kernel module of a resolved backend."""
    if (op, backend) not in _modules:
        load_kernels()
    return _modules[(op, backend)]


def op_layer(*tensors: torch.Tensor) -> str:
    """How an op call on these inputs reaches its backend's functions:
    - "op": through its torch.library op, which torch.compile, a torch.jit trace (they record ops, not raw-pointer
      launches), a dispatch or torch function mode, a functorch transform and tensor subclasses need;
    - "autograd": otherwise, when there is an autograd graph to record (grad mode and an input requiring grad),
      through a torch.autograd.Function over the same functions (m3kernels._eager);
    - "direct": otherwise the kernel function itself.
    The op layer costs ~90 us per call on an H200 machine's host, about twice the launch it wraps (bench/RESULTS.md),
    and a backward through it as much again."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return "op"
    if _python_dispatch._get_current_dispatch_mode() is not None:
        return "op"
    if torch._C._is_torch_function_mode_enabled() or torch._C._are_functorch_transforms_active():
        return "op"
    if any(type(t) not in (torch.Tensor, torch.nn.Parameter) for t in tensors):
        return "op"
    return "autograd" if torch.is_grad_enabled() and any(t.requires_grad for t in tensors) else "direct"


def triton_unavailable(device: torch.device) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    if device.type == "cuda":
        return None
    if os.environ.get("TRITON_INTERPRET", "0") == "1" and device.type == "cpu":
        return None
    return f"triton kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1), got {device}"


def always(device: torch.device) -> str | None:
    return None


def cpu_tensors_only(device: torch.device) -> str | None:
    return None if device.type == "cpu" else f"this backend takes CPU tensors, got {device}"


def cpu_kernels_unavailable(device: torch.device) -> str | None:
    from m3kernels import _native

    if not _native.have_cpu_kernels():
        return f"the compiled module m3kernels._C is unavailable ({_native.IMPORT_ERROR})"
    return cpu_tensors_only(device)


def cuda_kernels_unavailable(device: torch.device) -> str | None:
    from m3kernels import _native

    if not _native.have_cpu_kernels():
        return f"the compiled module m3kernels._C is unavailable ({_native.IMPORT_ERROR})"
    if not _native.have_cuda_kernels():
        return "m3kernels._C was built without CUDA kernels (build with torch+CUDA and nvcc on PATH)"
    if _native.cuda_emulated():  # tests/cuda_emu.py's build: the kernels run on the host
        return None if device.type == "cpu" else f"the emulated CUDA kernels run on CPU tensors, got {device}"
    return None if device.type == "cuda" else f"the CUDA kernels run on CUDA tensors, got {device}"


def resolve(op: str, backend: str, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """The backend to run op on tensors of this device (float64 tensors go to the reference under auto)."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    table = _registry[op]
    source = ""
    if backend == "auto" and dtype == torch.float64:
        return "reference"  # float64 is the oracle's dtype: the reference under auto, whatever M3K_BACKEND says
    if backend == "auto":
        env = os.environ.get("M3K_BACKEND", "auto").strip().lower() or "auto"
        if env not in ("auto", *BACKENDS):
            raise ValueError(
                f"the environment variable M3K_BACKEND must be one of 'auto', {', '.join(map(repr, BACKENDS))}; "
                f"got {env!r}"
            )
        backend = for_op(op, env)
        if backend != "auto":
            source = " (from the environment variable M3K_BACKEND, replacing backend='auto')"
    if backend == "auto":
        for name in AUTO_ORDER.get(device.type, ("reference",)):
            if name in table and table[name](device) is None:
                return name
        return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of 'auto', {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend not in table:
        raise RuntimeError(f"{op} has no {backend!r} backend (it has: {', '.join(table)})")
    reason = _why(op, backend, device)
    if reason is not None:
        raise RuntimeError(f"backend {backend!r}{source} is unavailable for {op} on {device}: {reason}")
    return backend


def for_op(op: str, backend: str) -> str:
    """A backend chosen for several ops at once (M3K_BACKEND, BGEM3's backend) as applied to op: itself where op
    has it, "auto" where it does not (attention has no "cuda" backend). Names that are no backend at all pass
    through, for resolve to reject."""
    return "auto" if backend in BACKENDS and backend not in _registry[op] else backend


def _why(op: str, backend: str, device: torch.device) -> str | None:
    return _registry[op][backend](device) or _import_errors.get((op, backend))


def availability(device: torch.device) -> dict[str, dict[str, str | None]]:
    """{op: {backend: None if available else the reason}} for a device (used by `m3k info`)."""
    return {op: {b: _why(op, b, device) for b in table} for op, table in _registry.items()}
