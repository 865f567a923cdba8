"""Checkpoint loading: both weight formats, the optional "roberta." prefix, and a clear CheckpointError for
every broken file (FlagEmbedding would silently randomise missing heads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from m3kernels.model import BGEM3, CheckpointError
from m3kernels.model.testing import build_checkpoint


def _edit_json(path, **changes):
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def test_bin_with_roberta_prefix_loads_the_same_weights(tiny_ckpt, model, tmp_path):
    other = build_checkpoint(tmp_path / "bin", seed=0, weights_format="bin", key_prefix="roberta.")
    assert not (other / "model.safetensors").exists()
    got = BGEM3.from_pretrained(other, device="cpu").encode(["a test text"], return_colbert_vecs=True)
    want = model.encode(["a test text"], return_colbert_vecs=True)
    np.testing.assert_array_equal(got["dense_vecs"], want["dense_vecs"])
    np.testing.assert_array_equal(got["colbert_vecs"][0], want["colbert_vecs"][0])


def test_head_files_are_fp16_and_loaded(tiny_ckpt, model):
    sparse = torch.load(tiny_ckpt / "sparse_linear.pt")
    assert sparse["weight"].dtype == torch.float16
    torch.testing.assert_close(model.sparse_linear.weight, sparse["weight"].float(), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda p: (p / "config.json").unlink(), "config.json is missing"),
        (lambda p: (p / "config.json").write_text("{not json"), "unreadable"),
        (lambda p: _edit_json(p / "config.json", model_type="bert", architectures=["BertModel"]),
         "unknown architecture"),
        (lambda p: _edit_json(p / "config.json", is_decoder=True), "is_decoder"),
        (lambda p: _edit_json(p / "config.json", hidden_act="swish"), "hidden_act"),
        (lambda p: (p / "model.safetensors").unlink(), "no backbone weights"),
        (lambda p: (p / "model.safetensors").write_bytes(b"garbage" * 10), "unreadable"),
        (lambda p: _edit_json(p / "config.json", intermediate_size=96), "has shape"),
        (lambda p: _edit_json(p / "config.json", num_hidden_layers=3), "missing"),
        (lambda p: _edit_json(p / "config.json", num_hidden_layers=1), "unexpected"),
        (lambda p: (p / "colbert_linear.pt").unlink(), "colbert_linear.pt is missing"),
        (lambda p: (p / "sparse_linear.pt").unlink(), "sparse_linear.pt is missing"),
        (lambda p: torch.save({"weight": torch.zeros(2, 64), "bias": torch.zeros(2)}, p / "sparse_linear.pt"),
         "do not fit"),
        (lambda p: torch.save({"weight": torch.zeros(64, 32), "bias": torch.zeros(64)}, p / "colbert_linear.pt"),
         "do not fit"),
        (lambda p: torch.save({"w": torch.zeros(1, 64)}, p / "sparse_linear.pt"), "state_dict"),
        (lambda p: (p / "colbert_linear.pt").write_bytes(b"\x00\x01"), "unreadable"),
        (lambda p: (p / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda p: (p / "tokenizer.json").write_text("{}"), "tokenizer"),
        (lambda p: _edit_json(p / "config.json", pad_token_id=0), "pad_token_id"),
    ],
)
def test_broken_checkpoints_raise_clear_errors(ckpt_copy, breakage, message):
    breakage(ckpt_copy)
    with pytest.raises(CheckpointError, match=message):
        BGEM3.from_pretrained(ckpt_copy, device="cpu")


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        BGEM3.from_pretrained(tmp_path / "nope", device="cpu")


def test_colbert_dim_may_differ_from_hidden(tmp_path):
    path = build_checkpoint(tmp_path / "c", colbert_dim=24)
    res = BGEM3.from_pretrained(path, device="cpu").encode("some words", return_colbert_vecs=True)
    assert res["colbert_vecs"].shape[1] == 24
