"""MaxSim in plain torch: the oracle every kernel is tested against (and the ``"reference"`` backend).

This is the FlagEmbedding / PyLate formulation: materialise the [Nq, Lq, Nd, Ld] (or [N, Lq, Ld]) similarity
tensor, mask padded doc tokens with -inf, max over doc tokens, sum over valid query tokens.
"""

from __future__ import annotations

import torch


def _row_max(sim: torch.Tensor) -> torch.Tensor:
    """Max over the last dim, its gradient to the first maximum (torch.max's index); with no doc tokens at all, a
    zero sum that keeps the result in the autograd graph (the callers replace every entry: all docs are empty)."""
    return sim.max(dim=-1).values if sim.shape[-1] > 0 else sim.sum(dim=-1)


def maxsim_padded(
    q: torch.Tensor,
    d: torch.Tensor,
    q_mask: torch.Tensor,
    d_mask: torch.Tensor,
    *,
    pairwise: bool = False,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """q [Nq, Lq, H], d [Nd, Ld, H], masks [N, L] bool -> [Nq, Nd] (or [N] pairwise) in compute_dtype.

    score = sum_{i valid} max_{j valid} <q_i, d_j>; a doc without valid tokens contributes 0 for every query
    token (score 0). A query token whose every similarity is -inf (infinite inputs) contributes -inf.
    Gradients (autograd) reach the first maximum of each max, as the kernels' saved arg-max does (amax would
    split them between ties); with infinite inputs they follow IEEE arithmetic, unlike the kernels', which
    skip a -inf maximum.
    """
    q = q.to(compute_dtype)
    d = d.to(compute_dtype)
    if pairwise:
        sim = torch.einsum("nih,njh->nij", q, d)
        sim = sim.masked_fill(~d_mask[:, None, :], float("-inf"))
        best = torch.where(d_mask.any(-1)[:, None], _row_max(sim), 0.0)  # empty docs; a real -inf max stays
        return torch.where(q_mask, best, 0.0).sum(dim=-1)  # where, not *: a NaN behind the mask stays out
    sim = torch.einsum("aih,bjh->aibj", q, d)
    sim = sim.masked_fill(~d_mask[None, None, :, :], float("-inf"))
    best = torch.where(d_mask.any(-1)[None, None, :], _row_max(sim), 0.0)  # empty docs; a real -inf max stays
    return torch.where(q_mask[:, :, None], best, 0.0).sum(dim=1)


def pad_packed(x: torch.Tensor, off: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows off[i] .. off[i] + lens[i] of x [T, H] -> padded [N, max_len, H] and its mask [N, max_len]."""
    n = off.shape[0]
    width = int(lens.max()) if n > 0 else 0
    pos = torch.arange(width, device=x.device)
    mask = pos[None, :] < lens[:, None].to(pos.dtype)
    rows = (off[:, None].long() + pos[None, :]).clamp(max=max(x.shape[0] - 1, 0))
    padded = (
        x[rows.reshape(-1)].reshape(n, width, x.shape[1])
        if x.shape[0] > 0
        else x.new_zeros(n, width, x.shape[1]) + x.sum()  # no rows: zeros still in x's graph (zero gradient)
    )
    return torch.where(mask[..., None], padded, 0.0), mask  # where, not *: NaN * 0 is NaN


def maxsim_packed(
    q: torch.Tensor,
    q_off: torch.Tensor,
    q_len: torch.Tensor,
    d: torch.Tensor,
    d_off: torch.Tensor,
    d_len: torch.Tensor,
    *,
    pairwise: bool = False,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """maxsim_padded on packed tokens (rows off[i] .. off[i] + len[i] of q [Tq, H] / d [Td, H])."""
    qp, qm = pad_packed(q, q_off, q_len)
    dp, dm = pad_packed(d, d_off, d_len)
    return maxsim_padded(qp, dp, qm, dm, pairwise=pairwise, compute_dtype=compute_dtype)
