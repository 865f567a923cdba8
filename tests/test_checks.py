"""The shared value checks: one read-back per call, byte-exact host copies, padded layouts."""

import warnings

import pytest
import torch

import m3kernels
from m3kernels import _checks
from m3kernels._segments import uniform_segments
from tests.helpers import backends


def test_read_bytes_round_trips_mixed_dtypes_and_shapes():
    parts = [
        torch.tensor([0, 7, 2**31 - 1], dtype=torch.int32),
        torch.tensor(-(2**62) - 3, dtype=torch.int64),  # 0-d, beyond float64's exact integers
        torch.tensor([[1.5, float("nan")], [float("inf"), -0.0]]),
        torch.tensor([True, False, True]),
        torch.randn(5, 3)[:, 1],  # non-contiguous
    ]
    got = _checks._read_bytes(parts)
    for g, p in zip(got, parts, strict=True):
        assert g.dtype == p.numpy().dtype and g.shape == tuple(p.shape)
        assert g.tobytes() == p.contiguous().numpy().tobytes()


@pytest.mark.parametrize("poison", [None, "nan", "inf"])
def test_raise_if_nan_names_the_tensor_with_nan_only(poison):
    a, b = torch.randn(33), torch.randn(7, 5)
    if poison:
        b[3, 2] = float(poison)
    total = sum(_checks.read_back(_checks.float_sum(a), _checks.float_sum(b)))
    if poison == "nan":
        with pytest.raises(ValueError, match=r"^b contains NaN"):
            _checks.raise_if_nan(total, a=a, b=b)
    else:
        _checks.raise_if_nan(total, a=a, b=b)  # inf is not NaN: no error


def test_cu_seqlens_values_reports_each_fault():
    ok = _checks.cu_seqlens_values("cu", torch.tensor([0, 3, 3, 10], dtype=torch.int32), 10)
    assert ok.tolist() == [3, 0, 7]
    for bad, match in (([1, 3, 10], r"cu\[0\] must be 0"), ([0, 3, 9], r"cu\[-1\] must equal"),
                       ([0, 5, 3, 10], "non-decreasing")):
        with pytest.raises(ValueError, match=match):
            _checks.cu_seqlens_values("cu", torch.tensor(bad), 10)


@pytest.mark.parametrize("n,length", [(1, 1), (7, 33), (3, 0)])
def test_uniform_segments_values(n, length):
    off, lens = uniform_segments(n, length, torch.device("cpu"))
    assert off.dtype == lens.dtype == torch.int32
    assert off.tolist() == [i * length for i in range(n)] and lens.tolist() == [length] * n


def test_ops_read_the_device_once_per_call(monkeypatch):
    """One read-back per call: attention_varlen the offsets and the three NaN sums; maxsim_varlen both offsets
    and the output's sum; lexical_weights the offsets, the ids' range, the output's entry count and sum."""
    reads = []
    real = _checks.read_back

    def counting(*parts):
        reads.append(len(parts))
        return real(*parts)

    monkeypatch.setattr(_checks, "read_back", counting)
    q = torch.randn(10, 2, 16)
    cu = torch.tensor([0, 3, 10], dtype=torch.int32)
    m3kernels.attention_varlen(q, q.clone(), q.clone(), cu, 7, backend="cpu")
    assert reads == [4]
    reads.clear()
    m3kernels.maxsim_varlen(torch.randn(5, 8), torch.tensor([0, 2, 5]), torch.randn(9, 8), cu.new_tensor([0, 4, 9]),
                            backend="cpu")
    assert reads == [3]  # both offsets and the output sum, after the launch
    reads.clear()
    m3kernels.lexical_weights(torch.randn(10, 8), torch.randint(0, 50, (10,)), torch.randn(8), 0.1, cu_seqlens=cu,
                              backend="cpu")
    assert reads == [5]  # offsets, the ids' min and max, the entry count and the output's sum, after the launch


@pytest.mark.parametrize("op", ["attention", "maxsim", "sparse"])
def test_int64_offsets_beyond_int32_are_refused_not_wrapped(op):
    """2^32 + 3 wraps to 3 in int32, which would pass as a valid offset: the values are read from the tensor
    as passed."""
    cu = torch.tensor([0, 2**32 + 3, 10])
    x = torch.randn(10, 2, 8)
    with pytest.raises(ValueError, match=r"non-decreasing|must equal"):
        if op == "attention":
            m3kernels.attention_varlen(x, x, x, cu, 10, backend="cpu")
        elif op == "maxsim":
            m3kernels.maxsim_varlen(x[:, 0], cu, x[:, 1], cu, backend="cpu")
        else:
            m3kernels.lexical_weights(x[:, 0], torch.arange(10), torch.randn(8), 0.0, cu_seqlens=cu, backend="cpu")


def test_attention_reads_offsets_before_host_backends_and_after_triton_launches(monkeypatch):
    """Bad offsets never reach the CPU backend: their values are read before it runs. The Triton kernels, which
    clamp the offsets they read (test_triton_attention), launch on them as passed and the op raises after; above
    the int32 element limit their values are read before the launch too (the kernel is never called)."""
    from m3kernels.attention import api as attention_api
    from m3kernels.attention import cpu as attention_cpu

    seen = []

    def recording(module):
        real = module.forward

        def forward(q, k, v, cu, max_seqlen, scale):
            seen.append(cu.tolist())
            return real(q, k, v, cu, max_seqlen, scale)

        monkeypatch.setattr(module, "forward", forward)

    recording(attention_cpu)
    x = torch.randn(10, 2, 8)
    bad = torch.tensor([0, 7, -4, 25, 10], dtype=torch.int32)
    with pytest.raises(ValueError, match="non-decreasing"):
        m3kernels.attention_varlen(x, x, x, bad, 10, backend="cpu")
    with pytest.raises(ValueError, match="max_seqlen"):
        m3kernels.attention_varlen(x, x, x, torch.tensor([0, 3, 10]), 5, backend="cpu")
    assert seen == []
    if "triton" not in backends("attention_varlen", torch.device("cpu")):  # the interpreter
        return
    from m3kernels.attention import triton as attention_triton

    recording(attention_triton)
    with pytest.raises(ValueError, match="non-decreasing"):
        m3kernels.attention_varlen(x, x, x, bad, 10, backend="triton")
    assert seen == [bad.tolist()]
    monkeypatch.setattr(attention_api, "_DEFER_BELOW_ELEMENTS", x.numel())
    with pytest.raises(ValueError, match="non-decreasing"):
        m3kernels.attention_varlen(x, x, x, bad, 10, backend="triton")
    assert len(seen) == 1


@pytest.mark.parametrize("disjoint", [True, False])
def test_launch_segments_keep_every_item_in_bounds(disjoint):
    """Whatever cu_seqlens holds (negative, past the end, decreasing, beyond int32), the offsets and lengths the
    kernels launch on stay inside [0, total]; disjoint items never overlap; valid offsets pass unchanged."""
    total = 50
    for _ in range(200):
        cu = torch.randint(-60, 120, (int(torch.randint(2, 9, ())),), dtype=torch.int64)
        cu[int(torch.randint(0, len(cu), ()))] += 2**32 + 3 * int(torch.randint(0, 2, ()))
        off, lens = _checks.launch_segments(cu, total, disjoint)
        assert off.dtype == lens.dtype == torch.int32 and len(off) == len(lens) == len(cu) - 1
        assert (off >= 0).all() and (lens >= 0).all() and (off + lens <= total).all()
        if disjoint:
            assert (off[1:] >= off[:-1] + lens[:-1]).all()
    valid = torch.tensor([0, 3, 3, 20, 50])
    for got, want in zip(_checks.launch_segments(valid, total, disjoint), _checks.segments(valid.int()), strict=True):
        assert torch.equal(got, want)


def test_read_back_refuses_dtypes_without_a_host_view():
    with pytest.raises(TypeError, match=r"read_back takes int32, int64, float32, float64 or bool tensors; got "
                                        r"torch\.float16"):
        _checks.read_back(torch.zeros(2, dtype=torch.float16))


def test_attention_input_sums_add_up_without_overflow_warnings():
    """Three finite fp32 input sums whose total passes the fp32 range: no NumPy overflow warning (an error under
    -W error), no NaN search needed."""
    x = torch.zeros(4, 1, 8)
    x[0, 0, 0] = 2e38
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m3kernels.attention_varlen(x, x.clone(), x.clone(), torch.tensor([0, 4], dtype=torch.int32), 4, backend="cpu")
