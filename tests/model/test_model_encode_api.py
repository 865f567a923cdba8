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


def test_tokenize_is_thread_safe_across_max_lengths(model):
    """Two threads tokenising at different max_length (queries and passages in a threaded server) each get their
    own truncation: the length lives in the shared tokenizer, whose encode_batch releases the GIL."""
    import threading

    long_texts = ["word " * 300] * 64
    want = {16: model.tokenize(long_texts, 16), 200: model.tokenize(long_texts, 200)}
    wrong = []

    def work(max_length):
        for _ in range(60):
            got = model.tokenize(long_texts, max_length)
            if got != want[max_length]:
                wrong.append(max_length)

    threads = [threading.Thread(target=work, args=(n,)) for n in want]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, f"{len(wrong)} batches came back with the other thread's truncation"


def test_none_means_the_default_and_numpy_ints_pass(model, texts):
    """FlagEmbedding's signatures default to None (then the model's default); NumPy integers are ints."""
    want = model.encode(texts[:5])
    got = model.encode(texts[:5], batch_size=None, max_length=None, return_dense=None, return_sparse=None,
                       return_colbert_vecs=None)
    assert got["lexical_weights"] is None and got["colbert_vecs"] is None
    np.testing.assert_array_equal(got["dense_vecs"], want["dense_vecs"])
    np.testing.assert_array_equal(model.encode(texts[:5], max_length=np.int64(512))["dense_vecs"], want["dense_vecs"])
    pairs = [(texts[0], texts[3])]
    assert model.compute_score(pairs, None, None, None) == model.compute_score(pairs)
    with pytest.raises(TypeError, match="batch_size"):
        model.encode(texts[:2], batch_size="8")
    with pytest.raises(ValueError, match="batch_tokens"):
        model.encode(texts[:2], batch_tokens=0)
    with pytest.raises(TypeError, match="found NoneType"):
        model.encode(["a", None])


def test_lexical_weights_read_missing_ids_as_zero(model):
    """As FlagEmbedding's defaultdict(int): a token id the text lacks reads 0."""
    lw = model.encode(["der Hund"], return_dense=False, return_sparse=True)["lexical_weights"][0]
    assert lw["249999"] == 0


def test_torch_output_is_usable_with_autograd(model, texts):
    """output="torch" hands back ordinary tensors (not inference-mode ones): a caller may train on them or write
    into them."""
    res = model.encode(texts[:3], output="torch", return_colbert_vecs=True)
    torch.nn.Linear(64, 2)(res["dense_vecs"]).sum().backward()
    res["colbert_vecs"][0] = 0


def test_compute_score_chunks_give_the_same_scores(model, texts, monkeypatch):
    """compute_score encodes and scores batch_size pairs at a time (the ColBERT vectors of one chunk at once);
    the scores do not depend on the chunking."""
    pairs = [(texts[i], texts[(i + 3) % len(texts)]) for i in range(len(texts))]
    whole = model.compute_score(pairs)
    sizes = []
    real = type(model)._pair_scores
    monkeypatch.setattr(type(model), "_pair_scores", lambda self, p, *a: sizes.append(len(p)) or real(self, p, *a))
    chunked = model.compute_score(pairs, batch_size=4)
    assert sizes == [4, 4, 4, 2]
    for key, values in whole.items():
        np.testing.assert_allclose(chunked[key], values, atol=1e-6)


def test_numpy_output_moves_each_batch_to_the_host(model, texts, monkeypatch):
    """encode(output="numpy") asks encode_ids for host outputs, so at most one batch of outputs stays on the
    model's device; output="torch" keeps them there."""
    seen = []
    real = type(model).encode_ids
    monkeypatch.setattr(type(model), "encode_ids",
                        lambda self, ids, **kw: seen.append(kw["out_device"]) or real(self, ids, **kw))
    model.encode(texts[:3])
    model.encode(texts[:3], output="torch")
    assert seen == ["cpu", None]
    monkeypatch.undo()
    moved = model.encode_ids(model.tokenize(texts, 512), batch_tokens=200, sparse=True, colbert=True,
                             out_device="cpu")
    direct = model.encode_ids(model.tokenize(texts, 512), batch_tokens=200, sparse=True, colbert=True)
    assert torch.equal(moved.dense, direct.dense) and torch.equal(moved.colbert, direct.colbert)
    assert moved.sparse.to_dicts() == direct.sparse.to_dicts()


def test_score_helpers_run_where_their_inputs_are(model, texts, monkeypatch):
    """colbert_score on arrays and compute_lexical_matching_score on dicts make CPU tensors: a model on another
    device with a backend that cannot run on the CPU ("cuda", say) scores them on backend auto there."""
    enc = model.encode(texts[:3], return_sparse=True, return_colbert_vecs=True)
    want_col = model.colbert_score(enc["colbert_vecs"][0], enc["colbert_vecs"][1])
    want_lex = model.compute_lexical_matching_score(enc["lexical_weights"], enc["lexical_weights"])
    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(model, "backend", "cuda")
    assert float(model.colbert_score(enc["colbert_vecs"][0], enc["colbert_vecs"][1])) == float(want_col)
    np.testing.assert_array_equal(
        model.compute_lexical_matching_score(enc["lexical_weights"], enc["lexical_weights"]), want_lex)


def test_mcls_finds_cls_positions_not_cls_ids(model):
    """A literal <s> in a text is an ordinary token under MCLS: a short text still gives the non-MCLS result."""
    text = "x <s> y"
    assert model.tokenizer.ids["cls"] in model.tokenize([text], 512)[0][1:]
    kwargs = {"return_colbert_vecs": True}
    plain, mcls = model.encode(text, **kwargs), model.encode(text, mcls=True, **kwargs)
    np.testing.assert_allclose(mcls["dense_vecs"], plain["dense_vecs"], atol=1e-6)
    np.testing.assert_allclose(mcls["colbert_vecs"], plain["colbert_vecs"], atol=1e-6)


def test_model_deep_copies(model, texts):
    """copy.deepcopy of a model (a teacher / EMA copy) works despite the tokenizer's lock, and the copy encodes."""
    import copy

    twin = copy.deepcopy(model)
    np.testing.assert_array_equal(twin.encode(texts[:3])["dense_vecs"], model.encode(texts[:3])["dense_vecs"])


def test_empty_texts_are_rejected_before_the_heads(model):
    """A text needs at least its <s> (the dense head's token): an empty one in packed input would shift the other
    texts' heads (a leading one) or index past the tokens (a trailing one), so it is a ValueError naming it."""
    ids = torch.tensor([0, 5, 6, 2, 0, 7, 2])
    for cu, which in (([0, 0, 4, 7], "text 0"), ([0, 4, 7, 7], "text 2")):
        with pytest.raises(ValueError, match=f"empty text \\({which}\\)"):
            model.forward_packed(ids, torch.tensor(cu, dtype=torch.int32), 4, colbert=True)
    with pytest.raises(ValueError, match=r"ids\[1\] is empty"):
        model.encode_ids([[0, 5, 6, 2], []])
    with pytest.raises(ValueError, match="at least one text"):
        model.encode_ids([])
    assert model.compute_score(()) == []
