"""The hand-written CUDA kernels (backend="cuda", csrc/*/*_cuda.cu) through the public API, against the float64
reference, plus cross-checks against the Triton kernels. On a GPU with m3kernels._C built with CUDA; without one
on the host emulation's build (`.ci/run`: M3K_CUDA_EMU_MODULE="$(python3 tests/cuda_emu.py)", CPU tensors).
Skipped where neither is there."""

import pytest
import torch

import m3kernels
from m3kernels import _native
from m3kernels.maxsim import cuda as cuda_maxsim
from m3kernels.maxsim import reference as maxsim_ref
from m3kernels.sparse import SparseBatch
from m3kernels.sparse import reference as sparse_ref
from tests.helpers import DEVICE, INTERPRETER, backends, cu_from_lengths, poison_allocations, tol

pytestmark = pytest.mark.skipif("cuda" not in backends("maxsim"), reason="m3kernels._C built without CUDA kernels")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Lengths around the kernel tiles (32 query tokens, 128 doc tokens), with empty items.
Q_LENS = [1, 7, 33, 0, 70]
D_LENS = [5, 0, 127, 1, 300, 129, 64]


def packed(lens: list[int], hidden: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(sum(lens), hidden, device=DEVICE).to(dtype), cu_from_lengths(lens)


def ref_scores(q, cu_q, d, cu_d, pairwise):
    return m3kernels.maxsim_varlen(q.double(), cu_q, d.double(), cu_d, pairwise=pairwise, backend="reference")


def scale_tol(dtype: torch.dtype, hidden: int) -> dict[str, float]:
    """tol() for sums of hidden products of unit normals (errors grow with sqrt(hidden))."""
    t = tol(dtype)
    return {"atol": t["atol"] * max(1.0, hidden**0.5 / 4), "rtol": t["rtol"]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pairwise", [False, True])
@pytest.mark.parametrize("hidden", [1, 7, 33, 128, 1024])
def test_maxsim_varlen_matches_reference(dtype, pairwise, hidden):
    d_lens = D_LENS[: len(Q_LENS)] if pairwise else D_LENS
    q, cu_q = packed(Q_LENS, hidden, dtype)
    d, cu_d = packed(d_lens, hidden, dtype)
    got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, pairwise=pairwise, backend="cuda")
    want = ref_scores(q, cu_q, d, cu_d, pairwise)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got.double(), want, **scale_tol(dtype, hidden))
    empty_doc = got[1] if pairwise else got[:, 1]
    assert torch.all(empty_doc == 0)


def forward_with(monkeypatch, tile: int, layout: str, *args):
    """m3kernels.maxsim.cuda.forward with forward tile `tile`, per (query, doc) pair ("pairs"), by row blocks
    ("rows") or by token tiles ("tokens")."""
    monkeypatch.setattr(cuda_maxsim, "use_row_blocks", lambda *_: layout == "rows")
    monkeypatch.setattr(cuda_maxsim, "_TOKENS_TILE", tile if layout == "tokens" else None)
    monkeypatch.setattr(cuda_maxsim, "_ROWS_TILE" if layout == "rows" else "_FWD_TILE", tile)
    return cuda_maxsim.forward(*args)


N_TILES = 22


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile", range(N_TILES))
def test_every_forward_tile_matches_reference(monkeypatch, dtype, tile):
    """Every block shape of the forward kernel (the tune sweep's candidates), per pair, by row blocks and by token
    tiles, gives the reference scores; per pair and by token tiles bitwise the same scores and argmax as tile 0 per
    pair (each dot product takes the same k steps in every shape, and token tiles sum the row maxima in the per-pair
    order), by row blocks the same argmax and the same bits as row blocks of tile 0 (the row maxima are the same;
    only their sum order differs from per pair). The ragged lengths straddle the 64- and 128-row doc tiles, so token
    tiles hold parts of several docs. Tiles a card cannot hold in shared memory are skipped (tile 2 needs 127.5 KiB:
    not on sm_86 / sm_89)."""
    assert _native.C.maxsim_forward_cuda_tiles == N_TILES
    warps, chunk_bytes, stages, dynamic, static, _, qrows, _, warps_m, warp_cols = (
        _native.C.maxsim_forward_cuda_tile_shapes[tile])
    doc_cols = warps // warps_m * warp_cols
    assert dynamic == stages * (qrows + doc_cols) * (chunk_bytes + 16)
    assert static == warps // warps_m * qrows * 8
    if dynamic + static > cuda_maxsim.shared_memory_per_block(DEVICE):
        pytest.skip(f"tile {tile} needs {dynamic + static} bytes of shared memory per block")
    # H=200: the last hidden chunk is partial for every chunk size (400 or 800 bytes per row).
    q, cu_q = packed(Q_LENS, 200, dtype)
    d, cu_d = packed([*D_LENS, 65, 63], 200, dtype)
    args = (q, cu_q[:-1], cu_q[1:] - cu_q[:-1], d, cu_d[:-1], cu_d[1:] - cu_d[:-1], False, True)
    want = ref_scores(q, cu_q, d, cu_d, False)
    base_scores, base_arg = forward_with(monkeypatch, 0, "pairs", *args)
    base_rows, _ = forward_with(monkeypatch, 0, "rows", *args)
    rows, rows_arg = forward_with(monkeypatch, tile, "rows", *args)
    torch.testing.assert_close(rows.double(), want, **scale_tol(dtype, 200))
    assert torch.equal(rows_arg, base_arg) and torch.equal(rows, base_rows)
    tokens, tokens_arg = forward_with(monkeypatch, tile, "tokens", *args)
    assert torch.equal(tokens_arg, base_arg) and torch.equal(tokens, base_scores)
    if qrows == 32:
        scores, arg = forward_with(monkeypatch, tile, "pairs", *args)
        assert torch.equal(arg, base_arg) and torch.equal(scores, base_scores)
    else:
        with pytest.raises(RuntimeError, match="row blocks only"):
            forward_with(monkeypatch, tile, "pairs", *args)
    for layout in ("rows", "tokens"):
        with pytest.raises(RuntimeError, match="tile must be in"):
            forward_with(monkeypatch, N_TILES, layout, *args)


@pytest.mark.parametrize("layout", ["pairs", "rows", "tokens"])
@pytest.mark.parametrize("tile", range(N_TILES))
def test_every_forward_tile_takes_the_first_nan_column(monkeypatch, tile, layout):
    """A query row whose similarities hold several NaNs (NaN doc rows 2, 17 and 33, in different threads and warps
    of every tile shape) gets the first as its arg-max, in every tile (the backward follows it when the data
    checks are off)."""
    qrows, warps, warps_m, warp_cols = (_native.C.maxsim_forward_cuda_tile_shapes[tile][i] for i in (6, 0, 8, 9))
    if (qrows != 32 and layout == "pairs") or cuda_maxsim.tile_smem(tile) > cuda_maxsim.shared_memory_per_block(DEVICE):
        pytest.skip("tile not available for this launch")
    q, cu_q = packed([3], 16, torch.float16)
    d, cu_d = packed([40], 16, torch.float16)
    d[[17, 33, 2]] = float("nan")
    args = (q, cu_q[:-1], cu_q[1:] - cu_q[:-1], d, cu_d[:-1], cu_d[1:] - cu_d[:-1], False, True)
    scores, arg = forward_with(monkeypatch, tile, layout, *args)
    assert torch.isnan(scores).all() and (arg == 2).all(), (warps, warps_m, warp_cols, arg)


def test_row_blocks_fall_back_to_a_tile_that_fits_the_card(monkeypatch):
    """Cards with 99 KiB of shared memory per block (sm_86 / sm_89) get the row-block tile that fits them."""
    assert cuda_maxsim.tile_smem(cuda_maxsim._ROWS_TILE) > 99 * 1024 >= cuda_maxsim.tile_smem(
        cuda_maxsim._ROWS_TILE_SMALL_SMEM)
    monkeypatch.setattr(cuda_maxsim, "shared_memory_per_block", lambda device: 227 * 1024)  # sm_90
    assert cuda_maxsim._rows_tile(DEVICE) == cuda_maxsim._ROWS_TILE
    monkeypatch.setattr(cuda_maxsim, "shared_memory_per_block", lambda device: 99 * 1024)
    assert cuda_maxsim._rows_tile(DEVICE) == cuda_maxsim._ROWS_TILE_SMALL_SMEM


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["rows", "tokens"])
def test_row_blocks_leave_rows_outside_queries_alone(monkeypatch, dtype, layout):
    """Row blocks and token tiles over query rows with gaps (rows in no query) and doc rows with gaps (rows in no
    doc, which token tiles read), an empty doc and an empty query: the per-pair scores (token tiles: their bits),
    argmax -1 in the gaps and for the empty doc, and the scores whatever the output and scratch memory held."""
    q = torch.randn(300, 40, device=DEVICE).to(dtype)
    q_off = torch.tensor([0, 9, 50, 60, 200], dtype=torch.int32, device=DEVICE)
    q_len = torch.tensor([7, 40, 10, 0, 99], dtype=torch.int32, device=DEVICE)
    d = torch.randn(420, 40, device=DEVICE).to(dtype)
    d_off = torch.tensor([3, 9, 150, 151, 300, 280], dtype=torch.int32, device=DEVICE)
    d_len = torch.tensor([5, 130, 0, 100, 64, 1], dtype=torch.int32, device=DEVICE)
    args = (q, q_off, q_len, d, d_off, d_len, False, True)
    pairs, pairs_arg = forward_with(monkeypatch, 0, "pairs", *args)
    poison_allocations(monkeypatch)
    tile = cuda_maxsim._ROWS_TILE if layout == "rows" else 0
    rows, rows_arg = forward_with(monkeypatch, tile, layout, *args)
    torch.testing.assert_close(rows, pairs, rtol=1e-5, atol=1e-5)
    assert torch.equal(rows_arg, pairs_arg) and (layout == "rows" or torch.equal(rows, pairs))
    gaps = torch.ones(300, dtype=torch.bool)
    for o, n in zip(q_off.tolist(), q_len.tolist(), strict=True):
        gaps[o : o + n] = False
    assert (rows_arg[gaps] == -1).all() and (rows_arg[:, 2] == -1).all() and (rows[3] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxsim_padded_scattered_masks(dtype):
    q = torch.randn(3, 40, 64, device=DEVICE).to(dtype)
    d = torch.randn(5, 150, 64, device=DEVICE).to(dtype)
    q_mask = torch.rand(3, 40, device=DEVICE) > 0.3
    d_mask = torch.rand(5, 150, device=DEVICE) > 0.5
    d_mask[4] = False
    got = m3kernels.maxsim(q, d, q_mask, d_mask, backend="cuda")
    want = maxsim_ref.maxsim_padded(q.double(), d.double(), q_mask, d_mask, compute_dtype=torch.float64)
    torch.testing.assert_close(got.double(), want, **scale_tol(dtype, 64))
    assert torch.all(got[:, 4] == 0)


def test_maxsim_misaligned_storage():
    flat = torch.randn(1 + 50 * 24, device=DEVICE).half()
    q = flat[1 : 1 + 10 * 24].view(10, 24)  # 2-byte offset: not 16-byte aligned
    d = flat[1 + 10 * 24 :].view(40, 24)
    cu_q, cu_d = cu_from_lengths([4, 6]), cu_from_lengths([17, 23])
    got = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="cuda")
    torch.testing.assert_close(got.double(), ref_scores(q, cu_q, d, cu_d, False), **tol(torch.float16))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pairwise", [False, True])
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("hidden", [40, 7])  # 16-byte rows (vector loads and atomics) and not
def test_maxsim_backward_matches_reference(dtype, pairwise, deterministic, hidden):
    d_lens = D_LENS[: len(Q_LENS)] if pairwise else D_LENS
    q, cu_q = packed(Q_LENS, hidden, dtype)
    d, cu_d = packed(d_lens, hidden, dtype)
    q.requires_grad_(True)
    d.requires_grad_(True)
    scores = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, pairwise=pairwise, deterministic=deterministic, backend="cuda")
    weights = torch.randn_like(scores)
    gq, gd = torch.autograd.grad((scores * weights).sum(), (q, d))
    q64 = q.detach().double().requires_grad_(True)
    d64 = d.detach().double().requires_grad_(True)
    want = ref_scores(q64, cu_q, d64, cu_d, pairwise)
    wq, wd = torch.autograd.grad((want * weights.double()).sum(), (q64, d64))
    assert gq.dtype == dtype and gd.dtype == dtype
    torch.testing.assert_close(gq.double(), wq, **scale_tol(dtype, 64))
    torch.testing.assert_close(gd.double(), wd, **scale_tol(dtype, 64))


def test_maxsim_deterministic_backward_is_bitwise_reproducible():
    q, cu_q = packed([32] * 8, 256, torch.bfloat16)
    d, cu_d = packed([200] * 8, 256, torch.bfloat16)
    d.requires_grad_(True)
    grads = []
    for _ in range(2):
        scores = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, deterministic=True, backend="cuda")
        grads.append(torch.autograd.grad(scores.sum(), d)[0])
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("deterministic", [False, True])
def test_maxsim_ties_keep_first_doc_token(deterministic):
    q = torch.randn(1, 3, 16, device=DEVICE)
    d = torch.randn(1, 140, 16, device=DEVICE)
    d[0, 2] *= 10 / d[0, 2].norm()  # norm 10: for q[0, 0] = d[0, 2] it scores 100, every other token ~N(0, 100)
    d[0, 135] = d[0, 2]  # same token twice, across two doc tiles
    q[0, 0] = d[0, 2]  # its best match is that token
    d.requires_grad_(True)
    score = m3kernels.maxsim(q, d, deterministic=deterministic, backend="cuda")
    (gd,) = torch.autograd.grad(score.sum(), d)
    assert gd[0, 2].abs().sum() > 0
    assert torch.all(gd[0, 135] == 0)


@pytest.mark.parametrize("deterministic", [False, True])
def test_maxsim_all_minus_inf_row_has_no_argmax(deterministic):
    # Every similarity of the query token is -inf: the max is -inf, no doc token is the argmax (-1, as on the
    # CPU), so the backward sends no gradient to any doc row (not to the row before the doc).
    q = torch.zeros(1, 1, 8, device=DEVICE)
    q[0, 0, 0] = float("-inf")
    d = (torch.rand(3, 5, 8, device=DEVICE) + 0.5).requires_grad_(True)
    score = m3kernels.maxsim(q, d, deterministic=deterministic, backend="cuda")
    assert torch.all(score == float("-inf"))
    (gd,) = torch.autograd.grad(score.sum(), d)
    assert torch.all(gd == 0)


def test_maxsim_rejects_bad_inputs():
    d = torch.randn(2, 5, 8, device=DEVICE)
    d[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="d contains NaN"):
        m3kernels.maxsim(torch.randn(2, 3, 8, device=DEVICE), d, backend="cuda")
    if DEVICE.type == "cuda":  # CPU tensors: the CUDA kernels run only on the emulation's build
        with pytest.raises(RuntimeError, match="unavailable"):
            m3kernels.maxsim(torch.randn(1, 3, 8), torch.randn(1, 5, 8), backend="cuda")


def test_maxsim_launcher_errors_reach_python():
    q = torch.randn(4, 7, device=DEVICE).half()  # 14-byte rows: not a multiple of 16 bytes
    lens = torch.tensor([4], dtype=torch.int32, device=DEVICE)
    offs = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    out = torch.empty(1, 1, device=DEVICE)
    with _native.cuda_launch(DEVICE) as stream:
        pass
    code = _native.DTYPE_CODES[q.dtype]
    # Argument list of the binding: q, q_dtype, d, d_dtype, hidden, q_off, q_len, nq, q_rows, d_off, d_len, nd,
    # d_rows, pairwise, scores, argmax, stream.
    a = (_native.addr(q), code, _native.addr(q), code)
    one = (_native.addr(offs), _native.addr(lens), 1, 4)  # offsets, lengths, items, rows
    with pytest.raises(RuntimeError, match="multiple of 16 bytes"):
        _native.C.maxsim_forward_cuda(*a, 7, *one, *one, False, _native.addr(out), 0, stream)
    with pytest.raises(RuntimeError, match="negative item count"):
        _native.C.maxsim_forward_cuda(*a, 8, *one[:2], -1, 4, *one, False, _native.addr(out), 0, stream)
    with pytest.raises(RuntimeError, match=r"q_rows and d_rows must be in \[0, 2\^31\), got 4 and -1"):
        _native.C.maxsim_forward_cuda(*a, 8, *one, *one[:3], -1, False, _native.addr(out), 0, stream)
    with pytest.raises(RuntimeError, match="null q, d"):
        _native.C.maxsim_forward_cuda(0, code, 0, code, 8, *one, *one, False, _native.addr(out), 0, stream)
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        _native.C.maxsim_forward_cuda(a[0], 7, a[2], 7, 8, *one, *one, False, _native.addr(out), 0, stream)
    # Row blocks: ... nd, d_rows, scores, argmax, workspace, stream, tile.
    rows_launch = _native.C.maxsim_forward_rows_cuda
    with pytest.raises(RuntimeError, match="null workspace"):
        rows_launch(*a, 8, *one, *one, _native.addr(out), 0, 0, stream, 9)
    with pytest.raises(RuntimeError, match=r"q_rows and d_rows must be in \[0, 2\^31\), got 2147483648"):
        rows_launch(*a, 8, *one[:3], 2**31, *one, _native.addr(out), 0, 0, stream, 9)
    with pytest.raises(RuntimeError, match="tile must be in"):
        rows_launch(*a, 8, *one, *one, _native.addr(out), 0, 0, stream, N_TILES)
    with pytest.raises(RuntimeError, match="row blocks only"):
        _native.C.maxsim_forward_cuda(*a, 8, *one, *one, False, _native.addr(out), 0, stream, 9)
    # Token tiles: the row-block launcher's arguments.
    tokens_launch = _native.C.maxsim_forward_tokens_cuda
    with pytest.raises(RuntimeError, match="maxsim_forward_tokens_cuda: null workspace"):
        tokens_launch(*a, 8, *one, *one, _native.addr(out), 0, 0, stream, 0)
    with pytest.raises(RuntimeError, match="maxsim_forward_tokens_cuda: tile must be in"):
        tokens_launch(*a, 8, *one, *one, _native.addr(out), 0, 0, stream, N_TILES)
    with pytest.raises(RuntimeError, match="multiple of 16 bytes"):  # checked before the (4-byte) workspace is cleared
        tokens_launch(*a, 7, *one, *one, _native.addr(out), 0, _native.addr(out), stream, 0)
    with pytest.raises(RuntimeError, match="maxsim_forward_rows_cuda: hidden size 7"):  # likewise
        rows_launch(*a, 7, *one, *one, _native.addr(out), 0, _native.addr(out), stream, 9)
    assert _native.C.maxsim_forward_tokens_cuda_workspace_bytes(32, 10, 100) == 32 * 10 * 8 + 400
    assert _native.C.maxsim_forward_tokens_cuda_workspace_bytes(0, 10, 100) == 0


@pytest.mark.parametrize(("q_lens", "d_lens", "hidden"), [([33], D_LENS, 7), ([0], [4, 9], 16), ([5], [0, 0], 16),
                                                          ([3, 0], [130, 1, 0], 24)])
def test_token_tiles_through_the_public_op(monkeypatch, q_lens, d_lens, hidden):
    """With _TOKENS_TILE set, maxsim_varlen takes token tiles for all pairs (not pairwise, nor row blocks): its
    scores and gradients are the per-pair kernel's bit for bit, with H zero-padded to 16-byte rows, no query rows,
    no doc rows, two queries (one empty) and a query token whose similarities are all -inf."""
    q, cu_q = packed(q_lens, hidden, torch.float16)
    d, cu_d = packed(d_lens, hidden, torch.float16)
    if q.shape[0]:
        q[0, 0] = float("-inf")
    weights = torch.randn(len(q_lens), len(d_lens), device=DEVICE)
    monkeypatch.setattr(cuda_maxsim, "use_row_blocks", lambda *_: False)

    def run(tokens_tile):
        monkeypatch.setattr(cuda_maxsim, "_TOKENS_TILE", tokens_tile)
        qg, dg = q.clone().requires_grad_(True), d.clone().requires_grad_(True)
        scores = m3kernels.maxsim_varlen(qg, cu_q, dg, cu_d, backend="cuda")
        return (scores, *torch.autograd.grad((scores * weights).sum(), (qg, dg)))

    launched = []
    real = _native.C.maxsim_forward_tokens_cuda
    monkeypatch.setattr(_native.C, "maxsim_forward_tokens_cuda", lambda *a: launched.append(a[-1]) or real(*a))
    per_pair, tokens = run(None), run(20)
    assert launched == [20]
    for got, want in zip(tokens, per_pair, strict=True):
        assert torch.equal(got, want)


def sparse_inputs(lens: list[int], hidden: int, dtype: torch.dtype, vocab: int):
    h = torch.randn(sum(lens), hidden, device=DEVICE).to(dtype)
    ids = torch.randint(0, vocab, (sum(lens),), device=DEVICE)
    w = torch.randn(hidden, device=DEVICE)
    return h, ids, w, cu_from_lengths(lens)


def assert_same_batch(got: SparseBatch, want: SparseBatch, dtype: torch.dtype) -> None:
    assert torch.equal(got.indptr, want.indptr)
    assert torch.equal(got.ids, want.ids)
    torch.testing.assert_close(got.values.double(), want.values.double(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [1, 7, 64])
def test_lexical_weights_packed_matches_reference(dtype, hidden):
    lens = [0, 1, 9, 300, 2000]  # 2000 kept tokens at most: the large in-block sort
    h, ids, w, cu = sparse_inputs(lens, hidden, dtype, vocab=50)
    got = m3kernels.lexical_weights(h, ids, w, 0.1, cu_seqlens=cu, backend="cuda")
    want = sparse_ref.lexical_weights_packed(
        h, ids, cu[:-1], cu[1:] - cu[:-1], w, torch.tensor([0.1], device=DEVICE), (0, 1, 2, 3), torch.float64
    )
    assert_same_batch(got, want, dtype)


def test_lexical_weights_long_text_fallback():
    lens = [9000, 5]  # > 8192 kept tokens: the bitonic sort in the workspace
    h, ids, w, cu = sparse_inputs(lens, 8, torch.float32, vocab=20000)
    got = m3kernels.lexical_weights(h, ids, w, 100.0, cu_seqlens=cu, skip_ids=(), backend="cuda")
    want = sparse_ref.lexical_weights_packed(
        h, ids, cu[:-1], cu[1:] - cu[:-1], w, torch.tensor([100.0], device=DEVICE), (), torch.float64
    )
    assert_same_batch(got, want, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lexical_weights_padded_with_mask_and_grad(dtype):
    h = torch.randn(3, 33, 16, device=DEVICE).to(dtype).requires_grad_(True)
    ids = torch.randint(0, 12, (3, 33), device=DEVICE)
    mask = torch.rand(3, 33, device=DEVICE) > 0.3
    w = torch.randn(16, device=DEVICE)
    got = m3kernels.lexical_weights(h, ids, w, 0.0, attention_mask=mask, backend="cuda")
    want = m3kernels.lexical_weights(h, ids, w, 0.0, attention_mask=mask, backend="reference")
    assert_same_batch(got, want, dtype)
    (g_got,) = torch.autograd.grad(got.values.sum(), h)
    (g_want,) = torch.autograd.grad(want.values.sum(), h)
    torch.testing.assert_close(g_got.float(), g_want.float(), **tol(dtype))


def test_lexical_weights_rejects_nan_hidden():
    h = torch.randn(2, 5, 8, device=DEVICE)
    h[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="hidden contains NaN"):
        m3kernels.lexical_weights(
            h, torch.randint(4, 9, (2, 5), device=DEVICE), torch.ones(8, device=DEVICE), 0.0, backend="cuda"
        )


def random_batch(n: int, vocab: int, max_len: int) -> SparseBatch:
    rows = []
    for i in range(n):
        k = 0 if i == 1 else int(torch.randint(1, max_len + 1, ()))
        ids = torch.randperm(vocab)[:k].tolist()
        rows.append({t: float(torch.rand(())) + 0.01 for t in ids})
    return SparseBatch.from_dicts(rows, DEVICE)


@pytest.mark.parametrize("pairwise", [False, True])
def test_lexical_scores_match_reference(pairwise):
    q = random_batch(6, 300, 40)
    d = random_batch(6 if pairwise else 11, 300, 200)
    got = m3kernels.lexical_scores(q, d, pairwise=pairwise, backend="cuda")
    want = sparse_ref.lexical_scores(q, d, pairwise=pairwise, compute_dtype=torch.float64)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif("triton" not in backends("maxsim"), reason="needs the Triton backend on this device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_triton(dtype):
    if INTERPRETER and dtype == torch.bfloat16:
        pytest.skip("bf16 is wrong in the Triton interpreter")
    q, cu_q = packed(Q_LENS, 96, dtype)
    d, cu_d = packed(D_LENS, 96, dtype)
    cuda = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="cuda")
    triton = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="triton")
    torch.testing.assert_close(cuda, triton, **scale_tol(dtype, 96))
    h, ids, w, cu = sparse_inputs([3, 250, 40], 96, dtype, vocab=60)
    a = m3kernels.lexical_weights(h, ids, w, 0.0, cu_seqlens=cu, backend="cuda")
    b = m3kernels.lexical_weights(h, ids, w, 0.0, cu_seqlens=cu, backend="triton")
    assert_same_batch(a, b, dtype)
    torch.testing.assert_close(
        m3kernels.lexical_scores(a, b, backend="cuda"), m3kernels.lexical_scores(a, b, backend="triton")
    )
