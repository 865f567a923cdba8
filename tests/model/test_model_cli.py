"""`m3k encode` (encode_main): .txt / .jsonl in, .npz / .jsonl out, the same numbers as BGEM3.encode."""

from __future__ import annotations

import json

import numpy as np
import torch

from m3kernels.model.cli import encode_main, read_texts


def test_txt_to_npz_round_trip(tiny_ckpt, model, texts, tmp_path):
    inp, out = tmp_path / "in.txt", tmp_path / "out.npz"
    lines = [t for t in texts if t]
    inp.write_text("\n".join(lines) + "\n")
    argv = ["--model", str(tiny_ckpt), "--input", str(inp), "--output", str(out), "--dense", "--sparse",
            "--colbert", "--max-length", "128", "--batch-tokens", "256", "--device", "cpu", "--dtype", "fp32"]
    assert encode_main(argv) == 0
    got = np.load(out)
    want = model.encode(lines, max_length=128, return_sparse=True, return_colbert_vecs=True)
    np.testing.assert_allclose(got["dense"], want["dense_vecs"], atol=1e-6)
    ptr, ids, vals = got["sparse_indptr"], got["sparse_ids"], got["sparse_values"]
    for i, d in enumerate(want["lexical_weights"]):
        assert {str(k): v for k, v in zip(ids[ptr[i] : ptr[i + 1]], vals[ptr[i] : ptr[i + 1]], strict=True)} == d
    cu = got["colbert_cu_seqlens"]
    for i, vecs in enumerate(want["colbert_vecs"]):
        np.testing.assert_allclose(got["colbert_vecs"][cu[i] : cu[i + 1]], vecs, atol=1e-6)


def test_jsonl_to_jsonl_defaults_to_dense(tiny_ckpt, model, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('"plain string"\n{"text": "der Hund", "id": 7}\n\n{"text": ""}\n')
    args = ["--model", str(tiny_ckpt), "--input", str(inp), "--output", str(out), "--device", "cpu", "--dtype", "fp32"]
    assert encode_main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = model.encode(["plain string", "der Hund", ""])
    assert len(rows) == 3 and all(set(r) == {"dense"} for r in rows)
    np.testing.assert_allclose(np.array([r["dense"] for r in rows]), want["dense_vecs"], atol=1e-6)


def test_errors_exit_2(tiny_ckpt, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_text("a\n")
    assert encode_main(["--model", str(tiny_ckpt), "--input", str(inp), "--output", str(tmp_path / "o.csv")]) == 2
    assert encode_main(["--model", str(tmp_path / "none"), "--input", str(inp), "--output",
                        str(tmp_path / "o.npz")]) == 2
    assert "not a directory" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1, 2]\n")
    assert encode_main(["--model", str(tiny_ckpt), "--input", str(bad), "--output", str(tmp_path / "o.npz")]) == 2
    capsys.readouterr()
    out = str(tmp_path / "o.npz")
    assert encode_main(["--model", str(tiny_ckpt), "--input", str(inp), "--output", out, "--backend", "tpu"]) == 2
    assert "backend must be one of" in capsys.readouterr().err
    if not torch.cuda.is_available():  # checked before the checkpoint loads, not as a traceback at the first batch
        assert encode_main(["--model", str(tiny_ckpt), "--input", str(inp), "--output", out, "--device", "cuda"]) == 2
        assert "torch.cuda.is_available() is False" in capsys.readouterr().err
        assert encode_main(["--model", str(tiny_ckpt), "--input", str(inp), "--output", out, "--backend", "cuda"]) == 2
        assert "backend 'cuda' is unavailable for lexical_weights on cpu" in capsys.readouterr().err


def test_read_texts_splits_at_newlines_only(tmp_path):
    """A text may hold a form feed, U+2028, a lone CR or other characters str.splitlines splits at; a BOM is not
    part of the first text; CRLF files read as LF ones."""
    texts = ["page\x0cbreak", "line\u2028separator", "group\x1dsep", "carriage\rreturn", "", "last"]
    txt = tmp_path / "in.txt"
    txt.write_bytes(("\ufeff" + "\r\n".join(texts) + "\r\n").encode())
    assert read_texts(txt) == texts
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(("\ufeff" + "\n".join(json.dumps(t, ensure_ascii=False) for t in texts) + "\n").encode())
    assert read_texts(jsonl) == texts
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert read_texts(empty) == []
    unterminated = tmp_path / "last.txt"
    unterminated.write_text("a\nb")
    assert read_texts(unterminated) == ["a", "b"]


def test_unwritable_output_exits_2(tiny_ckpt, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_text("a\n")
    out = str(tmp_path / "missing" / "o.npz")
    assert encode_main(["--model", str(tiny_ckpt), "--input", str(inp), "--output", out]) == 2
    assert "No such file or directory" in capsys.readouterr().err
