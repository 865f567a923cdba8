"""attention_varlen(backend="triton") against the float64 reference: forward and gradients, ragged lengths
(0 and 1 tokens, tails of every tile), head_dim 32/64/128 and padded ones. fp32 must match the float64 result
to tol(fp32); fp16/bf16 follow the FlashAttention rule: the kernel's error is at most twice that of the same
computation done by PyTorch in that precision, plus a small atol. Without a GPU the kernels run in the Triton
interpreter on small shapes; the gpu-marked tests add bf16-sized and 8192-token shapes on CUDA."""

from __future__ import annotations

import pytest
import torch

import m3kernels
from m3kernels import _arch
from tests.helpers import DEVICE, KERNEL_DTYPES, backends, cu_from_lengths, tol

pytestmark = pytest.mark.skipif(
    "triton" not in backends("attention_varlen"), reason="the triton backend of attention_varlen is unavailable"
)

# FlashAttention rule slack: err(kernel) <= 2 * err(torch in the same dtype) + FA_ATOL[dtype].
FA_ATOL = {torch.float16: 1e-4, torch.bfloat16: 1e-3}
# Tiles small enough that a few dozen tokens cover several query/key tiles and their tails.
SMALL = (16, 16, 4, 1)


@pytest.fixture(autouse=True)
def _poison_empty(monkeypatch):
    """The kernels write into torch.empty / empty_like buffers: fill those with NaN so an unwritten element
    (a missed tail row, a skipped sequence) fails the comparison instead of passing on stale zeros."""

    def poisoned(alloc):
        def wrapper(*args, **kwargs):
            t = alloc(*args, **kwargs)
            return t.fill_(float("nan")) if t.is_floating_point() else t

        return wrapper

    monkeypatch.setattr(torch, "empty", poisoned(torch.empty))
    monkeypatch.setattr(torch, "empty_like", poisoned(torch.empty_like))


@pytest.fixture
def small_tiles(monkeypatch):
    from m3kernels.attention import triton as kernels

    tiles = kernels.Tiles(*SMALL)
    for table in (kernels.CONFIGS, kernels.FP32_CONFIGS):
        for block_d in table:
            monkeypatch.setitem(table, block_d, kernels.Configs(tiles, tiles, tiles))
    monkeypatch.setattr(kernels, "AMPERE_OVERRIDES", {})  # on an sm_8x GPU too


def _nan_tailed(x):
    """x as a contiguous view into a buffer that continues with NaN: a read past the end poisons the result."""
    buf = torch.full((x.numel() + 256,), float("nan"), dtype=x.dtype, device=x.device)
    buf[: x.numel()] = x.flatten()
    return buf[: x.numel()].view(x.shape)


def _inputs(lengths, heads, head_dim, dtype, q_gain=1.0):
    total = sum(lengths)
    q, k, v, grad = (torch.randn(total, heads, head_dim, dtype=torch.float64, device=DEVICE) for _ in range(4))
    return (*(_nan_tailed(x.to(dtype)) for x in (q * q_gain, k, v, grad)), cu_from_lengths(lengths))


def _run(backend, q, k, v, grad, cu, max_seqlen, dtype, scale=None):
    """Output and (dq, dk, dv) of attention_varlen on copies of q, k, v cast to dtype."""
    leaves = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
    out = m3kernels.attention_varlen(*leaves, cu, max_seqlen, scale=scale, backend=backend)
    grads = torch.autograd.grad(out, leaves, grad.to(dtype)) if out.numel() else [x.detach() for x in leaves]
    return [out.detach(), *grads]


def _check(lengths, heads, head_dim, dtype, *, max_seqlen=None, q_gain=1.0, scale=None):
    """Forward and the three gradients of the triton backend against the float64 reference."""
    max_seqlen = max(lengths) if max_seqlen is None else max_seqlen
    q, k, v, grad, cu = _inputs(lengths, heads, head_dim, dtype, q_gain)
    got = _run("triton", q, k, v, grad, cu, max_seqlen, dtype, scale)
    exact = _run("reference", q, k, v, grad, cu, max_seqlen, torch.float64, scale)
    same_precision = _run("reference", q, k, v, grad, cu, max_seqlen, dtype, scale) if dtype != torch.float32 else None
    for i, name in enumerate(("out", "dq", "dk", "dv")):
        assert got[i].dtype == dtype and got[i].shape == q.shape, name
        assert torch.isfinite(got[i]).all(), f"{name} has non-finite values (unwritten rows?)"
        if same_precision is None:
            torch.testing.assert_close(got[i].double(), exact[i], **tol(dtype), msg=name)
            continue
        err = (got[i].double() - exact[i]).abs().max().item()
        ref_err = (same_precision[i].double() - exact[i]).abs().max().item()
        assert err <= 2 * ref_err + FA_ATOL[dtype], (
            f"{name}: kernel error {err:.3g} > 2 x {dtype} torch error {ref_err:.3g} + {FA_ATOL[dtype]}"
        )


@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_ragged_lengths(dtype, head_dim):
    # 1- and 0-token sequences, lengths below, at and across the 16-row tiles with tails.
    _check([1, 0, 7, 33, 16, 40], heads=2, head_dim=head_dim, dtype=dtype)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [64, 128])
def test_default_tiles(dtype, head_dim):
    # The shipped tile tables (16-bit and fp32): a 150-token sequence spans several query and key tiles with tails.
    _check([3, 150, 0, 1], heads=2, head_dim=head_dim, dtype=dtype)


@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize("head_dim", [8, 48, 80])
def test_padded_head_dim(head_dim):
    # head_dim below 16 or not a power of two: padded, masked columns (the last sequence fills whole tiles,
    # so an unmasked column read runs into the NaN past the end of the inputs).
    _check([5, 21, 16], heads=1, head_dim=head_dim, dtype=torch.float32)


@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_peaked_scores_and_custom_scale(dtype):
    # Large logits move the running max between key tiles (online-softmax rescaling); explicit scale.
    _check([45, 2], heads=2, head_dim=32, dtype=dtype, q_gain=4.0, scale=0.3)


# The padded key rows of a dK/dV tail tile overflow (exp(-lse)) and are discarded, never stored.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_extreme_logits(dtype):
    # Logits near -113 in the first two sequences: lse is far below 0 and exp(-lse) overflows fp32, which the
    # masked tail keys must survive. In the third, the first key tile scores +113 and the others -113: the
    # running max must not drop between tiles (the rescale factor would overflow).
    lengths = [20, 3, 40]
    q, k, v, grad, cu = _inputs(lengths, heads=1, head_dim=32, dtype=torch.float32)
    k = 1 + 0.05 * k
    k[23:39] *= -1
    q, k = torch.full_like(q, -20.0).to(dtype), k.to(dtype)
    exact = _run("reference", q, k, v.to(dtype), grad, cu, max(lengths), torch.float64)
    got = _run("triton", q, k, v.to(dtype), grad, cu, max(lengths), dtype)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, exact, strict=True):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a.double(), b, **tol(dtype), msg=name)


@pytest.mark.usefixtures("small_tiles")
def test_max_seqlen_above_longest_and_empty_sequences():
    # Extra query blocks past every sequence's end exit without writing; leading/trailing empty sequences.
    _check([0, 0, 5, 0], heads=3, head_dim=32, dtype=torch.float32, max_seqlen=70)


@pytest.mark.usefixtures("small_tiles")
def test_strided_cu_seqlens():
    # A non-contiguous int32 cu_seqlens view must reach the kernels as a contiguous tensor (they read it with
    # stride 1): forward and backward against the same call with a contiguous copy.
    q, k, v, grad, _ = _inputs([5, 20], heads=2, head_dim=32, dtype=torch.float32)
    strided = torch.tensor([0, 99, 5, 99, 25], dtype=torch.int32, device=DEVICE)[::2]
    outs = []
    for cu in (strided, strided.contiguous()):
        leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        out = m3kernels.attention_varlen(*leaves, cu, 20, backend="triton")
        outs.append((out, *torch.autograd.grad(out, leaves, grad)))
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cu", [[0, -5, 20], [0, 30, 20], [3, 10, 20], [0, 12, 7, 20], [0, 10, 99]])
def test_bad_offsets_raise_after_a_clamped_launch(cu):
    # The values of cu_seqlens are read after the launch: the kernels clamp the offsets they read (negative, past
    # the end, decreasing), so bad ones end in a ValueError naming cu_seqlens, never an out-of-bounds access.
    x = torch.randn(20, 2, 32, device=DEVICE)
    with pytest.raises(ValueError, match=r"cu_seqlens\[|cu_seqlens must be non-decreasing"):
        m3kernels.attention_varlen(x, x, x, torch.tensor(cu, dtype=torch.int32, device=DEVICE), 99, backend="triton")


def test_no_tokens():
    q = torch.randn(0, 2, 64, device=DEVICE, requires_grad=True)
    out = m3kernels.attention_varlen(q, q, q, cu_from_lengths([0, 0]), 0, backend="triton")
    assert out.shape == (0, 2, 64)
    out.sum().backward()
    assert q.grad.shape == (0, 2, 64)


@pytest.mark.usefixtures("small_tiles")
def test_lse_and_determinism():
    # The saved logsumexp (backend contract: natural log, fp32 [heads, T]) and bitwise-repeatable gradients.
    from m3kernels.attention import triton as kernels

    lengths, scale = [9, 1, 30], 0.2
    q, k, v, grad, cu = _inputs(lengths, heads=2, head_dim=32, dtype=torch.float32)
    _, lse = kernels.op(q, k, v, cu, max(lengths), scale)
    expected = torch.cat(
        [
            torch.logsumexp(scale * torch.einsum("ihd,jhd->hij", q[a:b].double(), k[a:b].double()), dim=-1)
            for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)
        ],
        dim=1,
    )
    torch.testing.assert_close(lse.double(), expected, atol=1e-5, rtol=1e-5)
    first = _run("triton", q, k, v, grad, cu, max(lengths), torch.float32)
    second = _run("triton", q, k, v, grad, cu, max(lengths), torch.float32)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_head_dim_limit():
    q = torch.randn(4, 1, 136, device=DEVICE)
    with pytest.raises(ValueError, match="head_dim <= 128"):
        m3kernels.attention_varlen(q, q, q, cu_from_lengths([4]), 4, backend="triton")


gpu = pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_8192_tokens(dtype):
    _check([8192], heads=4, head_dim=64, dtype=dtype)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_batch_of_texts(dtype):
    lengths = torch.randint(64, 2049, (32,)).tolist()
    _check(lengths, heads=4, head_dim=64, dtype=dtype)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("head_dim", [32, 128])
def test_gpu_head_dims_fp32(head_dim):
    # fp32 stays IEEE (no TF32) on the GPU: it must meet the float32 tolerance.
    _check([1, 300, 77, 1024], heads=2, head_dim=head_dim, dtype=torch.float32)


@pytest.mark.gpu
@gpu
def test_gpu_more_than_2_31_elements():
    """total * heads * head_dim > 2^31 (1025 texts of 1024 tokens, 16 x 128): the last text lies past element
    2^31, so any int32 global offset (delta / lse rows, sequence starts) would read or write the wrong rows. Its
    outputs and gradients must equal those of the same text run alone (same tiles, same code path)."""
    from m3kernels.attention import triton as kernels

    heads, head_dim, seq = 16, 128, 1024
    n_seq = 2**31 // (seq * heads * head_dim) + 1
    cu = torch.arange(n_seq + 1, dtype=torch.int32, device=DEVICE) * seq
    q, k, v, dout = (torch.randn(n_seq * seq, heads, head_dim, dtype=torch.float16, device=DEVICE) for _ in range(4))
    scale = head_dim**-0.5
    out, lse = kernels.forward(q, k, v, cu, seq, scale)
    grads = kernels.backward(dout, q, k, v, out, lse, cu, seq, scale)
    last = slice((n_seq - 1) * seq, None)
    one = cu[:2]
    out1, lse1 = kernels.forward(q[last], k[last], v[last], one, seq, scale)
    grads1 = kernels.backward(dout[last], q[last], k[last], v[last], out1, lse1, one, seq, scale)
    torch.testing.assert_close(out[last], out1)
    torch.testing.assert_close(lse[:, last], lse1)
    for g, g1 in zip(grads, grads1, strict=True):
        torch.testing.assert_close(g[last], g1)


def test_tiles_per_architecture(monkeypatch):
    """sm_8x takes the spill-free head_dim-128 backward tiles; sm_90 and the interpreter the default table."""
    from m3kernels.attention import triton as kernels

    cpu = torch.device("cpu")
    assert kernels._tiles("dq", 128, torch.float16, cpu) == kernels.CONFIGS[128].dq
    ampere = kernels.AMPERE_OVERRIDES[128]
    for arch, want in ((80, ampere), (89, ampere), (90, kernels.CONFIGS[128]._asdict())):
        monkeypatch.setattr(_arch, "compute_capability", lambda device, arch=arch: arch)
        assert kernels._tiles("dkdv", 128, torch.bfloat16, cpu) == want["dkdv"]
        assert kernels._tiles("dq", 128, torch.float16, cpu) == want["dq"]
        assert kernels._tiles("fwd", 128, torch.float16, cpu) == kernels.CONFIGS[128].fwd  # not overridden
        assert kernels._tiles("fwd", 64, torch.float16, cpu) == kernels.CONFIGS[64].fwd
        assert kernels._tiles("dq", 128, torch.float32, cpu) == kernels.FP32_CONFIGS[128].dq


@pytest.mark.parametrize("dtype", [d for d in KERNEL_DTYPES if d != torch.float32], ids=str)
def test_ampere_tiles(monkeypatch, dtype):
    """The sm_8x head_dim-128 backward tiles give the reference gradients (interpreter: their shapes, not speed)."""
    monkeypatch.setattr(_arch, "compute_capability", lambda device: 80)
    _check([3, 70, 1], heads=1, head_dim=128, dtype=dtype)


@pytest.mark.gpu
@gpu
def test_gpu_forward_is_cuda_graph_capturable():
    """Fixed tiles, no host reads while capturing (the data checks are off then): the forward replays in a CUDA
    graph, and the replay follows the inputs' new values."""
    lengths = [1, 300, 77, 1024]
    q, k, v, _, cu = _inputs(lengths, 16, 64, torch.float16)
    q, k, v = (x.contiguous() for x in (q, k, v))
    eager = m3kernels.attention_varlen(q, k, v, cu, max(lengths), backend="triton")  # compiles outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = m3kernels.attention_varlen(q, k, v, cu, max(lengths), backend="triton")
    v.mul_(-1.0)
    graph.replay()
    torch.testing.assert_close(captured, m3kernels.attention_varlen(q, k, v, cu, max(lengths), backend="triton"))
    torch.testing.assert_close(captured, -eager)
