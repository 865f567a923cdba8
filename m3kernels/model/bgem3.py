"""BGEM3: BGE-M3 on m3kernels' ops, a drop-in for FlagEmbedding's BGEM3FlagModel (encode, compute_score,
compute_lexical_matching_score, colbert_score) with packed (unpadded) batches."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m3kernels import _backend, _checks
from m3kernels.maxsim import maxsim_varlen
from m3kernels.model.batching import MCLS_EVERY, gather_segments, insert_cls, plan_batches
from m3kernels.model.checkpoint import load_checkpoint
from m3kernels.model.encoder import PackedXLMRobertaEncoder
from m3kernels.model.tokenizer import Tokenizer
from m3kernels.sparse import SparseBatch, lexical_scores, lexical_weights

DEFAULT_BATCH_TOKENS = 16384
DEFAULT_BATCH_SIZE = 256  # FlagEmbedding's defaults (BGEM3FlagModel(batch_size=256, query / passage_max_length=512))
DEFAULT_MAX_LENGTH = 512
SCORE_KEYS = ("colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense")
_OPS = ("attention_varlen", "lexical_weights", "lexical_scores", "maxsim")  # the ops the model runs
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_device(device: torch.device | str | None) -> torch.device:
    """None -> CUDA when available, else CPU; a CUDA device without CUDA raises ValueError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device is {device}, but torch.cuda.is_available() is False (torch {torch.__version__})")
    return device


def check_backend(backend: str, device: torch.device) -> None:
    """Whether every op the model runs can use `backend` on device (auto in the ops without it, as attention for
    "cuda"): ValueError for an unknown name, RuntimeError naming the reason for an unavailable backend."""
    for op in _OPS:
        _backend.resolve(op, _backend.for_op(op, backend), device)


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """None -> float16 on CUDA, float32 elsewhere (FlagEmbedding's defaults); strings like 'fp16', 'bf16'."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or a torch.dtype; got {dtype!r}")
        dtype = _DTYPES[dtype]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16; got {dtype}")
    return dtype


def _or_default(value: Any, default: Any) -> Any:
    """FlagEmbedding's None for "the default" in encode / compute_score arguments."""
    return default if value is None else value


@dataclass
class PackedOutput:
    """Heads of B texts. dense [B, hidden] float32 (L2-normalised); sparse: SparseBatch of B rows;
    colbert [sum_b n_b, dim] float32 (row-normalised) with colbert_cu [B+1] int64 offsets."""

    dense: Tensor | None = None
    sparse: SparseBatch | None = None
    colbert: Tensor | None = None
    colbert_cu: Tensor | None = None

    def to(self, device: torch.device) -> PackedOutput:
        """The same heads on device (a kernel output's SparseBatch keeps its invariants: no re-check)."""
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        sparse = self.sparse
        if sparse is not None:
            sparse = SparseBatch.trusted(move(sparse.indptr), move(sparse.ids), move(sparse.values))
        return PackedOutput(move(self.dense), sparse, move(self.colbert), move(self.colbert_cu))


def _concat_offsets(offsets: Sequence[Tensor]) -> Tensor:
    """Offsets [n_i+1] of packed parts -> the offsets [sum n_i + 1] (int64) of the parts back to back."""
    counts = torch.cat([cu[1:] - cu[:-1] for cu in offsets]).long()
    cu = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, 0, out=cu[1:])
    return cu


class BGEM3(nn.Module):
    """BGE-M3 (XLM-RoBERTa + dense / sparse / multi-vector heads) running on packed tokens.

    Build with :meth:`from_pretrained`. ``backend`` ("auto", "reference", "cpu", "triton", "cuda") selects
    the kernels of attention_varlen, lexical_weights, lexical_scores and maxsim; an op without that backend
    (attention has no "cuda") runs on auto."""

    def __init__(
        self,
        encoder: PackedXLMRobertaEncoder,
        colbert_linear: nn.Linear,
        sparse_linear: nn.Linear,
        tokenizer: Tokenizer,
        backend: str = "auto",
    ):
        super().__init__()
        self.encoder = encoder
        self.colbert_linear = colbert_linear
        self.sparse_linear = sparse_linear
        self.tokenizer = tokenizer
        self.backend = backend
        encoder.backend = backend

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        backend: str = "auto",
    ) -> BGEM3:
        """Loads a local BGE-M3 checkpoint directory (config.json, model.safetensors or pytorch_model.bin,
        colbert_linear.pt, sparse_linear.pt, tokenizer.json); raises CheckpointError on any missing,
        unreadable or inconsistent file. device: default CUDA when available; dtype: see resolve_dtype."""
        device = resolve_device(device)
        check_backend(backend, device)  # here, not at the first batch
        dtype = resolve_dtype(dtype, device)
        ckpt = load_checkpoint(path)
        tokenizer = Tokenizer(ckpt.tokenizer_file, ckpt.config)
        encoder = PackedXLMRobertaEncoder.from_hf_state(ckpt.config, ckpt.backbone, backend)
        heads = []
        for state in (ckpt.colbert, ckpt.sparse):
            out_dim, in_dim = state["weight"].shape
            with torch.device("meta"):
                linear = nn.Linear(in_dim, out_dim)
            linear.load_state_dict(state, assign=True)
            heads.append(linear)
        model = cls(encoder, heads[0], heads[1], tokenizer, backend)
        return model.to(device=device, dtype=dtype).eval()

    @property
    def device(self) -> torch.device:
        return self.encoder.word_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.word_embeddings.weight.dtype

    # ---------------------------------------------------------------- packed forward
    def forward_packed(
        self,
        input_ids: Tensor,
        cu_seqlens: Tensor,
        max_seqlen: int,
        *,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        mcls: bool = False,
    ) -> PackedOutput:
        """Heads of packed texts: input_ids [T] int64 and cu_seqlens [B+1] int32 on the model's device, each
        text ``<s> ... </s>``.

        dense = normalize(H[first token]) (mcls: normalize(mean of H over the text's CLS positions, those where
        insert_cls puts its <s>: 0, 257, 514, ... but not the last token));
        sparse = lexical_weights(H, ids) skipping <s>, </s>, <pad>, <unk> (max per id of relu(H w + b));
        colbert = normalize(colbert_linear(H[t])) for every token but the first (mcls: but the CLS positions).
        A <s> in the text itself is a token like any other at the positions that are not CLS positions.

        The inputs are validated here, once (ids in the vocabulary, cu_seqlens, max_seqlen); the ops inside then
        skip their own data checks (no per-layer NaN scans or host syncs), so NaN from the weights or an fp16
        overflow shows in the outputs instead of raising."""
        self._check_packed(input_ids, cu_seqlens, max_seqlen)
        with _checks.trusted_inputs():
            return self._heads(input_ids, cu_seqlens, max_seqlen, dense, sparse, colbert, mcls)

    def _check_packed(self, input_ids: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> None:
        _checks.tensor("input_ids", input_ids, ndim=1, dtypes=(torch.int64,))
        _checks.same_device(input_ids=input_ids, model=self.encoder.word_embeddings.weight)
        cu = _checks.cu_seqlens("cu_seqlens", cu_seqlens, input_ids.numel())
        _checks.same_device(input_ids=input_ids, cu_seqlens=cu)
        _checks.int_arg("max_seqlen", max_seqlen)
        if _checks.data_checks_enabled():
            host_cu, *bounds = _checks.read_back(cu_seqlens, *(torch.aminmax(input_ids) if input_ids.numel() else ()))
            lengths = _checks.cu_seqlens_values("cu_seqlens", host_cu, input_ids.numel())
            if (lengths < 1).any():  # every text starts with its <s>, the dense head's token
                raise ValueError(f"cu_seqlens holds an empty text (text {int(np.argmax(lengths < 1))}); "
                                 "every text needs at least its <s> token")
            longest = int(lengths.max())
            vocab = self.encoder.config.vocab_size
            if bounds and (int(bounds[0]) < 0 or int(bounds[1]) >= vocab):
                lo, hi = (int(b) for b in bounds)
                raise ValueError(f"input_ids must lie in [0, {vocab}); got values in [{lo}, {hi}]")
            if longest > max_seqlen:
                raise ValueError(f"max_seqlen ({max_seqlen}) is below the longest text in cu_seqlens ({longest})")
            limit = self.encoder.config.max_tokens
            if longest > limit:
                raise ValueError(f"a text of {longest} tokens exceeds this checkpoint's limit of {limit}")

    def _heads(
        self, input_ids: Tensor, cu_seqlens: Tensor, max_seqlen: int, dense: bool, sparse: bool, colbert: bool,
        mcls: bool
    ) -> PackedOutput:
        hidden = self.encoder(input_ids, cu_seqlens, max_seqlen)
        n, total = cu_seqlens.numel() - 1, input_ids.numel()
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
        if mcls:  # by position, not id: a literal "<s>" in a text must not count as an inserted CLS
            starts = torch.repeat_interleave(cu_seqlens[:-1].long(), lengths, output_size=total)
            pos = torch.arange(total, device=input_ids.device) - starts
            last = torch.repeat_interleave(lengths - 1, lengths, output_size=total)
            is_cls = (pos % (MCLS_EVERY + 1) == 0) & ((pos == 0) | (pos != last))
        else:
            is_cls = torch.zeros(total, dtype=torch.bool, device=input_ids.device)
            is_cls[cu_seqlens[:-1].long()] = True
        out = PackedOutput()
        if dense:
            if mcls:
                text = torch.repeat_interleave(
                    torch.arange(n, device=hidden.device), lengths, output_size=total
                )
                sums = torch.zeros(n, hidden.shape[1], dtype=torch.float32, device=hidden.device)
                sums.index_add_(0, text[is_cls], hidden[is_cls].float())
                counts = torch.zeros(n, device=hidden.device).index_add_(
                    0, text[is_cls], is_cls[is_cls].float()
                )
                cls_state = sums / counts[:, None]
            else:
                cls_state = hidden[cu_seqlens[:-1].long()].float()
            out.dense = F.normalize(cls_state, dim=-1)
        if sparse:
            out.sparse = lexical_weights(
                hidden,
                input_ids,
                self.sparse_linear.weight,
                self.sparse_linear.bias,
                cu_seqlens=cu_seqlens,
                max_seqlen=max_seqlen,
                skip_ids=self.tokenizer.special_ids,
                vocab_size=self.encoder.config.vocab_size,
                backend=self.backend,
            )
        if colbert:
            keep = ~is_cls
            out.colbert = F.normalize(self.colbert_linear(hidden[keep]).float(), dim=-1)
            out.colbert_cu = torch.zeros(n + 1, dtype=torch.int64, device=hidden.device)
            keep_running = torch.cumsum(keep.long(), 0)
            out.colbert_cu[1:] = keep_running[cu_seqlens[1:].long() - 1] if total else 0
        return out

    # ---------------------------------------------------------------- batching
    def tokenize(self, texts: Sequence[str], max_length: int, mcls: bool = False) -> list[list[int]]:
        """Token ids per text (<s> ... </s>, at most max_length tokens; mcls: with the extra <s> tokens)."""
        limit = self.encoder.config.max_tokens
        max_length = _checks.int_arg("max_length", max_length)  # TypeError for a non-int; NumPy ints pass
        if not 2 <= max_length <= limit:
            raise ValueError(
                f"max_length must be an int in [2, {limit}] for this checkpoint; got {max_length!r}"
            )
        ids = self.tokenizer.encode(texts, max_length)
        if mcls:
            ids = [insert_cls(x, self.tokenizer.ids["cls"], max_length) for x in ids]
        return ids

    @torch.no_grad()  # not inference_mode: the outputs are handed to callers, who may train on them
    def encode_ids(
        self,
        ids: Sequence[Sequence[int]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_tokens: int | None = None,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        mcls: bool = False,
        show_progress: bool | None = None,
        out_device: torch.device | str | None = None,
    ) -> PackedOutput:
        """Runs token-budget batches (longest first) and returns the heads in the input order, on out_device
        (default: the model's device). Each batch's heads move there as soon as it is done, so that a CPU
        out_device keeps at most one batch of outputs on the model's device. mcls=True takes ids in insert_cls's
        layout (tokenize(..., mcls=True)): the CLS tokens are found by position."""
        from tqdm.auto import tqdm

        batch_size = _checks.int_arg("batch_size", batch_size, minimum=1)
        batch_tokens = _checks.int_arg(
            "batch_tokens", _or_default(batch_tokens, DEFAULT_BATCH_TOKENS), minimum=1
        )
        if len(ids) == 0:
            raise ValueError("ids must hold at least one text")
        empty = next((i for i, x in enumerate(ids) if len(x) == 0), None)
        if empty is not None:
            raise ValueError(f"ids[{empty}] is empty; every text needs at least its <s> token")
        out_device = self.device if out_device is None else torch.device(out_device)
        batches = plan_batches([len(x) for x in ids], batch_tokens, batch_size)
        disable = (len(batches) < 10 or None) if show_progress is None else not show_progress
        parts: list[PackedOutput] = []
        with tqdm(total=len(ids), desc="m3k encode", unit="text", disable=disable) as bar:
            for batch in batches:
                flat = [t for i in batch for t in ids[i]]
                cu = np.zeros(len(batch) + 1, dtype=np.int32)
                np.cumsum([len(ids[i]) for i in batch], out=cu[1:])
                part = self.forward_packed(
                    torch.tensor(flat, dtype=torch.int64, device=self.device),
                    torch.from_numpy(cu).to(self.device),
                    max(len(ids[i]) for i in batch),
                    dense=dense,
                    sparse=sparse,
                    colbert=colbert,
                    mcls=mcls,
                )
                parts.append(part if out_device == self.device else part.to(out_device))
                bar.update(len(batch))
        order = torch.tensor([i for b in batches for i in b], dtype=torch.int64)
        where = torch.empty_like(order)
        where[order] = torch.arange(order.numel())
        where = where.to(out_device)
        out = PackedOutput()
        if dense:
            out.dense = torch.cat([p.dense for p in parts])[where]
        if sparse:
            index, new_cu = gather_segments(_concat_offsets([p.sparse.indptr for p in parts]), where)
            ids_all = torch.cat([p.sparse.ids for p in parts])
            values_all = torch.cat([p.sparse.values for p in parts])
            out.sparse = SparseBatch(new_cu, ids_all[index], values_all[index])
        if colbert:
            index, out.colbert_cu = gather_segments(_concat_offsets([p.colbert_cu for p in parts]), where)
            out.colbert = torch.cat([p.colbert for p in parts])[index]
        return out

    def _empty_output(self, dense: bool, sparse: bool, colbert: bool) -> PackedOutput:
        """The heads of zero texts, with the right trailing shapes."""
        zeros = torch.zeros(1, dtype=torch.int64, device=self.device)
        empty = torch.zeros(0, dtype=torch.int64, device=self.device)
        return PackedOutput(
            dense=torch.zeros(0, self.encoder.config.hidden_size, device=self.device) if dense else None,
            sparse=SparseBatch(zeros, empty, empty.float()) if sparse else None,
            colbert=torch.zeros(0, self.colbert_linear.out_features, device=self.device) if colbert else None,
            colbert_cu=zeros if colbert else None,
        )

    # ---------------------------------------------------------------- FlagEmbedding-compatible API
    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = DEFAULT_BATCH_SIZE,
        max_length: int | None = DEFAULT_MAX_LENGTH,
        return_dense: bool | None = True,
        return_sparse: bool | None = False,
        return_colbert_vecs: bool | None = False,
        *,
        batch_tokens: int | None = None,
        mcls: bool = False,
        output: str = "numpy",
        show_progress: bool | None = None,
    ) -> dict[str, Any]:
        """FlagEmbedding's BGEM3FlagModel.encode.

        Returns {"dense_vecs", "lexical_weights", "colbert_vecs"} (None where not requested):
        output="numpy": dense_vecs float32 ndarray [N, hidden]; lexical_weights list of {str(token_id): weight};
        colbert_vecs list of float32 [n_tokens - 1, dim] arrays (without <s>, with </s>). A single string gives
        the unbatched [hidden] / dict / array, like FlagEmbedding.
        output="torch": tensors on the model's device: dense_vecs [N, hidden], lexical_weights a SparseBatch,
        colbert_vecs packed [sum, dim] plus "colbert_cu_seqlens" [N+1] int64 (maxsim_varlen's layout).

        batch_size caps the texts per batch, batch_tokens (default 16384) the tokens per batch; max_length up to
        the checkpoint's position table (8192 for BGE-M3). None stands for the default, as in FlagEmbedding.
        mcls=True: see forward_packed and insert_cls. show_progress: None = a tqdm bar for jobs of 10 batches or
        more on a terminal. output="numpy" moves each batch's heads to the host as soon as it is done."""
        if output not in ("numpy", "torch"):
            raise ValueError(f"output must be 'numpy' or 'torch'; got {output!r}")
        return_dense = _or_default(return_dense, True)
        return_sparse = _or_default(return_sparse, False)
        return_colbert_vecs = _or_default(return_colbert_vecs, False)
        if not (return_dense or return_sparse or return_colbert_vecs):
            raise ValueError("choose at least one of return_dense, return_sparse, return_colbert_vecs")
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"sentences must be a str or a sequence of str; found {type(bad[0]).__name__}")
        ids = self.tokenize(texts, _or_default(max_length, DEFAULT_MAX_LENGTH), mcls)
        if not texts:
            res = self._empty_output(return_dense, return_sparse, return_colbert_vecs)
        else:
            res = self.encode_ids(
                ids,
                batch_size=_or_default(batch_size, DEFAULT_BATCH_SIZE),
                batch_tokens=batch_tokens,
                dense=return_dense,
                sparse=return_sparse,
                colbert=return_colbert_vecs,
                mcls=mcls,
                show_progress=show_progress,
                out_device="cpu" if output == "numpy" else None,
            )
        if output == "torch":
            return {
                "dense_vecs": res.dense,
                "lexical_weights": res.sparse,
                "colbert_vecs": res.colbert,
                "colbert_cu_seqlens": res.colbert_cu,
            }
        dense = res.dense.cpu().numpy() if return_dense else None
        lexical = res.sparse.to_dicts() if return_sparse else None
        colbert = None
        if return_colbert_vecs:
            vecs = res.colbert.cpu().numpy()
            bounds = res.colbert_cu.tolist()
            colbert = [vecs[a:b] for a, b in itertools.pairwise(bounds)]
        if single:
            dense = dense[0] if dense is not None else None
            lexical = lexical[0] if lexical is not None else None
            colbert = colbert[0] if colbert is not None else None
        return {"dense_vecs": dense, "lexical_weights": lexical, "colbert_vecs": colbert}

    def encode_queries(self, queries: str | Sequence[str], **kwargs: Any) -> dict[str, Any]:
        """Same as encode (BGE-M3 uses no query instruction)."""
        return self.encode(queries, **kwargs)

    def encode_corpus(self, corpus: str | Sequence[str], **kwargs: Any) -> dict[str, Any]:
        """Same as encode."""
        return self.encode(corpus, **kwargs)

    def compute_score(
        self,
        sentence_pairs: Sequence[tuple[str, str]] | tuple[str, str],
        batch_size: int | None = DEFAULT_BATCH_SIZE,
        max_query_length: int | None = DEFAULT_MAX_LENGTH,
        max_passage_length: int | None = DEFAULT_MAX_LENGTH,
        weights_for_different_modes: Sequence[float] | None = None,
        *,
        batch_tokens: int | None = None,
    ) -> dict[str, list[float]] | dict[str, float] | list:
        """FlagEmbedding's compute_score: per (query, passage) pair the keys "dense" (dot of normalised CLS),
        "sparse" (lexical matching score), "colbert" (MaxSim / number of query vectors), "sparse+dense" =
        (w_d d + w_s s)/(w_d + w_s) and "colbert+sparse+dense" = (w_d d + w_s s + w_c c)/(w_d + w_s + w_c),
        weights [w_d, w_s, w_c] default [1, 1, 1]. Lists of floats; floats for one pair; [] for no pairs.
        Padded doc positions never win a max here (FlagEmbedding scores them 0 inside a padded batch).
        The pairs are encoded and scored batch_size at a time, as FlagEmbedding does, so that the multi-vector
        outputs of one chunk only are held at once. None stands for the default."""
        if isinstance(sentence_pairs, (list, tuple)) and not sentence_pairs:
            return []
        one = isinstance(sentence_pairs[0], str)
        pairs = [tuple(sentence_pairs)] if one else [tuple(p) for p in sentence_pairs]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("sentence_pairs must hold (query, passage) pairs")
        w = (
            [1.0, 1.0, 1.0]
            if weights_for_different_modes is None
            else [float(x) for x in weights_for_different_modes]
        )
        if len(w) != 3:
            raise ValueError(f"weights_for_different_modes must be [dense, sparse, colbert]; got {w}")
        batch_size = _checks.int_arg("batch_size", _or_default(batch_size, DEFAULT_BATCH_SIZE), minimum=1)
        lengths = (
            _or_default(max_query_length, DEFAULT_MAX_LENGTH),
            _or_default(max_passage_length, DEFAULT_MAX_LENGTH),
        )
        chunks = [self._pair_scores(pairs[i : i + batch_size], lengths, batch_size, batch_tokens)
                  for i in range(0, len(pairs), batch_size)]
        dense, sparse, colbert = (torch.cat(parts) for parts in zip(*chunks, strict=True))
        scores = {
            "colbert": colbert,
            "sparse": sparse,
            "dense": dense,
            "sparse+dense": (sparse * w[1] + dense * w[0]) / (w[1] + w[0]),
            "colbert+sparse+dense": (colbert * w[2] + sparse * w[1] + dense * w[0]) / sum(w),
        }
        lists = {k: v.float().cpu().tolist() for k, v in scores.items()}
        return {k: v[0] for k, v in lists.items()} if one else lists

    def _pair_scores(
        self, pairs: Sequence[tuple[str, str]], lengths: tuple[int, int], batch_size: int, batch_tokens: int | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(dense, sparse, colbert) float32 [len(pairs)] on the model's device, of (query, passage) pairs
        tokenised at lengths (query, passage)."""
        common = {"batch_size": batch_size, "batch_tokens": batch_tokens, "dense": True, "sparse": True,
                  "colbert": True}
        q = self.encode_ids(self.tokenize([p[0] for p in pairs], lengths[0]), **common)
        d = self.encode_ids(self.tokenize([p[1] for p in pairs], lengths[1]), **common)
        dense = (q.dense * d.dense).sum(-1)
        sparse = lexical_scores(q.sparse, d.sparse, pairwise=True, backend=self.backend).to(dense.device)
        colbert = maxsim_varlen(
            q.colbert, q.colbert_cu, d.colbert, d.colbert_cu, pairwise=True, normalize=True, backend=self.backend
        )
        return dense, sparse, colbert

    def compute_lexical_matching_score(
        self,
        lexical_weights_1: Mapping | Sequence[Mapping] | SparseBatch,
        lexical_weights_2: Mapping | Sequence[Mapping] | SparseBatch,
    ) -> float | np.ndarray | Tensor:
        """sum over ids in both of w1(id) * w2(id): dict x dict -> float; list x list -> ndarray [n1, n2];
        SparseBatch x SparseBatch -> float32 tensor [n1, n2] (lexical_scores) on their device. Inputs away from
        the model's device run on backend auto there."""
        if isinstance(lexical_weights_1, SparseBatch) and isinstance(lexical_weights_2, SparseBatch):
            return lexical_scores(
                lexical_weights_1, lexical_weights_2, backend=self._backend_on(lexical_weights_1.device)
            )
        if isinstance(lexical_weights_1, Mapping) and isinstance(lexical_weights_2, Mapping):
            return float(
                sum(w * lexical_weights_2[t] for t, w in lexical_weights_1.items() if t in lexical_weights_2)
            )
        if isinstance(lexical_weights_1, list) and isinstance(lexical_weights_2, list):
            if not lexical_weights_1 or not lexical_weights_2:
                return np.zeros((len(lexical_weights_1), len(lexical_weights_2)), dtype=np.float32)
            q, d = SparseBatch.from_dicts(lexical_weights_1), SparseBatch.from_dicts(lexical_weights_2)
            return lexical_scores(q, d, backend=self._backend_on(q.device)).numpy()
        raise ValueError("lexical weights must be two dicts, two lists of dicts or two SparseBatch")

    def colbert_score(self, q_reps: np.ndarray | Tensor, p_reps: np.ndarray | Tensor) -> Tensor:
        """(1/Nq) sum_i max_j <q_i, p_j> of one query [Nq, dim] and one passage [Np, dim]: a 0-dim float32
        tensor on q's device (CPU for NumPy arrays, like FlagEmbedding), on backend auto away from the model's
        device."""
        q = torch.as_tensor(q_reps).float()
        p = torch.as_tensor(p_reps).float().to(q.device)
        cu_q = torch.tensor([0, q.shape[0]], dtype=torch.int32, device=q.device)
        cu_p = torch.tensor([0, p.shape[0]], dtype=torch.int32, device=q.device)
        return maxsim_varlen(q, cu_q, p, cu_p, normalize=True, backend=self._backend_on(q.device))[0, 0]

    def _backend_on(self, device: torch.device) -> str:
        """The model's backend for inputs on its device; auto elsewhere (FlagEmbedding-style helpers get NumPy
        arrays and dicts, which land on the CPU, where a "triton" or "cuda" model backend cannot run)."""
        return self.backend if device == self.device else "auto"

    def convert_id_to_token(self, lexical_weights: Mapping | Sequence[Mapping]) -> dict | list[dict]:
        """{token string: weight} from {str(id): weight} (one dict or a list, as FlagEmbedding)."""
        rows = [lexical_weights] if isinstance(lexical_weights, Mapping) else list(lexical_weights)
        out = [{self.tokenizer.decode([int(k)]): v for k, v in row.items()} for row in rows]
        return out[0] if len(out) == 1 else out
