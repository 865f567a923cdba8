"""The packed encoder against a padded float64 implementation and transformers' XLMRobertaModel, in fp32,
fp16 and bf16; positions restart per text; results do not depend on the batch they ran in."""

from __future__ import annotations

import pytest
import torch
from model_helpers import hf_state, pad_batch, padded_reference

from m3kernels.model import BGEM3
from m3kernels.model.encoder import packed_positions


def _random_seqs(lengths, vocab):
    gen = torch.Generator().manual_seed(1)
    return [[0, *torch.randint(4, vocab - 1, (n - 2,), generator=gen).tolist(), 2] for n in lengths]


def _packed(seqs):
    ids = torch.tensor([t for s in seqs for t in s])
    cu = torch.tensor([0, *torch.cumsum(torch.tensor([len(s) for s in seqs]), 0).tolist()], dtype=torch.int32)
    return ids, cu


LENGTHS = [2, 7, 33, 3, 130, 64]


def test_packed_encoder_matches_padded_float64_reference(tiny_ckpt, model):
    cfg = model.encoder.config
    seqs = _random_seqs(LENGTHS, cfg.vocab_size)
    ids, cu = _packed(seqs)
    with torch.no_grad():
        got = model.encoder(ids, cu, max(LENGTHS))
    pids, mask = pad_batch(seqs, cfg.pad_token_id)
    want = padded_reference(hf_state(tiny_ckpt), cfg, pids, mask)[mask.bool()]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


def test_packed_encoder_matches_transformers(tiny_ckpt, model):
    transformers = pytest.importorskip("transformers")
    ref = transformers.XLMRobertaModel.from_pretrained(tiny_ckpt, attn_implementation="eager").eval()
    seqs = _random_seqs(LENGTHS, model.encoder.config.vocab_size)
    pids, mask = pad_batch(seqs, 1)
    ids, cu = _packed(seqs)
    with torch.no_grad():
        want = ref(input_ids=pids, attention_mask=mask).last_hidden_state[mask.bool()]
        got = model.encoder(ids, cu, max(LENGTHS))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float16, 3e-2), (torch.bfloat16, 1.5e-1)])
def test_half_precision_encoder(tiny_ckpt, model, dtype, atol):
    half = BGEM3.from_pretrained(tiny_ckpt, device="cpu", dtype=dtype)
    assert half.dtype == dtype and half.colbert_linear.weight.dtype == dtype
    seqs = _random_seqs(LENGTHS, model.encoder.config.vocab_size)
    ids, cu = _packed(seqs)
    with torch.no_grad():
        got, want = half.encoder(ids, cu, max(LENGTHS)), model.encoder(ids, cu, max(LENGTHS))
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, atol=atol, rtol=0.05)
    res = half.encode(["a short text", "der Hund"], return_sparse=True, return_colbert_vecs=True)
    ref = model.encode(["a short text", "der Hund"])
    assert (res["dense_vecs"] * ref["dense_vecs"]).sum(1).min() > 0.995


def test_positions_restart_per_text_and_skip_pad_tokens():
    ids = torch.tensor([0, 5, 2, 0, 6, 1, 7, 2, 0, 2])
    cu = torch.tensor([0, 3, 8, 10], dtype=torch.int32)
    got = packed_positions(ids, cu, pad_id=1)
    # transformers' rule: a literal pad token gets position pad_id and is not counted
    assert got.tolist() == [2, 3, 4, 2, 3, 1, 4, 5, 2, 3]


def test_results_do_not_depend_on_batch_composition(model, texts):
    kwargs = {"return_sparse": True, "return_colbert_vecs": True, "max_length": 512}
    together = model.encode(texts, **kwargs)
    small_batches = model.encode(texts, batch_tokens=64, batch_size=3, **kwargs)
    for i, text in enumerate(texts[:6]):
        alone = model.encode([text], **kwargs)
        for other in (together, small_batches):
            torch.testing.assert_close(other["dense_vecs"][i], alone["dense_vecs"][0], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(other["colbert_vecs"][i], alone["colbert_vecs"][0], atol=1e-6, rtol=1e-6)
            assert other["lexical_weights"][i].keys() == alone["lexical_weights"][0].keys()
            for k, w in alone["lexical_weights"][0].items():
                assert abs(other["lexical_weights"][i][k] - w) < 1e-5


def test_reference_backend_gives_the_same_model_outputs(tiny_ckpt, model, texts):
    ref = BGEM3.from_pretrained(tiny_ckpt, device="cpu", backend="reference")
    got = model.encode(texts, return_sparse=True)
    want = ref.encode(texts, return_sparse=True)
    torch.testing.assert_close(got["dense_vecs"], want["dense_vecs"], atol=1e-5, rtol=1e-5)
    assert [d.keys() for d in got["lexical_weights"]] == [d.keys() for d in want["lexical_weights"]]
