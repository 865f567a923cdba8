"""The GPU targets of the issues, checked against a `m3k bench` results.json (and bench_encode's JSON): one line
per target with the measured figure, so a short GPU run ends with an unambiguous summary.

    python -m m3kernels.benchmarks.targets OUT/bench/results.json [OUT/encode_real.json]
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from m3kernels.benchmarks.common import GRAPH_ROW, TRUSTED_SUFFIX


@dataclass(frozen=True)
class Target:
    """``metric`` of (op, shape prefix, provider) must reach ``goal``. Metrics: "pct" (% of the roofline
    ceiling), "speedup" (over the case's reference), "achieved_vs" (achieved / achieved of provider ``other``),
    "time_vs" (median time of ``other`` / ours, e.g. 1 / 1.1 = "within 10% of")."""

    name: str
    op: str
    shape: str
    provider: str
    metric: str
    goal: float
    other: str = ""


RERANK = "rerank Nq=1 Lq=32 Nd=10000 Ld=U[64,512] H=1024 float16"
ATTENTION_8192 = "1 text x 8192 heads=16 d=64 float16"
TARGETS = [
    Target("MaxSim rerank >= 80% copy bandwidth (triton)", "maxsim", RERANK, "m3k:triton", "pct", 80),
    Target("MaxSim rerank >= 5x padded einsum (triton)", "maxsim", RERANK, "m3k:triton", "speedup", 5),
    Target("MaxSim rerank >= 80% copy bandwidth (cuda)", "maxsim", RERANK, "m3k:cuda", "pct", 80),
    Target("MaxSim rerank cuda within 10% of triton", "maxsim", RERANK, "m3k:cuda", "time_vs", 1 / 1.1, "m3k:triton"),
    Target("MaxSim all-pairs fwd+bwd bf16 >= 3x einsum (triton)", "maxsim fwd+bwd", "all-pairs Nq=Nd=64 Lq=32 Ld=256 "
           "H=1024 bfloat16", "m3k:triton", "speedup", 3),
    Target("MaxSim all-pairs fwd+bwd bf16 >= 3x einsum (cuda)", "maxsim fwd+bwd", "all-pairs Nq=Nd=64 Lq=32 Ld=256 "
           "H=1024 bfloat16", "m3k:cuda", "speedup", 3),
    Target("MaxSim all-pairs fwd+bwd bf16 >= 3x einsum (triton, deterministic)", "maxsim fwd+bwd", "all-pairs "
           "Nq=Nd=64 Lq=32 Ld=256 H=1024 bfloat16", "m3k:triton deterministic", "speedup", 3),
    Target("MaxSim all-pairs fwd+bwd bf16 >= 3x einsum (cuda, deterministic)", "maxsim fwd+bwd", "all-pairs "
           "Nq=Nd=64 Lq=32 Ld=256 H=1024 bfloat16", "m3k:cuda deterministic", "speedup", 3),
    Target("attention 8192 tokens >= SDPA flash TFLOP/s", "attention_varlen", ATTENTION_8192,
           "m3k:triton", "achieved_vs", 1.0, "SDPA flash backend per text, unpadded"),
    Target("attention 32 texts U[64,2048] >= 2x padded SDPA", "attention_varlen", "32 texts U[64,2048] heads=16 d=64 "
           "float16", "m3k:triton", "speedup", 2),
    Target("sparse weights B=64 >= 70% copy bandwidth (triton, end to end)", "lexical_weights", "B=64 L=512 H=1024",
           "m3k:triton", "pct", 70),
    Target("sparse weights B=64 >= 70% copy bandwidth (cuda, end to end)", "lexical_weights", "B=64 L=512 H=1024",
           "m3k:cuda", "pct", 70),
    Target("sparse weights read pass >= 70% copy bandwidth (triton kernel)", "lexical_weights read pass",
           "B=64 L=512 H=1024", "m3k:triton token-weights kernel", "pct", 70),
]


# Printed after the targets, not checked against them: the same ops without the host work of an eager call -
# inside trusted_inputs() (no value checks, no device sync; common.TRUSTED_SUFFIX), and the Triton op captured in a
# CUDA graph and replayed (common.GRAPH_ROW); and the bandwidth a plain read of the sparse read pass's bytes gets.
INFO_FIGURES = [
    ("MaxSim rerank, triton, data checks off", "maxsim", RERANK, f"m3k:triton{TRUSTED_SUFFIX}"),
    ("MaxSim rerank, cuda, data checks off", "maxsim", RERANK, f"m3k:cuda{TRUSTED_SUFFIX}"),
    ("MaxSim rerank, triton, CUDA graph replay", "maxsim", RERANK, GRAPH_ROW),
    ("attention 8192 tokens, triton, data checks off", "attention_varlen", ATTENTION_8192,
     f"m3k:triton{TRUSTED_SUFFIX}"),
    ("attention 8192 tokens, triton, CUDA graph replay", "attention_varlen", ATTENTION_8192, GRAPH_ROW),
    ("sparse read pass floor, a torch sum of the same 64 MiB", "lexical_weights read pass", "B=64 L=512 H=1024",
     "torch sum of the hidden states"),
]


def _find(rows: list[dict], op: str, shape: str, provider: str) -> dict | None:
    return next((r for r in rows if r["op"] == op and r["shape"].startswith(shape) and r["provider"] == provider),
                None)


def evaluate(target: Target, rows: list[dict]) -> tuple[str, bool | None]:
    """(the measured figure as text, met?) with None when the row is missing or did not run."""
    row = _find(rows, target.op, target.shape, target.provider)
    if row is None or row.get("status") != "ok":
        return ("no row" if row is None else f"{row['status']}: {row.get('note', '')[:60]}"), None
    if target.metric == "pct":
        value, text = row.get("pct_of_ceiling"), f"{row.get('pct_of_ceiling') or 0:.0f}% of ceiling"
    elif target.metric == "speedup":
        value = row.get("speedup_vs_reference")
        text = f"{value or 0:.2f}x"
    else:
        other = _find(rows, target.op, target.shape, target.other)
        if other is None or other.get("status") != "ok":
            return f"no {target.other} row to compare with", None
        if target.metric == "achieved_vs":
            value = row["achieved"] / other["achieved"]
            text = f"{row['achieved']:.0f} vs {other['achieved']:.0f} {row.get('achieved_unit', '')}"
        else:
            value = other["median_ms"] / row["median_ms"]
            text = f"{row['median_ms']:.3f} vs {other['median_ms']:.3f} ms"
    return text, None if value is None else value >= target.goal


def _line(name: str, text: str, met: bool | None) -> str:
    return f"{'-' if met is None else 'MET' if met else 'MISSED':6} {name}: {text}"


def report(results: dict, encode: dict | None) -> list[str]:
    lines = [_line(t.name, *evaluate(t, results["rows"])) for t in TARGETS]
    for name, op, shape, provider in INFO_FIGURES:
        row = _find(results["rows"], op, shape, provider)
        if row is not None and row.get("status") == "ok" and row.get("achieved") is not None:
            lines.append(f"{'info':6} {name}: {row['median_ms']:.3f} ms, {row['achieved']:.0f} "
                         f"{row.get('achieved_unit', '')} ({row.get('pct_of_ceiling') or 0:.0f}% of ceiling)")
    if encode is not None:
        speedup = encode.get("speedup")
        text = f"{speedup:.2f}x" if speedup is not None else f"not compared: {encode.get('flag_skipped')}"
        met = None if speedup is None else speedup >= 2
        lines.append(_line("encode fp16 real size >= 2x FlagEmbedding", text, met))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__)
        return 2
    results = json.loads(Path(args[0]).read_text())
    encode = json.loads(Path(args[1]).read_text()) if len(args) > 1 and Path(args[1]).exists() else None
    device = results.get("machine", {}).get("gpu") or results.get("machine", {}).get("device")
    print(f"targets ({device}):")
    print("\n".join(report(results, encode)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
