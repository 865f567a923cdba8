"""lexical_weights / lexical_scores / SparseBatch against the float64 reference and FlagEmbedding's formula."""

import importlib
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import m3kernels
from m3kernels import SparseBatch, _checks
from tests.helpers import ALL_DTYPES, DEVICE, cu_from_lengths, fast_backends, poison_allocations, tol

POOL_BACKENDS = fast_backends("lexical_weights")
SCORE_BACKENDS = fast_backends("lexical_scores")


def flagembedding_dicts(hidden, ids, weight, bias, mask=None, skip=(0, 1, 2, 3)):
    """FlagEmbedding 1.4.2's inference path written out: relu(linear) then a per-text dict loop keeping the max."""
    w = torch.relu(hidden.double() @ weight.double().reshape(-1) + float(bias))
    out = []
    for b in range(hidden.shape[0]):
        row: dict[str, float] = {}
        for t in range(hidden.shape[1]):
            if mask is not None and not mask[b, t]:
                continue
            tid, tw = int(ids[b, t]), float(w[b, t])
            if tid in skip or tw <= 0:
                continue
            if tw > row.get(str(tid), 0.0):
                row[str(tid)] = tw
        out.append(row)
    return out


def assert_same_dicts(got, want, atol):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in g:
            assert abs(g[k] - w[k]) <= atol + 1e-4 * abs(w[k]), (k, g[k], w[k])


def tricky_batch(bsz=4, length=37, hidden=33, vocab=60, dtype=torch.float32):
    """Random states with repeated ids, every special id and a bias that makes about half the weights <= 0."""
    h = torch.randn(bsz, length, hidden, device=DEVICE).to(dtype)
    ids = torch.randint(0, vocab, (bsz, length), device=DEVICE)
    ids[:, 0], ids[:, -1] = 0, 2
    ids[0, 1:8] = 11  # one id seven times
    ids[1, 2:6] = torch.tensor([1, 3, 1, 3])
    weight = torch.randn(1, hidden, device=DEVICE)
    return h, ids, weight, torch.tensor([-0.05], device=DEVICE)


@pytest.mark.parametrize("backend", [*POOL_BACKENDS, "reference"])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_lexical_weights_equals_flagembedding_formula(backend, dtype):
    h, ids, weight, bias = tricky_batch(dtype=dtype)
    mask = torch.rand(ids.shape, device=DEVICE) > 0.2
    got = m3kernels.lexical_weights(h, ids, weight, bias, attention_mask=mask, backend=backend)
    want = flagembedding_dicts(h.float(), ids, weight, bias, mask)
    # fp16 states: values differ in rounding only, so compare keys exactly and values loosely
    assert_same_dicts(got.to_dicts(), want, atol=1e-5 if dtype == torch.float32 else 5e-2)


@pytest.mark.parametrize("backend", POOL_BACKENDS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("lengths", [[1], [7, 0, 33], [127, 1, 5, 64]])
@pytest.mark.parametrize("bounds", ["vocab_size", "vocab_size and max_seqlen", "none"])
def test_packed_matches_reference(backend, dtype, lengths, bounds):
    hidden, vocab = 24, 40
    h = torch.randn(sum(lengths), hidden, device=DEVICE).to(dtype)
    ids = torch.randint(0, vocab, (sum(lengths),), device=DEVICE)
    weight, bias = torch.randn(hidden, device=DEVICE), torch.tensor(0.1, device=DEVICE)
    cu = cu_from_lengths(lengths)
    known = {} if bounds == "none" else {"vocab_size": vocab}
    if "max_seqlen" in bounds:
        known["max_seqlen"] = max(lengths)
    got = m3kernels.lexical_weights(h, ids, weight, bias, cu_seqlens=cu, backend=backend, **known)
    want = m3kernels.lexical_weights(
        h.double(), ids, weight.double(), bias.double(), cu_seqlens=cu, backend="reference"
    )
    assert torch.equal(got.indptr, want.indptr) and torch.equal(got.ids, want.ids)
    torch.testing.assert_close(got.values.double(), want.values.double(), **tol(dtype))
    assert got.ids.dtype == torch.int64 and got.values.dtype == torch.float32


@pytest.mark.parametrize("backend", POOL_BACKENDS)
def test_bad_offsets_run_the_pool_clamped_then_raise(backend, monkeypatch):
    """The pool runs on cu_seqlens kept in bounds (clamped; on CPU tensors also made non-decreasing); the values are
    read after it, and the op raises then."""
    module = importlib.import_module(f"m3kernels.sparse.{backend}")
    seen = []
    real = module.pool

    def recording(hidden, ids, off, lens, *rest):
        seen.append((off.tolist(), lens.tolist()))
        return real(hidden, ids, off, lens, *rest)

    monkeypatch.setattr(module, "pool", recording)
    h, w = torch.randn(10, 8, device=DEVICE), torch.randn(8, device=DEVICE)
    bad = torch.tensor([0, 7, -4, 25, 10], device=DEVICE)
    with pytest.raises(ValueError, match="non-decreasing"):
        m3kernels.lexical_weights(h, torch.arange(10, device=DEVICE), w, 0.0, cu_seqlens=bad, backend=backend)
    assert seen == [([0, 7, 7, 10], [7, 0, 3, 0]) if DEVICE.type == "cpu" else ([0, 7, 0, 10], [7, 0, 10, 0])]


@pytest.mark.parametrize("backend", POOL_BACKENDS)
def test_checked_call_sizes_its_output_from_the_checks_read(backend, monkeypatch):
    """A checked call reads its entry count with the value checks, so compacting the output needs no sync of its
    own (nonzero of unknown size syncs on a GPU; nonzero_static of the known size does not); without the checks
    the count is not read and nonzero runs. Same SparseBatch either way."""
    h, ids, weight, bias = tricky_batch()
    mask = torch.rand(ids.shape, device=DEVICE) > 0.2
    calls = []
    real_nonzero, real_static = torch.Tensor.nonzero, torch.nonzero_static
    monkeypatch.setattr(torch.Tensor, "nonzero", lambda x, *a, **k: calls.append("nonzero") or real_nonzero(x, *a, **k))
    monkeypatch.setattr(torch, "nonzero_static", lambda x, **k: calls.append(k["size"]) or real_static(x, **k))
    checked = m3kernels.lexical_weights(h, ids, weight, bias, attention_mask=mask, backend=backend)
    assert calls == [checked.ids.numel()] and checked.ids.numel() > 10
    calls.clear()
    with _checks.trusted_inputs():
        trusted = m3kernels.lexical_weights(h, ids, weight, bias, attention_mask=mask, backend=backend)
    assert calls == ["nonzero"]
    for part in ("indptr", "ids", "values"):
        assert torch.equal(getattr(checked, part), getattr(trusted, part))


@pytest.mark.parametrize("backend", POOL_BACKENDS)
def test_lexical_weights_gradients(backend):
    h, ids, weight, bias = tricky_batch()
    h.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()
    got = m3kernels.lexical_weights(h, ids, weight, bias, backend=backend)
    g = torch.randn_like(got.values)
    grads = torch.autograd.grad(got.values, (h, weight, bias), g)
    h64, w64, b64 = (x.detach().double().requires_grad_() for x in (h, weight, bias))
    ref = m3kernels.lexical_weights(h64, ids, w64, b64, backend="reference")
    want = torch.autograd.grad(ref.values, (h64, w64, b64), g.double())
    for a, b in zip(grads, want, strict=True):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", [*POOL_BACKENDS, "reference"])
def test_lexical_weights_tied_tokens_give_the_first_the_gradient(backend):
    """An id at two positions with equal weights: its value's gradient reaches the first position only, on the
    kernels and on the float64 oracle alike (not split between the ties)."""
    dtype = torch.float64 if backend == "reference" else torch.float32
    h = torch.randn(6, 8, dtype=dtype, device=DEVICE)
    h[3] = h[1]  # id 7 at rows 1 and 3 with the same weight; row 5 is another id
    ids = torch.tensor([0, 7, 9, 7, 2, 12], device=DEVICE)
    weight = torch.randn(8, dtype=dtype, device=DEVICE)
    h.requires_grad_()
    sb = m3kernels.lexical_weights(h, ids, weight, 10.0, cu_seqlens=cu_from_lengths([6]), backend=backend)
    assert sb.ids.tolist() == [7, 9, 12]
    (g,) = torch.autograd.grad(sb.values.sum(), (h,))
    assert g[1].abs().sum() > 0 and not g[3].any() and not g[0].any()


@pytest.mark.parametrize("backend", [*SCORE_BACKENDS, "reference"])
@pytest.mark.parametrize("pairwise", [False, True])
def test_lexical_scores_are_differentiable_on_every_backend(backend, pairwise):
    """A training loss over lexical_scores reaches the values (and through them hidden / weight / bias)."""
    h, ids, weight, bias = tricky_batch(bsz=3)
    weight.requires_grad_()
    sb = m3kernels.lexical_weights(h, ids, weight, bias)
    scores = m3kernels.lexical_scores(sb, sb, pairwise=pairwise, backend=backend)
    assert scores.requires_grad
    g = torch.randn_like(scores)
    (got,) = torch.autograd.grad(scores, (weight,), g)
    w64 = weight.detach().double().requires_grad_()
    sb64 = m3kernels.lexical_weights(h.double(), ids, w64, bias.double())
    want_scores = m3kernels.lexical_scores(sb64, sb64, pairwise=pairwise, backend="reference")
    (want,) = torch.autograd.grad(want_scores, (w64,), g.double())
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # no gradient needed: the kernels run (and agree)
        torch.testing.assert_close(m3kernels.lexical_scores(sb, sb, pairwise=pairwise, backend=backend),
                                   scores.detach(), atol=1e-4, rtol=1e-5)


def test_reference_gradcheck_float64():
    h = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[5, 6, 5, 7, 2], [9, 9, 4, 0, 8]])
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: m3kernels.lexical_weights(*a, backend="reference").values, (h, ids, w, b)
    )


def test_sparse_batch_conversions():
    sb = SparseBatch.from_dicts([{"5": 0.5, "2": 1.0}, {}, {7: 2.0}])
    assert sb.indptr.tolist() == [0, 2, 2, 3] and sb.ids.tolist() == [2, 5, 7]
    assert sb.to_dicts() == [{"2": 1.0, "5": 0.5}, {}, {"7": 2.0}]
    dense = sb.to_dense(8)
    assert dense.shape == (3, 8) and dense[0, 5] == 0.5 and dense[2, 7] == 2.0 and dense.sum() == 3.5
    with warnings.catch_warnings():  # torch 2.11 warned here on every call
        warnings.filterwarnings("error", "Sparse invariant checks")
        torch.testing.assert_close(sb.to_sparse_csr(8).to_dense(), dense)
    with pytest.raises(ValueError, match="vocab_size"):
        sb.to_dense(7)
    with pytest.raises(ValueError, match="ascending"):
        SparseBatch(torch.tensor([0, 2]), torch.tensor([5, 2]), torch.tensor([1.0, 1.0]))


def dict_lexical_score(qw: dict, dw: dict) -> float:
    """FlagEmbedding's compute_lexical_matching_score for one pair."""
    return sum(w * dw[t] for t, w in qw.items() if t in dw)


@pytest.mark.parametrize("backend", [*SCORE_BACKENDS, "reference"])
@pytest.mark.parametrize("pairwise", [False, True])
def test_lexical_scores_match_dict_loop(backend, pairwise):
    def rand_rows(n):
        return [
            {str(int(t)): float(torch.rand(1)) + 0.01 for t in torch.randint(0, 50, (int(k),))}
            for k in torch.randint(0, 12, (n,))
        ]

    qd, dd = rand_rows(5), rand_rows(5 if pairwise else 9)
    q, d = SparseBatch.from_dicts(qd, DEVICE), SparseBatch.from_dicts(dd, DEVICE)
    got = m3kernels.lexical_scores(q, d, pairwise=pairwise, backend=backend)
    if pairwise:
        want = torch.tensor([dict_lexical_score(a, b) for a, b in zip(qd, dd, strict=True)])
    else:
        want = torch.tensor([[dict_lexical_score(a, b) for b in dd] for a in qd])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", POOL_BACKENDS)
def test_pool_outputs_fully_written_into_poisoned_buffers(backend, monkeypatch):
    lengths = [5, 0, 17, 1]
    h = torch.randn(sum(lengths), 16, device=DEVICE)
    ids = torch.randint(0, 12, (sum(lengths),), device=DEVICE)
    w = torch.randn(16, device=DEVICE)
    cu = cu_from_lengths(lengths)
    want = m3kernels.lexical_weights(h.double(), ids, w.double(), 0.2, cu_seqlens=cu, backend="reference")
    poison_allocations(monkeypatch)
    got = m3kernels.lexical_weights(h, ids, w, 0.2, cu_seqlens=cu, backend=backend)
    assert torch.equal(got.indptr, want.indptr) and torch.equal(got.ids, want.ids)
    torch.testing.assert_close(got.values.double(), want.values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", SCORE_BACKENDS)
def test_scores_fully_written_into_poisoned_buffers(backend, monkeypatch):
    q = SparseBatch.from_dicts([{"1": 0.5}, {}, {"3": 1.0, "9": 2.0}], DEVICE)
    d = SparseBatch.from_dicts([{"3": 1.0}, {"1": 1.0, "9": 1.0}, {}], DEVICE)
    poison_allocations(monkeypatch)
    assert m3kernels.lexical_scores(q, d, backend=backend).tolist() == [[0, 0.5, 0], [0, 0, 0], [1, 2, 0]]
    assert m3kernels.lexical_scores(q, d, pairwise=True, backend=backend).tolist() == [0, 0, 0]


@settings(deadline=None)
@given(lengths=st.lists(st.integers(0, 60), min_size=1, max_size=5), hidden=st.integers(1, 40),
       vocab=st.integers(1, 30), bias=st.floats(-1, 1))
def test_fuzz_lexical_weights(lengths, hidden, vocab, bias):
    h = torch.randn(sum(lengths), hidden, device=DEVICE)
    ids = torch.randint(0, vocab, (sum(lengths),), device=DEVICE)
    w = torch.randn(hidden, device=DEVICE)
    cu = cu_from_lengths(lengths)
    want = m3kernels.lexical_weights(h.double(), ids, w.double(), bias, cu_seqlens=cu, backend="reference")
    for backend in POOL_BACKENDS:
        got = m3kernels.lexical_weights(h, ids, w, bias, cu_seqlens=cu, backend=backend)
        assert torch.equal(got.indptr, want.indptr) and torch.equal(got.ids, want.ids)
        torch.testing.assert_close(got.values.double(), want.values, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m3kernels.lexical_scores(got, got, backend=backend).double(),
                                   m3kernels.lexical_scores(want, want, backend="reference").double(),
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", POOL_BACKENDS)
def test_lexical_weights_non_contiguous_inputs(backend):
    h = torch.randn(24, 3, 20, device=DEVICE).transpose(0, 1)  # [3, 24, 20], non-contiguous
    ids = torch.randint(0, 30, (24, 3), device=DEVICE).T
    w = torch.randn(2, 20, device=DEVICE)[1]
    assert not h.is_contiguous() and not ids.is_contiguous()
    got = m3kernels.lexical_weights(h, ids, w, 0.1, backend=backend)
    want = m3kernels.lexical_weights(h.double(), ids, w.double(), 0.1, backend="reference")
    assert torch.equal(got.ids, want.ids)
    torch.testing.assert_close(got.values.double(), want.values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", [*SCORE_BACKENDS, "reference"])
@pytest.mark.parametrize("pairwise", [False, True])
def test_lexical_scores_huge_ids(backend, pairwise):
    """Hashed / huge ids: the CPU kernel sized its inverted index by the largest query id (2**31: 16 GB and
    45 s; 2**40: MemoryError; 2**63 - 1: overflow and a write out of bounds)."""
    big = [2**31, 2**40, 2**63 - 1]
    qd = [{"5": 0.5, str(big[0]): 1.0, str(big[2]): 2.0}, {str(big[1]): 3.0, "9": 1.0}]
    dd = [{"5": 2.0, str(big[2]): 0.25, str(big[1]): 7.0}, {str(big[1]): 0.5, str(big[0]): 4.0, "9": 2.0}]
    q, d = SparseBatch.from_dicts(qd, DEVICE), SparseBatch.from_dicts(dd, DEVICE)
    got = m3kernels.lexical_scores(q, d, pairwise=pairwise, backend=backend).cpu()
    want = torch.tensor([[dict_lexical_score(a, b) for b in dd] for a in qd])
    torch.testing.assert_close(got, want.diagonal() if pairwise else want)
