"""Runs FlagEmbedding 1.4.2's BGEM3FlagModel (the reference) in its own environment: a standalone script that
imports only FlagEmbedding, torch and numpy, started by the parity tests and bench/bench_encode.py with the
python of the venv made by .ci/flag_env.sh.

    python _flag_reference.py SPEC.json OUT_DIR

SPEC: {"model": dir, "mode": "outputs" | "bench", "texts": [...], "pairs": [[q, p], ...], "max_length": int,
"batch_size": int, "weights": [w_d, w_s, w_c] | null, "device": "cpu" | "cuda", "fp16": bool, "repeats": int}.
outputs -> OUT_DIR/flag.npz (dense [N, H], colbert packed [sum, dim] + colbert_cu [N+1], pair_colbert [P]) and
OUT_DIR/flag.json (lexical_weights, compute_score with default and given weights, lexical matrix);
bench -> OUT_DIR/flag.json {"seconds": [...], "tokens": int, "peak_rss_mib", "peak_cuda_mib"} and
OUT_DIR/flag_dense.npy (the dense vectors of the last run)."""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from FlagEmbedding import BGEM3FlagModel


def peak_rss_mib() -> float:
    """This process's peak resident set size. VmHWM, not getrusage's ru_maxrss: the latter keeps the parent's
    high-water mark across fork + exec, so every worker would report at least its launcher's peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024

def _outputs(model, spec, out):
    res = model.encode(spec["texts"], batch_size=spec["batch_size"], max_length=spec["max_length"],
                       return_dense=True, return_sparse=True, return_colbert_vecs=True)
    colbert = res["colbert_vecs"]
    cu = np.cumsum([0] + [len(c) for c in colbert])
    pairs = [tuple(p) for p in spec["pairs"]]
    enc_q = model.encode([p[0] for p in pairs], max_length=512, return_dense=False, return_colbert_vecs=True)
    enc_p = model.encode([p[1] for p in pairs], max_length=512, return_dense=False, return_colbert_vecs=True)
    pair_colbert = [float(model.colbert_score(q, p))
                    for q, p in zip(enc_q["colbert_vecs"], enc_p["colbert_vecs"], strict=True)]
    np.savez(out / "flag.npz", dense=res["dense_vecs"], colbert=np.concatenate(colbert), colbert_cu=cu,
             pair_colbert=np.array(pair_colbert, dtype=np.float64))
    lexical = [{k: float(v) for k, v in d.items()} for d in res["lexical_weights"]]
    report = {
        "lexical_weights": lexical,
        "scores_default": model.compute_score(pairs),
        "scores_weighted": model.compute_score(pairs, weights_for_different_modes=spec["weights"]),
        "score_one_pair": model.compute_score(pairs[0]),
        "lexical_matrix": model.compute_lexical_matching_score(lexical[:4], lexical[:5]).tolist(),
    }
    (out / "flag.json").write_text(json.dumps(report))


def _bench(model, spec, out):
    tokens = sum(len(x) for x in model.tokenizer(spec["texts"], truncation=True,
                                                  max_length=spec["max_length"])["input_ids"])
    kwargs = {"batch_size": spec["batch_size"], "max_length": spec["max_length"], "return_dense": True,
              "return_sparse": True, "return_colbert_vecs": True}
    model.encode(spec["texts"][:2], **kwargs)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        res = model.encode(spec["texts"], **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    report = {"seconds": seconds, "tokens": tokens,
              "peak_rss_mib": peak_rss_mib(),
              "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}
    (out / "flag.json").write_text(json.dumps(report))
    np.save(out / "flag_dense.npy", res["dense_vecs"])


def main():
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    device = spec.get("device", "cpu")
    if device.startswith("cuda:"):  # the syncs and memory statistics of _bench are those of the current device
        torch.cuda.set_device(torch.device(device))
    model = BGEM3FlagModel(spec["model"], use_fp16=spec.get("fp16", False), devices=device)
    (_outputs if spec["mode"] == "outputs" else _bench)(model, spec, out)


if __name__ == "__main__":
    main()
