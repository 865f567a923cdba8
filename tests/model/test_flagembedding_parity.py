"""Parity with FlagEmbedding 1.4.2 (BGEM3FlagModel, fp32, CPU) on the tiny checkpoint. FlagEmbedding needs
transformers<5, so it runs in its own venv (made by .ci/flag_env.sh) through m3kernels/model/_flag_reference.py;
these tests run when M3K_FLAG_PYTHON points to that venv's python."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import m3kernels.model as m3model
from m3kernels.model.testing import random_text

FLAG_PYTHON = os.environ.get("M3K_FLAG_PYTHON")
pytestmark = pytest.mark.skipif(
    not FLAG_PYTHON, reason="set M3K_FLAG_PYTHON to the python of the venv made by .ci/flag_env.sh"
)
SCRIPT = Path(m3model.__file__).parent / "_flag_reference.py"
REPO = Path(m3model.__file__).parents[2]


def _texts() -> list[str]:
    rng = random.Random(7)
    out = ["a", "", "   ", "der Hund " * 60, "东京" * 80, "hello <unk> world", " ".join(["music"] * 300)]
    for lang in ("en", "de", "fr", "ru", "zh", "ar", "ja", "es"):
        out += [random_text(rng, n, lang) for n in (3, 40, 150)]
    out += [random_text(rng, 900, "en"), random_text(rng, 700, "ru"), random_text(rng, 1400, "zh")]
    out += [random_text(rng, rng.randint(1, 300)) for _ in range(10)]
    return out


@pytest.fixture(scope="module")
def case(tiny_ckpt, tmp_path_factory):
    texts = _texts()
    rng = random.Random(8)
    pairs = [(texts[i], texts[j]) for i, j in [(0, 31), (3, 3), (10, 1), (4, 30), (12, 13), (6, 29), (2, 5)]]
    pairs += [(texts[rng.randrange(len(texts))], texts[rng.randrange(len(texts))]) for _ in range(8)]
    out = tmp_path_factory.mktemp("flag")
    spec = {"model": str(tiny_ckpt), "mode": "outputs", "texts": texts, "pairs": pairs, "max_length": 8192,
            "batch_size": 4, "weights": [0.4, 0.2, 0.4]}
    (out / "spec.json").write_text(json.dumps(spec))
    run = subprocess.run([FLAG_PYTHON, str(SCRIPT), str(out / "spec.json"), str(out)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return spec, np.load(out / "flag.npz"), json.loads((out / "flag.json").read_text())


def test_texts_cover_1_to_1500_plus_tokens(model):
    lengths = [len(x) for x in model.tokenize(_texts(), 8192)]
    assert min(lengths) == 2 and max(lengths) >= 1500


def test_encode_matches_flagembedding(model, case):
    spec, flag, report = case
    ours = model.encode(spec["texts"], max_length=8192, batch_tokens=3000, return_sparse=True,
                        return_colbert_vecs=True)
    dense_diff = np.abs(ours["dense_vecs"] - flag["dense"]).max()
    cu = flag["colbert_cu"]
    assert [len(c) for c in ours["colbert_vecs"]] == np.diff(cu).tolist()
    colbert_diff = np.abs(np.concatenate(ours["colbert_vecs"]) - flag["colbert"]).max()
    lex_diff = 0.0
    for i, (a, b) in enumerate(zip(ours["lexical_weights"], report["lexical_weights"], strict=True)):
        assert a.keys() == b.keys(), f"text {i}: lexical weight ids differ"
        lex_diff = max([lex_diff] + [abs(a[k] - b[k]) for k in a])
    print(f"\nparity: dense {dense_diff:.2e}, colbert {colbert_diff:.2e}, lexical {lex_diff:.2e}", file=sys.stderr)
    assert dense_diff < 1e-5 and colbert_diff < 1e-5 and lex_diff < 1e-5


@pytest.mark.parametrize(("key", "weights"), [("scores_default", None), ("scores_weighted", [0.4, 0.2, 0.4])])
def test_compute_score_matches_flagembedding(model, case, key, weights):
    spec, flag, report = case
    pairs = [tuple(p) for p in spec["pairs"]]
    ours = {k: np.array(v) for k, v in model.compute_score(pairs, weights_for_different_modes=weights).items()}
    theirs = {k: np.array(v) for k, v in report[key].items()}
    assert list(report[key]) == list(model.compute_score(pairs))
    for k in ("dense", "sparse", "sparse+dense"):
        np.testing.assert_allclose(ours[k], theirs[k], atol=1e-5, rtol=1e-5, err_msg=k)
    # colbert: equal to FlagEmbedding's colbert_score on its own unpadded vectors. Its compute_score pads the
    # passages of a batch with zero vectors that can win a max (score 0 > a negative similarity), so there it
    # can only be larger, and is equal for the longest passage (no padding).
    np.testing.assert_allclose(ours["colbert"], flag["pair_colbert"], atol=1e-5, rtol=1e-5)
    assert bool((theirs["colbert"] >= ours["colbert"] - 1e-5).all())
    longest = int(np.argmax([len(model.tokenize([p[1]], 512)[0]) for p in pairs]))
    assert abs(theirs["colbert"][longest] - ours["colbert"][longest]) < 1e-5
    n_padded = int((np.abs(theirs["colbert"] - ours["colbert"]) > 1e-5).sum())
    print(f"\ncompute_score colbert: {n_padded}/{len(pairs)} pairs differ by FlagEmbedding's padding", file=sys.stderr)
    one = model.compute_score(pairs[0])
    for k, v in report["score_one_pair"].items():
        assert abs(one[k] - v) < 1e-5 or k.startswith("colbert")


def test_lexical_matching_matrix_matches(model, case):
    _, _, report = case
    lw = report["lexical_weights"]
    ours = model.compute_lexical_matching_score(lw[:4], lw[:5])
    np.testing.assert_allclose(ours, np.array(report["lexical_matrix"]), rtol=1e-5, atol=1e-5)


def test_hf_integration_on_transformers_4(tiny_ckpt):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([FLAG_PYTHON, str(Path(__file__).parent / "hf_legacy_script.py"), str(tiny_ckpt)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(run.stdout.strip().splitlines()[-1])
    assert res["version"].startswith("4.") and res["calls"] > 0 and res["max_diff"] < 2e-5
