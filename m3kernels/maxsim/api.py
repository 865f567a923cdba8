"""Public MaxSim ops: padded (masks) and packed (cu_seqlens) inputs, all pairs or pairwise."""

from __future__ import annotations

import torch
from torch import Tensor

from m3kernels import _backend, _checks
from m3kernels._segments import uniform_segments
from m3kernels.maxsim import reference

_HOST_BACKENDS = ("cpu", "reference")  # index rows as the offsets say: they get offsets clamped beforehand


def _check_pair(q: Tensor, d: Tensor, q_ndim: int) -> torch.device:
    _checks.tensor("q", q, ndim=q_ndim, dtypes=_checks.FLOAT_DTYPES)
    _checks.tensor("d", d, ndim=q_ndim, dtypes=_checks.FLOAT_DTYPES)
    _checks.same_dtype("q", q, "d", d)
    device = _checks.same_device(q=q, d=d)
    if q.shape[-1] != d.shape[-1]:
        raise ValueError(f"q and d must have the same hidden size; got {q.shape[-1]} and {d.shape[-1]}")
    if q.shape[-1] == 0:
        raise ValueError("q and d must have a hidden size >= 1")
    return device


def _prefix_layout(x: Tensor, m: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Padded [N, L, H] -> (rows [N*L, H], off, len, prefix mask) with each item's valid tokens first."""
    n, length, h = x.shape
    off, full_lens = uniform_segments(n, length, x.device)
    if m is None:
        return x.reshape(n * length, h), off, full_lens, None
    lens = m.sum(dim=1, dtype=torch.int32)
    prefix = torch.arange(length, device=x.device)[None, :] < lens[:, None]
    if torch.compiler.is_compiling() or not bool(torch.equal(prefix, m)):
        # Move each item's valid tokens to the front (stable), so the kernels see a prefix layout.
        order = torch.argsort((~m).to(torch.int8), dim=1, stable=True)
        x = torch.gather(x, 1, order[..., None].expand(n, length, h))
    return x.reshape(n * length, h), off, lens, prefix


def _rows_in_items(x: Tensor, off: Tensor, lens: Tensor) -> Tensor:
    """The rows of x [T, H] that belong to some item (off[i] .. off[i] + lens[i]): the tokens that take part."""
    marks = torch.zeros(x.shape[0] + 1, dtype=torch.int64, device=x.device)
    marks.index_add_(0, off.long(), torch.ones_like(off, dtype=torch.int64))
    marks.index_add_(0, (off + lens).long(), torch.full_like(off, -1, dtype=torch.int64))
    return x[torch.cumsum(marks, 0)[:-1] > 0]


def _finish(scores: Tensor, q_len: Tensor, pairwise: bool, normalize: bool) -> Tensor:
    if not normalize:
        return scores
    count = q_len.clamp(min=1).to(scores.dtype)
    return scores / (count if pairwise else count[:, None])


def _flags(pairwise: object, normalize: object, deterministic: object) -> tuple[bool, bool, bool]:
    return (_checks.flag("pairwise", pairwise), _checks.flag("normalize", normalize),
            _checks.flag("deterministic", deterministic))


def _resolve(backend: str, q: Tensor, device: torch.device, nq: int, nd: int, pairwise: bool) -> str:
    """The backend for these items, after the pairwise item-count check (so that its error comes first)."""
    if pairwise and nq != nd:
        raise ValueError(f"pairwise=True needs as many queries as docs; got {nq} and {nd}")
    name = _backend.resolve("maxsim", backend, device, q.dtype)
    _checks.kernel_dtype(name, "q", q)
    return name


def _run(
    q2: Tensor,
    q_off: Tensor,
    q_len: Tensor,
    d2: Tensor,
    d_off: Tensor,
    d_len: Tensor,
    *,
    pairwise: bool,
    normalize: bool,
    deterministic: bool,
    name: str,
    offsets: tuple[tuple[str, Tensor, int], ...] = (),
) -> Tensor:
    """Launches backend `name`; then, with data checks on, one read-back for the offsets not yet validated
    (name, tensor as passed, row count) and the output's NaN look."""
    if name == "reference":
        compute = torch.float64 if q2.dtype == torch.float64 else torch.float32
        scores = reference.maxsim_packed(
            q2, q_off, q_len, d2, d_off, d_len, pairwise=pairwise, compute_dtype=compute
        )
    else:
        need_argmax = torch.is_grad_enabled() and (q2.requires_grad or d2.requires_grad)
        module = _backend.kernel_module("maxsim", name)
        args = (q2, q_off, q_len, d2, d_off, d_len, pairwise, need_argmax)
        layer = _backend.op_layer(q2, d2)
        if layer == "direct":
            scores, _ = module.forward(*args)
        else:
            scores, _ = (module.eager_op if layer == "autograd" else module.op)(*args, deterministic)
    if _checks.data_checks_enabled():
        *host_offsets, host_sum = _checks.read_back(*(cu for _, cu, _ in offsets), _checks.float_sum(scores))
        for (name, _, total), host in zip(offsets, host_offsets, strict=True):
            _checks.cu_seqlens_values(name, host, total)
        if _checks.sum_has_nan(host_sum, scores):  # name the culprit among the real tokens, not masked ones
            _checks.raise_nan(q=_rows_in_items(q2, q_off, q_len), d=_rows_in_items(d2, d_off, d_len))
    return _finish(scores, q_len, pairwise, normalize)


def maxsim(
    q: Tensor,
    d: Tensor,
    q_mask: Tensor | None = None,
    d_mask: Tensor | None = None,
    *,
    pairwise: bool = False,
    normalize: bool = False,
    deterministic: bool = False,
    backend: str = "auto",
) -> Tensor:
    """Late-interaction (ColBERT / BGE-M3 multi-vector) score of padded query and doc token vectors.

    Args:
        q: [Nq, Lq, H] query token vectors, float32 / float16 / bfloat16 (float64: reference backend only).
        d: [Nd, Ld, H] doc token vectors, same dtype and device as q.
        q_mask, d_mask: [Nq, Lq] / [Nd, Ld] bool, True for real tokens (None: all real). Any pattern works;
            prefix masks avoid a gather.
        pairwise: score q[i] against d[i] only (Nq == Nd) instead of all pairs.
        normalize: divide by the number of valid query tokens (BGE-M3's s_mul).
        deterministic: bitwise-reproducible gradients (GPU backward without atomics; the CPU one always is).
        backend: "auto", "reference", "cpu", "triton" or "cuda" (see README).

    Returns:
        float32 [Nq, Nd] (or [N] when pairwise; float64 for float64 inputs) with
        ``score(a, b) = sum_{i valid in a} max_{j valid in b} <q[a, i], d[b, j]>`` (accumulated in float32).
        A doc without valid tokens scores 0; so does a query without valid tokens. Differentiable in q and d
        (the gradient flows through the arg-max doc token of every query token; first max on ties).
    """
    device = _check_pair(q, d, 3)
    pairwise, normalize, deterministic = _flags(pairwise, normalize, deterministic)
    if q.shape[0] == 0 or d.shape[0] == 0:
        raise ValueError(f"q and d must hold at least one item each; got Nq={q.shape[0]}, Nd={d.shape[0]}")
    _checks.row_count("q", q.shape[0] * q.shape[1])
    _checks.row_count("d", d.shape[0] * d.shape[1])
    if q_mask is not None:
        _checks.mask("q_mask", q_mask, (q.shape[0], q.shape[1]))
    if d_mask is not None:
        _checks.mask("d_mask", d_mask, (d.shape[0], d.shape[1]))
    _checks.same_device(q=q, q_mask=q_mask, d_mask=d_mask)
    name = _resolve(backend, q, device, q.shape[0], d.shape[0], pairwise)
    q2, q_off, q_len, _ = _prefix_layout(q, q_mask)
    d2, d_off, d_len, _ = _prefix_layout(d, d_mask)
    return _run(
        q2,
        q_off,
        q_len,
        d2,
        d_off,
        d_len,
        pairwise=pairwise,
        normalize=normalize,
        deterministic=deterministic,
        name=name,
    )


def maxsim_varlen(
    q: Tensor,
    cu_seqlens_q: Tensor,
    d: Tensor,
    cu_seqlens_d: Tensor,
    *,
    pairwise: bool = False,
    normalize: bool = False,
    deterministic: bool = False,
    backend: str = "auto",
) -> Tensor:
    """MaxSim on packed (unpadded) tokens, FlashAttention's varlen convention.

    Args:
        q: [total_q, H] query tokens of all queries back to back; d: [total_d, H] likewise.
        cu_seqlens_q, cu_seqlens_d: int32 (or int64) [N+1] offsets, starting at 0, non-decreasing, ending at
            total_q / total_d. Item i is rows cu[i] .. cu[i+1].
        pairwise, normalize, deterministic, backend: as in :func:`maxsim`.

    Returns:
        float32 [Nq, Nd] or [N] (float64 for float64 inputs); same formula as :func:`maxsim`.
    """
    device = _check_pair(q, d, 2)
    pairwise, normalize, deterministic = _flags(pairwise, normalize, deterministic)
    cu_q = _checks.cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0])
    cu_d = _checks.cu_seqlens("cu_seqlens_d", cu_seqlens_d, d.shape[0])
    _checks.same_device(q=q, cu_seqlens_q=cu_q, cu_seqlens_d=cu_d)
    name = _resolve(backend, q, device, cu_q.shape[0] - 1, cu_d.shape[0] - 1, pairwise)
    offsets = ()
    if _checks.data_checks_enabled():  # the kernel runs first, on offsets kept in bounds; _run reads them after it
        offsets = (("cu_seqlens_q", cu_seqlens_q, q.shape[0]), ("cu_seqlens_d", cu_seqlens_d, d.shape[0]))
    if name in _HOST_BACKENDS:  # with or without the checks: bad offsets must not reach them (no sync)
        q_off, q_len = _checks.launch_segments(cu_seqlens_q, q.shape[0])
        d_off, d_len = _checks.launch_segments(cu_seqlens_d, d.shape[0])
    else:  # the GPU kernels clamp every item into the rows themselves (csrc/maxsim/maxsim.h)
        (q_off, q_len), (d_off, d_len) = _checks.segments(cu_q), _checks.segments(cu_d)
    return _run(
        q,
        q_off,
        q_len,
        d,
        d_off,
        d_len,
        pairwise=pairwise,
        normalize=normalize,
        deterministic=deterministic,
        name=name,
        offsets=offsets,
    )
