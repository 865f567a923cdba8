"""m3kernels.integrations.enable_hf: transformers' XLM-RoBERTa / BERT on attention_varlen equals their eager
attention on padded batches (padding honoured); the mask reader rejects masks that are not padding."""

from __future__ import annotations

import pytest
import torch

from m3kernels.integrations import hf


def test_key_padding_reads_every_mask_form():
    valid = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    additive = torch.zeros(2, 1, 3, 3).masked_fill(~valid[:, None, None, :], torch.finfo(torch.float32).min)
    assert torch.equal(hf.key_padding(valid.long(), 2, 3), valid)
    assert torch.equal(hf.key_padding(additive, 2, 3), valid)
    assert torch.equal(hf.key_padding(additive[:, :, :1], 2, 3), valid)
    assert torch.equal(hf.key_padding(valid[:, None, None, :].expand(2, 1, 3, 3), 2, 3), valid)
    assert hf.key_padding(None, 2, 3) is None
    causal = torch.ones(3, 3, dtype=torch.bool).tril()[None, None].expand(2, 1, 3, 3)
    with pytest.raises(ValueError, match="key-padding"):
        hf.key_padding(causal, 2, 3)


def test_padded_varlen_attention_matches_masked_softmax():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 9, 8, generator=gen) for _ in range(3))
    valid = torch.ones(3, 9, dtype=torch.bool)
    valid[0, 5:] = False
    valid[2, :2] = False  # left padding too
    out = hf.padded_varlen_attention(q, k, v, valid, 8**-0.5)
    scores = (q @ k.transpose(-1, -2)) * 8**-0.5 + torch.where(valid, 0.0, float("-inf"))[:, None, None, :]
    want = (torch.softmax(scores, -1) @ v).transpose(1, 2)
    torch.testing.assert_close(out[valid], want[valid], atol=1e-5, rtol=1e-5)
    assert bool((out[~valid] == 0).all())


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = hf.attention_varlen

    def spy(*args, **kwargs):
        calls.append(args[3].numel() - 1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hf, "attention_varlen", spy)
    return calls


def _padded_inputs(vocab):
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(4, vocab - 1, (4, 21), generator=gen)
    mask = torch.ones_like(ids)
    for row, n in enumerate([21, 9, 3, 15]):
        mask[row, n:] = 0
    ids[:, 0] = 0
    return ids.masked_fill(mask == 0, 1), mask


def test_xlm_roberta_matches_eager_on_padded_batches(tiny_ckpt, counted):
    transformers = pytest.importorskip("transformers")
    eager = transformers.XLMRobertaModel.from_pretrained(tiny_ckpt, attn_implementation="eager").eval()
    ours = hf.enable_hf(transformers.XLMRobertaModel.from_pretrained(tiny_ckpt).eval())
    ids, mask = _padded_inputs(eager.config.vocab_size)
    with torch.no_grad():
        want = eager(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
        got_unpadded = ours(input_ids=ids[:1]).last_hidden_state
    assert counted, "the model did not call attention_varlen"
    m = mask.bool()
    torch.testing.assert_close(got[m], want[m], atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(got_unpadded, want[:1], atol=2e-5, rtol=2e-5)


def test_bert_matches_eager(counted):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, attn_implementation="eager")
    torch.manual_seed(0)
    eager = transformers.BertModel(cfg).eval()
    ours = transformers.BertModel(cfg).eval()
    ours.load_state_dict(eager.state_dict())
    hf.enable_hf(ours)
    ids, mask = _padded_inputs(50)
    with torch.no_grad():
        want = eager(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    assert counted
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=2e-5, rtol=2e-5)


def test_each_model_keeps_its_backend(tiny_ckpt, monkeypatch):
    """The attention function is registered once for all models; each model's layers run on the backend its own
    enable_hf call named, whatever later calls name for other models."""
    transformers = pytest.importorskip("transformers")
    used = []
    real = hf.attention_varlen

    def spy(*args, backend="auto", **kwargs):
        used.append(backend)
        return real(*args, backend=backend, **kwargs)

    monkeypatch.setattr(hf, "attention_varlen", spy)
    first = hf.enable_hf(transformers.XLMRobertaModel.from_pretrained(tiny_ckpt).eval(), backend="reference")
    second = hf.enable_hf(transformers.XLMRobertaModel.from_pretrained(tiny_ckpt).eval(), backend="cpu")
    ids, mask = _padded_inputs(first.config.vocab_size)
    with torch.no_grad():
        for model, backend in ((first, "reference"), (second, "cpu")):
            used.clear()
            model(input_ids=ids, attention_mask=mask)
            assert used and set(used) == {backend}


def test_enable_hf_rejects_decoders():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, is_decoder=True)
    with pytest.raises(ValueError, match="is_decoder"):
        hf.enable_hf(transformers.BertModel(cfg))
