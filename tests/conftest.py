"""Test setup: without a GPU the Triton kernels run in the interpreter, which must be switched on before any
@triton.jit function is defined (so before m3kernels' Triton modules are imported)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from hypothesis import settings

# Fuzzing budget: on a GPU every new shape may compile Triton kernels, so fewer examples there.
settings.register_profile("cpu", max_examples=25, deadline=None)
settings.register_profile("gpu", max_examples=8, deadline=None)
settings.load_profile("gpu" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
