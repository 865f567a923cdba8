"""The Triton MaxSim kernels (m3kernels/maxsim/triton.py) through the public API against the float64 reference.

Shapes stay tiny so that the file runs in the Triton interpreter on CPU; @pytest.mark.gpu tests add bf16 and
large shapes on a GPU.
"""

import pytest
import torch

import m3kernels
from m3kernels import _arch
from m3kernels.maxsim import ops, reference
from m3kernels.maxsim import triton as triton_maxsim
from tests.helpers import DEVICE, KERNEL_DTYPES, backends, cu_from_lengths, poison_, tol

pytestmark = pytest.mark.skipif("triton" not in backends("maxsim"), reason="triton backend unavailable here")


def packed(lengths: list[int], h: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(sum(lengths), h, device=DEVICE).to(dtype), cu_from_lengths(lengths)


def reference64(q, cu_q, d, cu_d, pairwise, normalize=False):
    """float64 reference scores, differentiable in q and d (float64 leaves returned alongside)."""
    q64 = q.detach().double().requires_grad_()
    d64 = d.detach().double().requires_grad_()
    out = m3kernels.maxsim_varlen(q64, cu_q, d64, cu_d, pairwise=pairwise, normalize=normalize, backend="reference")
    return out, q64, d64


# Query lengths straddle the 16-row query block (1, 7, 40 -> several blocks); doc lengths straddle the 32/64-token
# doc tiles (70), include a 0-length doc and a 1-token doc; 5 docs leave a tail of the backward's 4-doc steps;
# H=33 leaves a masked hidden tail.
Q_LENS = [1, 7, 40]
D_LENS = [5, 0, 70, 1, 3]


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize(("pairwise", "q_lens"), [(False, Q_LENS), (False, [40]), (True, [*Q_LENS, 3, 2])])
@pytest.mark.parametrize("hidden", [1, 33, 160])  # 160: two hidden chunks with a tail
def test_varlen_forward_matches_reference(dtype, pairwise, q_lens, hidden):
    """Several queries run the row-block kernel, one query (and pairwise) the per-pair kernel."""
    q, cu_q = packed(q_lens, hidden, dtype)
    d, cu_d = packed(D_LENS, hidden, dtype)
    got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, pairwise=pairwise, backend="triton")
    want, _, _ = reference64(q, cu_q, d, cu_d, pairwise)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got.double(), want, **tol(dtype))
    assert torch.all((got[1] if pairwise else got[:, 1]) == 0)  # the empty doc scores 0


def test_forward_kernel_choice():
    big = ops.ROW_MAX_BUFFER
    assert not ops.use_row_blocks(1, 32, 10_000, False, False, big)  # rerank: per pair
    assert not ops.use_row_blocks(4, 128, 4, True, True, big)  # pairwise: per pair
    assert ops.use_row_blocks(64, 2048, 64, False, True, big)  # training: row blocks
    assert not ops.use_row_blocks(8, big, 8, False, False, big)  # inference: no large row-max buffer
    assert ops.use_row_blocks(8, big, 8, False, True, big)  # ... unless the argmax has that size anyway


def test_row_block_tiles_per_architecture(monkeypatch):
    """sm_8x keeps the 8-warp row-block tile (4 warps spill there); sm_90 and the interpreter take the swept one."""
    cpu, key = torch.device("cpu"), (1 << 30, 2)
    assert triton_maxsim._rows_configs(cpu) is triton_maxsim._ROWS_CONFIGS
    for arch, warps in ((80, 8), (86, 8), (89, 8), (90, 4)):
        monkeypatch.setattr(_arch, "compute_capability", lambda device, arch=arch: arch)
        table = triton_maxsim._rows_configs(cpu)
        assert table[key][3] == warps
        assert {k: v for k, v in table.items() if k != key} == {
            k: v for k, v in triton_maxsim._ROWS_CONFIGS.items() if k != key}


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_row_block_and_per_pair_kernels_agree(dtype, monkeypatch):
    """The same all-pairs problem through both forward kernels (rows outside every query included)."""
    q = torch.randn(60, 33, device=DEVICE).to(dtype)
    q_off, q_len = torch.tensor([0, 9, 50], dtype=torch.int32), torch.tensor([7, 40, 10], dtype=torch.int32)
    d, cu_d = packed(D_LENS, 33, dtype)
    args = (q, q_off.to(DEVICE), q_len.to(DEVICE), d, cu_d[:-1].contiguous(), (cu_d[1:] - cu_d[:-1]).contiguous())
    rows, arg_rows = triton_maxsim.forward(*args, False, True)
    monkeypatch.setattr(triton_maxsim, "_ROW_MAX_BUFFER", 0)
    pairs, _ = triton_maxsim.forward(*args, False, False)
    torch.testing.assert_close(rows, pairs, rtol=1e-5, atol=1e-5)
    assert (arg_rows[7:9] == -1).all() and (arg_rows[49] == -1).all()  # rows in no query
    assert (arg_rows[:7, [0, 2, 3, 4]] >= 0).all() and (arg_rows[:, 1] == -1).all()  # doc 1 is empty


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("pairwise", [False, True])
def test_padded_masks_and_normalize(dtype, pairwise):
    nq, nd, lq, ld, h = (3, 3, 9, 37, 20) if pairwise else (2, 4, 9, 37, 20)
    q = torch.randn(nq, lq, h, device=DEVICE).to(dtype)
    d = torch.randn(nd, ld, h, device=DEVICE).to(dtype)
    q_mask = torch.rand(nq, lq, device=DEVICE) > 0.3
    q_mask[:, 0] = True
    d_mask = torch.rand(nd, ld, device=DEVICE) > 0.5  # scattered: exercises the prefix gather
    d_mask[-1] = False
    got = m3kernels.maxsim(q, d, q_mask, d_mask, pairwise=pairwise, normalize=True, backend="triton")
    want = reference.maxsim_padded(
        q.double(), d.double(), q_mask, d_mask, pairwise=pairwise, compute_dtype=torch.float64
    )
    count = q_mask.sum(1).double()
    want = want / (count if pairwise else count[:, None])
    torch.testing.assert_close(got.double(), want, **tol(dtype))


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("pairwise", [False, True])
@pytest.mark.parametrize("deterministic", [False, True])
def test_backward_matches_reference_autograd(dtype, pairwise, deterministic):
    q_lens = [*Q_LENS, 2, 9] if pairwise else Q_LENS
    q, cu_q = packed(q_lens, 33, dtype)
    d, cu_d = packed(D_LENS, 33, dtype)
    q.requires_grad_()
    d.requires_grad_()
    got = m3kernels.maxsim_varlen(
        q, cu_q, d, cu_d, pairwise=pairwise, normalize=True, deterministic=deterministic, backend="triton"
    )
    want, q64, d64 = reference64(q, cu_q, d, cu_d, pairwise, normalize=True)
    grad = torch.randn(want.shape, dtype=torch.float64, device=DEVICE)
    got.backward(grad.float())
    want.backward(grad)
    assert q.grad.dtype == dtype and d.grad.dtype == dtype
    torch.testing.assert_close(q.grad.double(), q64.grad, **tol(dtype))
    torch.testing.assert_close(d.grad.double(), d64.grad, **tol(dtype))


@pytest.mark.parametrize("pairwise", [False, True])
def test_deterministic_backward_is_bitwise_reproducible(pairwise):
    # Many query tokens share arg-max doc tokens (short docs), so dD sums several terms per row.
    q_lens = [9, 17, 3] if pairwise else [9, 17]
    q, cu_q = packed(q_lens, 24, torch.float32)
    d, cu_d = packed([2, 3, 1], 24, torch.float32)
    grads = []
    for _ in range(2):
        qg, dg = q.clone().requires_grad_(), d.clone().requires_grad_()
        out = m3kernels.maxsim_varlen(qg, cu_q, dg, cu_d, pairwise=pairwise, deterministic=True, backend="triton")
        out.backward(torch.linspace(-1.0, 2.0, out.numel(), device=DEVICE).reshape(out.shape))
        grads.append((qg.grad, dg.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert grads[0][1].abs().sum() > 0


def test_ties_pick_the_first_doc_token():
    # Doc tokens 5, 40 and 69 (in different 32/64-token tiles) are identical and far closer to the query
    # than the rest, so every query token ties across them: the gradient goes to token 5 only.
    h = 16
    row = torch.randn(h, device=DEVICE)
    d = 0.01 * torch.randn(70, h, device=DEVICE)
    d[[5, 40, 69]] = row
    d.requires_grad_()
    q = (row + 0.1 * torch.randn(3, h, device=DEVICE)).requires_grad_()
    cu_q, cu_d = cu_from_lengths([3]), cu_from_lengths([70])
    m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="triton").sum().backward()
    torch.testing.assert_close(d.grad[5], q.detach().sum(0))
    assert torch.count_nonzero(d.grad.abs().sum(1)) == 1


def test_nan_input_is_reported():
    q, cu_q = packed([4], 16, torch.float32)
    d, cu_d = packed([3, 5], 16, torch.float32)
    d[6, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="triton")


@pytest.mark.parametrize("deterministic", [False, True])
def test_outputs_do_not_depend_on_allocator_contents(monkeypatch, deterministic):
    """Every torch.empty the backend allocates starts poisoned (NaN / huge ints): unwritten slots would show."""
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
    q, cu_q = packed(Q_LENS, 33, torch.float16)
    d, cu_d = packed(D_LENS, 33, torch.float16)
    q.requires_grad_()
    d.requires_grad_()
    got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, deterministic=deterministic, backend="triton")
    got.backward(torch.ones_like(got))
    monkeypatch.undo()
    want, _, d64 = reference64(q, cu_q, d, cu_d, False)
    want.backward(torch.ones_like(want))
    torch.testing.assert_close(got.double(), want, **tol(torch.float16))
    torch.testing.assert_close(d.grad.double(), d64.grad, **tol(torch.float16))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_gpu_rerank_10k_docs(dtype):
    """BGE-M3 reranking shape: 1 query of 32 tokens against 10k docs of 64..512 tokens, H=1024."""
    d_lens = torch.randint(64, 513, (10_000,)).tolist()
    q, cu_q = packed([32], 1024, dtype)
    d, cu_d = packed(d_lens, 1024, dtype)
    got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="triton")
    want = torch.cat(
        [
            m3kernels.maxsim_varlen(
                q.float(), cu_q, d[cu_d[s] : cu_d[s + 1000]].float(), cu_d[s : s + 1001] - cu_d[s], backend="reference"
            )
            for s in range(0, 10_000, 1000)
        ],
        dim=1,
    )
    torch.testing.assert_close(got, want, **tol(dtype))


def untied(lengths: list[int], h: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Small-integer vectors whose last coordinate is a distinct multiple of 1/256 per doc token (docs of at
    most 256 tokens): with a query's last coordinate 1, similarities are exact in every dtype and never tie,
    so the kernel and the float64 reference pick the same arg-max even at H=1024."""
    x, cu = packed(lengths, h, torch.float32)
    x = torch.randint(-2, 3, x.shape, device=DEVICE).float()
    local = torch.arange(x.shape[0], device=DEVICE) - torch.repeat_interleave(
        cu[:-1].long(), torch.tensor(lengths, device=DEVICE)
    )
    x[:, -1] = (local * 97 % 256).float() / 256
    return x.to(dtype), cu


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_gpu_training_backward(dtype):
    """In-batch all-pairs scoring (64 x 64 texts, H=1024): gradients and deterministic reproducibility."""
    q, cu_q = untied(torch.randint(1, 65, (64,)).tolist(), 1024, dtype)
    q[:, -1] = 1.0
    d, cu_d = untied(torch.randint(1, 257, (64,)).tolist(), 1024, dtype)
    grads = []
    for deterministic in (False, True, True):
        qg, dg = q.clone().requires_grad_(), d.clone().requires_grad_()
        out = m3kernels.maxsim_varlen(qg, cu_q, dg, cu_d, deterministic=deterministic, backend="triton")
        out.backward(torch.ones_like(out))
        grads.append((qg.grad, dg.grad))
    want, q64, d64 = reference64(q, cu_q, d, cu_d, False)
    want.backward(torch.ones_like(want))
    for dq, dd in grads:
        torch.testing.assert_close(dq.double(), q64.grad, **tol(dtype))
        torch.testing.assert_close(dd.double(), d64.grad, **tol(dtype))
    assert torch.equal(grads[1][0], grads[2][0]) and torch.equal(grads[1][1], grads[2][1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("n_queries", [1, 4])  # the per-pair and the row-block kernel
def test_gpu_forward_is_cuda_graph_capturable(n_queries):
    q, cu_q = packed([32] * n_queries, 1024, torch.float16)
    d, cu_d = packed(torch.randint(64, 513, (256,)).tolist(), 1024, torch.float16)
    eager = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="triton")  # compiles outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="triton")
    d.mul_(-1.0)
    graph.replay()
    torch.testing.assert_close(captured, m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="triton"))
    assert not torch.equal(captured, eager)
