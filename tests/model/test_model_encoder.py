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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("dtype", "min_cos", "atol"), [(torch.float32, 0.99999, 1e-4), (torch.float16, 0.999, 3e-2),
                                                         (torch.bfloat16, 0.995, 1.5e-1)])
def test_model_on_cuda_matches_cpu(tiny_ckpt, model, texts, dtype, min_cos, atol):
    """The whole model on the GPU kernels (Triton / CUDA attention, sparse, colbert) against the CPU fp32 model."""
    gpu = BGEM3.from_pretrained(tiny_ckpt, device="cuda", dtype=dtype)
    kwargs = {"return_sparse": True, "return_colbert_vecs": True, "max_length": 512}
    got, want = gpu.encode(texts, **kwargs), model.encode(texts, **kwargs)
    assert (got["dense_vecs"] * want["dense_vecs"]).sum(1).min() > min_cos
    for a, b in zip(got["colbert_vecs"], want["colbert_vecs"], strict=True):
        assert a.shape == b.shape and (a * b).sum(1).min() > min_cos
    for a, b in zip(got["lexical_weights"], want["lexical_weights"], strict=True):
        for k in a.keys() & b.keys():
            assert abs(a[k] - b[k]) < atol * max(1.0, abs(b[k]))
    seqs = _random_seqs([1024, 5, 300], model.encoder.config.vocab_size)  # long texts: several attention tiles
    ids, cu = _packed(seqs)
    with torch.no_grad():
        long_gpu = gpu.encoder(ids.cuda(), cu.cuda(), 1024).float().cpu()
        long_cpu = model.encoder(ids, cu, 1024)
    torch.testing.assert_close(long_gpu, long_cpu, atol=atol, rtol=0.05)


def test_forward_packed_validates_once_then_trusts_the_ops(model, monkeypatch):
    """Bad packed input is refused up front; inside, the ops run without their per-call data checks (no
    per-layer NaN scans or host syncs)."""
    from m3kernels import _checks

    seqs = _random_seqs([5, 9], model.encoder.config.vocab_size)
    ids, cu = _packed(seqs)
    with pytest.raises(ValueError, match="input_ids must lie in"):
        model.forward_packed(torch.where(ids == ids[1], model.encoder.config.vocab_size, ids), cu, 9)
    with pytest.raises(ValueError, match="max_seqlen"):
        model.forward_packed(ids, cu, 8)
    with pytest.raises(TypeError, match="input_ids"):
        model.forward_packed(ids.int(), cu, 9)
    with pytest.raises(ValueError, match="cu_seqlens"):
        model.forward_packed(ids, torch.tensor([0, 9, 13], dtype=torch.int32), 9)
    with pytest.raises(ValueError, match="cu_seqlens"):  # 2^32 + 5 would pass as 5 after an int32 conversion
        model.forward_packed(ids, torch.tensor([0, 2**32 + 5, 14]), 9)

    reads = []  # data_checks_enabled() at each value read: every value check goes through read_back
    real_read_back = _checks.read_back

    def recording_read_back(*parts):
        reads.append(_checks._TRUSTED.get())
        return real_read_back(*parts)

    monkeypatch.setattr(_checks, "read_back", recording_read_back)
    out = model.forward_packed(ids, cu, 9, sparse=True, colbert=True)
    assert out.dense.shape[0] == 2
    assert reads == [False]  # the model's own check, once; none inside the trusted forward
    _checks.no_nan("x", torch.ones(3))  # outside the model the ops still check
    assert reads == [False, False]
