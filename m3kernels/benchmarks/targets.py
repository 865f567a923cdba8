"""The GPU targets of the issues, checked against a `m3k bench` results.json (and bench_encode's JSON): one line
per target with the measured figure, so a short GPU run ends with an unambiguous summary.

    python -m m3kernels.benchmarks.targets OUT/bench/results.json [OUT/encode_real.json] [--tune OUT/tune/tune.json]

With the config sweep's tune.json, also the best CUDA rerank (layout, tile) of that sweep against the Triton table
entry, kernels alone on the same inputs: whether a tile change would meet the CUDA targets, before a run that applies
it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from m3kernels.benchmarks.common import GRAPH_SUFFIX, TRUSTED_SUFFIX
from m3kernels.benchmarks.maxsim import PEER_ROW
from m3kernels.benchmarks.tune import CUDA_RERANK_SWEEP, TRITON_RERANK_SWEEP


@dataclass(frozen=True)
class Target:
    """``metric`` of (op, shape prefix, provider) must reach ``goal``. Metrics: "pct" (% of the roofline
    ceiling), "speedup" (over the case's reference), "achieved_vs" (achieved / achieved of provider ``other``),
    "time_vs" (median time of ``other`` / ours, e.g. 1 / 1.1 = "within 10% of"), "peak_mib" (peak extra memory
    at most goal MiB). ``info``: not an issue's target, a figure printed beside them with its goal, never
    MET / MISSED."""

    name: str
    op: str
    shape: str
    provider: str
    metric: str
    goal: float
    other: str = ""
    info: bool = False


RERANK = "rerank Nq=1 Lq=32 Nd=10000 Ld=U[64,512] H=1024 float16"
ALL_PAIRS = "all-pairs Nq=Nd=64 Lq=32 Ld=256 H=1024 bfloat16"
ATTENTION_8192 = "1 text x 8192 heads=16 d=64 float16"
SPARSE = "B=64 L=512 H=1024"
# MaxSim's extra memory at O(Nq * Nd): the scores and per-pair scratch, 64 bytes a pair, plus 1 MiB of small tensors
# (offsets, sums), against the padded einsum's [Nq, Lq, Nd, Ld] similarities (here 328 MB in fp16).
RERANK_MEMORY_MIB = (64 * 1 * 10000 + 2**20) / 2**20
TARGETS = [
    Target("MaxSim rerank >= 80% copy bandwidth (triton)", "maxsim", RERANK, "m3k:triton", "pct", 80),
    Target("MaxSim rerank >= 5x padded einsum reference (triton)", "maxsim", RERANK, "m3k:triton", "speedup", 5),
    Target("MaxSim rerank peak extra memory O(Nq*Nd) (triton)", "maxsim", RERANK, "m3k:triton", "peak_mib",
           RERANK_MEMORY_MIB),
    Target("MaxSim rerank >= 80% copy bandwidth (cuda)", "maxsim", RERANK, "m3k:cuda", "pct", 80),
    Target("MaxSim rerank cuda within 10% of triton", "maxsim", RERANK, "m3k:cuda", "time_vs", 1 / 1.1, "m3k:triton"),
    Target("MaxSim all-pairs fwd+bwd bf16 >= 3x einsum reference (triton)", "maxsim fwd+bwd", ALL_PAIRS, "m3k:triton",
           "speedup", 3),
    Target("MaxSim all-pairs fwd+bwd bf16 >= 3x einsum reference (cuda)", "maxsim fwd+bwd", ALL_PAIRS, "m3k:cuda",
           "speedup", 3),
    Target("attention 8192 tokens >= SDPA flash TFLOP/s", "attention_varlen", ATTENTION_8192,
           "m3k:triton", "achieved_vs", 1.0, "SDPA flash backend per text, unpadded"),
    Target("attention 32 texts U[64,2048] >= 2x padded SDPA", "attention_varlen", "32 texts U[64,2048] heads=16 d=64 "
           "float16", "m3k:triton", "speedup", 2),
    Target("sparse weights B=64 >= 70% copy bandwidth (triton, end to end)", "lexical_weights", SPARSE, "m3k:triton",
           "pct", 70),
    # Beside the targets: the stricter baselines, the kernels alone and the paths no target names.
    Target("MaxSim rerank vs the einsum in fp16, as the peers run it (triton)", "maxsim", RERANK, "m3k:triton",
           "time_vs", 5, f"{PEER_ROW} in float16", info=True),
    Target("MaxSim rerank vs the einsum in fp16, as the peers run it (cuda)", "maxsim", RERANK, "m3k:cuda",
           "time_vs", 5, f"{PEER_ROW} in float16", info=True),
    Target("MaxSim rerank cuda within 10% of triton, kernels alone (CUDA graph replay)", "maxsim", RERANK,
           f"m3k:cuda{GRAPH_SUFFIX}", "time_vs", 1 / 1.1, f"m3k:triton{GRAPH_SUFFIX}", info=True),
    Target("MaxSim rerank peak extra memory O(Nq*Nd) (cuda)", "maxsim", RERANK, "m3k:cuda", "peak_mib",
           RERANK_MEMORY_MIB, info=True),
    Target("MaxSim all-pairs fwd+bwd vs the einsum in bf16, as the peers run it (triton)", "maxsim fwd+bwd",
           ALL_PAIRS, "m3k:triton", "time_vs", 3, f"{PEER_ROW} in bfloat16", info=True),
    Target("MaxSim all-pairs fwd+bwd vs the einsum in bf16, as the peers run it (cuda)", "maxsim fwd+bwd",
           ALL_PAIRS, "m3k:cuda", "time_vs", 3, f"{PEER_ROW} in bfloat16", info=True),
    Target("MaxSim all-pairs fwd+bwd >= 3x einsum reference (triton, deterministic)", "maxsim fwd+bwd", ALL_PAIRS,
           "m3k:triton deterministic", "speedup", 3, info=True),
    Target("MaxSim all-pairs fwd+bwd >= 3x einsum reference (cuda, deterministic)", "maxsim fwd+bwd", ALL_PAIRS,
           "m3k:cuda deterministic", "speedup", 3, info=True),
    Target("sparse weights B=64 >= 70% copy bandwidth (cuda, end to end)", "lexical_weights", SPARSE, "m3k:cuda",
           "pct", 70, info=True),
    Target("sparse weights kernels >= 70% copy bandwidth (triton, one kernel, device time)", "lexical_weights kernels",
           SPARSE, "m3k:triton", "pct", 70, info=True),
    Target("sparse weights kernels >= 70% copy bandwidth (cuda, two kernels, device time)", "lexical_weights kernels",
           SPARSE, "m3k:cuda", "pct", 70, info=True),
    Target("sparse one kernel no slower than two (triton, device time)", "lexical_weights kernels", SPARSE,
           "m3k:triton", "time_vs", 1.0, "m3k:triton, two kernels (token weights, then per-text pool)", info=True),
]


# Printed after the targets: the same ops without the host work of an eager call - inside trusted_inputs() (no value
# checks, no device sync; common.TRUSTED_SUFFIX), and the op captured in a CUDA graph and replayed
# (common.GRAPH_SUFFIX); the bandwidth a plain read of the sparse kernels' bytes gets; and the all-pairs peak
# memory beside the padded einsum's (its gradients alone exceed a bf16 [Nq, Lq, Nd, Ld] tensor, so no bound).
INFO_FIGURES = [
    ("MaxSim rerank, triton, data checks off", "maxsim", RERANK, f"m3k:triton{TRUSTED_SUFFIX}"),
    ("MaxSim rerank, cuda, data checks off", "maxsim", RERANK, f"m3k:cuda{TRUSTED_SUFFIX}"),
    ("MaxSim rerank, triton, CUDA graph replay", "maxsim", RERANK, f"m3k:triton{GRAPH_SUFFIX}"),
    ("MaxSim rerank, cuda, CUDA graph replay", "maxsim", RERANK, f"m3k:cuda{GRAPH_SUFFIX}"),
    ("MaxSim all-pairs fwd+bwd, triton", "maxsim fwd+bwd", ALL_PAIRS, "m3k:triton"),
    ("MaxSim all-pairs fwd+bwd, cuda", "maxsim fwd+bwd", ALL_PAIRS, "m3k:cuda"),
    ("MaxSim all-pairs fwd+bwd, einsum in bf16", "maxsim fwd+bwd", ALL_PAIRS, f"{PEER_ROW} in bfloat16"),
    ("attention 8192 tokens, triton, data checks off", "attention_varlen", ATTENTION_8192,
     f"m3k:triton{TRUSTED_SUFFIX}"),
    ("attention 8192 tokens, triton, CUDA graph replay", "attention_varlen", ATTENTION_8192,
     f"m3k:triton{GRAPH_SUFFIX}"),
    ("sparse read floor, a torch sum of the same 64 MiB", "lexical_weights kernels", SPARSE,
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
    elif target.metric == "peak_mib":
        peak = row.get("peak_extra_mib")
        if peak is None:
            return "no peak memory recorded", None
        return f"{peak:.1f} MiB (bound {target.goal:.1f} MiB)", peak <= target.goal
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


def _info_line(target: Target, rows: list[dict]) -> str:
    text, met = evaluate(target, rows)
    if target.metric == "peak_mib":
        verdict = "" if met is None else f" ({'within' if met else 'exceeds'} the bound)"
    else:
        verdict = "" if met is None else f" ({'reaches' if met else 'below'} the goal)"
    return f"{'info':6} {target.name}: {text}{verdict}"


def report(results: dict, encode: dict | None) -> list[str]:
    rows = results["rows"]
    lines = [_line(t.name, *evaluate(t, rows)) for t in TARGETS if not t.info]
    lines += [_info_line(t, rows) for t in TARGETS if t.info]
    for name, op, shape, provider in INFO_FIGURES:
        row = _find(rows, op, shape, provider)
        if row is not None and row.get("status") == "ok" and row.get("achieved") is not None:
            peak = row.get("peak_extra_mib")
            lines.append(f"{'info':6} {name}: {row['median_ms']:.3f} ms, {row['achieved']:.0f} "
                         f"{row.get('achieved_unit', '')} ({row.get('pct_of_ceiling') or 0:.0f}% of ceiling)"
                         + ("" if peak is None else f", peak extra {peak:.1f} MiB"))
    if encode is not None:
        speedup = encode.get("speedup")
        text = f"{speedup:.2f}x" if speedup is not None else f"not compared: {encode.get('flag_skipped')}"
        met = None if speedup is None else speedup >= 2
        lines.append(_line("encode fp16 real size >= 2x FlagEmbedding", text, met))
    return lines


def sweep_lines(tune: dict) -> list[str]:
    """From tune.json: the fastest CUDA (layout, tile) at the rerank shape against the Triton table entry (both
    kernels alone, do_bench medians on the same inputs), with the CUDA targets' goals (10%, 80% of copy)."""
    def rows(sweep: str) -> list[dict]:
        return [r for r in tune.get("rows", []) if r["sweep"] == sweep and r["shape"].startswith("rerank")
                and r["status"] == "ok" and r.get("ms")]

    cuda, triton = rows(CUDA_RERANK_SWEEP), rows(TRITON_RERANK_SWEEP)
    entry = next((r for r in triton if r["is_table_entry"]), None)
    if not cuda or entry is None:
        return [f"{'info':6} MaxSim rerank, the sweep's best CUDA (layout, tile) vs triton: not in tune.json"]
    best = min(cuda, key=lambda r: r["ms"])
    within = entry["ms"] / best["ms"] >= 1 / 1.1
    return [
        f"{'info':6} MaxSim rerank, kernels alone in this run's sweep: best CUDA (layout, tile) {best['config']}"
        f"{' (the table entry)' if best['is_table_entry'] else ''} {best['ms']:.3f} ms, "
        f"{best.get('pct_copy_bw') or 0:.0f}% of copy, vs triton's entry {entry['ms']:.3f} ms "
        f"({'within' if within else 'not within'} 10%; {'reaches' if (best.get('pct_copy_bw') or 0) >= 80 else 'below'}"
        " 80% of copy)"
    ]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    tune_path = None
    if "--tune" in args:
        at = args.index("--tune")
        tune_path = Path(args[at + 1]) if at + 1 < len(args) else None
        del args[at:at + 2]
    if not args:
        print(__doc__)
        return 2
    results = json.loads(Path(args[0]).read_text())
    encode = json.loads(Path(args[1]).read_text()) if len(args) > 1 and Path(args[1]).exists() else None
    device = results.get("machine", {}).get("gpu") or results.get("machine", {}).get("device")
    print(f"targets ({device}):")
    lines = report(results, encode)
    if tune_path is not None and tune_path.exists():
        lines += sweep_lines(json.loads(tune_path.read_text()))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
