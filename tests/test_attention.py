"""attention_varlen: kernel backends against the float64 reference."""

import pytest
import torch

import m3kernels
from tests.helpers import DEVICE, cu_from_lengths, fast_backends

BACKENDS = fast_backends("attention_varlen")


def qkv(lengths, heads=3, head_dim=16, dtype=torch.float32, requires_grad=False):
    total = sum(lengths)
    return [
        torch.randn(total, heads, head_dim, device=DEVICE, dtype=dtype, requires_grad=requires_grad) for _ in range(3)
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [[1], [7, 0, 33], [64, 1, 5, 127]])
@pytest.mark.parametrize("head_dim", [16, 64])
def test_forward_matches_reference(backend, lengths, head_dim):
    q, k, v = qkv(lengths, head_dim=head_dim)
    cu = cu_from_lengths(lengths)
    got = m3kernels.attention_varlen(q, k, v, cu, max(lengths), backend=backend)
    want = m3kernels.attention_varlen(q.double(), k.double(), v.double(), cu, max(lengths), backend="reference")
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sequences_do_not_see_each_other(backend):
    q, k, v = qkv([5, 9])
    cu = cu_from_lengths([5, 9])
    before = m3kernels.attention_varlen(q, k, v, cu, 9, backend=backend)
    k2, v2 = k.clone(), v.clone()
    k2[5:], v2[5:] = torch.randn_like(k[5:]), torch.randn_like(v[5:])
    after = m3kernels.attention_varlen(q, k2, v2, cu, 9, backend=backend)
    torch.testing.assert_close(before[:5], after[:5], atol=0, rtol=0)
    assert not torch.allclose(before[5:], after[5:])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_reference(backend):
    lengths = [6, 1, 13]
    q, k, v = qkv(lengths, requires_grad=True)
    cu = cu_from_lengths(lengths)
    out = m3kernels.attention_varlen(q, k, v, cu, 13, scale=0.3, backend=backend)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), g)
    r = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = m3kernels.attention_varlen(*r, cu, 13, scale=0.3, backend="reference")
    want = torch.autograd.grad(ref, r, g.double())
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5)


def test_reference_gradcheck_float64():
    q, k, v = (torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    assert torch.autograd.gradcheck(
        lambda a, b, c: m3kernels.attention_varlen(a, b, c, cu, 3, backend="reference"), (q, k, v)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    qkv = torch.randn(12, 3, 2, 8, device=DEVICE)  # [T, 3, heads, D], as from a fused QKV projection
    q, k, v = qkv.unbind(1)
    assert not q.is_contiguous()
    cu = torch.tensor([0, 99, 5, 99, 12], dtype=torch.int32, device=DEVICE)[::2]  # a strided view: [0, 5, 12]
    got = m3kernels.attention_varlen(q, k, v, cu, 7, backend=backend)
    want = m3kernels.attention_varlen(q.double(), k.double(), v.double(), cu, 7, backend="reference")
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
