"""maxsim / maxsim_varlen: every kernel backend against the float64 reference."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import m3kernels
from m3kernels import _backend
from m3kernels.maxsim import reference
from tests.helpers import ALL_DTYPES, DEVICE, backends, cu_from_lengths, fast_backends, poison_allocations, tol

BACKENDS = fast_backends("maxsim")


def ragged_mask(n: int, length: int, *, prefix: bool = True, empty: tuple[int, ...] = ()) -> torch.Tensor:
    if prefix:
        lens = torch.randint(1, length + 1, (n,))
        mask = torch.arange(length)[None, :] < lens[:, None]
    else:
        mask = torch.rand(n, length) > 0.4
        mask[:, 0] = True
    for i in empty:
        mask[i] = False
    return mask.to(DEVICE)


def ref64(q, d, q_mask, d_mask, pairwise):
    qm = q_mask if q_mask is not None else torch.ones(q.shape[:2], dtype=torch.bool, device=q.device)
    dm = d_mask if d_mask is not None else torch.ones(d.shape[:2], dtype=torch.bool, device=d.device)
    return reference.maxsim_padded(q.double(), d.double(), qm, dm, pairwise=pairwise, compute_dtype=torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("pairwise", [False, True])
@pytest.mark.parametrize("hidden", [1, 7, 33, 128])
@pytest.mark.parametrize("mask_kind", ["none", "prefix", "scattered"])
def test_padded_matches_reference(backend, dtype, pairwise, hidden, mask_kind):
    nq, nd = (5, 5) if pairwise else (3, 7)
    q = torch.randn(nq, 9, hidden, device=DEVICE).to(dtype)
    d = torch.randn(nd, 37, hidden, device=DEVICE).to(dtype)
    q_mask = d_mask = None
    if mask_kind != "none":
        q_mask = ragged_mask(nq, 9, prefix=mask_kind == "prefix")
        d_mask = ragged_mask(nd, 37, prefix=mask_kind == "prefix", empty=(2,))
    got = m3kernels.maxsim(q, d, q_mask, d_mask, pairwise=pairwise, backend=backend)
    want = ref64(q, d, q_mask, d_mask, pairwise)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got.double(), want, **tol(dtype))
    if mask_kind != "none":  # the empty doc scores 0 for every query
        assert torch.all(got[2] == 0) if pairwise else torch.all(got[:, 2] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pairwise", [False, True])
def test_normalize_divides_by_valid_query_tokens(backend, pairwise):
    q, d = torch.randn(4, 6, 16, device=DEVICE), torch.randn(4, 10, 16, device=DEVICE)
    q_mask = ragged_mask(4, 6)
    raw = m3kernels.maxsim(q, d, q_mask, pairwise=pairwise, backend=backend)
    norm = m3kernels.maxsim(q, d, q_mask, pairwise=pairwise, normalize=True, backend=backend)
    count = q_mask.sum(1).float()
    torch.testing.assert_close(norm, raw / (count if pairwise else count[:, None]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("pairwise", [False, True])
def test_varlen_matches_padded_reference(backend, dtype, pairwise):
    q_lens = [1, 7, 33] if not pairwise else [1, 7, 33, 2]
    d_lens = [5, 0, 127, 1] if pairwise else [5, 0, 127, 1, 64]
    h = 40
    q = torch.randn(sum(q_lens), h, device=DEVICE).to(dtype)
    d = torch.randn(sum(d_lens), h, device=DEVICE).to(dtype)
    cu_q, cu_d = cu_from_lengths(q_lens), cu_from_lengths(d_lens)
    got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, pairwise=pairwise, backend=backend)
    want = m3kernels.maxsim_varlen(q.double(), cu_q, d.double(), cu_d, pairwise=pairwise, backend="reference")
    torch.testing.assert_close(got.double(), want, **tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    q = torch.randn(16, 3, 5, device=DEVICE).transpose(0, 2)  # [5, 3, 16], non-contiguous
    d = torch.randn(32, 9, 4, device=DEVICE)[::2].permute(2, 1, 0)  # [4, 9, 16]
    assert not q.is_contiguous() and not d.is_contiguous()
    got = m3kernels.maxsim(q, d, backend=backend)
    torch.testing.assert_close(got.double(), ref64(q, d, None, None, False), **tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pairwise", [False, True])
@pytest.mark.parametrize("deterministic", [False, True])
def test_gradients_match_reference(backend, pairwise, deterministic):
    nq, nd = (4, 4) if pairwise else (3, 5)
    q = torch.randn(nq, 7, 24, device=DEVICE, requires_grad=True)
    d = torch.randn(nd, 19, 24, device=DEVICE, requires_grad=True)
    q_mask, d_mask = ragged_mask(nq, 7), ragged_mask(nd, 19, prefix=False, empty=(1,))
    out = m3kernels.maxsim(
        q, d, q_mask, d_mask, pairwise=pairwise, normalize=True, deterministic=deterministic, backend=backend
    )
    grad = torch.randn_like(out)
    gq, gd = torch.autograd.grad(out, (q, d), grad)
    q64, d64 = q.detach().double().requires_grad_(), d.detach().double().requires_grad_()
    ref = m3kernels.maxsim(q64, d64, q_mask, d_mask, pairwise=pairwise, normalize=True, backend="reference")
    rq, rd = torch.autograd.grad(ref, (q64, d64), grad.double())
    torch.testing.assert_close(gq.double(), rq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gd.double(), rd, atol=1e-5, rtol=1e-5)
    if deterministic:
        again = torch.autograd.grad(
            m3kernels.maxsim(
                q, d, q_mask, d_mask, pairwise=pairwise, normalize=True, deterministic=True, backend=backend
            ),
            (q, d),
            grad,
        )
        assert torch.equal(again[0], gq) and torch.equal(again[1], gd)


def test_reference_gradcheck_float64():
    q = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    d = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    d_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda a, b: m3kernels.maxsim(a, b, None, d_mask, normalize=True, backend="reference"), (q, d)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_and_all_negative_similarities(backend):
    # Every similarity negative: the max is negative (no clamping at 0, unlike PyLate / colbert-ai).
    q = torch.ones(1, 2, 4, device=DEVICE)
    d = -torch.rand(1, 5, 4, device=DEVICE) - 0.1
    torch.testing.assert_close(m3kernels.maxsim(q, d, backend=backend).double(), ref64(q, d, None, None, False))
    # Two identical doc tokens: the gradient goes to the first one only.
    d = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [2.0, 0.0]]], device=DEVICE, requires_grad=True)
    q = torch.tensor([[[1.0, 0.0]]], device=DEVICE)
    (g,) = torch.autograd.grad(m3kernels.maxsim(q, d, backend=backend).sum(), (d,))
    assert g[0, :, 0].tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("backend", ["reference", "auto"])  # auto: float64 runs on the reference
def test_reference_gradient_goes_to_the_first_max(backend):
    """The oracle's gradient follows the kernels' saved arg-max: the first of tied maxima takes it all."""
    d = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [2.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]], dtype=torch.float64)
    for pairwise in (False, True):
        (g,) = torch.autograd.grad(m3kernels.maxsim(q, d, pairwise=pairwise, backend=backend).sum(), (d,))
        assert g[0, :, 0].tolist() == [0.0, 1.5, 0.0]


@pytest.mark.parametrize("backend", [*BACKENDS, "reference"])
def test_gradients_without_doc_tokens_are_zero(backend):
    """No doc tokens at all (every doc empty, or no rows): scores 0 and zero gradients, from the reference too."""
    q = torch.randn(2, 3, 4, device=DEVICE, requires_grad=True)
    d = torch.randn(2, 5, 4, device=DEVICE, requires_grad=True)
    out = m3kernels.maxsim(q, d, d_mask=torch.zeros(2, 5, dtype=torch.bool, device=DEVICE), backend=backend)
    gq, gd = torch.autograd.grad(out.sum(), (q, d))
    assert out.tolist() == [[0.0, 0.0], [0.0, 0.0]] and not gq.any() and not gd.any()
    q = torch.randn(4, 4, device=DEVICE, requires_grad=True)
    d = torch.randn(0, 4, device=DEVICE, requires_grad=True)
    cu_q, cu_d = cu_from_lengths([4]), cu_from_lengths([0, 0])
    out = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend=backend)
    gq, gd = torch.autograd.grad(out.sum(), (q, d))
    assert out.tolist() == [[0.0, 0.0]] and not gq.any() and gd.shape == (0, 4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pairwise", [False, True])
def test_normalize_with_an_empty_query_gives_zero(backend, pairwise):
    """normalize divides by max(valid query tokens, 1): an empty query scores 0, not NaN."""
    q, d = torch.randn(6, 16, device=DEVICE), torch.randn(9, 16, device=DEVICE)
    cu_q, cu_d = cu_from_lengths([0, 6]), cu_from_lengths([4, 5])
    got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, pairwise=pairwise, normalize=True, backend=backend)
    want = m3kernels.maxsim_varlen(q.double(), cu_q, d.double(), cu_d, pairwise=pairwise, normalize=True,
                                   backend="reference")
    assert not got[0].any()
    torch.testing.assert_close(got.double(), want, **tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_varlen_strided_inputs_and_int64_offsets(backend):
    """Strided q / d rows (every other column of a wider tensor) and int64 cu_seqlens, forward and gradients."""
    q_wide = torch.randn(7, 48, device=DEVICE, requires_grad=True)
    d_wide = torch.randn(40, 48, device=DEVICE, requires_grad=True)
    q, d = q_wide[:, ::2], d_wide[:, 1::2]
    assert not q.is_contiguous() and not d.is_contiguous()
    cu_q, cu_d = cu_from_lengths([3, 4]).long(), cu_from_lengths([1, 0, 33, 6]).long()
    got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend=backend)
    grad = torch.randn_like(got)
    gq, gd = torch.autograd.grad(got, (q_wide, d_wide), grad)
    q64, d64 = q.detach().double().requires_grad_(), d.detach().double().requires_grad_()
    want = m3kernels.maxsim_varlen(q64, cu_q, d64, cu_d, backend="reference")
    rq, rd = torch.autograd.grad(want, (q64, d64), grad.double())
    torch.testing.assert_close(got.double(), want, **tol(torch.float32))
    torch.testing.assert_close(gq[:, ::2].double(), rq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gd[:, 1::2].double(), rd, atol=1e-5, rtol=1e-5)
    assert not gq[:, 1::2].any() and not gd[:, ::2].any()


@settings(deadline=None)
@given(
    q_lens=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    d_lens=st.lists(st.integers(0, 70), min_size=1, max_size=5),
    hidden=st.integers(1, 70),
    pairwise=st.booleans(),
)
def test_fuzz_varlen_shapes(q_lens, d_lens, hidden, pairwise):
    if pairwise:
        d_lens = (d_lens * len(q_lens))[: len(q_lens)]
    q = torch.randn(sum(q_lens), hidden, device=DEVICE)
    d = torch.randn(sum(d_lens), hidden, device=DEVICE)
    cu_q, cu_d = cu_from_lengths(q_lens), cu_from_lengths(d_lens)
    want = m3kernels.maxsim_varlen(q.double(), cu_q, d.double(), cu_d, pairwise=pairwise, backend="reference")
    for backend in BACKENDS:
        got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, pairwise=pairwise, backend=backend)
        torch.testing.assert_close(got.double(), want, **tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pairwise", [False, True])
def test_outputs_fully_written_into_poisoned_buffers(backend, pairwise, monkeypatch):
    q_lens, d_lens = [3, 1, 8], [9, 0, 4] if pairwise else [9, 0, 4, 2]
    q = torch.randn(sum(q_lens), 12, device=DEVICE, requires_grad=True)
    d = torch.randn(sum(d_lens), 12, device=DEVICE, requires_grad=True)
    cu_q, cu_d = cu_from_lengths(q_lens), cu_from_lengths(d_lens)
    want = m3kernels.maxsim_varlen(q.double(), cu_q, d.double(), cu_d, pairwise=pairwise, backend="reference")
    want_grads = torch.autograd.grad(want.sum(), (q, d))
    poison_allocations(monkeypatch)
    got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, pairwise=pairwise, backend=backend)
    grads = torch.autograd.grad(got.sum(), (q, d))
    torch.testing.assert_close(got.double(), want, **tol(torch.float32))
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a, b.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif("cpu" not in backends("maxsim", torch.device("cpu")), reason="needs the compiled CPU kernels")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_half_precision_extremes_convert_exactly(dtype):
    """The CPU kernels' vectorised fp16 / bf16 -> fp32 conversion: subnormals, the largest finite values and signed
    zeros arrive exactly (one doc token per value, so each similarity is a single product). CPU only: GPU tensor
    cores may flush the subnormal products."""
    info = torch.finfo(dtype)
    special = torch.tensor([info.smallest_normal / 4, -info.smallest_normal / 4, info.max, -info.max, 0.0, -0.0,
                            1.0, info.tiny, -3.0, 65.5])
    h = 37  # one full vector and a tail
    d = torch.zeros(special.numel(), h)
    d[:, 5] = special
    d = d.to(dtype)
    q = torch.zeros(2, h, dtype=dtype)
    q[0, 5], q[1, 5] = 1, -1
    cu_q, cu_d = torch.tensor([0, 1, 2]), torch.arange(special.numel() + 1)
    got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="cpu")
    want = m3kernels.maxsim_varlen(q.double(), cu_q, d.double(), cu_d, backend="reference")
    assert torch.equal(got.double(), want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pairwise", [False, True])
def test_minus_inf_similarities_agree_with_reference(backend, pairwise):
    """A query token whose similarities are all -inf (an infinite input) contributes -inf on every backend, while
    an empty doc still scores 0: the reference must not confuse the two."""
    q = torch.randn(2, 3, 8, device=DEVICE)
    d = torch.randn(2, 5, 8, device=DEVICE)
    d[..., 0] = d[..., 0].abs() + 0.5
    q[0, 1, 0] = float("-inf")
    d_mask = torch.ones(2, 5, dtype=torch.bool, device=DEVICE)
    d_mask[1] = False  # doc 1 is empty
    got = m3kernels.maxsim(q, d, None, d_mask, pairwise=pairwise, backend=backend)
    want = m3kernels.maxsim(q.double(), d.double(), None, d_mask, pairwise=pairwise, backend="reference")
    assert torch.equal(torch.isneginf(got), torch.isneginf(want)) and torch.isneginf(want[0 if pairwise else (0, 0)])
    finite = torch.isfinite(want)
    torch.testing.assert_close(got.double()[finite], want[finite], **tol(torch.float32))
    assert (want[1] == 0).all() if pairwise else (want[:, 1] == 0).all()


def _clamped(off: torch.Tensor, lens: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    start = off.clamp(0, rows)
    return start, torch.minimum(lens.clamp(min=0), rows - start)


@pytest.mark.parametrize("backend", [b for b in backends("maxsim") if b in ("triton", "cuda")])
@pytest.mark.parametrize("nq", [1, 3])  # per (query, doc) pair / row blocks
def test_gpu_kernels_clamp_bad_offsets(backend, nq):
    """A checked call launches the GPU kernels on offsets it has not read yet (it checks them after the launch and
    discards the output): items starting below 0, reaching past the rows or with negative lengths must be clamped
    into the rows by the kernels, which then score exactly as on offsets clamped beforehand (caught out of bounds
    by the interpreter or AddressSanitizer otherwise)."""
    q = torch.randn(7, 16, device=DEVICE).half()
    d = torch.randn(40, 16, device=DEVICE).half()
    as_int = lambda *v: torch.tensor(v, dtype=torch.int32, device=DEVICE)
    q_off, q_len = as_int(-5, 2, 6)[:nq], as_int(9, 3, 100)[:nq]
    d_off, d_len = as_int(-3, 10, 38, 45, 5), as_int(4, 50, 7, 2, -6)
    kernels = _backend.kernel_module("maxsim", backend)
    got = kernels.forward(q, q_off, q_len, d, d_off, d_len, False, True)
    want = kernels.forward(q, *_clamped(q_off, q_len, 7), d, *_clamped(d_off, d_len, 40), False, True)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert torch.all(want[0][:, 3] == 0)  # doc 3 (rows 40 ..) is empty once clamped
    # Backward (deterministic: the same bits) on items that stay disjoint once clamped: the gradient kernels clamp
    # them too (a checked call raises before any backward, but the checks may be off).
    q_off, q_len = as_int(-5, 3, 6)[:nq], as_int(3, 3, 100)[:nq]
    d_off, d_len = as_int(-3, 4, 38, 45, 20), as_int(4, 10, 7, 2, -6)
    fixed = (*_clamped(q_off, q_len, 7), *_clamped(d_off, d_len, 40))
    _, argmax = kernels.forward(q, *fixed[:2], d, *fixed[2:], False, True)
    grad = torch.randn(nq, 5, device=DEVICE)
    got = kernels.backward(grad, q, q_off, q_len, d, d_off, d_len, argmax, False, True)
    want = kernels.backward(grad, q, *fixed[:2], d, *fixed[2:], argmax, False, True)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
