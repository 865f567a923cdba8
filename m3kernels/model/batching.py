"""Batching for the packed encoder: token-budget batches over length-sorted texts, MCLS insertion, and row
gathers that restore the input order of packed (CSR-like) outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MCLS_EVERY = 256


def plan_batches(lengths: Sequence[int], batch_tokens: int, batch_size: int) -> list[list[int]]:
    """Indices of the texts per batch: longest first (stable), each batch holding at most batch_size texts
    and at most batch_tokens tokens (a longer text runs alone)."""
    if batch_tokens < 1 or batch_size < 1:
        raise ValueError(f"batch_tokens and batch_size must be >= 1; got {batch_tokens}, {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    used = 0
    for i in order:
        if batches and len(batches[-1]) < batch_size and used + lengths[i] <= batch_tokens:
            batches[-1].append(i)
            used += lengths[i]
        else:
            batches.append([i])
            used = lengths[i]
    return batches


def mcls_content_budget(n_content: int, max_length: int, every: int = MCLS_EVERY) -> int:
    """Largest c <= n_content with c + max(1, ceil(c / every)) + 1 <= max_length (content, <s> per chunk, </s>)."""
    c = min(n_content, max_length - 2)
    while c > 0 and c + max(1, -(-c // every)) + 1 > max_length:
        c -= 1
    return max(c, 0)


def insert_cls(ids: Sequence[int], cls_id: int, max_length: int, every: int = MCLS_EVERY) -> list[int]:
    """MCLS layout of one tokenised text ``<s> t_1 .. t_n </s>``: a ``<s>`` before every chunk of `every`
    content tokens, ``<s> t_1..t_256 <s> t_257..t_512 ... </s>``, the content truncated so the whole sequence
    fits max_length tokens."""
    content = list(ids[1:-1])
    content = content[: mcls_content_budget(len(content), max_length, every)]
    out = [ids[0]]
    for start in range(0, len(content), every):
        if start:
            out.append(cls_id)
        out.extend(content[start : start + every])
    out.append(ids[-1])
    return out


def gather_segments(cu: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Segments rows[0], rows[1], ... of a packed layout with offsets cu [N+1] (int).

    Returns (element index [sum of the chosen lengths] int64 into the packed data, new offsets [len(rows)+1]
    int64), so ``data[index]`` is the packed data of the chosen segments in that order."""
    cu = cu.long()
    counts = (cu[1:] - cu[:-1])[rows]
    new_cu = torch.zeros(rows.numel() + 1, dtype=torch.int64, device=cu.device)
    torch.cumsum(counts, 0, out=new_cu[1:])
    total = int(new_cu[-1])
    seg_start = torch.repeat_interleave(cu[:-1][rows], counts, output_size=total)
    new_start = torch.repeat_interleave(new_cu[:-1], counts, output_size=total)
    return seg_start + torch.arange(total, device=cu.device) - new_start, new_cu
