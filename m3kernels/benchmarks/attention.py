"""Varlen attention benchmark cases: one long text and a batch of mixed lengths (16 heads of 64, BGE-M3)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import m3kernels
from m3kernels.benchmarks.common import GRAPH_SUFFIX, TRUSTED_SUFFIX, graph_replay, import_peer, our_backends, trusted
from m3kernels.benchmarks.harness import Case, Provider

HEADS, HEAD_DIM = 16, 64


class PaddedBatch:
    """The padded formulation's inputs, built once (a padded pipeline holds its batch padded already): packed
    [T, heads, D] tensors as [B, heads, Lmax, D] and the key padding mask [B, Lmax]; SDPA cannot use its flash
    kernel with a mask."""

    def __init__(self, lengths: list[int], device: torch.device) -> None:
        self.shape = (len(lengths), max(lengths), HEADS, HEAD_DIM)
        self.mask = torch.arange(self.shape[1], device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(self.shape)
        out[self.mask] = x.detach()
        return out.transpose(1, 2).contiguous().requires_grad_(x.requires_grad)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)[self.mask]

    def sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask[:, None, None, :])


def unpadded_sdpa(q, k, v, lengths: list[int]) -> torch.Tensor:
    """One SDPA call per text on unpadded tensors (SDPA picks its backend)."""
    out, start = [], 0
    for n in lengths:
        x = [t[start : start + n].transpose(0, 1)[None] for t in (q, k, v)]
        out.append(F.scaled_dot_product_attention(*x)[0].transpose(0, 1))
        start += n
    return torch.cat(out)


def flash_sdpa(q, k, v, lengths: list[int]) -> torch.Tensor:
    """unpadded_sdpa pinned to SDPA's flash backend (CUDA, fp16 / bf16): the issue's attention baseline."""
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        return unpadded_sdpa(q, k, v, lengths)


def case(device: torch.device, lengths: list[int], dtype: torch.dtype, label: str) -> Case:
    total = sum(lengths)
    q, k, v = (torch.randn(total, HEADS, HEAD_DIM, device=device, dtype=dtype) for _ in range(3))
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    cu = cu.to(device)
    truth = unpadded_sdpa(q.float(), k.float(), v.float(), lengths)
    providers = [Provider(f"m3k:{b}", lambda b=b: m3kernels.attention_varlen(q, k, v, cu, max(lengths), backend=b))
                 for b in our_backends("attention_varlen", device)]
    if "triton" in our_backends("attention_varlen", device):
        providers.append(Provider(f"m3k:triton{GRAPH_SUFFIX}", graph_replay(
            lambda: m3kernels.attention_varlen(q, k, v, cu, max(lengths), backend="triton"))))
    if device.type == "cuda":
        providers += [Provider(f"m3k:{b}{TRUSTED_SUFFIX}", trusted(
            lambda b=b: m3kernels.attention_varlen(q, k, v, cu, max(lengths), backend=b)))
            for b in our_backends("attention_varlen", device)]
    batch = PaddedBatch(lengths, device)
    padded = [batch.pad(x) for x in (q, k, v)]
    providers.append(Provider("SDPA padded batch + key padding mask", lambda: batch.sdpa(*padded), unpack=batch.unpad,
                              is_reference=True))
    providers.append(Provider("SDPA per text, unpadded", lambda: unpadded_sdpa(q, k, v, lengths)))
    if device.type == "cuda":
        providers.append(Provider("SDPA flash backend per text, unpadded", lambda: flash_sdpa(q, k, v, lengths)))
        fa, why = import_peer("flash_attn")
        providers.append(Provider("flash-attn varlen", (lambda: fa.flash_attn_varlen_func(
            q, k, v, cu, cu, max(lengths), max(lengths))) if fa else None, why))
    flops = sum(4.0 * n * n * HEADS * HEAD_DIM for n in lengths)
    return Case("attention_varlen", f"{label} heads={HEADS} d={HEAD_DIM} {str(dtype)[6:]}", providers,
                check=lambda out: (out.float() - truth).abs().max().item(),
                tolerance=1e-4 if dtype == torch.float32 else 2e-2, flops=flops, params={"lengths": len(lengths)})


def backward_case(device: torch.device, lengths: list[int], dtype: torch.dtype, label: str) -> Case:
    """Forward + backward (gradients of q, k, v for a random output gradient)."""
    total = sum(lengths)
    q, k, v = (torch.randn(total, HEADS, HEAD_DIM, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(total, HEADS, HEAD_DIM, device=device, dtype=dtype)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    cu = cu.to(device)

    def fwd_bwd(fn):
        def run():
            out = fn(q, k, v)
            return (out.detach(), *torch.autograd.grad(out, (q, k, v), grad))
        return run

    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = unpadded_sdpa(q64, k64, v64, lengths)
    truth = (ref.detach(), *torch.autograd.grad(ref, (q64, k64, v64), grad.double()))
    providers = [Provider(f"m3k:{b}", fwd_bwd(lambda q, k, v, b=b: m3kernels.attention_varlen(
        q, k, v, cu, max(lengths), backend=b))) for b in our_backends("attention_varlen", device)]
    batch = PaddedBatch(lengths, device)
    padded = [batch.pad(x) for x in (q, k, v)]
    padded_grad = batch.pad(grad)

    def padded_fwd_bwd():
        out = batch.sdpa(*padded)
        return (out.detach(), *torch.autograd.grad(out, padded, padded_grad))

    providers.append(Provider("SDPA padded batch + key padding mask", padded_fwd_bwd,
                              unpack=lambda out: [batch.unpad(x) for x in out], is_reference=True))
    providers.append(Provider("SDPA per text, unpadded", fwd_bwd(lambda q, k, v: unpadded_sdpa(q, k, v, lengths))))
    flops = sum(4.0 * n * n * HEADS * HEAD_DIM for n in lengths) * 3.5  # backward ~2.5x the forward
    return Case("attention_varlen fwd+bwd", f"{label} heads={HEADS} d={HEAD_DIM} {str(dtype)[6:]}", providers,
                check=lambda out: max((a.double() - b).abs().max().item() for a, b in zip(out, truth, strict=True)),
                tolerance=1e-3 if dtype == torch.float32 else 5e-2, flops=flops, params={"lengths": len(lengths)})


def cases(device: torch.device, quick: bool) -> Iterator[Case]:
    """The cases one at a time (each built when the previous one is done with: their inputs never coexist)."""
    g = torch.Generator().manual_seed(0)
    if device.type == "cpu":
        mixed = torch.randint(64, 1025, (16,), generator=g).tolist()
        yield case(device, [512], torch.float32, "1 text x 512")
        yield case(device, mixed, torch.float32, "16 texts U[64,1024]")
        if not quick:
            yield case(device, [2048], torch.float32, "1 text x 2048")
            yield case(device, [8192], torch.float32, "1 text x 8192")
            yield backward_case(device, mixed[:8], torch.float32, "8 texts U[64,1024]")
        return
    mixed = torch.randint(64, 2049, (32,), generator=g).tolist()
    for n in [512, 2048, 8192] if not quick else [8192]:
        yield case(device, [n], torch.float16, f"1 text x {n}")
    yield case(device, mixed, torch.float16, "32 texts U[64,2048]")
    yield backward_case(device, mixed, torch.float16, "32 texts U[64,2048]")
