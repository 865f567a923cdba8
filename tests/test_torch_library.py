"""The kernel backends are torch.library custom ops: opcheck and torch.compile(fullgraph=True)."""

import contextlib
import importlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import m3kernels
from m3kernels import SparseBatch
from tests.helpers import DEVICE, cu_from_lengths, fast_backends


def _maxsim_args(pairwise):
    q = torch.randn(9, 16, device=DEVICE, requires_grad=True)
    d = torch.randn(20, 16, device=DEVICE, requires_grad=True)
    cu_q = cu_from_lengths([4, 5])
    cu_d = cu_from_lengths([7, 13] if pairwise else [7, 0, 13])
    return (
        q,
        cu_q[:-1].contiguous(),
        (cu_q[1:] - cu_q[:-1]).contiguous(),
        d,
        cu_d[:-1].contiguous(),
        (cu_d[1:] - cu_d[:-1]).contiguous(),
    )


@pytest.mark.parametrize("backend", fast_backends("maxsim"))
@pytest.mark.parametrize("pairwise", [False, True])
def test_maxsim_opcheck(backend, pairwise):
    op = importlib.import_module(f"m3kernels.maxsim.{backend}").op
    torch.library.opcheck(op, (*_maxsim_args(pairwise), pairwise, True, True))


@pytest.mark.parametrize("backend", fast_backends("lexical_weights"))
def test_lexical_pool_opcheck(backend):
    mod = importlib.import_module(f"m3kernels.sparse.{backend}")
    h = torch.randn(12, 8, device=DEVICE, requires_grad=True)
    ids = torch.randint(0, 9, (12,), device=DEVICE)
    cu = cu_from_lengths([5, 7])
    args = (
        h,
        ids,
        cu[:-1].contiguous(),
        (cu[1:] - cu[:-1]).contiguous(),
        torch.randn(8, device=DEVICE, requires_grad=True),
        torch.tensor([0.1], device=DEVICE),
        torch.tensor([0, 1, 2, 3], device=DEVICE),
        7,
        9,
    )
    # The pool's outputs include integer slots left unwritten (beyond each text's count), so compare the
    # schema / fake / autograd registration, not bitwise outputs.
    torch.library.opcheck(
        mod.pool_op, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration")
    )


@pytest.mark.parametrize("backend", fast_backends("attention_varlen"))
def test_attention_opcheck(backend):
    op = importlib.import_module(f"m3kernels.attention.{backend}").op
    q, k, v = (torch.randn(9, 2, 8, device=DEVICE, requires_grad=True) for _ in range(3))
    torch.library.opcheck(op, (q, k, v, cu_from_lengths([4, 5]), 5, 0.35))


@pytest.mark.parametrize("backend", fast_backends("maxsim"))
def test_maxsim_compiles_fullgraph(backend):
    q = torch.randn(3, 6, 16, device=DEVICE, requires_grad=True)
    d = torch.randn(4, 10, 16, device=DEVICE)

    def loss(q, d):
        return m3kernels.maxsim(q, d, normalize=True, backend=backend).logsumexp(-1).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got, want = compiled(q, d), loss(q, d)
    torch.testing.assert_close(got, want)
    (g1,) = torch.autograd.grad(got, q)
    (g2,) = torch.autograd.grad(want, q)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("backend", fast_backends("attention_varlen"))
def test_attention_compiles_fullgraph(backend):
    q, k, v = (torch.randn(9, 2, 8, device=DEVICE) for _ in range(3))
    cu = cu_from_lengths([4, 5])
    fn = torch.compile(
        lambda q, k, v: m3kernels.attention_varlen(q, k, v, cu, 5, backend=backend) * 2,
        fullgraph=True,
        backend="aot_eager",
    )
    torch.testing.assert_close(fn(q, k, v), m3kernels.attention_varlen(q, k, v, cu, 5, backend=backend) * 2)


@pytest.mark.parametrize("backend", fast_backends("lexical_weights"))
@pytest.mark.parametrize("padded", [False, True])
def test_lexical_weights_compiles_fullgraph(backend, padded):
    """The sparse training path (weights -> scores -> loss) traces in one graph despite its data-dependent nnz."""
    h = torch.randn(2, 11, 8, device=DEVICE, requires_grad=True)
    ids = torch.randint(4, 14, (2, 11), device=DEVICE)
    mask = torch.ones(2, 11, dtype=torch.bool, device=DEVICE)
    mask[1, 6:] = False
    w = torch.randn(8, device=DEVICE, requires_grad=True)

    def loss(h, w):
        if padded:
            sparse = m3kernels.lexical_weights(h, ids, w, 0.1, attention_mask=mask, backend=backend)
        else:
            sparse = m3kernels.lexical_weights(
                h[mask], ids[mask], w, 0.1, cu_seqlens=cu_from_lengths([11, 6]), backend=backend
            )
        scores = m3kernels.lexical_scores(sparse, sparse, backend=backend)
        return scores.sum() + (sparse.values**2).sum(), sparse

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    (got, got_sparse), (want, want_sparse) = compiled(h, w), loss(h, w)
    torch.testing.assert_close(got, want)
    for a, b in zip((got_sparse.indptr, got_sparse.ids), (want_sparse.indptr, want_sparse.ids), strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(torch.autograd.grad(got, (h, w)), torch.autograd.grad(want, (h, w)))


def test_eager_calls_skip_the_op_layer_and_everything_else_keeps_it(monkeypatch):
    """Eager, plain tensors: no autograd graph -> the backend function runs directly; a graph -> a plain
    autograd.Function over the same functions (the torch.library layer costs more host time than the launch on a
    GPU machine). A dispatch mode or a functorch transform keeps the op."""
    from m3kernels import _backend

    calls = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append(str(func))
            return func(*args, **(kwargs or {}))

    q, d = torch.randn(5, 8), torch.randn(9, 8)
    cu_q, cu_d = torch.tensor([0, 2, 5]), torch.tensor([0, 4, 9])
    assert _backend.op_layer(q, d) == "direct"
    with torch.no_grad():
        assert _backend.op_layer(q.requires_grad_(), d) == "direct"
    assert _backend.op_layer(q, d) == "autograd"  # q requires grad, grad mode on
    q.requires_grad_(False)
    with Recorder():
        assert _backend.op_layer(q, d) == "op"
        direct = m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="cpu")
    assert any("m3k.maxsim_cpu" in c for c in calls)
    assert torch.equal(direct, m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="cpu"))
    assert torch.func.vmap(lambda x: torch.tensor(_backend.op_layer(x) == "op"))(q[None]).item() is True

    from m3kernels.maxsim import cpu

    def refuse(*args):
        raise AssertionError("the torch.library op ran in an eager call")

    def m3k_ops(fn):  # the m3k:: ops the profiler saw (it is no dispatch mode: op_layer is unaffected)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        return {e.name for e in prof.events() if e.name.startswith("m3k::")}

    def train_step():
        torch.autograd.grad(m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="cpu").sum(), q)

    q.requires_grad_()
    assert m3k_ops(train_step) == set()  # neither the forward nor the backward op
    with _Ops():
        assert m3k_ops(train_step) == {"m3k::maxsim_cpu", "m3k::maxsim_cpu_backward"}
    monkeypatch.setattr(cpu, "op", refuse)
    m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="cpu")  # autograd: the op is not called
    m3kernels.maxsim_varlen(q.detach(), cu_q, d, cu_d, backend="cpu")  # direct: nor here
    with Recorder(), pytest.raises(AssertionError, match="op ran"):
        m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="cpu")


class _Ops(TorchDispatchMode):
    """Forces the torch.library op path (a dispatch mode is active) without changing any result."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _grads(call, inputs):
    for x in inputs:
        x.grad = None
    out = call()
    out = out.values if isinstance(out, SparseBatch) else out
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
    return out.detach(), *(x.grad for x in inputs)


@pytest.mark.parametrize("op", ["maxsim", "attention_varlen", "lexical_weights"])
def test_eager_autograd_matches_the_op_bitwise(op):
    """The eager autograd.Function and the torch.library op run the same functions: outputs and gradients agree
    bit for bit (CPU backend; under a dispatch mode the op path is taken)."""
    torch.manual_seed(0)
    if op == "maxsim":
        q, d = torch.randn(5, 16, requires_grad=True), torch.randn(9, 16, requires_grad=True)
        cu_q, cu_d = torch.tensor([0, 2, 5]), torch.tensor([0, 4, 9])
        inputs, call = (q, d), lambda: m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="cpu")
    elif op == "attention_varlen":
        q, k, v = (torch.randn(7, 2, 16, requires_grad=True) for _ in range(3))
        cu = torch.tensor([0, 3, 7])
        inputs, call = (q, k, v), lambda: m3kernels.attention_varlen(q, k, v, cu, 4, backend="cpu")
    else:
        h, w = torch.randn(12, 16, requires_grad=True), torch.randn(16, requires_grad=True)
        ids = torch.randint(4, 9, (12,))
        inputs, call = (h, w), lambda: m3kernels.lexical_weights(h, ids, w, 0.1, cu_seqlens=torch.tensor([0, 5, 12]),
                                                                 backend="cpu")
    eager = _grads(call, inputs)
    with _Ops():
        through_op = _grads(call, inputs)
    for a, b in zip(eager, through_op, strict=True):
        assert torch.equal(a, b)
    def second_backward():
        out = call()
        out = out.values if isinstance(out, SparseBatch) else out
        (g,) = torch.autograd.grad(out.pow(2).sum(), inputs[:1], create_graph=True)
        return torch.autograd.grad(g.pow(2).sum(), inputs, allow_unused=True)

    if op == "lexical_weights":  # a backward of torch ops: twice differentiable either way
        twice = second_backward()
        with _Ops():
            assert all(torch.equal(a, b) for a, b in zip(twice, second_backward(), strict=True))
        return
    # A backward of kernels has no double backward: the same error either way (not silently None gradients).
    for mode in (contextlib.nullcontext, _Ops):
        with mode(), pytest.raises(RuntimeError, match="no autograd formula was registered"):
            second_backward()


@pytest.mark.parametrize("op", ["maxsim", "attention_varlen"])
def test_vectorized_jacobian_takes_the_backward_op(op):
    """jacobian(vectorize=True) sends batched gradients (no storage) through the backward: the eager path hands
    them to the backward op, which handles them, as the op path does."""
    torch.manual_seed(0)
    if op == "maxsim":
        d, cu_q, cu_d = torch.randn(9, 16), torch.tensor([0, 2, 5]), torch.tensor([0, 4, 9])
        x = torch.randn(5, 16)

        def f(q):
            return m3kernels.maxsim_varlen(q, cu_q, d, cu_d, backend="cpu")
    else:
        k, v, cu = torch.randn(7, 2, 16), torch.randn(7, 2, 16), torch.tensor([0, 3, 7])
        x = torch.randn(7, 2, 16)

        def f(q):
            return m3kernels.attention_varlen(q, k, v, cu, 4, backend="cpu")
    eager = torch.autograd.functional.jacobian(f, x, vectorize=True)
    with _Ops():
        through_op = torch.autograd.functional.jacobian(f, x, vectorize=True)
    assert torch.equal(eager, through_op)
    torch.testing.assert_close(eager, torch.autograd.functional.jacobian(f, x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_traces_and_modes_record_the_op_not_a_bare_launch():
    """torch.jit.trace records the op (a direct raw-pointer call would leave an uninitialised output in the
    graph); inference mode, then training, then fake-tensor tracing, then eager again all work on one shape."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from m3kernels import _checks

    q, d = torch.randn(2, 5, 8), torch.randn(3, 7, 8)
    traced = torch.jit.trace(lambda a, b: m3kernels.maxsim(a, b, backend="cpu"), (q, d), check_trace=False)
    q2, d2 = torch.randn(2, 5, 8), torch.randn(3, 7, 8)
    torch.testing.assert_close(traced(q2, d2), m3kernels.maxsim(q2, d2, backend="cpu"))
    with torch.inference_mode():
        m3kernels.maxsim(q, d, backend="cpu")
    qg = q.clone().requires_grad_()
    m3kernels.maxsim(qg, d, backend="cpu").sum().backward()
    assert qg.grad is not None
    with _checks.trusted_inputs():
        make_fx(lambda a, b: m3kernels.maxsim(a, b, backend="cpu"), tracing_mode="fake")(q, d)
    torch.testing.assert_close(m3kernels.maxsim(q, d, backend="cpu"), m3kernels.maxsim(q, d, backend="reference"),
                               rtol=1e-5, atol=1e-4)
