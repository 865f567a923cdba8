"""SparseBatch: per-text lexical weights in CSR form (the output of lexical_weights)."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from m3kernels import _checks


@dataclass(frozen=True)
class SparseBatch:
    """Row b holds text b's weights: ids[indptr[b]:indptr[b+1]] (int64, ascending, unique) and the matching
    values (> 0), float32 (float64 only from the reference backend on float64 inputs).
    Shapes: indptr [B+1], ids [nnz], values [nnz]; all on one device. ``values`` carries autograd when it came
    from lexical_weights on tensors that require grad."""

    indptr: Tensor
    ids: Tensor
    values: Tensor

    def __post_init__(self) -> None:
        self.check_layout()
        if _checks.data_checks_enabled():
            ptr = self.indptr.detach().cpu()
            if int(ptr[0]) != 0 or int(ptr[-1]) != self.ids.numel() or bool((ptr[1:] < ptr[:-1]).any()):
                raise ValueError("indptr must start at 0, be non-decreasing and end at nnz")
            ids = self.ids.detach().cpu()
            if ids.numel() and int(ids.min()) < 0:
                raise ValueError("ids must be >= 0")
            rising = ids[1:] > ids[:-1]
            row_start = torch.zeros(ids.numel(), dtype=torch.bool)
            row_start[ptr[1:-1][ptr[1:-1] < ids.numel()]] = True
            if bool((~rising & ~row_start[1:]).any()):
                raise ValueError("ids must be strictly ascending within each row")

    def check_layout(self, name: str = "") -> None:
        """The checks that read no values: dtypes, ranks, one device, B+1 >= 1 offsets, one length for ids and
        values (TypeError / ValueError naming `name`.indptr and so on)."""
        at = f"{name}." if name else ""
        _checks.tensor(f"{at}indptr", self.indptr, ndim=1, dtypes=(torch.int64,))
        _checks.tensor(f"{at}ids", self.ids, ndim=1, dtypes=(torch.int64,))
        _checks.tensor(f"{at}values", self.values, ndim=1, dtypes=(torch.float32, torch.float64))
        _checks.same_device(**{f"{at}indptr": self.indptr, f"{at}ids": self.ids, f"{at}values": self.values})
        if self.indptr.numel() < 1:
            raise ValueError(f"{at}indptr must have B+1 >= 1 entries")
        if self.ids.numel() != self.values.numel():
            raise ValueError(
                f"{at}ids ({self.ids.numel()}) and {at}values ({self.values.numel()}) must have one length"
            )

    @classmethod
    def trusted(cls, indptr: Tensor, ids: Tensor, values: Tensor) -> SparseBatch:
        """Builds a SparseBatch from kernel outputs that hold the invariants by construction (no checks)."""
        out = object.__new__(cls)
        for name, value in (("indptr", indptr), ("ids", ids), ("values", values)):
            object.__setattr__(out, name, value)
        return out

    def __len__(self) -> int:
        return self.indptr.numel() - 1

    @property
    def device(self) -> torch.device:
        return self.ids.device

    def to(self, device: torch.device | str) -> SparseBatch:
        return SparseBatch(self.indptr.to(device), self.ids.to(device), self.values.to(device))

    def row_ids(self) -> Tensor:
        """[nnz] int64: the row (text) of every entry."""
        counts = self.indptr[1:] - self.indptr[:-1]
        return torch.repeat_interleave(torch.arange(len(self), device=self.device), counts)

    def to_dicts(self) -> list[defaultdict[str, float]]:
        """FlagEmbedding's format: one defaultdict(int) {str(token_id): weight} per text (ids ascending), so
        that a missing id reads 0 as there."""
        ptr = self.indptr.tolist()
        ids = self.ids.tolist()
        vals = self.values.detach().float().cpu().tolist()
        return [defaultdict(int, ((str(ids[e]), vals[e]) for e in range(ptr[b], ptr[b + 1])))
                for b in range(len(self))]

    def to_dense(self, vocab_size: int) -> Tensor:
        """[B, vocab_size] vocabulary-space vectors in the values' dtype (what training uses)."""
        self._check_vocab(vocab_size)
        out = torch.zeros(len(self), vocab_size, dtype=self.values.dtype, device=self.device)
        return out.index_put((self.row_ids(), self.ids), self.values)

    def to_sparse_csr(self, vocab_size: int) -> Tensor:
        """torch.sparse_csr_tensor of shape [B, vocab_size]."""
        self._check_vocab(vocab_size)
        with warnings.catch_warnings():  # torch 2.11 warns "implicitly disabled" even when asked explicitly
            warnings.filterwarnings("ignore", "Sparse invariant checks are implicitly disabled")
            return torch.sparse_csr_tensor(
                self.indptr, self.ids, self.values, (len(self), vocab_size), check_invariants=False
            )

    def _check_vocab(self, vocab_size: int) -> None:
        if not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int; got {vocab_size!r}")
        if self.ids.numel() and int(self.ids.max()) >= vocab_size:
            raise ValueError(f"ids hold {int(self.ids.max())}, outside vocab_size={vocab_size}")

    @classmethod
    def from_dicts(
        cls, weights: Sequence[Mapping[str | int, float]], device: torch.device | str = "cpu"
    ) -> SparseBatch:
        """From FlagEmbedding-style dicts ({token_id: weight} per text; keys may be str or int)."""
        ptr, ids, vals = [0], [], []
        for row in weights:
            items = sorted((int(k), float(v)) for k, v in row.items())
            ids.extend(k for k, _ in items)
            vals.extend(v for _, v in items)
            ptr.append(len(ids))
        return cls(
            torch.tensor(ptr, dtype=torch.int64, device=device),
            torch.tensor(ids, dtype=torch.int64, device=device),
            torch.tensor(vals, dtype=torch.float32, device=device),
        )
