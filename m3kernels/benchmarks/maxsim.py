"""MaxSim benchmark cases: rerank (one query, many ragged docs) and all-pairs training shapes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch

import m3kernels
from m3kernels.benchmarks.common import GRAPH_SUFFIX, TRUSTED_SUFFIX, graph_replay, import_peer, our_backends, trusted
from m3kernels.benchmarks.harness import Case, Provider
from m3kernels.maxsim import reference


def _packed_docs(lengths: torch.Tensor, hidden: int, dtype: torch.dtype, device: torch.device):
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    d = torch.randn(int(cu[-1]), hidden, device=device, dtype=dtype)
    return d, cu.to(device)


def _truth(q, cu_q, d, cu_d, chunk: int = 64) -> torch.Tensor:
    """float64 reference, a chunk of docs at a time (bounded memory)."""
    q_off, q_len = cu_q[:-1], cu_q[1:] - cu_q[:-1]
    out = []
    for a in range(0, cu_d.numel() - 1, chunk):
        b = min(a + chunk, cu_d.numel() - 1)
        sub_cu = cu_d[a : b + 1] - cu_d[a]
        sub_d = d[int(cu_d[a]) : int(cu_d[b])]
        out.append(reference.maxsim_packed(q.double(), q_off, q_len, sub_d.double(), sub_cu[:-1],
                                           sub_cu[1:] - sub_cu[:-1], compute_dtype=torch.float64))
    return torch.cat(out, dim=1)


def _padded(x: torch.Tensor, cu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return reference.pad_packed(x, cu[:-1], cu[1:] - cu[:-1])


# The speed-up baseline of the issues' "padded einsum+max reference": the reference backend's formulation (FlagEmbedding
# / PyLate's einsum, -inf mask, max, sum), which computes in float32 whatever the input dtype.
REFERENCE_ROW = "padded einsum+max, float32 compute (reference backend)"
# The same formulation as FlagEmbedding and PyLate run it on fp16 / bf16 vectors: einsum and max in the input dtype
# (tensor cores), the sum of the row maxima in float32 here (theirs sums in the input dtype too). Timed beside the
# reference as the stricter baseline.
PEER_ROW = "padded einsum+max as FlagEmbedding/PyLate run it,"
# Its check bound: 16-bit similarities round to 1/16 (fp16 below 128) or 1/2 (bf16 below 128), and near-ties can
# move the arg-max, so its scores and gradients sit further from the float64 truth than the kernels' (fp32 sums).
_PEER_TOLERANCE = 4.0


def peer_einsum_max(q: torch.Tensor, d: torch.Tensor, d_mask: torch.Tensor) -> torch.Tensor:
    """[Nq, Lq, H] x [Nd, Ld, H] padded, in their dtype -> [Nq, Nd] float32: sum_i max_{j valid} <q_i, d_j>, the
    similarities and maxima in the input dtype."""
    sim = torch.einsum("aih,bjh->aibj", q, d).masked_fill(~d_mask[None, None], float("-inf"))
    return sim.amax(dim=-1).sum(dim=1, dtype=torch.float32)


def rerank_case(device: torch.device, hidden: int, n_docs: int, len_range: tuple[int, int], dtype: torch.dtype,
                ragged: bool = True) -> Case:
    q_len = 32
    lo, hi = len_range
    lengths = torch.randint(lo, hi + 1, (n_docs,)) if ragged else torch.full((n_docs,), hi)
    d, cu_d = _packed_docs(lengths, hidden, dtype, device)
    q = torch.randn(q_len, hidden, device=device, dtype=dtype)
    cu_q = torch.tensor([0, q_len], dtype=torch.int32, device=device)
    truth = _truth(q, cu_q, d, cu_d).float()
    d_pad, d_mask = _padded(d, cu_d)
    q_pad = q[None]

    providers = [Provider(f"m3k:{b}", lambda b=b: m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend=b))
                 for b in our_backends("maxsim", device)]
    if device.type == "cuda":
        for b in our_backends("maxsim", device):
            providers.append(Provider(f"m3k:{b}{GRAPH_SUFFIX}", graph_replay(
                lambda b=b: m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend=b))))
            providers.append(Provider(f"m3k:{b}{TRUSTED_SUFFIX}", trusted(
                lambda b=b: m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend=b))))
    q_mask = torch.ones(1, q_len, dtype=torch.bool, device=device)
    providers.append(Provider(REFERENCE_ROW, lambda: reference.maxsim_padded(q_pad, d_pad, q_mask, d_mask),
                              is_reference=True))
    if dtype != torch.float32:
        providers.append(Provider(f"{PEER_ROW} in {str(dtype)[6:]}", lambda: peer_einsum_max(q_pad, d_pad, d_mask),
                                  tolerance=_PEER_TOLERANCE))
    providers += _cpu_peers(q, d, cu_d, hidden) if device.type == "cpu" else _gpu_peers(q, cu_q, d, cu_d)
    doc_len = f"U[{lo},{hi}]" if ragged else str(hi)
    shape = f"rerank Nq=1 Lq=32 Nd={n_docs} Ld={doc_len} H={hidden} {str(dtype)[6:]}"
    return Case("maxsim", shape, providers, check=lambda out: (torch.as_tensor(out).reshape(1, -1).float().cpu()
                                                            - truth.cpu()).abs().max().item(),
                tolerance=1e-2 if dtype == torch.float32 else 0.5, flops=2.0 * q_len * d.shape[0] * hidden,
                bytes=float(d.numel() * d.element_size()),
                params={"hidden": hidden, "n_docs": n_docs, "dtype": str(dtype)})


def _cpu_peers(q: torch.Tensor, d: torch.Tensor, cu_d: torch.Tensor, hidden: int) -> list[Provider]:
    out = []
    bounds = cu_d.tolist()
    q_np = q.float().numpy()
    docs_np = [d[a:b].float().numpy() for a, b in itertools.pairwise(bounds)]
    fast, why = import_peer("fast_maxsim")
    out.append(Provider("fast-maxsim 0.2.0", (lambda: np.asarray(fast.maxsim_scores_variable(q_np, docs_np)))
                        if fast else None, why))
    mcpu, why = import_peer("maxsim_cpu")
    if mcpu is not None and hidden >= 136:
        # Measured on this machine: wrong scores for H in 136..384 and a segfault for H >= 512, which would
        # kill the whole benchmark process.
        mcpu, why = None, "skipped: maxsim-cpu 0.1.0 is wrong for H in 136..384 and segfaults for H >= 512"
    out.append(Provider("maxsim-cpu 0.1.0", (lambda: np.asarray(mcpu.maxsim_scores_variable(q_np, docs_np)))
                        if mcpu else None, why))
    colbert, why = import_peer("colbert.modeling.colbert")
    if colbert is not None:
        colbert.ColBERT.try_load_torch_extensions(use_gpu=False)
        lengths = (cu_d[1:] - cu_d[:-1]).long()
        d32, q32 = d.float(), q.float()

        def colbert_packed():
            scores = d32 @ q32.T  # colbert_score_packed: one GEMM, then the segmented max in C++
            return colbert.ColBERT.segmented_maxsim(scores, lengths)

        out.append(Provider("colbert-ai 0.2.22 packed (segmented_maxsim.cpp)", colbert_packed))
    else:
        out.append(Provider("colbert-ai 0.2.22 packed (segmented_maxsim.cpp)", None, why))
    return out


def _gpu_peers(q: torch.Tensor, cu_q: torch.Tensor, d: torch.Tensor, cu_d: torch.Tensor) -> list[Provider]:
    """The Triton peers on packed docs (their documented varlen entry points)."""
    max_d = int((cu_d[1:] - cu_d[:-1]).max())
    out = []
    fm, why = import_peer("flash_maxsim")
    out.append(Provider("flash-maxsim (packed docs)", (lambda: fm.flash_maxsim(q, d, doc_lengths=cu_d)[None])
                        if fm else None, why))
    lik, why = import_peer("late_interaction_kernels")
    if lik is not None and d.numel() >= 2**31:
        # Its varlen kernel indexes the docs with int32 offsets: on the H200, wrong scores (commit 264c894) and an
        # illegal memory access (2026-11-28) that poisons the CUDA context for every later provider.
        lik, why = None, f"skipped: late-interaction-kernels 0.4.5 indexes docs in int32 ({d.numel()} elements >= 2^31)"
    out.append(Provider("late-interaction-kernels maxsim_varlen", (lambda: lik.maxsim_varlen(
        q, d, cu_q, cu_d, int(cu_q[-1]), max_d)) if lik else None, why))
    return out


def train_case(device: torch.device, hidden: int, dtype: torch.dtype) -> Case:
    """All pairs, forward + backward: Nq = Nd = 64, Lq = 32, Ld = 256 (in-batch negatives). The roofline counts
    the forward similarity FLOPs (the argmax backward is a gather, not a GEMM)."""
    n, lq, ld = 64, 32, 256
    q = torch.randn(n, lq, hidden, device=device, dtype=dtype, requires_grad=True)
    d = torch.randn(n, ld, hidden, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(n, n, device=device)

    def fwd_bwd(backend, deterministic=False):
        def run():
            s = m3kernels.maxsim(q, d, normalize=True, deterministic=deterministic, backend=backend)
            gq, gd = torch.autograd.grad(s, (q, d), grad)
            return s.detach(), gq, gd
        return run

    q64, d64 = q.detach().double().requires_grad_(), d.detach().double().requires_grad_()
    s64 = m3kernels.maxsim(q64, d64, normalize=True, backend="reference")
    want = (s64, *torch.autograd.grad(s64, (q64, d64), grad.double()))

    def check(out):
        return max((a.double() - b).abs().max().item() for a, b in zip(out, want, strict=True))

    def peer_fwd_bwd():
        s = peer_einsum_max(q, d, torch.ones(n, ld, dtype=torch.bool, device=device)) / lq
        return (s.detach(), *torch.autograd.grad(s, (q, d), grad))

    providers = [Provider(f"m3k:{b}", fwd_bwd(b)) for b in our_backends("maxsim", device)]
    providers.append(Provider(REFERENCE_ROW, fwd_bwd("reference"), is_reference=True))
    if dtype != torch.float32:
        providers.append(Provider(f"{PEER_ROW} in {str(dtype)[6:]}", peer_fwd_bwd, tolerance=_PEER_TOLERANCE))
    if device.type == "cuda":  # the GPU backward's other dD path: sorted segments instead of float atomics
        providers += [Provider(f"m3k:{b} deterministic", fwd_bwd(b, True)) for b in our_backends("maxsim", device)]
        lik, why = import_peer("late_interaction_kernels")

        def lik_fwd_bwd():
            s = lik.maxsim(q, d) / lq  # its normalize=True means L2-normalising the vectors, not / query length
            return (s.detach(), *torch.autograd.grad(s, (q, d), grad))

        providers.append(Provider("late-interaction-kernels maxsim", lik_fwd_bwd if lik else None, why))
    return Case("maxsim fwd+bwd", f"all-pairs Nq=Nd={n} Lq={lq} Ld={ld} H={hidden} {str(dtype)[6:]}", providers,
                check=check, tolerance=1e-3 if dtype == torch.float32 else 0.5,
                flops=2.0 * n * lq * n * ld * hidden, params={"hidden": hidden, "dtype": str(dtype)})


def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    """The cases one at a time (each built when the previous one is done with: their inputs never coexist)."""
    if device.type == "cpu":
        for h in (128, 1024):
            yield rerank_case(device, h, 1000, (32, 300), torch.float32)
        if not quick:
            yield rerank_case(device, 128, 1000, (32, 300), torch.float32, ragged=False)
            yield rerank_case(device, 128, 1000, (32, 300), torch.float16)  # fp16-stored index
            yield train_case(device, 128, torch.float32)
        return
    yield rerank_case(device, 1024, 10000, (64, 512), torch.float16)  # the targets' shape first
    yield train_case(device, 1024, torch.bfloat16)
    yield rerank_case(device, 128, 10000, (64, 512), torch.float16)
    if not quick:
        yield rerank_case(device, 1024, 10000, (64, 512), torch.float16, ragged=False)
