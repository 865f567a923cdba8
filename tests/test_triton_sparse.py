"""The Triton sparse-head kernels (m3kernels/sparse/triton.py) through the public API against the float64
reference: lexical_weights (fused token weights + max-pool by id) and lexical_scores.

Shapes stay tiny so that the file runs in the Triton interpreter on CPU; @pytest.mark.gpu tests add bf16 and
BGE-M3-sized shapes on a GPU.
"""

import pytest
import torch

import m3kernels
from m3kernels.sparse import SparseBatch, reference
from tests.helpers import DEVICE, KERNEL_DTYPES, backends, cu_from_lengths, poison_, tol

pytestmark = pytest.mark.skipif(
    "triton" not in backends("lexical_weights") or "triton" not in backends("lexical_scores"),
    reason="triton backend unavailable here",
)


def linear(h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sparse_linear whose relu keeps roughly half of the tokens."""
    return torch.randn(h, device=DEVICE) / h**0.5, torch.tensor([0.05], device=DEVICE)


def away_from_zero(hidden: torch.Tensor, ids: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ids with tokens whose h . w + b is within 1e-3 of 0 turned into <s> (skipped), so that rounding cannot
    move a token across the relu between the kernel and the float64 reference."""
    x = hidden.double() @ w.double() + b.double()
    return torch.where(x.abs() < 1e-3, 0, ids)


def weights(hidden, ids, w, b, backend, **kwargs) -> SparseBatch:
    if backend == "reference":
        hidden, w, b = hidden.double(), w.double(), b.double()
    return m3kernels.lexical_weights(hidden, ids, w, b, backend=backend, **kwargs)


def assert_same_batch(got: SparseBatch, want: SparseBatch, dtype: torch.dtype) -> None:
    assert torch.equal(got.indptr, want.indptr)
    assert torch.equal(got.ids, want.ids)
    assert got.values.dtype == torch.float32
    torch.testing.assert_close(got.values.double(), want.values.double(), **tol(dtype))


# With vocab_size the Triton pool knows both bounds and runs as one kernel (_weights_pool_kernel); without, as
# token weights, a read of the bounds and the per-text pool.
BOUND_CHOICES = pytest.mark.parametrize("known_bounds", [False, True], ids=["bounds read", "one kernel"])


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("hidden_size", [7, 33])
@BOUND_CHOICES
def test_padded_weights_match_reference(dtype, hidden_size, known_bounds):
    # 4 texts of 21 tokens, ids from a small vocabulary (many repeats to pool), ragged attention mask with a
    # length-1 text and a fully padded one; 21 rows per text leaves a tail in the 16-row token block (and makes
    # two chunks per text in the one-kernel pool).
    bsz, length = 4, 21
    hidden = torch.randn(bsz, length, hidden_size, device=DEVICE).to(dtype)
    w, b = linear(hidden_size)
    ids = away_from_zero(hidden, torch.randint(0, 12, (bsz, length), device=DEVICE), w, b)
    lens = torch.tensor([21, 1, 0, 13], device=DEVICE)
    mask = torch.arange(length, device=DEVICE)[None, :] < lens[:, None]
    vocab = {"vocab_size": 12} if known_bounds else {}
    got = weights(hidden, ids, w, b, "triton", attention_mask=mask, **vocab)
    want = weights(hidden, ids, w, b, "reference", attention_mask=mask)
    assert_same_batch(got, want, dtype)
    assert got.indptr[2] == got.indptr[3] and got.ids.numel() > 8  # the padded text is empty; pooling ran


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@BOUND_CHOICES
def test_packed_weights_match_reference(dtype, known_bounds):
    lengths = [1, 0, 13, 40]
    hidden = torch.randn(sum(lengths), 24, device=DEVICE).to(dtype)
    ids = torch.randint(0, 250_002, (sum(lengths),), device=DEVICE)
    ids[20:30] = ids[14]  # a run of one id inside the 40-token text: max-pool over it
    ids[2] = 1  # a special token: skipped
    w, b = linear(24)
    ids = away_from_zero(hidden, ids, w, b)
    cu = cu_from_lengths(lengths)
    bounds = {"max_seqlen": 40, "vocab_size": 250_002} if known_bounds else {}  # 64-row sort block: 4 chunks
    got = weights(hidden, ids, w, b, "triton", cu_seqlens=cu, **bounds)
    want = weights(hidden, ids, w, b, "reference", cu_seqlens=cu)
    assert_same_batch(got, want, dtype)
    assert 1 not in got.ids.tolist()


@pytest.mark.parametrize("skip_ids", [(), (5, 7, 9)])
def test_custom_skip_ids(skip_ids):
    hidden = torch.randn(2, 30, 16, device=DEVICE)
    ids = torch.randint(0, 10, (2, 30), device=DEVICE)
    w, b = linear(16)
    got = weights(hidden, ids, w, b, "triton", skip_ids=skip_ids)
    want = weights(hidden, ids, w, b, "reference", skip_ids=skip_ids)
    assert_same_batch(got, want, torch.float32)
    assert not set(skip_ids) & set(got.ids.tolist())


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@BOUND_CHOICES
def test_weights_backward_matches_reference_autograd(dtype, known_bounds):
    lengths = [3, 1, 29]
    hidden = torch.randn(sum(lengths), 33, device=DEVICE).to(dtype)
    w, b = linear(33)
    ids = away_from_zero(hidden, torch.randint(4, 15, (sum(lengths),), device=DEVICE), w, b)
    cu = cu_from_lengths(lengths)
    leaves = [hidden.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()]
    leaves64 = [x.detach().double().requires_grad_() for x in leaves]
    bounds = {"max_seqlen": 29, "vocab_size": 15} if known_bounds else {}
    got = m3kernels.lexical_weights(*leaves[:1], ids, *leaves[1:], cu_seqlens=cu, backend="triton", **bounds)
    want = m3kernels.lexical_weights(*leaves64[:1], ids, *leaves64[1:], cu_seqlens=cu, backend="reference")
    assert torch.equal(got.ids, want.ids)
    coef = torch.randn(want.values.shape, dtype=torch.float64, device=DEVICE)
    (got.values * coef.float()).sum().backward()
    (want.values * coef).sum().backward()
    for mine, ref in zip(leaves, leaves64, strict=True):
        torch.testing.assert_close(mine.grad.double(), ref.grad, **tol(dtype))


def test_pool_ties_keep_the_first_token():
    # Tokens 2 and 5 have the same id and identical hidden states: the max comes from token 2 (the first).
    hidden = torch.randn(8, 16, device=DEVICE)
    w, b = linear(16)
    hidden[2] *= torch.sign(hidden[2] @ w)  # make the shared weight positive
    hidden[5] = hidden[2]
    ids = torch.tensor([10, 11, 12, 13, 14, 12, 16, 17], device=DEVICE)
    hidden.requires_grad_()
    got = m3kernels.lexical_weights(hidden, ids, w, b, cu_seqlens=cu_from_lengths([8]), backend="triton")
    got.values.sum().backward()
    torch.testing.assert_close(hidden.grad[2], w)
    assert torch.all(hidden.grad[5] == 0)


def test_nan_hidden_is_reported():
    hidden = torch.randn(2, 6, 16, device=DEVICE)
    hidden[1, 3, 0] = float("nan")
    w, b = linear(16)
    with pytest.raises(ValueError, match="NaN"):
        m3kernels.lexical_weights(hidden, torch.randint(4, 9, (2, 6), device=DEVICE), w, b, backend="triton")


def random_batch(lengths: list[int], vocab: int) -> SparseBatch:
    ids = [torch.randperm(vocab)[:n].sort().values for n in lengths]
    return SparseBatch(
        torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64, device=DEVICE),
        torch.cat(ids).to(DEVICE),
        torch.rand(sum(lengths), device=DEVICE) + 0.01,
    )


def scores_reference(q: SparseBatch, d: SparseBatch, pairwise: bool) -> torch.Tensor:
    return reference.lexical_scores(q, d, pairwise=pairwise, compute_dtype=torch.float64)


@pytest.mark.parametrize("pairwise", [False, True])
def test_scores_match_reference(pairwise):
    # Rows of 0 .. 70 entries (several 16-entry query chunks, 7 binary-search steps), 37 docs (a tail in the
    # 32-doc block), a small vocabulary so that rows share ids.
    q_lens = [0, 1, 5, 37, 70] + ([3] * 32 if pairwise else [])
    d_lens = [7, 0, 70, 1, 12, *torch.randint(0, 40, (32,)).tolist()]
    q, d = random_batch(q_lens, 120), random_batch(d_lens, 120)
    got = m3kernels.lexical_scores(q, d, pairwise=pairwise, backend="triton")
    want = scores_reference(q, d, pairwise)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got.double(), want, **tol(torch.float32))
    assert torch.all(got[0] == 0)


def test_scores_of_lexical_weights_output():
    hidden = torch.randn(3, 17, 20, device=DEVICE)
    ids = torch.randint(4, 30, (3, 17), device=DEVICE)
    w, b = linear(20)
    sparse = weights(hidden, ids, w, b, "triton")
    got = m3kernels.lexical_scores(sparse, sparse, backend="triton")
    torch.testing.assert_close(got.double(), scores_reference(sparse, sparse, False), **tol(torch.float32))


@BOUND_CHOICES
def test_outputs_do_not_depend_on_allocator_contents(monkeypatch, known_bounds):
    """Every torch.empty the backend allocates starts poisoned (NaN / huge ints): unwritten slots would show."""
    hidden = torch.randn(3, 19, 33, device=DEVICE)
    ids = torch.randint(0, 25, (3, 19), device=DEVICE)
    mask = torch.arange(19, device=DEVICE)[None, :] < torch.tensor([19, 4, 1], device=DEVICE)[:, None]
    w, b = linear(33)
    q, d = random_batch([3, 9], 50), random_batch([4, 0, 11], 50)
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
    got = weights(hidden, ids, w, b, "triton", attention_mask=mask, vocab_size=25 if known_bounds else None)
    got_scores = m3kernels.lexical_scores(q, d, backend="triton")
    monkeypatch.undo()
    assert_same_batch(got, weights(hidden, ids, w, b, "reference", attention_mask=mask), torch.float32)
    torch.testing.assert_close(got_scores.double(), scores_reference(q, d, False), **tol(torch.float32))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@BOUND_CHOICES
def test_gpu_bge_m3_batch(dtype, known_bounds):
    """B=64 texts of up to 512 tokens, H=1024, the XLM-R vocabulary; then [64, 64] and pairwise scores. With the
    bounds known, 64 x 32 programs of the one-kernel pool count their chunks done on the device."""
    hidden = torch.randn(64, 512, 1024, device=DEVICE).to(dtype)
    ids = torch.randint(4, 250_002, (64, 512), device=DEVICE)
    ids[:, 256:] = ids[:, :256]  # repeated ids to pool
    mask = torch.arange(512, device=DEVICE)[None, :] < torch.randint(1, 513, (64,), device=DEVICE)[:, None]
    w, b = linear(1024)
    ids = away_from_zero(hidden, ids, w, b)
    got = weights(hidden, ids, w, b, "triton", attention_mask=mask, vocab_size=250_002 if known_bounds else None)
    want = weights(hidden, ids, w, b, "reference", attention_mask=mask)
    assert_same_batch(got, want, dtype)
    for pairwise in (False, True):
        torch.testing.assert_close(
            m3kernels.lexical_scores(got, got, pairwise=pairwise, backend="triton").double(),
            scores_reference(got, got, pairwise),
            **tol(torch.float32),
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_one_kernel_pool_equals_two_kernels_under_load(monkeypatch):
    """The one-kernel pool's cross-program handoff (per-text counters; the last chunk's program pools the weights
    the others wrote) on 4096 texts of U[1, 512] tokens, five times over buffers poisoned before each run: bitwise
    the two-kernel path's output (the interpreter runs programs one after another, so only a GPU can break this)."""
    from m3kernels.sparse import triton as kernels

    lengths = torch.randint(1, 513, (4096,)).tolist()
    hidden, ids, off, lens, w, b, skip = _pool_inputs(lengths, vocab=250_002, h=256)
    hidden = hidden.half()
    b = torch.tensor([0.5], device=DEVICE)
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
    monkeypatch.setattr(kernels, "_ONE_KERNEL_MAX_BLOCK", 0)
    want = kernels.pool(hidden, ids, off, lens, w, b, skip, 512, 250_002)
    monkeypatch.undo()
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
    for _ in range(5):
        got = kernels.pool(hidden, ids, off, lens, w, b, skip, 512, 250_002)
        for a, c in zip(got, want, strict=True):
            assert torch.equal(a, c)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_one_kernel_pool_is_cuda_graph_capturable():
    """With both bounds known the pool reads nothing from the device: it captures into a CUDA graph, and each
    replay zeroes its per-text counters again (a second replay on new data gives the eager result)."""
    from m3kernels.sparse import triton as kernels

    hidden, ids, off, lens, w, b, skip = _pool_inputs(torch.randint(1, 513, (64,)).tolist(), vocab=250_002, h=1024)
    hidden = hidden.half()
    kernels.pool(hidden, ids, off, lens, w, b, skip, 512, 250_002)  # compiles outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = kernels.pool(hidden, ids, off, lens, w, b, skip, 512, 250_002)
    for _ in range(2):
        hidden.copy_(torch.randn_like(hidden))
        graph.replay()
        for a, c in zip(captured, kernels.pool(hidden, ids, off, lens, w, b, skip, 512, 250_002), strict=True):
            assert torch.equal(a, c)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_scores_past_65535_doc_blocks():
    """Over 65535 blocks of 32 docs (2.1M docs, the grid axis-1 limit): the flat grid must reach every doc."""
    nd = 65_536 * 32 + 100
    rows = torch.arange(nd, device=DEVICE)
    ids = torch.tensor([5, 7, 9], device=DEVICE)[rows % 3]
    vals = (rows % 7 + 1).float()
    d = SparseBatch.trusted(torch.arange(nd + 1, device=DEVICE), ids, vals)
    q = SparseBatch.from_dicts([{5: 1.0, 7: 2.0}, {7: 1.0}], device=DEVICE)
    want = torch.stack([torch.where(ids == 5, 1.0, torch.where(ids == 7, 2.0, 0.0)), (ids == 7).float()]) * vals
    assert torch.equal(m3kernels.lexical_scores(q, d, backend="triton"), want)
    assert torch.equal(m3kernels.lexical_scores(d, d, pairwise=True, backend="triton"), vals * vals)


def _pool_inputs(lengths, vocab, h=16):
    g = torch.Generator().manual_seed(7)
    total = sum(lengths)
    hidden = torch.randn(total, h, generator=g).to(DEVICE)
    ids = torch.randint(0, vocab, (total,), generator=g).to(DEVICE)
    w, b = torch.randn(h, generator=g).to(DEVICE) / h**0.5, torch.tensor([0.05], device=DEVICE)
    cu = cu_from_lengths(lengths)
    return hidden, ids, cu[:-1].contiguous(), (cu[1:] - cu[:-1]).contiguous(), w, b, torch.tensor([0, 2], device=DEVICE)


@pytest.mark.parametrize("lengths", [[1, 7, 0, 33], [16, 17, 5]])
def test_pool_in_programs_equals_the_sort_path(monkeypatch, lengths):
    """The one-program-per-text pool (in-register sort + segmented scan) after the token weights, the same pool
    fused with the token weights in one kernel (bounds known), and the torch-sort fallback give the same compact
    layout: ids, values, source rows and counts, bitwise (every run has repeated ids)."""
    from m3kernels.sparse import triton as kernels

    args = _pool_inputs(lengths, vocab=12)
    blocks, launches = [], []
    real_block, real_one_kernel = kernels._pool_block, kernels._weights_and_pool
    monkeypatch.setattr(kernels, "_pool_block", lambda *a: blocks.append(real_block(*a)) or blocks[-1])
    monkeypatch.setattr(kernels, "_weights_and_pool", lambda *a: launches.append(a[-1]) or real_one_kernel(*a))
    per_text = kernels.pool(*args)
    assert blocks and blocks[-1] is not None and not launches  # the bounds read, then the per-text pool
    one_kernel = kernels.pool(*args, max(lengths), 12)  # the caller's bounds: the same block, one launch
    assert launches == [blocks[-1]] and blocks[-1] == blocks[-2]
    monkeypatch.setattr(kernels, "_pool_block", lambda *a: None)
    fallback = kernels.pool(*args)
    for a, b, c in zip(per_text, one_kernel, fallback, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.parametrize("block_t", [4, 64])
def test_one_kernel_pool_with_other_chunk_sizes(monkeypatch, block_t):
    """The tune sweep's extremes of the one-kernel pool's chunk (_POOL_BLOCK_T): texts of many chunks and of less
    than one, bitwise equal to the torch-sort fallback."""
    from m3kernels.sparse import triton as kernels

    monkeypatch.setattr(kernels, "_POOL_BLOCK_T", block_t)
    args = _pool_inputs([1, 7, 0, 33, 64], vocab=12)
    one_kernel = kernels.pool(*args, 64, 12)
    monkeypatch.setattr(kernels, "_pool_block", lambda *a: None)
    for a, c in zip(one_kernel, kernels.pool(*args), strict=True):
        assert torch.equal(a, c)


def test_sort_blocks_above_the_one_kernel_limit_take_two_kernels(monkeypatch):
    """Bounds known but a sort block above _ONE_KERNEL_MAX_BLOCK: token weights, then the per-text pool, with the
    block from the bounds (nothing read), same results."""
    from m3kernels.sparse import triton as kernels

    args = _pool_inputs([1, 7, 0, 33], vocab=12)
    one_kernel = kernels.pool(*args, 33, 12)
    launches, reads = [], []
    real_one_kernel, real_block = kernels._weights_and_pool, kernels._pool_block
    monkeypatch.setattr(kernels, "_weights_and_pool", lambda *a: launches.append(a) or real_one_kernel(*a))
    monkeypatch.setattr(kernels, "_pool_block", lambda w, *a: reads.append(w) or real_block(w, *a))
    monkeypatch.setattr(kernels, "_ONE_KERNEL_MAX_BLOCK", 32)  # this input's block is 64
    two_kernels = kernels.pool(*args, 33, 12)
    assert not launches and reads == [None]
    for a, c in zip(one_kernel, two_kernels, strict=True):
        assert torch.equal(a, c)


def test_pool_with_known_bounds_never_reads_rows_between_texts(monkeypatch):
    """With both bounds known the one-kernel pool reads each text's rows by offset, without per-row segment ids:
    rows in gaps between texts, with weights > 0 and ids of the vocabulary, stay out of the output, which equals
    the torch-sort fallback's (that one drops them by segment id)."""
    from m3kernels.sparse import triton as kernels

    hidden, ids, _, _, w, b, skip = _pool_inputs([30], vocab=12)
    b = torch.tensor([10.0], device=DEVICE)  # every weight > 0: a gap row would be pooled if it were read
    off = torch.tensor([0, 12, 29], dtype=torch.int32, device=DEVICE)  # gaps: rows 5-11 and 21-28
    lens = torch.tensor([5, 9, 1], dtype=torch.int32, device=DEVICE)
    args = (hidden, ids, off, lens, w, b, skip)
    segments = []
    real_segment_ids = kernels.segment_ids
    monkeypatch.setattr(kernels, "segment_ids", lambda *a: segments.append(a) or real_segment_ids(*a))
    fast = kernels.pool(*args, 9, 12)
    assert not segments
    monkeypatch.setattr(kernels, "_pool_block", lambda *a: None)
    fallback = kernels.pool(*args, 9, 12)
    assert segments
    for a, c in zip(fast, fallback, strict=True):
        assert torch.equal(a, c)
    rows = torch.cat([torch.arange(0, 5), torch.arange(12, 21), torch.tensor([29])]).to(DEVICE)
    used = fast[2][fast[2] >= 0]
    assert torch.isin(used, rows).all() and fast[3].tolist() == [
        len(set(ids[r].tolist()) - {0, 2}) for r in (rows[:5], rows[5:14], rows[14:])]


def test_pool_gets_the_bounds_the_caller_knows(monkeypatch):
    """lexical_weights passes the length bound (padded L or max_seqlen) and vocab_size to the Triton pool, which
    then reads nothing from the device to pick its sort block (None tensors would fail if read)."""
    from m3kernels.sparse import triton as kernels

    seen = []
    real_block = kernels._pool_block

    def spy(w, ids, lens, max_len, id_bound):
        seen.append((max_len, id_bound))
        return real_block(w, ids, lens, max_len, id_bound)

    monkeypatch.setattr(kernels, "_pool_block", spy)
    hidden, ids, _, _, w, b, _ = _pool_inputs([9, 20], vocab=12)
    cu = cu_from_lengths([9, 20])
    weights(hidden[:28].reshape(2, 14, -1), ids[:28].reshape(2, 14), w, b, "triton", vocab_size=12)
    weights(hidden, ids, w, b, "triton", cu_seqlens=cu, max_seqlen=25, vocab_size=12)
    weights(hidden, ids, w, b, "triton", cu_seqlens=cu)
    assert seen == [(14, 12), (25, 12), (0, 0)]
    assert real_block(None, None, None, 21, 12) == 32
    assert real_block(None, None, None, 21, 2**60) is None  # 32-row block: ids must be below 2^58 - 1
    lens = torch.tensor([9, 20], dtype=torch.int32, device=DEVICE)
    loose = kernels._POOL_MAX_TEXT + 1  # above one block: the true longest text (20) is read instead
    assert real_block(torch.ones(29, device=DEVICE), ids, lens, loose, 12) == 32


@pytest.mark.parametrize("bounds", [{}, {"vocab_size": 2**59}, {"vocab_size": 2**59, "max_seqlen": 16}])
def test_largest_id_at_the_last_position_is_kept(bounds):
    """In a 16-token text (16-row block, 4 position bits) the key of id 2^59 - 1 at position 15 would be
    2^63 - 1, the key that marks a dropped token: that id must take the sort path, not vanish."""
    ids = torch.arange(10, 26, device=DEVICE)
    ids[15] = 2**59 - 1
    hidden, w = torch.randn(16, 8, device=DEVICE), torch.randn(8, device=DEVICE)
    cu = cu_from_lengths([16])
    b = torch.tensor([10.0], device=DEVICE)  # every weight > 0: every id is reported
    got = weights(hidden, ids, w, b, "triton", cu_seqlens=cu, skip_ids=[], **bounds)
    want = weights(hidden, ids, w, b, "reference", cu_seqlens=cu, skip_ids=[])
    assert_same_batch(got, want, torch.float32)
    assert 2**59 - 1 in got.ids.tolist()


def test_pool_falls_back_for_huge_ids_and_long_texts(monkeypatch):
    """Ids that do not fit the packed sort key, and texts longer than one block, take the torch-sort path, with
    the same results as the reference."""
    from m3kernels.sparse import triton as kernels

    hidden, ids, _, lens, w, b, _ = _pool_inputs([9, 20], vocab=12)
    cu = cu_from_lengths([9, 20])
    huge = ids + 2**60
    assert kernels._pool_block(torch.ones(29, device=DEVICE), huge, lens, 0, 0) is None
    got = weights(hidden, huge, w, b, "triton", cu_seqlens=cu, skip_ids=[])
    want = weights(hidden, huge, w, b, "reference", cu_seqlens=cu, skip_ids=[])
    assert_same_batch(got, want, torch.float32)
    monkeypatch.setattr(kernels, "_POOL_MAX_TEXT", 16)
    assert kernels._pool_block(torch.ones(29, device=DEVICE), ids, lens, 0, 0) is None
    got = weights(hidden, ids, w, b, "triton", cu_seqlens=cu)
    assert_same_batch(got, weights(hidden, ids, w, b, "reference", cu_seqlens=cu), torch.float32)


def test_benchmark_kernels_case_runs_the_triton_pools(monkeypatch):
    """The bench's "lexical_weights kernels" case on tiny shapes with the Triton providers (skipped by the bench on
    CPU tensors): the one-kernel pool and the two-kernel path both agree with the float64 truth."""
    from m3kernels.benchmarks import sparse as bench_sparse
    from m3kernels.benchmarks.harness import run_case

    monkeypatch.setattr(bench_sparse, "our_backends", lambda op, device: ["triton"])
    case = bench_sparse.kernels_case(DEVICE, 3, 17, 8, torch.float32)
    rows = {r.provider: r for r in run_case(case, DEVICE, repeats=1, ceilings={"gflops": 1.0, "gbps": 1.0})}
    for name in ("m3k:triton", "m3k:triton, two kernels (token weights, then per-text pool)"):
        assert rows[name].status == "ok" and rows[name].max_error < 1e-4, rows[name]
