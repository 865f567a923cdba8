"""Backend selection: auto, M3K_BACKEND, explicit unavailable backends, and life without the compiled module."""

import os
import subprocess
import sys

import pytest
import torch

import m3kernels
from m3kernels import _backend, _native
from tests.helpers import backends

Q, D = torch.randn(2, 3, 8), torch.randn(4, 5, 8)


def test_auto_picks_the_cpu_kernels_for_cpu_tensors():
    assert _backend.resolve("maxsim", "auto", torch.device("cpu")) == "cpu"
    assert _backend.resolve("maxsim", "auto", torch.device("cpu"), torch.float64) == "reference"


def test_env_overrides_auto(monkeypatch):
    monkeypatch.setenv("M3K_BACKEND", "reference")
    assert _backend.resolve("lexical_weights", "auto", torch.device("cpu")) == "reference"
    monkeypatch.setenv("M3K_BACKEND", "cuda")
    if "cuda" in backends("maxsim", torch.device("cpu")):  # the emulated CUDA kernels take CPU tensors
        m3kernels.maxsim(Q, D)
    else:  # the error names the variable: the caller passed no backend
        with pytest.raises(RuntimeError, match=r"backend 'cuda' \(from the environment variable M3K_BACKEND, "
                                               r"replacing backend='auto'\) is unavailable for maxsim"):
            m3kernels.maxsim(Q, D)
    # Ops without that backend stay on auto: attention has no CUDA kernels.
    assert _backend.for_op("attention_varlen", "cuda") == "auto" and _backend.for_op("maxsim", "cuda") == "cuda"
    x = torch.randn(5, 2, 8)
    m3kernels.attention_varlen(x, x, x, torch.tensor([0, 2, 5]), 3)
    # An explicit argument still wins over the environment.
    torch.testing.assert_close(m3kernels.maxsim(Q, D, backend="cpu"), m3kernels.maxsim(Q, D, backend="reference"))


def test_cuda_emulation_module_is_loaded_when_named():
    """.ci/run's second session sets M3K_CUDA_EMU_MODULE to the emulated build (tests/cuda_emu.py): it must load
    and serve backend="cuda" on CPU tensors, so that the CUDA tests there cannot all skip unnoticed."""
    if not os.environ.get("M3K_CUDA_EMU_MODULE"):
        pytest.skip("M3K_CUDA_EMU_MODULE is not set (only .ci/run's emulated session sets it)")
    assert _native.IMPORT_ERROR is None and _native.cuda_emulated()
    assert "cuda" in backends("maxsim") and "cuda" in backends("lexical_weights")
    assert _backend.resolve("maxsim", "auto", torch.device("cpu")) == "cpu"  # auto never picks the emulation


def test_explicit_unavailable_backend_names_the_reason():
    with pytest.raises(RuntimeError, match="attention_varlen has no 'cuda' backend"):
        x = torch.randn(3, 2, 4)
        m3kernels.attention_varlen(x, x, x, torch.tensor([0, 3], dtype=torch.int32), 3, backend="cuda")


@pytest.mark.skipif("cpu" not in backends("maxsim", torch.device("cpu")), reason="needs the compiled module")
@pytest.mark.parametrize(
    ("stand_in", "why"),
    [
        ("None  # makes `from m3kernels import _C` raise ImportError", "import of m3kernels._C halted"),
        ("types.ModuleType('m3kernels._C'); sys.modules['m3kernels._C'].__file__ = '_C.so'", "_C.so is stale"),
    ],
)
def test_without_compiled_module(stand_in, why):
    """With m3kernels._C unimportable or built from other sources (another binding version), auto falls back to
    the reference, 'cpu' raises naming the reason and `m3k info` says so."""
    script = f"""
import sys, types
sys.modules["m3kernels._C"] = {stand_in}
import torch, m3kernels
from m3kernels import _backend, cli
assert _backend.resolve("maxsim", "auto", torch.device("cpu")) == "reference"
q, d = torch.randn(2, 3, 8), torch.randn(4, 5, 8)
print(float(m3kernels.maxsim(q, d).sum()))
try:
    m3kernels.maxsim(q, d, backend="cpu")
except RuntimeError as exc:
    print("cpu backend:", exc)
cli.info()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "backend 'cpu' is unavailable for maxsim on cpu: the compiled module m3kernels._C is unavailable" in out
    assert why in out
    assert "m3kernels._C: UNAVAILABLE" in out
