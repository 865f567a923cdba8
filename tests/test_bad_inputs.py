"""Bad input gets a clear TypeError / ValueError / RuntimeError naming the argument, never a crash."""

import pytest
import torch

import m3kernels
from m3kernels import SparseBatch, _checks
from tests.helpers import DEVICE, backends

Q = torch.randn(2, 4, 8, device=DEVICE)
D = torch.randn(3, 5, 8, device=DEVICE)
CU2 = torch.tensor([0, 3, 4], dtype=torch.int32, device=DEVICE)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"q": Q.long()}, TypeError, "q must have dtype"),
        ({"d": D.half()}, TypeError, r"q \(torch.float32\) and d \(torch.float16\) must have the same dtype"),
        ({"q": Q[0]}, ValueError, "q must be 3-D"),
        ({"d": torch.randn(3, 5, 9, device=DEVICE)}, ValueError, "same hidden size"),
        ({"q": Q[:0]}, ValueError, "at least one item"),
        ({"q": Q.tolist()}, TypeError, "q must be a torch.Tensor"),
        ({"q_mask": torch.ones(2, 5, dtype=torch.bool, device=DEVICE)}, ValueError, r"q_mask must have shape \(2, 4\)"),
        ({"d_mask": torch.ones(3, 5, device=DEVICE)}, TypeError, "d_mask must have dtype bool"),
        ({"pairwise": True}, ValueError, "as many queries as docs"),
        ({"pairwise": "False"}, TypeError, "pairwise must be a bool"),  # a truthy string
        ({"normalize": 1}, TypeError, "normalize must be a bool"),
        ({"deterministic": "yes"}, TypeError, "deterministic must be a bool"),
        ({"backend": "tpu"}, ValueError, "backend must be one of"),
        ({"backend": 3}, TypeError, "backend must be a str"),
    ],
)
def test_maxsim_rejects(kwargs, exc, match):
    args = {"q": Q, "d": D, "q_mask": None, "d_mask": None} | kwargs
    with pytest.raises(exc, match=match):
        m3kernels.maxsim(args.pop("q"), args.pop("d"), args.pop("q_mask"), args.pop("d_mask"), **args)


def test_maxsim_rejects_nan_naming_the_input():
    d = D.clone()
    d[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="d contains NaN"):
        m3kernels.maxsim(Q, d)
    # NaN behind the mask is never read and is fine.
    mask = torch.ones(3, 5, dtype=torch.bool, device=DEVICE)
    mask[1, 2] = False
    assert torch.isfinite(m3kernels.maxsim(Q, d, d_mask=mask)).all()


def test_mixed_devices_rejected():
    if DEVICE.type != "cuda":
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match="share a device"):
        m3kernels.maxsim(Q, D.cpu())


def test_unavailable_backend_raises():
    with pytest.raises(RuntimeError, match="unavailable"):
        m3kernels.maxsim(Q.cpu(), D.cpu(), backend="cuda")
    with pytest.raises(TypeError, match="float64 runs on backend='reference'"):
        m3kernels.maxsim(Q.cpu().double(), D.cpu().double(), backend="cpu")


@pytest.mark.parametrize(
    ("cu_q", "match"),
    [
        (torch.tensor([0, 3, 5], dtype=torch.int32), r"cu_seqlens_q\[-1\] must equal the number of packed tokens"),
        (torch.tensor([1, 3, 4], dtype=torch.int32), r"cu_seqlens_q\[0\] must be 0"),
        (torch.tensor([0, 3, 2, 4], dtype=torch.int32), "non-decreasing"),
        (torch.tensor([0, 4.0]), "cu_seqlens_q must have dtype int32, int64"),
        (torch.tensor([0], dtype=torch.int32), "at least 2 entries"),
    ],
)
def test_maxsim_varlen_rejects_bad_cu_seqlens(cu_q, match):
    with pytest.raises((ValueError, TypeError), match=match):
        m3kernels.maxsim_varlen(
            torch.randn(4, 8, device=DEVICE), cu_q.to(DEVICE), torch.randn(4, 8, device=DEVICE), CU2[[0, 2]]
        )


def test_maxsim_varlen_rejects_non_bool_flags():
    q, cu = torch.randn(4, 8, device=DEVICE), CU2[[0, 2]]
    with pytest.raises(TypeError, match="pairwise must be a bool"):
        m3kernels.maxsim_varlen(q, cu, q, cu, pairwise="False")


H = torch.randn(2, 6, 8, device=DEVICE)
IDS = torch.randint(4, 50, (2, 6), device=DEVICE)
W = torch.randn(8, device=DEVICE)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"input_ids": IDS.float()}, TypeError, "input_ids must have dtype"),
        ({"input_ids": IDS[:, :5]}, ValueError, "input_ids must have shape"),
        ({"weight": torch.randn(2, 8, device=DEVICE)}, ValueError, r"weight must be \[H\] or \[1, H\]"),
        ({"weight": torch.randn(9, device=DEVICE)}, ValueError, "weight has 9 entries"),
        ({"bias": torch.randn(2, device=DEVICE)}, ValueError, "bias must hold one value"),
        ({"input_ids": IDS * 0 + 60, "vocab_size": 50}, ValueError, "outside the vocabulary"),
        ({"input_ids": IDS * 0 - 5}, ValueError, "input_ids must be >= 0"),
        ({"hidden": H[:0], "input_ids": IDS[:0]}, ValueError, "at least one text"),
        (
            {"attention_mask": torch.ones(2, 5, dtype=torch.bool, device=DEVICE)},
            ValueError,
            "attention_mask must have shape",
        ),
        ({"cu_seqlens": CU2}, ValueError, "cu_seqlens goes with packed hidden"),
        ({"hidden": H[0], "input_ids": IDS[0]}, ValueError, r"needs cu_seqlens"),
        ({"skip_ids": "0123"}, TypeError, "skip_ids must be a sequence of ints"),
        ({"vocab_size": 50.0}, TypeError, "vocab_size must be an int"),
        ({"vocab_size": 0}, ValueError, r"vocab_size must be an int in \[1, "),
        ({"vocab_size": 2**63}, ValueError, r"vocab_size must be an int in \[1, "),
        ({"max_seqlen": 6}, ValueError, "max_seqlen goes with packed hidden"),
        ({"hidden": H[0], "input_ids": IDS[0], "cu_seqlens": CU2[[0, 2]], "max_seqlen": -1}, ValueError,
         r"max_seqlen must be an int in \[0, "),
        ({"hidden": H[0], "input_ids": IDS[0], "cu_seqlens": CU2[[0, 2]], "max_seqlen": True}, TypeError,
         "max_seqlen must be an int"),
        ({"hidden": H[0], "input_ids": IDS[0], "cu_seqlens": torch.tensor([0, 2, 6], device=DEVICE),
          "max_seqlen": 3}, ValueError, r"max_seqlen \(3\) is below the longest text in cu_seqlens \(4\)"),
        ({"hidden": H[0], "input_ids": IDS[0], "cu_seqlens": torch.tensor([0, 2, 6], device=DEVICE),
          "max_seqlen": 0}, ValueError, r"max_seqlen \(0\) is below the longest text in cu_seqlens \(4\)"),
    ],
)
@pytest.mark.parametrize("backend", ["auto", "reference"])  # the reference names input_ids too
def test_lexical_weights_rejects(kwargs, exc, match, backend):
    args = {"hidden": H, "input_ids": IDS, "weight": W, "bias": 0.0, "backend": backend} | kwargs
    with pytest.raises(exc, match=match):
        m3kernels.lexical_weights(
            args.pop("hidden"), args.pop("input_ids"), args.pop("weight"), args.pop("bias"), **args
        )


def test_lexical_weights_rejects_nan_hidden():
    h = H.clone()
    h[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="hidden contains NaN"):
        m3kernels.lexical_weights(h, IDS, W, 0.0)


def test_lexical_scores_rejects():
    sb = SparseBatch.from_dicts([{"1": 1.0}, {"2": 2.0}], DEVICE)
    with pytest.raises(TypeError, match="q must be a SparseBatch"):
        m3kernels.lexical_scores([{"1": 1.0}], sb)
    with pytest.raises(ValueError, match="as many queries as docs"):
        m3kernels.lexical_scores(SparseBatch.from_dicts([{"1": 1.0}], DEVICE), sb, pairwise=True)
    with pytest.raises(ValueError, match="d must hold at least one text"):
        m3kernels.lexical_scores(sb, SparseBatch.from_dicts([], DEVICE))
    with pytest.raises(TypeError, match="pairwise must be a bool"):
        m3kernels.lexical_scores(sb, sb, pairwise="False")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"k": torch.randn(4, 2, 8, device=DEVICE).half()}, TypeError, "must have the same dtype"),
        ({"v": torch.randn(4, 2, 4, device=DEVICE)}, ValueError, "one shape"),
        ({"q": torch.randn(4, 8, device=DEVICE)}, ValueError, "q must be 3-D"),
        ({"max_seqlen": 2}, ValueError, "below the longest sequence"),
        ({"max_seqlen": 2.5}, TypeError, "max_seqlen must be an int"),
        ({"max_seqlen": -1}, ValueError, r"max_seqlen must be an int in \[0, "),
        ({"cu_seqlens": torch.tensor([0, 5], dtype=torch.int32, device=DEVICE)}, ValueError, "cu_seqlens"),
    ],
)
def test_attention_rejects(kwargs, exc, match):
    args = {
        "q": torch.randn(4, 2, 8, device=DEVICE),
        "k": torch.randn(4, 2, 8, device=DEVICE),
        "v": torch.randn(4, 2, 8, device=DEVICE),
        "cu_seqlens": CU2,
        "max_seqlen": 3,
    } | kwargs
    with pytest.raises(exc, match=match):
        m3kernels.attention_varlen(
            args.pop("q"), args.pop("k"), args.pop("v"), args.pop("cu_seqlens"), args.pop("max_seqlen")
        )


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_attention_rejects_nan_naming_the_input(which):
    qkv = {n: torch.randn(4, 2, 8, device=DEVICE) for n in ("q", "k", "v")}
    qkv[which][3, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=f"{which} contains NaN"):
        m3kernels.attention_varlen(qkv["q"], qkv["k"], qkv["v"], CU2, 3)


@pytest.mark.parametrize("backend", ["reference", *backends("maxsim")])
def test_maxsim_nan_behind_query_mask_is_fine_on_every_backend(backend):
    """The reference multiplied masked query rows by 0 (NaN * 0 = NaN), so it raised on a NaN behind q_mask."""
    q = Q.clone()
    q[0, 3] = float("nan")
    for q_mask in ([[1, 1, 1, 0], [1, 1, 1, 1]], [[1, 0, 1, 0], [1, 1, 1, 1]]):  # prefix, and scattered
        mask = torch.tensor(q_mask, dtype=torch.bool, device=DEVICE)
        got = m3kernels.maxsim(q, D, mask, None, backend=backend)
        want = m3kernels.maxsim(torch.where(mask[..., None], q, 0.0), D, mask, None, backend=backend)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want)


def test_maxsim_nan_culprit_is_a_real_token():
    """A NaN behind q_mask is harmless; the NaN in a real doc token must be the one named."""
    q, d = Q.clone(), D.clone()
    q_mask = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]], dtype=torch.bool, device=DEVICE)
    q[0, 3] = float("nan")
    d[2, 1] = float("nan")
    with pytest.raises(ValueError, match="d contains NaN"):
        m3kernels.maxsim(q, d, q_mask, None)


def test_lexical_weights_nan_culprit_is_a_real_input():
    """NaN in the padding of hidden is harmless; a NaN weight must be named, not the padding."""
    h, w = H.clone(), W.clone()
    mask = torch.ones(2, 6, dtype=torch.bool, device=DEVICE)
    mask[0, 5] = False
    h[0, 5, 0] = float("nan")
    w[3] = float("nan")
    with pytest.raises(ValueError, match="weight contains NaN"):
        m3kernels.lexical_weights(h, IDS, w, 0.0, attention_mask=mask)


def test_skip_ids_outside_int64_named():
    with pytest.raises(ValueError, match="skip_ids must hold int64 values"):
        m3kernels.lexical_weights(H, IDS, W, 0.0, skip_ids=(0, 2**70))


def test_more_token_rows_than_int32_offsets_rejected():
    """Offsets are int32: 2**31 or more token rows used to wrap around (the CPU kernel read far out of bounds
    and crashed). Expanded tensors make the shapes without the memory; the check happens before any copy."""
    one = torch.ones(1, 1, 1, dtype=torch.bfloat16, device=DEVICE)
    big = one.expand(2**16 + 1, 2**15, 1)  # 2**31 + 2**15 rows
    with pytest.raises(ValueError, match=r"d covers 2147516416 token rows; at most 2\*\*31 - 1"):
        m3kernels.maxsim(one, big)
    with pytest.raises(ValueError, match="q covers 2147516416 token rows"):
        m3kernels.maxsim(big, one)
    ids = torch.full((1, 1), 7, dtype=torch.int64, device=DEVICE).expand(2**16 + 1, 2**15)
    with pytest.raises(ValueError, match="hidden covers 2147516416 token rows"):
        m3kernels.lexical_weights(big, ids, one.reshape(1), 0.0)
    packed = one[0].expand(2**31, 1)
    cu = torch.tensor([0, 2**31], dtype=torch.int64, device=DEVICE)
    with pytest.raises(ValueError, match="cu_seqlens_d covers 2147483648 token rows"):
        m3kernels.maxsim_varlen(one[0], torch.tensor([0, 1], device=DEVICE), packed, cu)
    with pytest.raises(ValueError, match="cu_seqlens covers 2147483648 token rows"):
        m3kernels.lexical_weights(packed, ids.reshape(-1)[:1].expand(2**31), one.reshape(1), 0.0, cu_seqlens=cu)
    x = one.expand(2**31, 1, 1)
    with pytest.raises(ValueError, match="cu_seqlens covers 2147483648 token rows"):
        m3kernels.attention_varlen(x, x, x, cu, 2**31)


def test_m3k_backend_env(monkeypatch):
    """M3K_BACKEND replaces auto for kernel dtypes; float64 (the oracle) still goes to the reference, and a
    bad value names the variable."""
    q64, d64 = Q.double(), D.double()
    monkeypatch.setenv("M3K_BACKEND", "cpu" if DEVICE.type == "cpu" else "triton")
    torch.testing.assert_close(m3kernels.maxsim(q64, d64), m3kernels.maxsim(q64, d64, backend="reference"))
    monkeypatch.setenv("M3K_BACKEND", "tpu")
    with pytest.raises(ValueError, match="M3K_BACKEND"):
        m3kernels.maxsim(Q, D)



BAD_CU = [[0, 4, 10_000_000], [0, -7, 10], [0, 9, 2], [0, 2**31 + 3, 10]]  # past the end, negative, decreasing, wraps


@pytest.mark.parametrize("backend", ["reference", *backends("maxsim")])
@pytest.mark.parametrize("cu_d", BAD_CU)
def test_maxsim_bad_offsets_with_checks_off_stay_in_bounds(backend, cu_d, monkeypatch):
    """With the data checks off (M3K_SKIP_DATA_CHECKS=1, torch.compile, trusted_inputs) bad offsets give a wrong
    answer, never a read or write out of bounds: every backend runs on offsets kept inside the rows (the host ones
    on _checks.bounded_offsets, the GPU kernels clamp them: test_maxsim.py). Under AddressSanitizer in CI."""
    monkeypatch.setenv("M3K_SKIP_DATA_CHECKS", "1")
    q, d = torch.randn(8, 16, device=DEVICE), torch.randn(10, 16, device=DEVICE)
    cu_d = torch.tensor(cu_d, device=DEVICE)
    for cu_q in ([0, 3, 8], [0, 8]):  # several queries (row blocks on the GPU) and one
        cu_q = torch.tensor(cu_q, device=DEVICE)
        out = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend=backend)
        assert out.shape == (len(cu_q) - 1, 2)
        if backend in ("cpu", "reference"):
            want = m3kernels.maxsim_varlen(q, cu_q, d, _checks.bounded_offsets(cu_d, 10), backend=backend)
            assert torch.equal(out, want)


@pytest.mark.parametrize("backend", ["reference", *backends("lexical_weights")])
@pytest.mark.parametrize("cu", BAD_CU)
def test_lexical_weights_bad_offsets_with_checks_off_stay_in_bounds(backend, cu, monkeypatch):
    monkeypatch.setenv("M3K_SKIP_DATA_CHECKS", " True")  # any of 1 / true / yes / on
    hidden, ids = torch.randn(10, 16, device=DEVICE), torch.randint(0, 100, (10,), device=DEVICE)
    w, cu = torch.randn(16, device=DEVICE), torch.tensor(cu, device=DEVICE)
    out = m3kernels.lexical_weights(hidden, ids, w, 0.0, cu_seqlens=cu, backend=backend)
    want = m3kernels.lexical_weights(hidden, ids, w, 0.0, cu_seqlens=_checks.bounded_offsets(cu, 10), backend=backend)
    for a, b in zip((out.indptr, out.ids, out.values), (want.indptr, want.ids, want.values), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", backends("lexical_scores"))
@pytest.mark.parametrize("pairwise", [False, True])
def test_lexical_scores_bad_batches_with_checks_off_stay_in_bounds(backend, pairwise, monkeypatch):
    """A SparseBatch built with the data checks off (or by SparseBatch.trusted) was never read: indptr past nnz,
    rows overlapping or running backwards give the kernels wrong scores, never an access out of bounds (the
    reference, torch indexing, raises torch's error instead)."""
    monkeypatch.setenv("M3K_SKIP_DATA_CHECKS", "1")
    dev = dict(device=DEVICE)
    ids, vals = torch.tensor([5, 7], **dev), torch.tensor([1.0, 2.0], **dev)
    good = SparseBatch(torch.tensor([0, 1, 2], **dev), ids, vals)
    for indptr in ([0, 2, 0], [0, 1 << 20, 2], [-9, 2, 1], [2**40, 0, 2]):
        bad = SparseBatch(torch.tensor(indptr, **dev), torch.tensor([5, 10**9], **dev), vals)
        for q, d in ((bad, good), (good, bad), (bad, bad)):
            out = m3kernels.lexical_scores(q, d, pairwise=pairwise, backend=backend)
            assert out.shape == ((2,) if pairwise else (2, 2))


def test_lexical_scores_checks_the_layout_of_trusted_batches():
    ids, vals = torch.tensor([5, 7], device=DEVICE), torch.tensor([1.0, 2.0], device=DEVICE)
    indptr = torch.tensor([0, 2], device=DEVICE)
    good = SparseBatch(indptr, ids, vals)
    with pytest.raises(ValueError, match=r"d.ids \(2\) and d.values \(0\) must have one length"):
        m3kernels.lexical_scores(good, SparseBatch.trusted(indptr, ids, vals[:0]))
    with pytest.raises(TypeError, match=r"q\.ids must have dtype int64; got int32"):
        m3kernels.lexical_scores(SparseBatch.trusted(indptr, ids.int(), vals), good)


@pytest.mark.parametrize("backend", ["reference", *backends("lexical_weights")])
def test_lexical_weights_max_seqlen_below_a_text_with_checks_off(backend, monkeypatch):
    """max_seqlen below a text's length (a bound the Triton pool sizes its sort block by) may drop that text's
    tokens past the block, but the SparseBatch stays consistent: indptr counts exactly the entries stored, each
    row's ids ascending. Scratch memory comes zeroed here, which made the Triton pool count a run it never stored
    (its last lane read a key past the block)."""
    monkeypatch.setenv("M3K_SKIP_DATA_CHECKS", "1")
    zeros = torch.zeros
    monkeypatch.setattr(torch, "empty", lambda *a, **k: zeros(*a, **k))
    hidden = torch.ones(40, 16, device=DEVICE)
    ids = torch.zeros(40, dtype=torch.int64, device=DEVICE)
    out = m3kernels.lexical_weights(hidden, ids, torch.ones(16, device=DEVICE), 0.0, skip_ids=(), vocab_size=10,
                                    cu_seqlens=torch.tensor([0, 40], device=DEVICE), max_seqlen=4, backend=backend)
    assert out.indptr.tolist() == [0, len(out.ids)] and out.ids.tolist() == [0]


@pytest.mark.skipif("triton" not in backends("attention_varlen"), reason="needs the triton backend")
def test_attention_max_seqlen_below_a_sequence_with_checks_off(monkeypatch):
    """With the checks off, a max_seqlen below a sequence's length must not let the Triton kernels walk past the
    rows their grid covers (ceil(max_seqlen / block) blocks): beyond them the int32 in-sequence offsets, bounded
    for max_seqlen only, could wrap on tensors of 2^31 elements. The sequence is cut there: its first rows attend
    to that many keys."""
    from m3kernels.attention import triton as kernels

    monkeypatch.setenv("M3K_SKIP_DATA_CHECKS", "1")
    q, k, v = (torch.randn(70, 2, 16, device=DEVICE) for _ in range(3))
    cut = kernels._tiles("fwd", 16, q.dtype, q.device).block_m  # one block of rows for max_seqlen=4
    assert cut < 70
    out = m3kernels.attention_varlen(q, k, v, torch.tensor([0, 70], device=DEVICE), 4, backend="triton")
    want = m3kernels.attention_varlen(q[:cut], k[:cut], v[:cut], torch.tensor([0, cut], device=DEVICE), cut,
                                      backend="reference")
    torch.testing.assert_close(out[:cut], want)
