"""Sparse-head benchmark cases: lexical_weights (B x L tokens, BGE-M3's 250002-id vocabulary) and lexical_scores
(queries x docs), against FlagEmbedding's formulations."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from unittest import mock

import torch

import m3kernels
from m3kernels import SparseBatch, _backend
from m3kernels._segments import uniform_segments
from m3kernels.benchmarks.common import import_peer, our_backends
from m3kernels.benchmarks.harness import Case, Provider

VOCAB = 250002
SPECIAL = {0, 1, 2, 3}


def flagembedding_inference_path(hidden: torch.Tensor, ids: torch.Tensor, weight: torch.Tensor,
                                 bias: torch.Tensor) -> list[dict[str, float]]:
    """FlagEmbedding 1.4.2's inference path: relu(sparse_linear(h)) in torch, then a per-text Python loop that
    keeps the max weight per token id in a dict (skipping <s>, <pad>, </s>, <unk> and weights <= 0)."""
    token_weights = torch.relu(hidden @ weight.reshape(-1, 1) + bias).squeeze(-1).cpu().numpy()
    out = []
    for w_row, id_row in zip(token_weights, ids.cpu().tolist(), strict=True):
        result: dict[str, float] = defaultdict(int)
        for w, idx in zip(w_row, id_row, strict=True):
            if idx not in SPECIAL and w > 0:
                key = str(idx)
                if w > result[key]:
                    result[key] = w
        out.append(result)
    return out


def scatter_amax_path(hidden, ids, weight, bias) -> torch.Tensor:
    """relu(linear) then scatter_reduce("amax") into a dense [B, vocab] tensor."""
    w = torch.relu(hidden @ weight.reshape(-1, 1) + bias).squeeze(-1)
    w = w.masked_fill(torch.isin(ids, torch.tensor(sorted(SPECIAL), device=ids.device)), 0)
    out = torch.zeros(ids.shape[0], VOCAB, dtype=w.dtype, device=w.device)
    return out.scatter_reduce(1, ids, w, "amax")


def _dense(out) -> torch.Tensor:
    if isinstance(out, SparseBatch):
        return out.to_dense(VOCAB).cpu()
    if isinstance(out, torch.Tensor):
        return out.float().cpu()
    dense = torch.zeros(len(out), VOCAB)
    for b, row in enumerate(out):
        if row:
            dense[b, torch.tensor([int(k) for k in row])] = torch.tensor([float(v) for v in row.values()])
    return dense


def weights_case(device: torch.device, batch: int, length: int, hidden: int, dtype: torch.dtype) -> Case:
    h = torch.randn(batch, length, hidden, device=device, dtype=dtype)
    ids = torch.randint(4, VOCAB, (batch, length), device=device)
    ids[:, 0], ids[:, -1] = 0, 2
    ids[:, 1:length:7] = ids[:, 2:3]  # repeated ids, as in real text
    weight = torch.randn(hidden, device=device, dtype=dtype) / hidden**0.5
    # The trained BGE-M3 head gives nearly every content token a positive weight: with h . w ~ N(0, 1), a bias of
    # 1.65 makes 95% of them positive (the work FlagEmbedding's dict loop does grows with that fraction).
    bias = torch.full((1,), 1.65, device=device, dtype=dtype)
    truth = m3kernels.lexical_weights(h.double(), ids, weight.double(), bias.double(), backend="reference")
    truth_dense = truth.to_dense(VOCAB).float().cpu()

    # vocab_size as a serving stack passes it (BGEM3 does): the ids are checked against it and the Triton pool
    # needs no device read for its bounds.
    providers = [Provider(f"m3k:{b}", lambda b=b: m3kernels.lexical_weights(h, ids, weight, bias, vocab_size=VOCAB,
                                                                             backend=b))
                 for b in our_backends("lexical_weights", device)]
    providers.append(Provider("FlagEmbedding inference path (relu(linear) + dict loop)",
                              lambda: flagembedding_inference_path(h, ids, weight, bias), is_reference=True))
    providers.append(Provider('scatter_reduce("amax") into [B, vocab]',
                              lambda: scatter_amax_path(h, ids, weight, bias)))
    need_gb = batch * length * VOCAB * h.element_size() / 1e9
    providers.append(Provider("FlagEmbedding training path (zeros[B, L, vocab])", None,
                              f"needs {need_gb:.1f} GB for [B, L, vocab]; not run"))
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    return Case("lexical_weights", f"B={batch} L={length} H={hidden} vocab={VOCAB} {str(dtype)[6:]}", providers,
                check=lambda out: (_dense(out) - truth_dense).abs().max().item(), tolerance=tol,
                bytes=float(h.numel() * h.element_size()), params={"batch": batch, "length": length})


def packed_sparse_inputs(device: torch.device, batch: int, length: int, hidden: int, dtype: torch.dtype) -> tuple:
    """(hidden [B*L, H], ids [B*L], weight [H], bias [1], skip ids) for B texts of L tokens, packed; weight and
    bias in dtype (the GEMV formulation needs them so; the kernels take them as fp32)."""
    h = torch.randn(batch * length, hidden, device=device, dtype=dtype)
    ids = torch.randint(0, VOCAB, (batch * length,), device=device)
    weight = torch.randn(hidden, device=device, dtype=dtype) / hidden**0.5
    bias = torch.full((1,), 0.5, device=device, dtype=dtype)
    return h, ids, weight, bias, torch.tensor(sorted(SPECIAL), device=device)


def compact_to_dense(batch: int, length: int):
    """A pool backend's compact per-text outputs (texts of `length` rows back to back) -> dense fp32 [B, vocab]."""
    def unpack(outs: tuple) -> torch.Tensor:
        out_ids, out_vals, out_src, _ = outs
        used = out_src >= 0
        text = torch.arange(batch * length, device=out_ids.device)[used] // length
        dense = torch.zeros(batch, VOCAB, device=out_ids.device)
        dense[text, out_ids[used]] = out_vals[used]
        return dense

    return unpack


def kernels_case(device: torch.device, batch: int, length: int, hidden: int, dtype: torch.dtype) -> Case:
    """The device work of lexical_weights with its bounds known, as BGEM3 calls it (length L and vocab_size): the
    backends' pool functions without the API around them (checks, output compaction), timed by device time
    (Case.device_time: the ~30 us of kernels are shorter than their host launch path). Triton runs one kernel
    (token weights + per-text pool), CUDA and CPU two passes (token weights, then the pool). End to end, the op's
    Python call and its syncs cost more than reading 64 MiB at HBM speed (~20 us), so this row is where the read's
    bandwidth shows. Beside them: torch's GEMV formulation of the read pass alone (its pooling is done untimed, for
    the check) and a torch sum of the same bytes (the floor of any read at this size)."""
    h, ids, weight, bias, skip = packed_sparse_inputs(device, batch, length, hidden, dtype)
    off, lens = uniform_segments(batch, length, device)
    w32, b32 = weight.float(), bias.float()  # the op converts them once per call, outside the kernels
    token_truth = torch.relu(h.double() @ weight.double() + bias.double()).masked_fill(torch.isin(ids, skip), 0)
    truth = _token_weights_to_dense(token_truth.float(), ids, batch)

    def gemv():
        return torch.relu(h @ weight + bias).masked_fill(torch.isin(ids, skip), 0)

    providers = []
    backends = our_backends("lexical_weights", device)
    for name in backends:
        pool = _backend.kernel_module("lexical_weights", name).pool
        providers.append(Provider(f"m3k:{name}",
                                  lambda pool=pool: pool(h, ids, off, lens, w32, b32, skip, length, VOCAB),
                                  unpack=compact_to_dense(batch, length)))
    if "triton" in backends:
        providers.append(Provider("m3k:triton, two kernels (token weights, then per-text pool)",
                                  _triton_two_kernels(h, ids, off, lens, w32, b32, skip, length),
                                  unpack=compact_to_dense(batch, length)))
    providers.append(Provider("torch GEMV + relu + skip mask (read pass only)", gemv, is_reference=True,
                              unpack=lambda w: _token_weights_to_dense(w.float(), ids, batch)))
    providers.append(Provider("torch sum of the hidden states", lambda: h.sum(dtype=torch.float32),
                              floor="floor: one read of the same bytes by a torch reduction (not the op)"))
    return Case("lexical_weights kernels", f"B={batch} L={length} H={hidden} {str(dtype)[6:]}", providers,
                check=lambda out: (out - truth).abs().max().item(), tolerance=5e-2,
                bytes=float(h.numel() * h.element_size()), params={"batch": batch, "length": length},
                device_time=True)


def _triton_two_kernels(h, ids, off, lens, w32, b32, skip, length: int):
    """The Triton pool with the one-kernel path switched off (_ONE_KERNEL_MAX_BLOCK = 0): segment ids, token
    weights, then one program per text, with the block from the same bounds (no read). Beside the one-kernel row,
    it says what fusing the two gains."""
    from m3kernels.sparse import triton as kernels

    def run():
        with mock.patch.object(kernels, "_ONE_KERNEL_MAX_BLOCK", 0):
            return kernels.pool(h, ids, off, lens, w32, b32, skip, length, VOCAB)

    return run


def _token_weights_to_dense(w: torch.Tensor, ids: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-token weights [B*L] (0 = dropped) max-pooled by id per text -> dense fp32 [B, vocab]."""
    dense = torch.zeros(batch, VOCAB, device=w.device)
    return dense.scatter_reduce(1, ids.reshape(batch, -1), w.reshape(batch, -1), "amax")


def _random_rows(n: int, nnz: int, generator: torch.Generator) -> list[dict[str, float]]:
    """Zipf-like ids (common words overlap between texts) with positive weights."""
    rows = []
    for _ in range(n):
        ranks = torch.randint(1, 2**17, (nnz,), generator=generator)
        ids = torch.unique((VOCAB - 1) * (ranks.float() / 2**17) ** 3).long() + 4
        rows.append({str(int(i)): float(w) for i, w in zip(ids, torch.rand(ids.numel(), generator=generator),
                                                            strict=True)})
    return rows


def dict_scores(q_rows: list[dict], d_rows: list[dict]) -> torch.Tensor:
    """FlagEmbedding's compute_lexical_matching_score, one Python call per (query, doc) pair."""
    def single(qw: dict, dw: dict) -> float:
        score = 0.0
        for token, weight in qw.items():
            if token in dw:
                score += weight * dw[token]
        return score

    return torch.tensor([[single(a, b) for b in d_rows] for a in q_rows])


def scores_case(device: torch.device, n_q: int, n_d: int) -> Case:
    g = torch.Generator().manual_seed(0)
    q_rows, d_rows = _random_rows(n_q, 24, g), _random_rows(n_d, 200, g)
    q, d = SparseBatch.from_dicts(q_rows, device), SparseBatch.from_dicts(d_rows, device)
    truth = m3kernels.lexical_scores(q, d, backend="reference").cpu()

    providers = [Provider(f"m3k:{b}", lambda b=b: m3kernels.lexical_scores(q, d, backend=b))
                 for b in our_backends("lexical_scores", device)]
    providers.append(Provider("FlagEmbedding per-pair dict loop", lambda: dict_scores(q_rows, d_rows),
                              is_reference=True))
    q_csr, d_csr = q.to_sparse_csr(VOCAB), d.to_sparse_csr(VOCAB)
    providers.append(Provider("torch CSR matmul (dicts already converted)", lambda: (q_csr @ d_csr.t()).to_dense()))
    providers.append(Provider("torch CSR matmul incl. dict conversion", lambda: (
        SparseBatch.from_dicts(q_rows, device).to_sparse_csr(VOCAB)
        @ SparseBatch.from_dicts(d_rows, device).to_sparse_csr(VOCAB).t()).to_dense()))
    flag, why = import_peer("FlagEmbedding.inference.embedder.encoder_only.m3")
    if flag is not None:
        fn = flag.M3Embedder.compute_lexical_matching_score  # needs no model state
        providers.append(Provider("FlagEmbedding 1.4.2 compute_lexical_matching_score",
                                  lambda: torch.tensor([[fn(None, a, b) for b in d_rows] for a in q_rows])))
    else:
        providers.append(Provider("FlagEmbedding 1.4.2 compute_lexical_matching_score", None, why))
    return Case("lexical_scores", f"Nq={n_q} Nd={n_d} (~24 / ~200 ids per text)", providers,
                check=lambda out: (torch.as_tensor(out).float().cpu() - truth).abs().max().item(), tolerance=1e-3,
                params={"n_q": n_q, "n_d": n_d})


def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    """The cases one at a time (each built when the previous one is done with: their inputs never coexist)."""
    if device.type == "cpu":
        yield weights_case(device, 32, 512, 1024, torch.float32)
    else:
        yield weights_case(device, 64, 512, 1024, torch.float16)
        yield kernels_case(device, 64, 512, 1024, torch.float16)
    yield scores_case(device, 100, 1000)
