"""Fixtures for the model tests: one tiny BGE-M3 checkpoint per session (real layout, random weights), the
model loaded from it."""

from __future__ import annotations

import random
import shutil

import pytest

from m3kernels.model import BGEM3
from m3kernels.model.testing import build_checkpoint, random_text


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("bge-m3-tiny") / "ckpt", seed=0)


@pytest.fixture
def ckpt_copy(tiny_ckpt, tmp_path):
    """A private copy of the tiny checkpoint that a test may break."""
    return shutil.copytree(tiny_ckpt, tmp_path / "ckpt")


@pytest.fixture(scope="session")
def model(tiny_ckpt):
    return BGEM3.from_pretrained(tiny_ckpt, device="cpu")


@pytest.fixture(scope="session")
def texts():
    rng = random.Random(3)
    out = ["hello", "", "der Hund der Hund der Hund der Hund", random_text(rng, 400, "en"), random_text(rng, 90, "zh")]
    return out + [random_text(rng, rng.randint(1, 50)) for _ in range(9)]
