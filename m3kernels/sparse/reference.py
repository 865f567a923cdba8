"""The sparse head in plain torch: FlagEmbedding's formula, the oracle the kernels are tested against."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from m3kernels.sparse.batch import SparseBatch


def token_weights(hidden: Tensor, weight: Tensor, bias: Tensor, compute_dtype: torch.dtype) -> Tensor:
    """relu(hidden @ weight + bias): [T, H] -> [T]."""
    return torch.relu(hidden.to(compute_dtype) @ weight.to(compute_dtype) + bias.to(compute_dtype))


def _first_max_rows(w: Tensor, group: Tensor, groups: int) -> Tensor:
    """For each group g < groups of the entries w [n] (group [n]), the index of its first maximum (NaN beats every
    number): the one source token whose weight a pooled value is, so that its gradient is not split between ties
    (as scatter_reduce's amax would) and goes where the kernels send it."""
    nan = torch.isnan(w)
    has_nan = torch.zeros(groups, dtype=torch.bool, device=w.device).index_put((group,), nan, accumulate=True)
    best = torch.full((groups,), float("-inf"), dtype=w.dtype, device=w.device)
    best = best.scatter_reduce(0, group, torch.where(nan, float("-inf"), w), "amax")
    is_max = torch.where(has_nan[group], nan, w == best[group])
    pos = torch.where(is_max, torch.arange(w.numel(), device=w.device), w.numel())
    return torch.full((groups,), w.numel(), device=w.device).scatter_reduce(0, group, pos, "amin")


def lexical_weights_packed(
    hidden: Tensor,
    ids: Tensor,
    off: Tensor,
    lens: Tensor,
    weight: Tensor,
    bias: Tensor,
    skip_ids: Sequence[int],
    compute_dtype: torch.dtype = torch.float32,
) -> SparseBatch:
    """Text b = rows off[b] .. off[b] + lens[b] of hidden [T, H] / ids [T]. Weights w_t = relu(h_t . w + b);
    drop skip_ids and w_t <= 0; keep the max weight per id. Values in float32, or float64 when compute_dtype is."""
    w = token_weights(hidden, weight, bias, compute_dtype)
    vdtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
    ptr, out_ids, out_vals = [0], [], []
    skip = torch.tensor(list(skip_ids), dtype=torch.int64, device=ids.device)
    for b in range(off.shape[0]):
        rows = slice(int(off[b]), int(off[b]) + int(lens[b]))
        tid, tw = ids[rows], w[rows]
        keep = ((tw > 0) | torch.isnan(tw)) & ~torch.isin(tid, skip)  # NaN is kept, to be reported
        tid, tw = tid[keep], tw[keep]
        uniq, inverse = torch.unique(tid, sorted=True, return_inverse=True)
        out_ids.append(uniq)
        out_vals.append(tw[_first_max_rows(tw.detach(), inverse, uniq.numel())])
        ptr.append(ptr[-1] + uniq.numel())
    # Unchecked: the caller checks the ids (naming input_ids) after every backend, this one too.
    return SparseBatch.trusted(
        torch.tensor(ptr, dtype=torch.int64, device=ids.device),
        torch.cat(out_ids) if out_ids else ids.new_zeros(0),
        torch.cat(out_vals).to(vdtype) if out_vals else w.new_zeros(0, dtype=vdtype),
    )


def lexical_scores(
    q: SparseBatch, d: SparseBatch, *, pairwise: bool = False, compute_dtype: torch.dtype = torch.float32
) -> Tensor:
    """sum over ids in both rows of w_q * w_d: [Nq, Nd] (or [N] pairwise). The docs go dense over the union of
    the ids present (never the full vocabulary); each query entry then picks its id's column and is summed into
    its row by an accumulating index_put (no matmul over that data-dependent width, whose backward torch.compile
    cannot trace; not index_add, whose CUDA atomics would make the sums vary between runs)."""
    vocab, inverse = torch.unique(torch.cat([q.ids, d.ids]), return_inverse=True)
    qi, di = inverse[: q.ids.numel()], inverse[q.ids.numel() :]
    dd = torch.zeros(len(d), vocab.numel(), dtype=compute_dtype, device=d.device)
    dd = dd.index_put((d.row_ids(), di), d.values.to(compute_dtype))
    q_rows, q_vals = q.row_ids(), q.values.to(compute_dtype)
    if pairwise:
        out = torch.zeros(len(q), dtype=compute_dtype, device=q.device)
        return out.index_put((q_rows,), q_vals * dd[q_rows, qi], accumulate=True)
    out = torch.zeros(len(q), len(d), dtype=compute_dtype, device=q.device)
    return out.index_put((q_rows,), (dd[:, qi] * q_vals).T, accumulate=True)
