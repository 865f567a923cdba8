"""Test setup: without a GPU the Triton kernels run in the interpreter, which must be switched on before any
@triton.jit function is defined (so before m3kernels' Triton modules are imported)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
