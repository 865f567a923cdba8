"""Input validation shared by the ops: every message names the argument and what was expected."""

from __future__ import annotations

import contextlib
import contextvars
import math
import operator
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INT32_MAX = 2**31 - 1  # token rows are addressed with int32 offsets (cu_seqlens, argmax) by every backend


def row_count(name: str, rows: int) -> None:
    """Token rows are indexed with int32 offsets; more rows would wrap around (wrong results, wild reads)."""
    if rows > INT32_MAX:
        raise ValueError(f"{name} covers {rows} token rows; at most 2**31 - 1 are supported (int32 offsets)")


def int_arg(name: str, value: object, *, minimum: int = 0, below: int = 2**63) -> int:
    """An integer argument (int or NumPy integer, not bool) in [minimum, below): TypeError for another type,
    ValueError for a value out of range."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {value!r}") from None
    if not minimum <= number < below:
        raise ValueError(f"{name} must be an int in [{minimum}, {below}); got {number}")
    return number


def flag(name: str, value: object) -> bool:
    """A boolean argument: bool or NumPy bool; anything else (a string such as "False" is truthy) is a TypeError."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {value!r}")
    return bool(value)


def kernel_dtype(backend: str, name: str, t: torch.Tensor) -> None:
    """float64 is for the reference backend (the oracle); the kernels take float32/float16/bfloat16."""
    if backend != "reference" and t.dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"{name} has dtype {t.dtype}; backend {backend!r} takes float32, float16 or bfloat16 "
            "(float64 runs on backend='reference')"
        )


_TRUSTED = contextvars.ContextVar("m3k_trusted_inputs", default=False)


@contextlib.contextmanager
def trusted_inputs() -> Iterator[None]:
    """Within this block the ops skip their data checks: for callers that built (or validated once) every
    input themselves, e.g. the BGE-M3 encoder, whose 24 layers would otherwise each re-read and sync."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def data_checks_enabled() -> bool:
    """Checks that read tensor values (NaN, cu_seqlens order, ids in range) need a device sync; they are
    skipped while tracing with torch.compile, during CUDA graph capture, inside trusted_inputs(), or with
    M3K_SKIP_DATA_CHECKS=1 (or true / yes / on)."""
    if os.environ.get("M3K_SKIP_DATA_CHECKS", "0").strip().lower() in ("1", "true", "yes", "on"):
        return False
    if torch.compiler.is_compiling():
        return False
    if _TRUSTED.get():
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def tensor(name: str, t: object, *, ndim: int | Sequence[int], dtypes: Sequence[torch.dtype]) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} must have dtype {names}; got {str(t.dtype).removeprefix('torch.')}")
    dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if t.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {want}; got shape {tuple(t.shape)}")
    return t


def same_device(**tensors: torch.Tensor | None) -> torch.device:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    first_name, first = next(iter(devices.items()))
    for name, dev in devices.items():
        if dev != first:
            raise ValueError(
                f"{name} is on {dev} but {first_name} is on {first}; all inputs must share a device"
            )
    return first


def same_dtype(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{a_name} ({a.dtype}) and {b_name} ({b.dtype}) must have the same dtype")


_NUMPY_DTYPES = {torch.int32: np.int32, torch.int64: np.int64, torch.float32: np.float32,
                 torch.float64: np.float64, torch.bool: np.bool_}


def read_back(*parts: torch.Tensor) -> list[np.ndarray]:
    """The values of small tensors (offsets, sums, min / max; int32 / int64 / float32 / float64 / bool) as NumPy
    arrays of their shapes, read from the device with one device-to-host copy: one sync for all the value checks of
    a call instead of one per check (CPU tensors: views, no copy). The checks then work in NumPy: a few
    microseconds each instead of tens for small torch ops."""
    for p in parts:
        if p.dtype not in _NUMPY_DTYPES:
            raise TypeError(f"read_back takes int32, int64, float32, float64 or bool tensors; got {p.dtype}")
    if all(p.device.type == "cpu" for p in parts):
        return [p.detach().numpy() for p in parts]
    return _read_bytes(parts)


def _read_bytes(parts: Sequence[torch.Tensor]) -> list[np.ndarray]:
    flat = [p.detach().reshape(-1) for p in parts]
    host = torch.cat([f.contiguous().view(torch.uint8) for f in flat]).cpu().numpy()  # each part as its bytes
    out, start = [], 0
    for f, p in zip(flat, parts, strict=True):
        out.append(np.frombuffer(host, _NUMPY_DTYPES[f.dtype], f.numel(), start).reshape(p.shape))
        start += f.numel() * f.element_size()
    return out


def float_sum(t: torch.Tensor) -> torch.Tensor:
    """0-d fp32 sum of t (no sync): finite unless t holds NaN or inf, or the sum overflows (then the callers
    fall back to an exact isnan search)."""
    return t.detach().sum(dtype=torch.float32)


def raise_if_nan(host_sum: float | np.ndarray, **tensors: torch.Tensor) -> None:
    """After one read_back of float_sum(all tensors together): a non-finite sum sends each tensor through an
    exact isnan search, which names the first holding NaN."""
    if math.isfinite(float(host_sum)):
        return
    for name, t in tensors.items():
        if t.is_floating_point() and t.numel() and bool(torch.isnan(t.detach()).any()):
            raise ValueError(f"{name} contains NaN; NaN inputs are rejected (documented NaN policy)")


def no_nan(name: str, t: torch.Tensor) -> None:
    if not (t.is_floating_point() and data_checks_enabled()) or t.numel() == 0:
        return
    raise_if_nan(read_back(float_sum(t))[0], **{name: t})


def sum_has_nan(host_sum: float | np.ndarray, out: torch.Tensor) -> bool:
    """Given the read-back float_sum of out: only a non-finite sum sends out through an isnan search."""
    return not math.isfinite(float(host_sum)) and bool(torch.isnan(out.detach()).any())


def output_has_nan(out: torch.Tensor) -> bool:
    """One look at a kernel output (the kernels propagate NaN): the sum is finite unless it holds NaN or inf;
    only then is it searched for NaN."""
    if not data_checks_enabled() or out.numel() == 0:
        return False
    return sum_has_nan(read_back(float_sum(out))[0], out)


def raise_nan(**inputs: torch.Tensor) -> None:
    """After output_has_nan: name the input holding NaN. Pass only the parts that take part in the computation
    (not masked or skipped tokens), so that a NaN behind a mask is never blamed."""
    for name, t in inputs.items():
        no_nan(name, t)
    raise ValueError("the result contains NaN (an input holds NaN or overflows)")


def cu_seqlens(name: str, cu: object, total: int) -> torch.Tensor:
    """int32/int64 [N+1] offsets, checked for dtype and shape; returns them as int32. Their values (cu[0] == 0,
    non-decreasing, cu[-1] == total tokens) are read by the caller together with its other checks (one
    read_back of the tensor as passed, not of the int32 conversion, which may wrap) and passed to
    cu_seqlens_values."""
    cu = tensor(name, cu, ndim=1, dtypes=(torch.int32, torch.int64))
    row_count(name, total)
    if cu.numel() < 2:
        raise ValueError(f"{name} must have at least 2 entries (N+1 for N >= 1 sequences); got {cu.numel()}")
    return cu.to(torch.int32).contiguous()  # the kernels index it with stride 1


def bounded_offsets(cu: torch.Tensor, total: int, disjoint: bool = True) -> torch.Tensor:
    """cu [N+1] (offsets whose values have not been read: yet, or at all with the data checks off) clamped into
    [0, total] in cu's dtype, without a sync: equal to cu when it is valid; otherwise its items still lie inside
    rows [0, total] whatever it holds. disjoint: also made non-decreasing by a running max, so that items never
    overlap (kernels that write per-row outputs, host kernels, outputs kept with the checks off); a running max is
    a slow single-block scan on the GPU, which kernels that tolerate overlapping and backwards items skip."""
    c = cu.detach().clamp(0, total)
    return torch.cummax(c, 0).values if disjoint else c


def launch_segments(cu: torch.Tensor, total: int, disjoint: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The (offsets, lengths), int32 [N] each, of bounded_offsets(cu, total, disjoint) (lengths >= 0): for kernels
    that index rows as the offsets say, launched before (or without) the value checks. With the checks on, the
    caller reads cu with its other checks after the launch (one sync, which then also waits for the kernel) and
    raises on bad values, discarding the output."""
    c = bounded_offsets(cu, total, disjoint).to(torch.int32)
    lengths = c[1:] - c[:-1]
    return c[:-1].contiguous(), lengths if disjoint else lengths.clamp_(min=0)  # a running max leaves none < 0


def cu_seqlens_values(name: str, host: np.ndarray, total: int) -> np.ndarray:
    """The value checks of cu_seqlens on its host copy (from read_back); returns the sequence lengths (int64)."""
    host = np.asarray(host, dtype=np.int64)
    if host[0] != 0:
        raise ValueError(f"{name}[0] must be 0; got {int(host[0])}")
    if host[-1] != total:
        raise ValueError(f"{name}[-1] must equal the number of packed tokens ({total}); got {int(host[-1])}")
    lengths = np.diff(host)
    if (lengths < 0).any():
        raise ValueError(f"{name} must be non-decreasing")
    return lengths


def segments(cu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cu_seqlens [N+1] -> the kernels' (offsets, lengths), int32 [N] each, as they are: for validated offsets, or
    kernels that clamp them themselves (MaxSim's GPU kernels)."""
    return cu[:-1].contiguous(), (cu[1:] - cu[:-1]).contiguous()


def mask(name: str, m: object, shape: tuple[int, int]) -> torch.Tensor:
    m = tensor(name, m, ndim=2, dtypes=(torch.bool,))
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (batch, length); got {tuple(m.shape)}")
    return m
