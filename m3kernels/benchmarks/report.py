"""Benchmark output: a terminal table, rows as CSV and JSON (with machine info), and PNG plots."""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
from pathlib import Path

import torch

from m3kernels.benchmarks.harness import Row


def machine_info(device: torch.device, ceilings: dict[str, float]) -> dict[str, object]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: dict[str, object] = {
        "cpu": cpu, "cores": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "device": str(device), "ceilings": ceilings,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[Row]) -> str:
    head = ["op", "shape", "provider", "median ms", "p10-p90 ms", "vs ref", "peak MiB", "achieved", "% ceil",
            "status"]
    body = []
    for r in rows:
        spread = "-" if r.p10_ms is None else f"{r.p10_ms:.2f}-{r.p90_ms:.2f}"
        ach = "-" if r.achieved is None else f"{r.achieved:.1f} {r.achieved_unit}"
        status = r.status if r.status == "ok" else f"{r.status}: {r.note}"
        body.append([r.op, r.shape, r.provider, _fmt(r.median_ms, ".2f"), spread,
                     _fmt(r.speedup_vs_reference, ".2f") + ("x" if r.speedup_vs_reference else ""),
                     _fmt(r.peak_extra_mib, ".1f"), ach, _fmt(r.pct_of_ceiling, ".0f"), status])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    widths[-1] = min(widths[-1], 60)
    lines = [" | ".join(str(x).ljust(w)[: max(w, 60)] for x, w in zip(line, widths, strict=True))
             for line in [head, *body]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def write(rows: list[Row], info: dict[str, object], out_dir: Path, plots: bool = True) -> list[Path]:
    """results.json (rows + machine info), results.csv, table.txt and (plots=True) one PNG per op in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [dataclasses.asdict(r) for r in rows]
    paths = [out_dir / "results.json", out_dir / "results.csv", out_dir / "table.txt"]
    paths[0].write_text(json.dumps({"machine": info, "rows": records}, indent=1, default=str))
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[f.name for f in dataclasses.fields(Row) if f.name != "params"])
        writer.writeheader()
        for rec in records:
            writer.writerow({k: v for k, v in rec.items() if k != "params"})
    paths[2].write_text(table(rows) + "\n")
    return paths + plot(rows, out_dir) if plots else paths


def plot(rows: list[Row], out_dir: Path) -> list[Path]:
    """One bar chart per op: median time of each provider per shape (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    for op in dict.fromkeys(r.op for r in rows):
        ok = [r for r in rows if r.op == op and r.median_ms is not None]
        if not ok:
            continue
        shapes = list(dict.fromkeys(r.shape for r in ok))
        providers = list(dict.fromkeys(r.provider for r in ok))
        fig, ax = plt.subplots(figsize=(10, 1.2 + 0.9 * len(shapes)))
        height = 0.8 / len(providers)
        for i, p in enumerate(providers):
            ys, xs = [], []
            for j, s in enumerate(shapes):
                hit = [r.median_ms for r in ok if r.shape == s and r.provider == p]
                if hit:
                    ys.append(j + i * height)
                    xs.append(hit[0])
            ax.barh(ys, xs, height=height, label=p)
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(shapes))], shapes, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("median time (ms, log scale)")
        ax.set_title(op)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out_dir / f"{op.replace(' ', '_').replace('+', '')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
