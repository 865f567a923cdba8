"""Sparse-head benchmark cases: lexical_weights (B x L tokens, BGE-M3's 250002-id vocabulary) and lexical_scores
(queries x docs), against FlagEmbedding's formulations."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import torch

import m3kernels
from m3kernels import SparseBatch
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


def read_pass_inputs(device: torch.device, batch: int, length: int, hidden: int, dtype: torch.dtype) -> tuple:
    """(hidden [B*L, H], ids [B*L], weight [H], bias [1], skip ids) for the token-weights read pass of B texts of L
    tokens; weight and bias in dtype (the GEMV formulation needs them so; the kernel takes them as fp32)."""
    h = torch.randn(batch * length, hidden, device=device, dtype=dtype)
    ids = torch.randint(0, VOCAB, (batch * length,), device=device)
    weight = torch.randn(hidden, device=device, dtype=dtype) / hidden**0.5
    bias = torch.full((1,), 0.5, device=device, dtype=dtype)
    return h, ids, weight, bias, torch.tensor(sorted(SPECIAL), device=device)


def read_pass_case(device: torch.device, batch: int, length: int, hidden: int, dtype: torch.dtype) -> Case:
    """The part of lexical_weights that reads the hidden states: w_t = relu(h_t . w + b) per token (skip ids 0),
    the Triton kernel alone against torch's GEMV formulation, beside a torch sum of the same bytes (the floor of
    any read at this size: a 64 MiB read is short enough for launch and tail effects to show). End to end, the
    op's pooling and Python call cost more than reading 64 MiB at HBM speed (~20 us), so this row is where the
    read's bandwidth shows. Timed by device time (Case.device_time): the ~27 us kernel is shorter than its host
    launch path."""
    h, ids, weight, bias, skip = read_pass_inputs(device, batch, length, hidden, dtype)
    truth = torch.relu(h.double() @ weight.double() + bias.double()).masked_fill(torch.isin(ids, skip), 0).float()

    def gemv():
        return torch.relu(h @ weight + bias).masked_fill(torch.isin(ids, skip), 0)

    providers = []
    if "triton" in our_backends("lexical_weights", device):
        from m3kernels.sparse import triton as kernels

        w32, b32 = weight.float(), bias.float()  # the op converts them once per call, outside this kernel
        # Without segment ids, as lexical_weights runs it when the length and id bounds are known (BGEM3 does).
        providers.append(Provider("m3k:triton token-weights kernel", lambda: kernels._token_weights(
            h, ids, None, w32, b32, skip)))
    providers.append(Provider("torch GEMV + relu + skip mask", gemv, is_reference=True))
    providers.append(Provider("torch sum of the hidden states", lambda: h.sum(dtype=torch.float32),
                              floor="floor: one read of the same bytes by a torch reduction (not the op)"))
    return Case("lexical_weights read pass", f"B={batch} L={length} H={hidden} {str(dtype)[6:]}", providers,
                check=lambda out: (out.float() - truth).abs().max().item(), tolerance=5e-2,
                bytes=float(h.numel() * h.element_size()), params={"batch": batch, "length": length},
                device_time=True)


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
        yield read_pass_case(device, 64, 512, 1024, torch.float16)
    yield scores_case(device, 100, 1000)
