"""Bad input gets a clear TypeError / ValueError / RuntimeError naming the argument, never a crash."""

import pytest
import torch

import m3kernels
from m3kernels import SparseBatch
from tests.helpers import DEVICE

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
        m3kernels.maxsim(Q.double(), D.double(), backend="cpu")


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
    ],
)
def test_lexical_weights_rejects(kwargs, exc, match):
    args = {"hidden": H, "input_ids": IDS, "weight": W, "bias": 0.0} | kwargs
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


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"k": torch.randn(4, 2, 8, device=DEVICE).half()}, TypeError, "must have the same dtype"),
        ({"v": torch.randn(4, 2, 4, device=DEVICE)}, ValueError, "one shape"),
        ({"q": torch.randn(4, 8, device=DEVICE)}, ValueError, "q must be 3-D"),
        ({"max_seqlen": 2}, ValueError, "below the longest sequence"),
        ({"max_seqlen": 2.5}, TypeError, "max_seqlen must be a non-negative int"),
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
