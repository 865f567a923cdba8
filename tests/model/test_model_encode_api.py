"""BGEM3's FlagEmbedding-compatible API: encode formats (numpy and torch), compute_score, lexical and colbert
scores, max_length, token-budget batching, MCLS and the progress bar."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m3kernels.model.batching import gather_segments, insert_cls, plan_batches
from m3kernels.sparse import SparseBatch


def _hidden(model, ids):
    cu = torch.tensor([0, len(ids)], dtype=torch.int32)
    with torch.no_grad():
        return model.encoder(torch.tensor(ids), cu, len(ids))


def test_encode_formats_match_the_definitions(model, texts):
    res = model.encode(texts, return_sparse=True, return_colbert_vecs=True)
    assert set(res) == {"dense_vecs", "lexical_weights", "colbert_vecs"}
    assert isinstance(res["dense_vecs"], np.ndarray) and res["dense_vecs"].dtype == np.float32
    assert res["dense_vecs"].shape == (len(texts), 64)
    ids = model.tokenize(texts, 512)
    special = set(model.tokenizer.special_ids)
    for i, text_ids in enumerate(ids):
        hidden = _hidden(model, text_ids)
        np.testing.assert_allclose(res["dense_vecs"][i], F.normalize(hidden[0], dim=0).numpy(), atol=1e-6)
        colbert = F.normalize(model.colbert_linear(hidden[1:]), dim=-1).detach().numpy()
        assert res["colbert_vecs"][i].shape == (len(text_ids) - 1, 64)
        np.testing.assert_allclose(res["colbert_vecs"][i], colbert, atol=1e-6)
        w = torch.relu(model.sparse_linear(hidden)).squeeze(-1).tolist()
        want = {}
        for t, x in zip(text_ids, w, strict=True):
            if t not in special and x > 0:
                want[str(t)] = max(want.get(str(t), 0.0), x)
        got = res["lexical_weights"][i]
        assert got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) < 1e-5 for k in want)
    assert res["lexical_weights"][1] == {}  # the empty string: only <s> </s>
    repeated = model.tokenize([texts[2]], 512)[0]
    assert len(repeated) - 2 > len(res["lexical_weights"][2])  # repeated ids collapse to their max


def test_single_string_and_flags(model):
    res = model.encode("hello world")
    assert res["dense_vecs"].shape == (64,) and res["lexical_weights"] is None and res["colbert_vecs"] is None
    res = model.encode("hello world", return_dense=False, return_sparse=True, return_colbert_vecs=True)
    assert res["dense_vecs"] is None and isinstance(res["lexical_weights"], dict)
    assert res["colbert_vecs"].ndim == 2
    with pytest.raises(ValueError, match="at least one"):
        model.encode("x", return_dense=False)
    with pytest.raises(TypeError, match="str"):
        model.encode(["x", 3])
    empty = model.encode([], return_sparse=True, return_colbert_vecs=True)
    assert empty["dense_vecs"].shape == (0, 64) and empty["lexical_weights"] == [] and empty["colbert_vecs"] == []


def test_torch_output_matches_numpy_output(model, texts):
    kwargs = {"return_sparse": True, "return_colbert_vecs": True}
    ref = model.encode(texts, **kwargs)
    res = model.encode(texts, output="torch", batch_tokens=100, **kwargs)
    assert isinstance(res["dense_vecs"], torch.Tensor) and isinstance(res["lexical_weights"], SparseBatch)
    np.testing.assert_allclose(res["dense_vecs"].numpy(), ref["dense_vecs"], atol=1e-6)
    assert res["lexical_weights"].to_dicts() == ref["lexical_weights"]
    cu = res["colbert_cu_seqlens"].tolist()
    for i, vecs in enumerate(ref["colbert_vecs"]):
        np.testing.assert_allclose(res["colbert_vecs"][cu[i] : cu[i + 1]].numpy(), vecs, atol=1e-6)


def test_max_length_truncates_and_allows_8192(model, texts):
    long_text = " ".join([texts[3]] * 20)
    n = len(model.tokenize([long_text], 8192)[0])
    assert n > 5000
    assert model.encode(long_text, max_length=8192, return_colbert_vecs=True)["colbert_vecs"].shape[0] == n - 1
    assert model.encode(long_text, return_colbert_vecs=True)["colbert_vecs"].shape[0] == 511
    with pytest.raises(ValueError, match="max_length"):
        model.encode("x", max_length=8193)


def test_compute_score_keys_weights_and_shapes(model, texts):
    pairs = [(texts[0], texts[3]), (texts[2], texts[2]), (texts[5], texts[1])]
    s = model.compute_score(pairs)
    assert list(s) == ["colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense"]
    enc_q = model.encode([p[0] for p in pairs], return_sparse=True, return_colbert_vecs=True)
    enc_p = model.encode([p[1] for p in pairs], return_sparse=True, return_colbert_vecs=True)
    for i in range(len(pairs)):
        assert s["dense"][i] == pytest.approx(float(enc_q["dense_vecs"][i] @ enc_p["dense_vecs"][i]), abs=1e-5)
        lex = model.compute_lexical_matching_score(enc_q["lexical_weights"][i], enc_p["lexical_weights"][i])
        assert s["sparse"][i] == pytest.approx(lex, abs=1e-4)
        col = model.colbert_score(enc_q["colbert_vecs"][i], enc_p["colbert_vecs"][i])
        assert isinstance(col, torch.Tensor) and col.dim() == 0
        sims = enc_q["colbert_vecs"][i] @ enc_p["colbert_vecs"][i].T
        assert float(col) == pytest.approx(float(sims.max(1).mean()), abs=1e-5)
        assert s["colbert"][i] == pytest.approx(float(col), abs=1e-5)
        assert s["sparse+dense"][i] == pytest.approx((s["sparse"][i] + s["dense"][i]) / 2, abs=1e-5)
    assert s["sparse"][1] > 0 and s["sparse"][2] == 0  # self-match overlaps, the empty passage has no ids
    w = model.compute_score(pairs, weights_for_different_modes=[0.4, 0.2, 0.4])
    for i in range(len(pairs)):
        mix = 0.4 * s["dense"][i] + 0.2 * s["sparse"][i] + 0.4 * s["colbert"][i]
        assert w["colbert+sparse+dense"][i] == pytest.approx(mix, abs=1e-5)
        assert w["sparse+dense"][i] == pytest.approx((0.4 * s["dense"][i] + 0.2 * s["sparse"][i]) / 0.6, abs=1e-5)
    one = model.compute_score(pairs[0])
    assert all(isinstance(v, float) for v in one.values()) and one["dense"] == pytest.approx(s["dense"][0])
    assert model.compute_score([]) == []


def test_lexical_matching_score_forms(model, texts):
    lw = model.encode(texts[:4], return_dense=False, return_sparse=True)["lexical_weights"]
    matrix = model.compute_lexical_matching_score(lw, lw[:3])
    assert matrix.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            assert matrix[i, j] == pytest.approx(model.compute_lexical_matching_score(lw[i], lw[j]), rel=1e-5)
    sb = SparseBatch.from_dicts(lw)
    torch.testing.assert_close(model.compute_lexical_matching_score(sb, sb),
                               torch.from_numpy(model.compute_lexical_matching_score(lw, lw)))
    tokens = model.convert_id_to_token(lw[0])
    assert all(isinstance(k, str) for k in tokens) and len(tokens) == len(lw[0])


def test_plan_batches_respects_the_budget():
    lengths = [5, 300, 17, 17, 2, 40, 1000, 9]
    batches = plan_batches(lengths, batch_tokens=320, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [6]  # the longest first, alone since it exceeds the budget
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or sum(lengths[i] for i in b) <= 320
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)


def test_gather_segments_reorders_rows():
    cu = torch.tensor([0, 2, 2, 5])
    index, new_cu = gather_segments(cu, torch.tensor([2, 0, 1]))
    assert index.tolist() == [2, 3, 4, 0, 1] and new_cu.tolist() == [0, 3, 5, 5]


def test_insert_cls_layout():
    ids = [0, *range(10, 610), 2]  # 600 content tokens
    out = insert_cls(ids, 0, max_length=8192)
    assert [i for i, t in enumerate(out) if t == 0] == [0, 257, 514]
    assert out[-1] == 2 and [t for t in out if t not in (0, 2)] == list(range(10, 610))
    short = insert_cls(ids, 0, max_length=300)  # content shrinks so that content + 2 <s> + </s> <= 300
    assert len(short) == 300 and short.count(0) == 2 and short[-1] == 2
    assert insert_cls([0, 2], 0, 10) == [0, 2]


def test_mcls_dense_is_the_mean_of_the_cls_states(model, texts):
    long_text = " ".join([texts[3]] * 3)
    ids = insert_cls(model.tokenize([long_text], 2048)[0], 0, 2048)
    assert ids.count(0) >= 3
    hidden = _hidden(model, ids)
    want = F.normalize(hidden[torch.tensor(ids) == 0].mean(0), dim=0)
    res = model.encode([long_text, texts[0]], max_length=2048, mcls=True, return_colbert_vecs=True)
    np.testing.assert_allclose(res["dense_vecs"][0], want.numpy(), atol=1e-5)
    assert res["colbert_vecs"][0].shape[0] == len(ids) - ids.count(0)
    plain = model.encode([long_text, texts[0]], max_length=2048)
    assert np.abs(res["dense_vecs"][0] - plain["dense_vecs"][0]).max() > 1e-3
    np.testing.assert_allclose(res["dense_vecs"][1], plain["dense_vecs"][1], atol=1e-6)  # one chunk: no change


def test_progress_bar_only_when_asked_or_long(model, texts, capsys):
    model.encode(texts)
    assert "m3k encode" not in capsys.readouterr().err
    model.encode(texts, show_progress=True)
    assert "m3k encode" in capsys.readouterr().err
