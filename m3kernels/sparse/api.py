"""Public sparse-head ops: lexical_weights (fused relu(linear) + max-pool by id) and lexical_scores."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from m3kernels import _backend, _checks
from m3kernels._segments import uniform_segments
from m3kernels.sparse import reference
from m3kernels.sparse.batch import SparseBatch

BGE_M3_SPECIAL_IDS = (0, 1, 2, 3)  # <s>, <pad>, </s>, <unk>


def _linear_params(weight: object, bias: object, hidden_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    weight = _checks.tensor("weight", weight, ndim=(1, 2), dtypes=_checks.FLOAT_DTYPES)
    if weight.dim() == 2 and weight.shape[0] != 1:
        raise ValueError(f"weight must be [H] or [1, H] (nn.Linear(H, 1).weight); got {tuple(weight.shape)}")
    weight = weight.reshape(-1)
    if weight.numel() != hidden_size:
        raise ValueError(f"weight has {weight.numel()} entries but hidden has hidden size {hidden_size}")
    if bias is None:
        bias = torch.zeros(1, device=device)
    elif isinstance(bias, (int, float)):
        bias = torch.tensor([float(bias)], device=device)
    else:
        bias = _checks.tensor("bias", bias, ndim=(0, 1), dtypes=_checks.FLOAT_DTYPES)
        if bias.numel() != 1:
            raise ValueError(f"bias must hold one value (nn.Linear(H, 1).bias); got shape {tuple(bias.shape)}")
        bias = bias.reshape(1)
    _checks.same_device(weight=weight, bias=bias)
    return weight, bias


def _skip_tensor(skip: tuple[int, ...], device: torch.device) -> Tensor:
    """The skip ids as an int64 tensor on device, made once per (ids, device): no host-to-device copy per call
    (torch.compile traces a fresh one: it does not follow lru_cache)."""
    if torch.compiler.is_compiling():
        return torch.tensor(skip, dtype=torch.int64, device=device)
    return _cached_skip_tensor(skip, device)


@functools.lru_cache(maxsize=64)
def _cached_skip_tensor(skip: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(skip, dtype=torch.int64, device=device)


def _check_values_after(real_ids: Tensor, vocab_size: int | None, cu_seqlens: Tensor | None, total: int,
                        max_seqlen: int | None, out_vals: Tensor, indptr: Tensor | None) -> tuple[bool, int | None]:
    """The value checks after the launch, with one read-back: cu_seqlens as passed (the kernels ran on it clamped
    into bounds), max_seqlen against the longest text, the range of the real tokens' ids, and the sum of the
    output values; with them the output's entry count indptr[-1] (None: not read), so that building the
    SparseBatch needs no sync of its own. Raises on bad values; returns (whether the output holds NaN, count)."""
    parts = [] if cu_seqlens is None else [cu_seqlens]
    if real_ids.numel():
        parts.extend(torch.aminmax(real_ids))
    host = _checks.read_back(*parts, *([] if indptr is None else [indptr[-1:]]), _checks.float_sum(out_vals))
    count = None if indptr is None else int(host.pop(-2)[0])
    if cu_seqlens is not None:
        lengths = _checks.cu_seqlens_values("cu_seqlens", host[0], total)
        longest = int(lengths.max())  # cu_seqlens has >= 2 entries
        if max_seqlen is not None and longest > max_seqlen:
            raise ValueError(f"max_seqlen ({max_seqlen}) is below the longest text in cu_seqlens ({longest})")
    if real_ids.numel():
        lo, hi = int(host[-3]), int(host[-2])
        if lo < 0:
            raise ValueError(f"input_ids must be >= 0; got {lo}")
        if vocab_size is not None and hi >= vocab_size:
            raise ValueError(f"input_ids holds {hi}, outside the vocabulary (vocab_size={vocab_size})")
    return _checks.sum_has_nan(host[-1], out_vals), count


def lexical_weights(
    hidden: Tensor,
    input_ids: Tensor,
    weight: Tensor,
    bias: Tensor | float | None,
    *,
    attention_mask: Tensor | None = None,
    cu_seqlens: Tensor | None = None,
    max_seqlen: int | None = None,
    skip_ids: Sequence[int] = BGE_M3_SPECIAL_IDS,
    vocab_size: int | None = None,
    backend: str = "auto",
) -> SparseBatch:
    """BGE-M3's sparse head: per-text lexical weights, max-pooled by token id.

    Args:
        hidden: [B, L, H] last hidden states (with input_ids [B, L], optional attention_mask [B, L] bool/int,
            nonzero = real token), or packed [T, H] (with input_ids [T] and cu_seqlens [B+1]).
            float32 / float16 / bfloat16 (float64 on the reference backend).
        weight: [H] or [1, H] (``sparse_linear.weight``); bias: [1], scalar tensor, float or None.
        max_seqlen: packed input only: an int >= the longest text, if known (checked with the data checks; with
            them off, a smaller one gives wrong results).
        skip_ids: ids never reported (BGE-M3: <s>, <pad>, </s>, <unk>).
        vocab_size: if given, ids must be < vocab_size (ValueError otherwise).
        The Triton pool needs bounds on the text lengths and ids; given (padded input's L or max_seqlen, and
        vocab_size), it runs without a device sync of its own.

    Returns:
        SparseBatch with, per text b, ``value[id] = max_{t in b, id_t = id} relu(hidden[t] . weight + bias)``
        over real tokens, ids not in skip_ids and values > 0; ids ascending. Differentiable in hidden, weight
        and bias through each value's source token. Never materialises [B, L, vocab].
    """
    _checks.tensor("hidden", hidden, ndim=(2, 3), dtypes=_checks.FLOAT_DTYPES)
    _checks.tensor("input_ids", input_ids, ndim=(1, 2), dtypes=(torch.int64, torch.int32))
    if tuple(input_ids.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"input_ids must have shape {tuple(hidden.shape[:-1])} (hidden without its last dim); "
            f"got {tuple(input_ids.shape)}"
        )
    device = _checks.same_device(hidden=hidden, input_ids=input_ids)
    weight, bias = _linear_params(weight, bias, hidden.shape[-1], device)
    _checks.same_device(hidden=hidden, weight=weight)
    if not isinstance(skip_ids, Sequence) or not all(isinstance(s, int) for s in skip_ids):
        raise TypeError(f"skip_ids must be a sequence of ints; got {skip_ids!r}")
    if not all(-(2**63) <= s < 2**63 for s in skip_ids):
        raise ValueError(f"skip_ids must hold int64 values; got {skip_ids!r}")
    if vocab_size is not None:
        vocab_size = _checks.int_arg("vocab_size", vocab_size, minimum=1)
    ids = input_ids.long()
    valid = None
    checks = _checks.data_checks_enabled()
    if hidden.dim() == 3:
        if cu_seqlens is not None:
            raise ValueError("cu_seqlens goes with packed hidden [T, H]; got padded hidden [B, L, H]")
        bsz, length, h = hidden.shape
        if bsz == 0:
            raise ValueError("hidden must hold at least one text (B >= 1)")
        _checks.row_count("hidden", bsz * length)
        if attention_mask is not None:
            attention_mask = _checks.tensor(
                "attention_mask",
                attention_mask,
                ndim=2,
                dtypes=(torch.bool, torch.int64, torch.int32, torch.int8, torch.uint8),
            )
            if tuple(attention_mask.shape) != (bsz, length):
                raise ValueError(f"attention_mask must have shape {(bsz, length)}; got {tuple(attention_mask.shape)}")
            _checks.same_device(hidden=hidden, attention_mask=attention_mask)
            valid = attention_mask.bool().reshape(-1)
        hidden = hidden.reshape(bsz * length, h)
        ids = ids.reshape(-1)
        off, lens = uniform_segments(bsz, length, device)
        if max_seqlen is not None:
            raise ValueError("max_seqlen goes with packed hidden [T, H]; padded input's texts have length L")
        max_seqlen = length  # the bound on every text's length
    else:
        if cu_seqlens is None:
            raise ValueError("packed hidden [T, H] needs cu_seqlens [B+1]")
        if attention_mask is not None:
            raise ValueError("attention_mask goes with padded hidden [B, L, H]; packed input has no padding")
        cu = _checks.cu_seqlens("cu_seqlens", cu_seqlens, hidden.shape[0])
        _checks.same_device(hidden=hidden, cu_seqlens=cu)
        if max_seqlen is not None:
            max_seqlen = _checks.int_arg("max_seqlen", max_seqlen)
        # The kernels run on offsets kept in bounds (with or without the checks, which read the values after them);
        # texts that overlap would leave an inconsistent SparseBatch, which only a checked call discards.
        off, lens = _checks.launch_segments(cu_seqlens, hidden.shape[0], disjoint=device.type == "cpu" or not checks)
    if checks:  # the real tokens' ids, for the range check after the launch (0 is in range; a bool index syncs)
        real_ids = ids if valid is None else torch.where(valid, ids, 0)
    skip = list(skip_ids)
    if valid is not None:  # padding positions become a skipped id
        ids = torch.where(valid, ids, -1)
        skip.append(-1)
    name = _backend.resolve("lexical_weights", backend, device, hidden.dtype)
    _checks.kernel_dtype(name, "hidden", hidden)
    skip_t = _skip_tensor(tuple(skip), device)
    if name == "reference":
        compute = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        result = reference.lexical_weights_packed(hidden, ids, off, lens, weight, bias, skip, compute)
        out_vals = result.values
    else:
        module = _backend.kernel_module("lexical_weights", name)
        layer = _backend.op_layer(hidden, weight, bias)
        pool = {"direct": module.pool, "autograd": module.pool_eager_op, "op": module.pool_op}[layer]
        out_ids, out_vals, src, counts = pool(
            hidden, ids, off, lens, weight.float(), bias.float(), skip_t, max_seqlen or 0, vocab_size or 0
        )
        indptr = torch.nn.functional.pad(torch.cumsum(counts, 0), (1, 0))  # [0, counts[0], counts[0] + counts[1], ...]
    entries = None
    if checks:
        has_nan, entries = _check_values_after(real_ids, vocab_size, cu_seqlens, hidden.shape[0], max_seqlen, out_vals,
                                               None if name == "reference" else indptr)
        if has_nan:
            _checks.raise_nan(weight=weight, bias=bias, hidden=hidden[~torch.isin(ids, skip_t)])
    if name == "reference":
        return result
    # Text b's entries sit in slots off[b] .. off[b] + counts[b] and offsets increase with b, so the used
    # slots (src >= 0) in order are already the CSR layout: one nonzero for both gathers (a bool mask index runs
    # one each), of the size the checks read (a nonzero of unknown size syncs).
    used = (src >= 0).nonzero() if entries is None else torch.nonzero_static(src >= 0, size=entries)
    used = used.squeeze(1)
    return SparseBatch.trusted(indptr, out_ids.index_select(0, used), out_vals.index_select(0, used))


def lexical_scores(q: SparseBatch, d: SparseBatch, *, pairwise: bool = False, backend: str = "auto") -> Tensor:
    """Lexical matching score ``s(q, d) = sum_{id in q and d} w_q(id) * w_d(id)``.

    Args:
        q, d: SparseBatch of Nq and Nd texts (same device).
        pairwise: q[i] with d[i] only (Nq == Nd).

    Returns:
        float32 [Nq, Nd] (or [N]), accumulated in float64 on the CPU kernel. Differentiable (reverse mode) in
        q.values and d.values on every backend: when a gradient is needed (grad mode on and values that require
        grad, e.g. from lexical_weights in training) the scores come from the reference's torch formulation (the
        docs dense over the ids present in the two batches, summed per query row) whatever the backend, as the
        kernels have no backward.
    """
    for name, s in (("q", q), ("d", d)):
        if not isinstance(s, SparseBatch):
            raise TypeError(
                f"{name} must be a SparseBatch (see lexical_weights / SparseBatch.from_dicts); got {type(s).__name__}"
            )
        s.check_layout(name)  # SparseBatch.trusted skips the constructor's checks
        if len(s) == 0:
            raise ValueError(f"{name} must hold at least one text")
    device = _checks.same_device(q=q.ids, d=d.ids)
    pairwise = _checks.flag("pairwise", pairwise)
    if pairwise and len(q) != len(d):
        raise ValueError(f"pairwise=True needs as many queries as docs; got {len(q)} and {len(d)}")
    name = _backend.resolve("lexical_scores", backend, device)
    needs_grad = torch.is_grad_enabled() and (q.values.requires_grad or d.values.requires_grad)
    if name == "reference" or needs_grad:  # the kernels have no backward: the differentiable torch formulation
        return reference.lexical_scores(q, d, pairwise=pairwise)
    vals = (q.values.detach().float().contiguous(), d.values.detach().float().contiguous())
    module = _backend.kernel_module("lexical_scores", name)
    # The kernels walk rows indptr[r] .. indptr[r+1]: bounded without a sync, since a batch built with the data
    # checks off (or by SparseBatch.trusted) was never read. The GPU kernels only read rows (a backwards one is
    # empty); the CPU inverted index needs them disjoint.
    disjoint = name == "cpu"
    return (module.scores if _backend.op_layer(*vals) == "direct" else module.scores_op)(
        _checks.bounded_offsets(q.indptr, q.ids.numel(), disjoint).contiguous(),
        q.ids.contiguous(),
        vals[0],
        _checks.bounded_offsets(d.indptr, d.ids.numel(), disjoint).contiguous(),
        d.ids.contiguous(),
        vals[1],
        pairwise,
    )
