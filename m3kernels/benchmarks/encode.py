"""End-to-end encode throughput (tokens/s) and peak memory: m3kernels' BGEM3 vs FlagEmbedding 1.4.2's
BGEM3FlagModel on the same random checkpoint and texts (mixed lengths, default 16..2048 tokens), all three heads.

Each side runs in its own process (peak RSS is per process): ours with this python, FlagEmbedding with
--flag-python (default $M3K_FLAG_PYTHON, the venv of .ci/flag_env.sh; skipped with a reason when unset).
--config tiny (hidden 64, 2 layers), small (hidden 256, 4 layers) or real (BGE-M3's shapes: 24 layers, hidden
1024, vocab 250002, random init, ~2.3 GB written to a temp dir). Prints a table and writes JSON to --out.

    python bench/bench_encode.py --out bench_encode.json [--config small] [--device cuda --dtype fp16]

`m3k bench --ops encode` runs the same measurement (tiny model) as rows of the benchmark table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from m3kernels.benchmarks.harness import Row

CONFIGS = {"tiny": {}, "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
                                 "intermediate_size": 1024}}



def peak_rss_mib() -> float:
    """This process's peak resident set size. VmHWM, not getrusage's ru_maxrss: the latter keeps the parent's
    high-water mark across fork + exec, so every worker would report at least its launcher's peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024

def make_texts(tokenizer_encode, n: int, lo: int, hi: int, seed: int) -> list[str]:
    """n texts whose token counts (incl. <s> </s>) are drawn uniformly from [lo, hi]."""
    from m3kernels.model.testing import random_text

    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        target, lang = rng.randint(lo, hi), rng.choice(["en", "de", "fr", "ru", "zh", "es"])
        words = max(1, target // 3)
        text = random_text(rng, words, lang)
        while len(tokenizer_encode(text)) < target:
            text += (" " if lang != "zh" else "") + random_text(rng, max(1, words // 4), lang)
        ids = tokenizer_encode(text)
        texts.append(text[: max(1, int(len(text) * target / len(ids)))])
    return texts


def run_ours(spec: dict, out: Path) -> None:
    """Worker: times BGEM3.encode in this process and writes ours.json / ours_dense.npy."""
    from m3kernels.model import BGEM3

    model = BGEM3.from_pretrained(spec["model"], device=spec["device"], dtype=spec["dtype"])
    cuda = model.device.type == "cuda"
    if cuda:  # the syncs and memory statistics below are those of the current device
        torch.cuda.set_device(model.device)
    kwargs = {"max_length": spec["max_length"], "return_sparse": True, "return_colbert_vecs": True,
              "batch_tokens": spec["batch_tokens"]}
    tokens = sum(len(x) for x in model.tokenize(spec["texts"], spec["max_length"]))
    model.encode(spec["texts"][:2], **kwargs)  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        res = model.encode(spec["texts"], **kwargs)
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    report = {"seconds": seconds, "tokens": tokens,
              "peak_rss_mib": peak_rss_mib(),
              "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}
    (out / "ours.json").write_text(json.dumps(report))
    np.save(out / "ours_dense.npy", res["dense_vecs"])


def measure(config: str, n_texts: int, min_tokens: int, max_tokens: int, repeats: int, device: str,
            dtype_name: str | None, batch_tokens: int | None, flag_python: str | None) -> dict:
    """Builds the checkpoint and texts, runs both sides in their own processes; returns the JSON report."""
    from m3kernels.model.bgem3 import resolve_dtype
    from m3kernels.model.testing import REAL_SIZE, TinyConfig, build_checkpoint
    from m3kernels.model.tokenizer import Tokenizer

    dtype = resolve_dtype(dtype_name, torch.device(device))
    ckpt_config = REAL_SIZE if config == "real" else TinyConfig(**CONFIGS[config])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = build_checkpoint(work / "ckpt", ckpt_config)
        from m3kernels.model.checkpoint import load_checkpoint

        tok = Tokenizer(ckpt / "tokenizer.json", load_checkpoint(ckpt).config)
        texts = make_texts(lambda t: tok.encode([t], 8192)[0], n_texts, min_tokens, max_tokens, 0)
        spec = {"model": str(ckpt), "texts": texts, "max_length": 8192, "repeats": repeats,
                "device": device, "dtype": str(dtype).removeprefix("torch."), "batch_tokens": batch_tokens,
                "mode": "bench", "batch_size": 256, "fp16": dtype == torch.float16}
        (work / "spec.json").write_text(json.dumps(spec))
        _run([sys.executable, "-m", "m3kernels.benchmarks.encode", "--worker", str(work / "spec.json"), str(work)],
             "m3kernels")
        results = {"m3kernels": json.loads((work / "ours.json").read_text())}
        skipped = None
        if dtype == torch.bfloat16:
            skipped = "FlagEmbedding's bf16 path is not compared"
        elif not flag_python:
            skipped = "no FlagEmbedding venv (set M3K_FLAG_PYTHON or --flag-python; see .ci/flag_env.sh)"
        else:
            script = Path(__file__).resolve().parents[1] / "model" / "_flag_reference.py"
            try:  # a baseline that cannot run is reported with its error; our figure still stands
                _run([flag_python, str(script), str(work / "spec.json"), str(work)], "FlagEmbedding")
            except RuntimeError as e:
                skipped = f"FlagEmbedding failed: {str(e).strip().splitlines()[-1][:300]}"
            else:
                results["FlagEmbedding 1.4.2"] = json.loads((work / "flag.json").read_text())
                diff = float(np.abs(np.load(work / "ours_dense.npy") - np.load(work / "flag_dense.npy")).max())
    rows = []
    for name, r in results.items():
        med = statistics.median(r["seconds"])
        rows.append({"impl": name, "tokens": r["tokens"], "median_s": med, "tokens_per_s": r["tokens"] / med,
                     "peak_rss_mib": r["peak_rss_mib"], "peak_cuda_mib": r["peak_cuda_mib"], "seconds": r["seconds"]})
    report = {"config": config, "device": device, "dtype": str(dtype), "n_texts": len(texts),
              "torch_threads": torch.get_num_threads(), "rows": rows, "flag_skipped": skipped}
    if len(rows) == 2:
        report["speedup"] = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
        report["dense_max_abs_diff"] = diff
    return report


def rows(device: torch.device, quick: bool) -> list[Row]:
    """`m3k bench --ops encode`: the tiny model end to end, ours against FlagEmbedding (when its venv is set)."""
    n, hi = (8, 512) if quick else (32, 2048)
    report = measure("tiny", n, 16, hi, 1 if quick else 3, str(device), None, None, os.environ.get("M3K_FLAG_PYTHON"))
    shape = f"tiny BGE-M3 layout, {report['n_texts']} texts U[16,{hi}] tokens, {report['dtype'][6:]}"
    flag = next((r for r in report["rows"] if r["impl"] != "m3kernels"), None)
    out = []
    for r in report["rows"]:
        ours = r["impl"] == "m3kernels"
        out.append(Row("encode", shape, "m3k BGEM3.encode" if ours else "FlagEmbedding 1.4.2 BGEM3FlagModel.encode",
                       "ok", median_ms=r["median_s"] * 1e3, p10_ms=min(r["seconds"]) * 1e3,
                       p90_ms=max(r["seconds"]) * 1e3,
                       speedup_vs_reference=flag["median_s"] / r["median_s"] if flag else None,
                       peak_extra_mib=r["peak_rss_mib"], achieved=r["tokens_per_s"], achieved_unit="tok/s",
                       note="peak = process RSS", params={"tokens": r["tokens"]}))
    if flag is None:
        out.append(Row("encode", shape, "FlagEmbedding 1.4.2 BGEM3FlagModel.encode", "unavailable",
                       note=report["flag_skipped"]))
    return out


def _run(cmd: list[str], name: str) -> None:
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{run.stderr[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_encode.json")
    p.add_argument("--config", choices=["tiny", "small", "real"], default="tiny")
    p.add_argument("--n-texts", type=int, default=32)
    p.add_argument("--min-tokens", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="fp32 / fp16 / bf16 (default fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--batch-tokens", type=int, default=None)
    p.add_argument("--flag-python", default=os.environ.get("M3K_FLAG_PYTHON"))
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        run_ours(json.loads(Path(args.worker[0]).read_text()), Path(args.worker[1]))
        return 0

    report = measure(args.config, args.n_texts, args.min_tokens, args.max_tokens, args.repeats, args.device,
                     args.dtype, args.batch_tokens, args.flag_python)
    rows, skipped = report["rows"], report["flag_skipped"]
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"config={args.config} device={args.device} dtype={report['dtype']} texts={report['n_texts']} "
          f"tokens={rows[0]['tokens']}")
    print(f"{'impl':<22}{'median s':>10}{'tokens/s':>12}{'peak RSS MiB':>14}{'peak CUDA MiB':>15}")
    for r in rows:
        cuda = f"{r['peak_cuda_mib']:.0f}" if r["peak_cuda_mib"] is not None else "-"
        print(f"{r['impl']:<22}{r['median_s']:>10.3f}{r['tokens_per_s']:>12.0f}{r['peak_rss_mib']:>14.0f}{cuda:>15}")
    if skipped:
        print(f"FlagEmbedding skipped: {skipped}")
    else:
        print(f"speedup {report['speedup']:.2f}x, dense max |diff| {report['dense_max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
