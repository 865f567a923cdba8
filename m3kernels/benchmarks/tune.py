"""Sweep of the Triton kernels' fixed config tables on the GPU target shapes of the issues (a developer tool).

The kernels take their tiles from fixed tables (no autotuning at call time, so calls stay graph-capturable);
this tool times the table entry that a target shape uses against nearby candidates, so that one GPU run says
which entry to write into the table:

- MaxSim forward, one query, 16-bit, H > 128 (``_FWD_CONFIGS`` in m3kernels/maxsim/triton.py): the rerank shape
  (fp16, 1 query of 32 tokens, 10,000 docs of U[64,512] tokens, H=1024).
- MaxSim forward, several queries (``_ROWS_CONFIGS``, ``_ROWS_CONFIGS_SM8X`` on sm_8x): the all-pairs training
  shape (bf16, 64 x 64, Lq=32, Ld=256), with the per-pair kernel on the same shape as one more candidate; the
  backward tiles (``_BWD_TILES``) on that shape, one entry per dD path: atomic, and sorted (deterministic) (its GB/s
  count the doc rows gathered, one per query token and doc).
- MaxSim forward on the CUDA kernel (m3kernels/maxsim/cuda.py, indices into its block shapes): ``_FWD_TILE`` (per
  pair) and ``_TOKENS_TILE`` (token tiles) on the rerank shape, ``_ROWS_TILE`` (row blocks, with the per-pair
  kernel as one more candidate) on the all-pairs training shape (forward with argmax); skipped where m3kernels._C
  has no CUDA kernels.
- Attention forward, 16-bit, head_dim 64 (``CONFIGS[64].fwd`` in m3kernels/attention/triton.py): one 8192-token
  text and 32 texts of U[64,2048] tokens, 16 heads.
- Sparse ``lexical_weights`` with its bounds known, token weights and per-text pool in one kernel (its read tile
  ``_POOL_BLOCK_T`` / ``_POOL_MAX_BLOCK_H`` and the warps of its sort block in ``_POOL_SORT_WARPS``, in
  m3kernels/sparse/triton.py): B=64, L=512, H=1024, fp16. The two-kernel path (unknown bounds, or sort blocks above
  ``_ONE_KERNEL_MAX_BLOCK``) shares those constants; its token-weights warps (``_POOL_WARPS``) are not swept.

Each candidate's output is first compared with the table entry's (with the first candidate that ran, should
the entry fail): one that disagrees is reported as a mismatch, one that fails to compile as an error. Then it is
timed with triton.testing.do_bench (median ms). Rows carry GB/s (bytes the kernel must read once) or TFLOP/s,
and GB/s as a share of the copy bandwidth measured in the same run. Candidates run until --budget seconds are
spent; the rest are listed as skipped.

    python -m m3kernels.benchmarks.tune --out DIR [--budget 120]      (on a GPU; writes DIR/tune.json)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from m3kernels.benchmarks import roofline


@dataclass
class Shape:
    """One input of a sweep: run() launches the kernel under the current table entry and returns its output (timed);
    compared(output) is the tensor the candidates' outputs are compared by (untimed; default: the output)."""

    label: str
    run: Callable[[], Any]
    bytes: float = 0.0
    flops: float = 0.0
    rtol: float = 1e-4  # of max(1, max |output|): candidates only reorder fp32 sums (attention: its fp16 P tiles)
    compared: Callable[[Any], torch.Tensor] = lambda out: out


@dataclass
class Sweep:
    """Candidates for one table entry; apply(config) is a context manager that puts config into the table."""

    name: str
    table: str
    candidates: list[tuple]
    apply: Callable[[tuple], contextlib.AbstractContextManager]
    shapes: list[Shape]


@dataclass
class Row:
    sweep: str
    table: str
    shape: str
    config: str
    is_table_entry: bool
    status: str
    ms: float | None = None
    gbps: float | None = None
    tflops: float | None = None
    pct_copy_bw: float | None = None


@contextlib.contextmanager
def swap(owner: Any, key: Any, value: Any) -> Iterator[None]:
    """Temporarily owner[key] = value (a dict) or owner.key = value (a module); restored on exit."""
    if isinstance(owner, dict):
        get, put = owner.__getitem__, owner.__setitem__
    else:
        get, put = functools.partial(getattr, owner), functools.partial(setattr, owner)
    old = get(key)
    put(key, value)
    try:
        yield
    finally:
        put(key, old)


def swap_attrs(module: Any, names: tuple[str, ...], values: tuple) -> contextlib.ExitStack:
    """swap() of several module constants at once (names[i] = values[i])."""
    stack = contextlib.ExitStack()
    for name, value in zip(names, values, strict=True):
        stack.enter_context(swap(module, name, value))
    return stack


def _candidates(entry: tuple, grid: Iterator[tuple], limit: int | None, first: tuple[tuple, ...] = ()) -> list[tuple]:
    """The table entry, then `first`, then the grid's other configs nearest the entry first (fewest values changed:
    a budget that runs out cuts the far ones); at most limit in all."""
    def distance(c: tuple) -> int:
        return sum(a != b for a, b in zip(c, entry, strict=True))

    others = sorted((c for c in dict.fromkeys(grid) if c != entry and c not in first), key=distance)
    out = [entry, *first, *others]
    return out[:limit] if limit else out


def _packed(lengths: list[int], dim: tuple[int, ...], dtype: torch.dtype, device: torch.device):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    x = torch.randn(int(cu[-1]), *dim, device=device, dtype=dtype)
    return x, cu.to(device)


def _maxsim_inputs(q_lens: list[int], d_lens: list[int], hidden: int, dtype: torch.dtype,
                   device: torch.device) -> tuple:
    """(q, q_off, q_len, d, d_off, d_len): random packed queries and docs in the kernels' layout."""
    q, cu_q = _packed(q_lens, (hidden,), dtype, device)
    d, cu_d = _packed(d_lens, (hidden,), dtype, device)
    return q, cu_q[:-1], (cu_q[1:] - cu_q[:-1]).contiguous(), d, cu_d[:-1], (cu_d[1:] - cu_d[:-1]).contiguous()


def _training_shape(small: bool) -> tuple[int, int, int, torch.dtype]:
    """(texts per side, doc length, H, dtype) of the all-pairs training target (queries of 32 tokens); small: tiny
    and fp16 (bf16 is wrong in the Triton interpreter)."""
    return (3, 9, 160, torch.float16) if small else (64, 256, 1024, torch.bfloat16)


def _maxsim_shape(label: str, kernels: Any, q_lens: list[int], d_lens: list[int], hidden: int, dtype: torch.dtype,
                  device: torch.device, need_argmax: bool = False) -> Shape:
    """The MaxSim forward on packed queries and docs: scores only, as at inference, or with the argmax that
    training saves (need_argmax; the kernel variant that stores it uses more registers)."""
    args = _maxsim_inputs(q_lens, d_lens, hidden, dtype, device)
    q, d = args[0], args[3]
    return Shape(label, lambda: kernels.forward(*args, False, need_argmax)[0],
                 bytes=float(d.numel() * d.element_size()), flops=2.0 * q.shape[0] * d.shape[0] * hidden)


def _rerank_shape(kernels: Any, small: bool, device: torch.device) -> Shape:
    """The rerank target: one fp16 query of 32 tokens against 10,000 docs of U[64,512] tokens, H=1024."""
    hidden, n_docs, lo, hi = (160, 5, 3, 20) if small else (1024, 10_000, 64, 512)
    lengths = torch.randint(lo, hi + 1, (n_docs,), generator=torch.Generator().manual_seed(0)).tolist()
    return _maxsim_shape(f"rerank Nq=1 Lq=32 Nd={n_docs} Ld=U[{lo},{hi}] H={hidden} fp16", kernels, [32], lengths,
                         hidden, torch.float16, device)


# The two rerank sweeps time the same inputs (kernels alone): benchmarks/targets.py sets the best CUDA tile beside
# the Triton entry, the #5 parity target without a second run to apply the tile.
TRITON_RERANK_SWEEP = "maxsim forward, one query (per-pair kernel, 16-bit, H > 128)"
CUDA_RERANK_SWEEP = "maxsim forward, CUDA kernel, one query (per pair or token tiles)"


def maxsim_sweep(device: torch.device, small: bool, limit: int | None) -> Sweep:
    from m3kernels.maxsim import triton as kernels

    key = (1 << 30, 2)  # the entry for 16-bit inputs with H > 128
    return Sweep(
        TRITON_RERANK_SWEEP,
        "m3kernels/maxsim/triton.py _FWD_CONFIGS[(1 << 30, 2)] = (BLOCK_D, BLOCK_H, warps, stages)",
        _candidates(kernels._FWD_CONFIGS[key], itertools.chain(
            itertools.product((32, 64, 128), (64, 128), (4, 8), (3,)),
            ((64, 128, 4, s) for s in (2, 4)),
            ((32, 1024, 8, s) for s in (2, 3))), limit),  # the whole hidden size in one chunk (SINGLE_H)
        lambda cfg: swap(kernels._FWD_CONFIGS, key, cfg),
        [_rerank_shape(kernels, small, device)],
    )


class UnavailableError(Exception):
    """A sweep whose kernels this machine cannot run (the CUDA sweep without CUDA kernels)."""


def _cuda_kernels(device: torch.device) -> tuple[Any, list[tuple], int]:
    """The CUDA MaxSim module, its forward tile shapes and the shared memory a block may use here."""
    from m3kernels import _backend

    why = _backend.cuda_kernels_unavailable(device)
    if why:
        raise UnavailableError(why)
    from m3kernels import _native
    from m3kernels.maxsim import cuda as kernels

    return kernels, _native.C.maxsim_forward_cuda_tile_shapes, kernels.shared_memory_per_block(device)


def _tile_names(shapes: list[tuple]) -> str:
    return ", ".join(f"{t} = {wm}x{w // wm} warps of {cols} columns x {b} B x {st} stages x {rows} rows"
                     f"{' ldmatrix' * ldm}{f' L2::{pre}B' * bool(pre)}"
                     for t, (w, b, st, _, _, ldm, rows, pre, wm, cols) in enumerate(shapes))


# Token-tile candidates of the CUDA rerank sweep timed right after the table entry (before a budget runs out): the
# default tile and those with the fewest instructions per MMA in the sm_90 SASS (bench/RESULTS.md).
_FIRST_TOKEN_TILES = (0, 15, 7, 20)


def maxsim_cuda_sweep(device: torch.device, small: bool, limit: int | None) -> Sweep:
    """The CUDA rerank forward: (layout, tile) candidates, "pairs" (_FWD_TILE, 32-row tiles) or "tokens"
    (_TOKENS_TILE, any tile)."""
    kernels, shapes, smem_limit = _cuda_kernels(device)
    fits = [t for t in range(len(shapes)) if kernels.tile_smem(t) <= smem_limit]
    entry = ("pairs", kernels._FWD_TILE) if kernels._TOKENS_TILE is None else ("tokens", kernels._TOKENS_TILE)
    grid = itertools.chain((("pairs", t) for t in fits if shapes[t][6] == 32), (("tokens", t) for t in fits))

    def apply(cfg: tuple) -> contextlib.ExitStack:
        layout, tile = cfg
        if layout == "tokens":
            return swap_attrs(kernels, ("_TOKENS_TILE",), (tile,))
        return swap_attrs(kernels, ("_TOKENS_TILE", "_FWD_TILE"), (None, tile))

    first = tuple(("tokens", t) for t in _FIRST_TOKEN_TILES if t in fits)
    return Sweep(
        CUDA_RERANK_SWEEP,
        f"m3kernels/maxsim/cuda.py (layout, tile): pairs = _FWD_TILE, tokens = _TOKENS_TILE "
        f"(csrc/maxsim/maxsim_cuda.h kFwdTileShapes: {_tile_names(shapes)})",
        _candidates(entry, grid, limit, first=first),
        apply,
        [_rerank_shape(kernels, small, device)],
    )


def maxsim_cuda_rows_sweep(device: torch.device, small: bool, limit: int | None) -> Sweep:
    kernels, shapes, smem_limit = _cuda_kernels(device)
    n, d_len, hidden, dtype = _training_shape(small)
    train = _maxsim_inputs([32] * n, [d_len] * n, hidden, dtype, device)
    fits = [t for t in range(len(shapes)) if kernels.tile_smem(t) <= smem_limit]

    def apply(cfg: tuple) -> contextlib.AbstractContextManager:
        if cfg == PER_PAIR:
            return swap(kernels, "use_row_blocks", lambda *_: False)
        return swap(kernels, "_ROWS_TILE", cfg[0])

    return Sweep(
        "maxsim forward, CUDA kernel, several queries (row blocks)",
        f"m3kernels/maxsim/cuda.py _ROWS_TILE (csrc/maxsim/maxsim_cuda.h kFwdTileShapes: {_tile_names(shapes)})",
        _candidates((kernels._ROWS_TILE,), ((t,) for t in fits), limit, first=(PER_PAIR,)),
        apply,
        [Shape(f"all-pairs Nq=Nd={n} Lq=32 Ld={d_len} H={hidden} {str(dtype)[6:]}, with argmax",
               lambda: kernels.forward(*train, False, True)[0],
               bytes=float(train[3].numel() * train[3].element_size()),
               flops=2.0 * train[0].shape[0] * train[3].shape[0] * hidden)],
    )


PER_PAIR = ("per-pair kernel",)  # a candidate of the row-block sweep: the per-pair kernel on the same shape


def maxsim_rows_sweep(device: torch.device, small: bool, limit: int | None) -> Sweep:
    from m3kernels.maxsim import triton as kernels

    n, d_len, hidden, dtype = _training_shape(small)
    key = (1 << 30, 2)  # 16-bit inputs, H > 128

    def apply(cfg: tuple) -> contextlib.AbstractContextManager:
        if cfg == PER_PAIR:
            return swap(kernels, "use_row_blocks", lambda *_: False)
        return swap(kernels._rows_configs(device), key, cfg)

    grid = itertools.product((64, 128), (64, 128), (32, 64), (4, 8), (3,))
    table = "_ROWS_CONFIGS_SM8X" if kernels._rows_configs(device) is kernels._ROWS_CONFIGS_SM8X else "_ROWS_CONFIGS"
    return Sweep(
        "maxsim forward, several queries (row-block kernel, 16-bit, H > 128)",
        f"m3kernels/maxsim/triton.py {table}[(1 << 30, 2)] = (BLOCK_M, BLOCK_D, BLOCK_H, warps, stages)",
        _candidates(kernels._rows_configs(device)[key], grid, limit, first=(PER_PAIR,)),  # the kernel choice first
        apply,
        [_maxsim_shape(f"all-pairs Nq=Nd={n} Lq=32 Ld={d_len} H={hidden} {str(dtype)[6:]}, with argmax", kernels,
                       [32] * n, [d_len] * n, hidden, dtype, device, need_argmax=True)],
    )


def attention_sweep(device: torch.device, small: bool, limit: int | None) -> Sweep:
    from m3kernels.attention import triton as kernels

    heads, head_dim = (2, 64) if small else (16, 64)
    g = torch.Generator().manual_seed(0)
    mixed = torch.randint(5, 40, (3,), generator=g).tolist() if small else \
        torch.randint(64, 2049, (32,), generator=g).tolist()

    def shape(label: str, lengths: list[int]) -> Shape:
        q, cu = _packed(lengths, (heads, head_dim), torch.float16, device)
        k, v = torch.randn_like(q), torch.randn_like(q)
        return Shape(label, lambda: kernels.forward(q, k, v, cu, max(lengths), head_dim**-0.5)[0],
                     flops=4.0 * sum(n * n for n in lengths) * heads * head_dim, rtol=5e-3)

    long = 70 if small else 8192
    entry = kernels.CONFIGS[64]
    return Sweep(
        "attention forward (16-bit, head_dim 64)",
        "m3kernels/attention/triton.py CONFIGS[64].fwd = Tiles(block_m, block_n, warps, stages)",
        _candidates(tuple(entry.fwd), itertools.chain(
            itertools.product((64, 128), (32, 64, 128), (4, 8), (3,)),
            ((*entry.fwd[:3], s) for s in (2, 4))), limit),
        lambda cfg: swap(kernels.CONFIGS, 64, entry._replace(fwd=kernels.Tiles(*cfg))),
        [shape(f"1 text x {long} heads={heads} d={head_dim} fp16", [long]),
         shape(f"{len(mixed)} texts U[{min(mixed)},{max(mixed)}] heads={heads} d={head_dim} fp16", mixed)],
    )


def sparse_sweep(device: torch.device, small: bool, limit: int | None) -> Sweep:
    from m3kernels._segments import uniform_segments
    from m3kernels.benchmarks.sparse import VOCAB, compact_to_dense, packed_sparse_inputs
    from m3kernels.sparse import triton as kernels

    batch, length, hidden = (2, 9, 100) if small else (64, 512, 1024)
    h, ids, weight, bias, skip = packed_sparse_inputs(device, batch, length, hidden, torch.float16)
    weight, bias = weight.float(), bias.float()
    off, lens = uniform_segments(batch, length, device)
    block = kernels._pool_block(None, ids, lens, length, VOCAB)
    entry = kernels._sort_warps_key(block)

    def run() -> tuple[torch.Tensor, ...]:
        return kernels.pool(h, ids, off, lens, weight, bias, skip, length, VOCAB)  # bounds known: one kernel

    def apply(cfg: tuple) -> contextlib.ExitStack:
        stack = swap_attrs(kernels, ("_POOL_BLOCK_T", "_POOL_MAX_BLOCK_H"), cfg[:2])
        stack.enter_context(swap(kernels._POOL_SORT_WARPS, entry, cfg[2]))
        return stack

    return Sweep(
        "sparse lexical_weights kernel (token weights + per-text pool in one launch)",
        f"m3kernels/sparse/triton.py (_POOL_BLOCK_T, _POOL_MAX_BLOCK_H, _POOL_SORT_WARPS[{entry}]), sort block {block}",
        _candidates((kernels._POOL_BLOCK_T, kernels._POOL_MAX_BLOCK_H, kernels._POOL_SORT_WARPS[entry]),
                    itertools.product((4, 8, 16, 32, 64), (128, 256, 512, 1024), (2, 4, 8)), limit),
        apply,
        # Compared as dense [B, vocab]: an entry in the wrong text or under the wrong id shows as an O(1) error.
        [Shape(f"B={batch} L={length} H={hidden} fp16", run, bytes=float(h.numel() * h.element_size()),
               compared=compact_to_dense(batch, length))],
    )


def _maxsim_backward_sweep(device: torch.device, small: bool, limit: int | None, deterministic: bool) -> Sweep:
    from m3kernels.maxsim import triton as kernels

    n, d_len, hidden, dtype = _training_shape(small)
    args = _maxsim_inputs([32] * n, [d_len] * n, hidden, dtype, device)
    argmax = kernels.forward(*args, False, True)[1]
    grad = torch.randn(n, n, device=device)
    d = args[3]

    def run() -> torch.Tensor:
        dq, dd = kernels.backward(grad, *args, argmax, False, deterministic)
        return torch.cat([dq.flatten(), dd.flatten()])

    dd_path = "sorted dD (deterministic=True)" if deterministic else "atomic dD"
    return Sweep(
        f"maxsim backward, {dd_path}",
        f"m3kernels/maxsim/triton.py _BWD_TILES[{deterministic}] = BwdTiles(block_q, block_j, max_block_h, warps)",
        _candidates(tuple(kernels._BWD_TILES[deterministic]),
                    itertools.product((16, 32), (2, 4, 8), (32, 64, 128), (4, 8)), limit),
        lambda cfg: swap(kernels._BWD_TILES, deterministic, kernels.BwdTiles(*cfg)),
        [Shape(f"all-pairs Nq=Nd={n} Lq=32 Ld={d_len} H={hidden} {str(dtype)[6:]}", run,
               bytes=float(n * 32 * n * hidden * d.element_size()))],
    )


def maxsim_backward_atomic_sweep(device: torch.device, small: bool, limit: int | None) -> Sweep:
    return _maxsim_backward_sweep(device, small, limit, False)


def maxsim_backward_sorted_sweep(device: torch.device, small: bool, limit: int | None) -> Sweep:
    return _maxsim_backward_sweep(device, small, limit, True)


# In order of the open targets they serve (each sweep gets an equal share of the time left, so what a fast one leaves
# goes to those after it): the CUDA rerank parity, the Triton rerank, the sparse kernel, the all-pairs forwards,
# attention, then the backward.
SWEEPS = (maxsim_cuda_sweep, maxsim_sweep, sparse_sweep, maxsim_cuda_rows_sweep, maxsim_rows_sweep, attention_sweep,
          maxsim_backward_atomic_sweep, maxsim_backward_sorted_sweep)


def _median_ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median"))
    start = time.perf_counter()  # the interpreter (tests): one call, the mechanics only
    fn()
    return (time.perf_counter() - start) * 1e3


def run_sweep(sweep: Sweep, device: torch.device, deadline: float, copy_gbps: float) -> list[Row]:
    """Rows for every (shape, candidate): ok with timings, mismatch, error, or skipped past the deadline."""
    rows = []
    baseline: dict[str, torch.Tensor] = {}
    for cfg in sweep.candidates:
        for shape in sweep.shapes:
            row = Row(sweep.name, sweep.table, shape.label, str(cfg), cfg == sweep.candidates[0], "ok")
            rows.append(row)
            if time.monotonic() > deadline:
                row.status = "skipped (budget)"
                continue
            try:
                with sweep.apply(cfg):
                    out = shape.compared(shape.run()).float()
                    base = baseline.setdefault(shape.label, out)
                    err = (out - base).abs().max().item() if out.numel() else 0.0
                    if not err <= shape.rtol * max(1.0, base.abs().max().item() if base.numel() else 0.0):
                        row.status = f"mismatch: max |diff| {err:.3g} from the first candidate's output"
                        continue
                    row.ms = _median_ms(shape.run, device)
            except Exception as exc:  # a candidate may not compile (shared memory, registers): report it
                row.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
                continue
            seconds = row.ms / 1e3
            if shape.bytes:
                row.gbps = shape.bytes / seconds / 1e9
                row.pct_copy_bw = 100.0 * row.gbps / copy_gbps if copy_gbps else None
            if shape.flops:
                row.tflops = shape.flops / seconds / 1e12
    return rows


def report(rows: list[Row]) -> str:
    """Per (sweep, shape): every candidate by time, the table entry marked, and the best one's speed-up."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.sweep, r.shape), []).append(r)
    lines = []
    for (sweep, shape), group in groups.items():
        group = sorted(group, key=lambda r: (r.ms is None, r.ms or 0.0))
        entry = next((r for r in group if r.is_table_entry), None)
        lines.append(f"== {sweep}: {shape}  [{group[0].table}]")
        for r in group:
            speed = f"{r.gbps:8.1f} GB/s ({r.pct_copy_bw:.0f}% copy)" if r.gbps and r.pct_copy_bw is not None \
                else (f"{r.tflops:8.1f} TFLOP/s" if r.tflops else "")
            ms = f"{r.ms:9.3f} ms" if r.ms is not None else " " * 12
            tag = " <- table" if r.is_table_entry else ""
            lines.append(f"  {r.config:<22} {ms}  {speed:<28} {r.status if r.status != 'ok' else ''}{tag}")
        best = group[0]
        if entry and entry.ms and best.ms and best is not entry:
            lines.append(f"  best {best.config}: {entry.ms / best.ms:.2f}x the table entry")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds for all sweeps")
    parser.add_argument("--small", action="store_true", help="tiny shapes (the interpreter's smoke test)")
    parser.add_argument("--limit", type=int, default=None, help="candidates per sweep, table entry first")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.small:
        parser.error("the full-size sweep needs a CUDA GPU (--small runs tiny shapes in the Triton interpreter)")
    end = time.monotonic() + args.budget
    ceilings = roofline.measure(device, quick=True) if device.type == "cuda" else {"gbps": 0.0}
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (Triton interpreter)"
    print(f"device: {name}; copy bandwidth {ceilings['gbps']:.0f} GB/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for i, make in enumerate(SWEEPS):  # each sweep gets an equal share of what is left
        deadline = time.monotonic() + (end - time.monotonic()) / (len(SWEEPS) - i)
        try:
            sweep = make(device, args.small, args.limit)
        except UnavailableError as why:
            print(f"== {make.__name__}: skipped: {why}", flush=True)
            continue
        except Exception as exc:  # e.g. out of memory building the inputs: the other sweeps still run
            print(f"== {make.__name__}: could not build its inputs: {type(exc).__name__}: {exc}", flush=True)
            continue
        done = run_sweep(sweep, device, deadline, ceilings["gbps"])
        rows += done
        print(report(done), flush=True)  # and the file after every sweep: a run cut short keeps what it did
        (args.out / "tune.json").write_text(json.dumps(
            {"device": name, "copy_gbps": ceilings["gbps"], "rows": [asdict(r) for r in rows]}, indent=1))
        if device.type == "cuda":
            del sweep
            torch.cuda.empty_cache()  # the rerank docs alone take ~6 GB
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
