"""MaxSim on Triton kernels: a fused FlashAttention-style forward and argmax-driven backward.

Layout as in csrc/maxsim/maxsim.h: q [Tq, H] and d [Td, H] row-major in one dtype (fp32 / fp16 / bf16);
query i is rows q_off[i] .. q_off[i] + q_len[i], doc j rows d_off[j] .. d_off[j] + d_len[j] (int32), which the
forward kernels clamp into [0, Tq) and [0, Td) (``_item_rows``).

Forward: both kernels walk a doc in BLOCK_D-token tiles, computing each [rows, BLOCK_D] similarity tile with
``tl.dot`` on the native dtype (fp32 accumulation, hidden size in BLOCK_H chunks) and keeping only the running
max and its first arg-max per query token in registers (``_row_max``); the similarity tensor never reaches memory.
- One query (or pairwise): one program per (query, doc) pair on a flat grid axis, walking the query in BLOCK_Q-row
  blocks; BLOCK_Q is a power-of-two bucket of the mean query length (from shapes, no device sync), so serving never
  recompiles per length. Extra memory: the scores only.
- Several queries, all pairs (training, batched search): one program per (block of BLOCK_M query rows, doc). The
  rows may span several queries, so every doc tile read feeds a tall tile (a GEMM-shaped [BLOCK_M, BLOCK_D] dot
  instead of one query's 32 rows: each doc is read Tq / BLOCK_M times, not Nq times). Each row's max goes to a
  [Tq, Nd] fp32 buffer (the size of the argmax that training saves anyway), summed per query in a fixed order by
  a second kernel. Used when that buffer stays under _ROW_MAX_BUFFER entries or the argmax is kept (then the
  buffer doubles the argmax's memory). The two kernels find the same row maxima but sum them in different
  orders, so a score may differ in its last bits between a one-query and a several-query call.
Tiles, warps and stages come from fixed tables keyed on (hidden-size bucket, dtype): no autotuning at call time, no
host syncs, so the forward can be captured in a CUDA graph (m3kernels/benchmarks/tune.py times the entries).

Backward from the saved argmax: dq_t = sum_j g(query(t), j) d[argmax(t, j)] is gathered per block of BLOCK_Q query
rows, BLOCK_J docs at a time (each row owned by one program, fixed order: deterministic). dd[argmax(t, j)] +=
g q_t is either scattered with atomics in the same pass (deterministic=False) or, with deterministic=True,
reduced per doc row in a fixed order after a stable sort of the argmax (a segmented sum: no float atomics,
bitwise reproducible).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from m3kernels import _arch, _triton_compat
from m3kernels.maxsim.ops import ROW_MAX_BUFFER, define_backend, new_outputs, use_row_blocks

# (hidden-size bucket upper bound, element size in bytes) -> BLOCK_D, BLOCK_H, num_warps, num_stages.
# Fixed per architecture family instead of autotuning at serve time (keeps calls graph-capturable). A BLOCK_H that
# covers the bucket's hidden sizes loads the query tile once per program (SINGLE_H).
_FWD_CONFIGS = {
    (128, 2): (64, 128, 4, 3),
    (1 << 30, 2): (64, 128, 4, 3),
    (1 << 30, 4): (32, 64, 4, 2),
}
# The row-block forward, keyed as _FWD_CONFIGS -> BLOCK_M, BLOCK_D, BLOCK_H, num_warps, num_stages. 16-bit, H > 128:
# 4 warps, 1.18x the 8-warp tile in the H200 sweep of 2026-11-28 (bench/RESULTS.md).
_ROWS_CONFIGS = {
    (128, 2): (128, 128, 128, 8, 3),
    (1 << 30, 2): (128, 128, 64, 4, 3),
    (1 << 30, 4): (64, 32, 32, 4, 2),
}
# Ampere / Ada (sm_8x, mma.sync): with 4 warps the 128 x 128 fp32 accumulator takes 255 registers and spills 32-72 B
# per thread (.ci/compile_triton.py); 8 warps there, as before the sweep. Not timed on an sm_8x card.
_ROWS_CONFIGS_SM8X = {**_ROWS_CONFIGS, (1 << 30, 2): (128, 128, 64, 8, 3)}
_ROW_MAX_BUFFER = ROW_MAX_BUFFER  # see ops.use_row_blocks (0: always the per-pair kernel unless training)
_SUM_BLOCK_N = 128
_BWD_BLOCK_E = 16


class BwdTiles(NamedTuple):
    """Backward tiles: dQ kernel rows and docs per step, the hidden-chunk cap (dQ and sorted-dD kernels), warps."""

    block_q: int
    block_j: int
    max_block_h: int
    warps: int


# Per dD path (deterministic=False: float atomics from the dQ kernel; True: sorted segments, one more kernel).
# H200 sweep (bench/RESULTS.md, tune.log): the atomic entry was the fastest of 36; the sorted path ran 1.25x
# faster on (32, 8, 32, 4) than on the atomic entry.
_BWD_TILES = {False: BwdTiles(16, 4, 64, 4), True: BwdTiles(32, 8, 32, 4)}


_triton_compat.patch_interpreter()


def _block_h(h: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(h)))


def _config(table: dict[tuple[int, int], tuple[int, ...]], h: int, dtype: torch.dtype) -> tuple[int, ...]:
    """table's entry for hidden size h and dtype, BLOCK_H (third from last) capped to h's power of two."""
    size = 4 if dtype == torch.float32 else 2
    bucket = min(b for b, s in table if s == size and h <= b)
    *blocks, block_h, warps, stages = table[(bucket, size)]
    return (*blocks, _block_h(h, block_h), warps, stages)


def _query_block(total_q: int, nq: int) -> int:
    """Power-of-two bucket (16 .. 64) of the mean query length, from shapes only (no device sync)."""
    return max(16, min(64, triton.next_power_of_2(triton.cdiv(max(total_q, 1), max(nq, 1)))))


@triton.jit
def _item_rows(off_ptr, len_ptr, i, rows):
    """Item i's first row and row count (int32), clamped into rows [0, rows): a checked call launches on its
    offsets before it reads them (and discards the output when they are bad), so every kernel that reads offsets
    stays in bounds whatever they hold. Valid offsets come out unchanged."""
    start = tl.minimum(tl.maximum(tl.load(off_ptr + i), 0), rows)
    return start, tl.minimum(tl.maximum(tl.load(len_ptr + i), 0), rows - start)


@triton.jit(do_not_specialize=["rows"])
def _segment_ids_kernel(off_ptr, len_ptr, out_ptr, rows, BLOCK: tl.constexpr):
    """out[off[b] + k] = b for k < len[b] (program b)."""
    b = tl.program_id(0)
    start, n = _item_rows(off_ptr, len_ptr, b, rows)
    r = tl.arange(0, BLOCK)
    for s in range(0, n, BLOCK):
        tl.store(out_ptr + start.to(tl.int64) + s + r, tl.full([BLOCK], 0, tl.int32) + b, mask=s + r < n)


def segment_ids(off: Tensor, lens: Tensor, total: int) -> Tensor:
    """int32 [total]: the segment (query / doc / text) b owning each row, -1 for rows in no segment.

    Segment b is rows off[b] .. off[b] + lens[b] (int32 [B] each), clamped into [0, total); valid segments do not
    overlap (a row of overlapping ones, from bad offsets, gets one of its owners).
    """
    out = torch.full((total,), -1, dtype=torch.int32, device=off.device)
    if off.shape[0] > 0 and total > 0:
        with _triton_compat.device_context(off):
            _segment_ids_kernel[(off.shape[0],)](off, lens, out, total, BLOCK=256)
    return out


@triton.jit
def _max_keep_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _row_max(q_ptr, q_rows, q_ok, d_ptr, d_start, d_n, H, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
             BLOCK_H: tl.constexpr, SINGLE_H: tl.constexpr):
    """For the query rows q_rows (int64 [BLOCK_Q], q_ok masks them): max_u <q_t, d_u> over doc rows d_start ..
    d_start + d_n and the first global doc row reaching it (-inf / -1 for an empty doc). A NaN similarity sticks.
    SINGLE_H (H <= BLOCK_H): the query tile is loaded once and the doc loop is the innermost (pipelined) loop;
    otherwise each doc tile sums BLOCK_H-wide chunks of the hidden size."""
    rd = tl.arange(0, BLOCK_D)
    rh = tl.arange(0, BLOCK_H)
    best = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    best_at = tl.full([BLOCK_Q], -1, tl.int32)
    if SINGLE_H:
        q_tile = tl.load(q_ptr + q_rows[:, None] * H + rh[None, :], mask=q_ok[:, None] & (rh < H)[None, :], other=0.0)
    for d0 in range(0, d_n, BLOCK_D):
        d_rows = (d_start + d0 + rd).to(tl.int64)
        d_ok = d0 + rd < d_n
        if SINGLE_H:
            dt = tl.load(d_ptr + d_rows[None, :] * H + rh[:, None], mask=(rh < H)[:, None] & d_ok[None, :], other=0.0)
            sim = tl.dot(q_tile, dt, input_precision="ieee")
        else:
            sim = tl.zeros([BLOCK_Q, BLOCK_D], tl.float32)
            for h0 in range(0, H, BLOCK_H):
                h_ok = h0 + rh < H
                qt = tl.load(
                    q_ptr + q_rows[:, None] * H + h0 + rh[None, :],
                    mask=q_ok[:, None] & h_ok[None, :],
                    other=0.0,
                )
                dt = tl.load(
                    d_ptr + d_rows[None, :] * H + h0 + rh[:, None],
                    mask=h_ok[:, None] & d_ok[None, :],
                    other=0.0,
                )
                sim = tl.dot(qt, dt, acc=sim, input_precision="ieee")
        sim = tl.where(d_ok[None, :], sim, float("-inf"))
        tile_best = tl.reduce(sim, 1, _max_keep_nan)
        # First column reaching the max (0 for a NaN row: its score is NaN anyway).
        tile_at = tl.min(tl.where(sim == tile_best[:, None], rd[None, :], BLOCK_D), axis=1) % BLOCK_D
        # Strict: ties keep the earlier doc token; a NaN sticks (nothing compares greater).
        better = (tile_best > best) | (tile_best != tile_best)
        best = tl.where(better, tile_best, best)
        best_at = tl.where(better, d_start + d0 + tile_at, best_at)
    return best, best_at


@triton.jit(do_not_specialize=["Tq", "Td"])
def _maxsim_fwd_kernel(
    q_ptr,
    q_off_ptr,
    q_len_ptr,
    Tq,
    d_ptr,
    d_off_ptr,
    d_len_ptr,
    Td,
    scores_ptr,
    argmax_ptr,
    nq,
    nd,
    H,
    PAIRWISE: tl.constexpr,
    STORE_ARGMAX: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_H: tl.constexpr,
    SINGLE_H: tl.constexpr,
):
    """scores(i, j) = sum_t max_u <q_t, d_u>; argmax(t, j) = first best global doc row. Program p owns pair
    (i, j) = (p % nq, p // nq) (queries vary fastest, so a doc is re-read from L2), or i = j = p if PAIRWISE.
    A NaN similarity makes the score NaN (the API reports NaN inputs from the output)."""
    pid = tl.program_id(0)
    i = pid if PAIRWISE else pid % nq
    j = pid if PAIRWISE else pid // nq
    q_start, q_n = _item_rows(q_off_ptr, q_len_ptr, i, Tq)
    d_start, d_n = _item_rows(d_off_ptr, d_len_ptr, j, Td)
    rq = tl.arange(0, BLOCK_Q)
    total = tl.zeros([], tl.float32)
    for q0 in range(0, q_n, BLOCK_Q):
        q_rows = (q_start + q0 + rq).to(tl.int64)
        q_ok = q0 + rq < q_n
        best, best_at = _row_max(q_ptr, q_rows, q_ok, d_ptr, d_start, d_n, H, BLOCK_Q, BLOCK_D, BLOCK_H, SINGLE_H)
        total += tl.sum(tl.where(q_ok & (d_n > 0), best, 0.0), axis=0)
        if STORE_ARGMAX:
            arg_at = q_rows if PAIRWISE else q_rows * nd + j
            tl.store(argmax_ptr + arg_at, best_at, mask=q_ok)
    tl.store(scores_ptr + (i if PAIRWISE else i * nd + j), total)


@triton.jit(do_not_specialize=["Tq", "Td"])
def _maxsim_rows_fwd_kernel(
    q_ptr,
    q_seg_ptr,
    Tq,
    d_ptr,
    d_off_ptr,
    d_len_ptr,
    Td,
    rowmax_ptr,
    argmax_ptr,
    nd,
    H,
    num_m_blocks,
    STORE_ARGMAX: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_H: tl.constexpr,
    SINGLE_H: tl.constexpr,
):
    """Program p owns query rows of block p % num_m_blocks against doc j = p // num_m_blocks (row blocks vary
    fastest, so the programs in flight share a doc in L2): rowmax(t, j) = max_u <q_t, d_u> (0 for an empty doc)
    and argmax(t, j) for the rows t inside a query (q_seg >= 0)."""
    pid = tl.program_id(0)
    j = pid // num_m_blocks
    rows = (pid % num_m_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    ok = tl.load(q_seg_ptr + rows, mask=rows < Tq, other=-1) >= 0
    rows64 = rows.to(tl.int64)
    d_start, d_n = _item_rows(d_off_ptr, d_len_ptr, j, Td)
    best, best_at = _row_max(q_ptr, rows64, ok, d_ptr, d_start, d_n, H, BLOCK_M, BLOCK_D, BLOCK_H, SINGLE_H)
    tl.store(rowmax_ptr + rows64 * nd + j, tl.where(d_n > 0, best, 0.0), mask=ok)
    if STORE_ARGMAX:
        tl.store(argmax_ptr + rows64 * nd + j, best_at, mask=ok)


@triton.jit(do_not_specialize=["Tq"])
def _segment_sum_kernel(rowmax_ptr, q_off_ptr, q_len_ptr, Tq, scores_ptr, nd, num_n_blocks, BLOCK_N: tl.constexpr):
    """scores(i, j) = sum of rowmax(t, j) over query i's rows t in order. Program p: query p // num_n_blocks, docs
    of block p % num_n_blocks (one flat grid axis: no 65535 limit on the doc blocks)."""
    pid = tl.program_id(0)
    i = (pid // num_n_blocks).to(tl.int64)
    cols = (pid % num_n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    ok = cols < nd
    start, n = _item_rows(q_off_ptr, q_len_ptr, i, Tq)
    start = start.to(tl.int64)
    acc = tl.zeros([BLOCK_N], tl.float32)
    for t in range(start, start + n):
        acc += tl.load(rowmax_ptr + t * nd + cols, mask=ok, other=0.0)
    tl.store(scores_ptr + i * nd + cols, acc, mask=ok)


def _rows_configs(device: torch.device) -> dict[tuple[int, int], tuple[int, ...]]:
    """The row-block forward's tile table for device's architecture family."""
    return _ROWS_CONFIGS_SM8X if _arch.is_sm8x(device) else _ROWS_CONFIGS


def _forward_rows(q, q_off, q_len, d, d_off, d_len, scores, argmax, need_argmax) -> None:
    """All-pairs forward of several queries: fills scores [nq, nd] (and argmax [Tq, nd]) via the row-max buffer."""
    tq, h = q.shape
    nq, nd = q_off.shape[0], d_off.shape[0]
    block_m, block_d, block_h, warps, stages = _config(_rows_configs(q.device), h, q.dtype)
    num_m = triton.cdiv(tq, block_m)
    if num_m * nd >= 2**31:
        raise ValueError(f"{tq} query rows x {nd} docs exceed the 2^31 - 1 programs of one launch; split the docs")
    if tq * nd == 0:  # no query rows or no docs: every score is an empty sum
        scores.zero_()
        return
    q_seg = segment_ids(q_off, q_len, tq)
    rowmax = torch.empty((tq, nd), dtype=torch.float32, device=q.device)
    _maxsim_rows_fwd_kernel[(num_m * nd,)](
        q, q_seg, tq, d, d_off, d_len, d.shape[0], rowmax, argmax, nd, h, num_m,
        STORE_ARGMAX=need_argmax, BLOCK_M=block_m, BLOCK_D=block_d, BLOCK_H=block_h, SINGLE_H=block_h >= h,
        num_warps=warps, num_stages=stages,
    )
    num_n = triton.cdiv(nd, _SUM_BLOCK_N)
    _segment_sum_kernel[(nq * num_n,)](rowmax, q_off, q_len, tq, scores, nd, num_n, BLOCK_N=_SUM_BLOCK_N)


def forward(
    q: Tensor,
    q_off: Tensor,
    q_len: Tensor,
    d: Tensor,
    d_off: Tensor,
    d_len: Tensor,
    pairwise: bool,
    need_argmax: bool,
) -> tuple[Tensor, Tensor]:
    """Fused MaxSim: scores fp32 [nq, nd] (or [n]); argmax int32 [Tq, nd] (or [Tq]; [0] unless need_argmax)
    holding each query token's first best global doc row, -1 for empty docs and rows outside any query."""
    q, d = q.contiguous(), d.contiguous()
    q_off, q_len, d_off, d_len = (x.contiguous() for x in (q_off, q_len, d_off, d_len))
    nq, nd = q_off.shape[0], d_off.shape[0]
    h = q.shape[1]
    scores, argmax = new_outputs(q, nq, nd, pairwise, need_argmax)
    argmax.fill_(-1)  # rows of tokens outside every item stay -1
    if use_row_blocks(nq, q.shape[0], nd, pairwise, need_argmax, _ROW_MAX_BUFFER):
        with _triton_compat.device_context(q):
            _forward_rows(q, q_off, q_len, d, d_off, d_len, scores, argmax, need_argmax)
        return scores, argmax
    block_d, block_h, warps, stages = _config(_FWD_CONFIGS, h, d.dtype)
    grid = (nq if pairwise else nq * nd,)  # one flat axis: no 65535 limit on the number of docs
    if grid[0] >= 2**31:
        raise ValueError(f"{nq} queries x {nd} docs exceed the 2^31 - 1 programs of one launch; split the docs")
    with _triton_compat.device_context(q):
        _maxsim_fwd_kernel[grid](
            q,
            q_off,
            q_len,
            q.shape[0],
            d,
            d_off,
            d_len,
            d.shape[0],
            scores,
            argmax,
            nq,
            nd,
            h,
            PAIRWISE=pairwise,
            STORE_ARGMAX=need_argmax,
            BLOCK_Q=_query_block(q.shape[0], nq),
            BLOCK_D=block_d,
            BLOCK_H=block_h,
            SINGLE_H=block_h >= h,
            num_warps=warps,
            num_stages=stages,
        )
    return scores, argmax


@triton.jit
def _maxsim_bwd_q_kernel(
    grad_ptr,
    q_ptr,
    q_seg_ptr,
    Tq,
    d_ptr,
    argmax_ptr,
    dq_ptr,
    dd_ptr,
    nd,
    H,
    PAIRWISE: tl.constexpr,
    SCATTER_DD: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Program (block of query rows, h-chunk): dq_t = sum_j g(query(t), j) d[argmax(t, j)] for its rows t inside
    a query, BLOCK_J docs per step (the gathers of a step are independent loads), j in a fixed order; with
    SCATTER_DD also dd[argmax(t, j)] += g(query(t), j) q_t by atomic adds. PAIRWISE: one doc per row, j = query."""
    rows = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    seg = tl.load(q_seg_ptr + rows, mask=rows < Tq, other=-1)
    ok = seg >= 0
    rows64 = rows.to(tl.int64)
    rh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = rh < H
    tile = rows64[:, None] * H + rh[None, :]
    tile_ok = ok[:, None] & h_ok[None, :]
    acc = tl.zeros([BLOCK_Q, BLOCK_H], tl.float32)
    if SCATTER_DD:
        qt = tl.load(q_ptr + tile, mask=tile_ok, other=0.0).to(tl.float32)
    n_cols = 1 if PAIRWISE else nd  # argmax columns: [Tq] pairwise, [Tq, nd] all pairs
    rj = tl.arange(0, BLOCK_J)
    for j0 in range(0, n_cols, BLOCK_J):
        cols = j0 + rj
        take = ok[:, None] & (cols < n_cols)[None, :]
        at = tl.load(argmax_ptr + rows64[:, None] * n_cols + cols[None, :], mask=take, other=-1)
        if PAIRWISE:
            g_at = tl.broadcast_to(seg[:, None], [BLOCK_Q, BLOCK_J])
        else:
            g_at = seg.to(tl.int64)[:, None] * nd + cols[None, :]
        g = tl.load(grad_ptr + g_at, mask=take, other=0.0)
        hit = (at >= 0)[:, :, None] & h_ok[None, None, :]
        src = at.to(tl.int64)[:, :, None] * H + rh[None, None, :]
        acc += tl.sum(g[:, :, None] * tl.load(d_ptr + src, mask=hit, other=0.0).to(tl.float32), axis=1)
        if SCATTER_DD:
            # Relaxed: nothing reads dd before the kernel ends (the default acq_rel adds a fence per add).
            tl.atomic_add(dd_ptr + src, g[:, :, None] * qt[:, None, :], mask=hit, sem="relaxed")
    tl.store(dq_ptr + tile, acc, mask=tile_ok)


@triton.jit
def _maxsim_bwd_d_kernel(
    grad_ptr,
    q_ptr,
    q_seg_ptr,
    perm_ptr,
    bounds_ptr,
    dd_ptr,
    nd,
    H,
    PAIRWISE: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Program (doc row r, h-chunk): dd_r = sum over (t, j) with argmax(t, j) = r of g(query(t), j) q_t, in
    the stable-sorted order perm[bounds[r] .. bounds[r+1]] (flat argmax positions t * nd + j, or t)."""
    r = tl.program_id(0).to(tl.int64)
    rh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = rh < H
    start = tl.load(bounds_ptr + r)
    end = tl.load(bounds_ptr + r + 1)
    re = tl.arange(0, BLOCK_E)
    acc = tl.zeros([BLOCK_H], tl.float32)
    for e0 in range(start, end, BLOCK_E):
        e_ok = e0 + re < end
        flat = tl.load(perm_ptr + e0 + re, mask=e_ok, other=0)
        t = flat if PAIRWISE else flat // nd
        query = tl.load(q_seg_ptr + t, mask=e_ok, other=0).to(tl.int64)
        g = tl.load(grad_ptr + (query if PAIRWISE else query * nd + flat % nd), mask=e_ok, other=0.0)
        qt = tl.load(q_ptr + t[:, None] * H + rh[None, :], mask=e_ok[:, None] & h_ok[None, :], other=0.0)
        acc += tl.sum(g[:, None] * qt.to(tl.float32), axis=0)
    tl.store(dd_ptr + r * H + rh, acc, mask=h_ok)


def _dd_deterministic(grad, q, q_seg, argmax, dd, pairwise, block_h, warps):
    """Fills dd by a segmented sum over the stable-sorted argmax (one program per doc row)."""
    keys, perm = torch.sort(argmax.reshape(-1), stable=True)
    rows = torch.arange(dd.shape[0] + 1, dtype=keys.dtype, device=keys.device)
    bounds = torch.searchsorted(keys, rows)
    grid = (dd.shape[0], triton.cdiv(dd.shape[1], block_h))
    _maxsim_bwd_d_kernel[grid](
        grad,
        q,
        q_seg,
        perm,
        bounds,
        dd,
        argmax.shape[1] if argmax.dim() == 2 else 1,
        dd.shape[1],
        PAIRWISE=pairwise,
        BLOCK_E=_BWD_BLOCK_E,
        BLOCK_H=block_h,
        num_warps=warps,
    )


def backward(
    grad: Tensor,
    q: Tensor,
    q_off: Tensor,
    q_len: Tensor,
    d: Tensor,
    d_off: Tensor,
    d_len: Tensor,
    argmax: Tensor,
    pairwise: bool,
    deterministic: bool,
) -> tuple[Tensor, Tensor]:
    """Gradients from the saved argmax: dq fp32 [Tq, H], dd fp32 [Td, H] (rows outside items stay 0).

    deterministic=True: no float atomics, bitwise-identical results run to run."""
    q, d, grad, argmax = q.contiguous(), d.contiguous(), grad.float().contiguous(), argmax.contiguous()
    q_off, q_len = q_off.contiguous(), q_len.contiguous()
    nd = d_off.shape[0]
    h = q.shape[1]
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dd = torch.zeros(d.shape, dtype=torch.float32, device=d.device)
    tiles = _BWD_TILES[deterministic]
    block_h = _block_h(h, tiles.max_block_h)
    if q.shape[0] == 0 or d.shape[0] == 0:
        return dq, dd
    with _triton_compat.device_context(q):
        q_seg = segment_ids(q_off, q_len, q.shape[0])
        _maxsim_bwd_q_kernel[(triton.cdiv(q.shape[0], tiles.block_q), triton.cdiv(h, block_h))](
            grad,
            q,
            q_seg,
            q.shape[0],
            d,
            argmax,
            dq,
            dd,
            nd,
            h,
            PAIRWISE=pairwise,
            SCATTER_DD=not deterministic,
            BLOCK_Q=tiles.block_q,
            BLOCK_J=1 if pairwise else tiles.block_j,
            BLOCK_H=block_h,
            num_warps=tiles.warps,
        )
        if deterministic:
            _dd_deterministic(grad, q, q_seg, argmax, dd, pairwise, block_h, tiles.warps)
    return dq, dd


op, eager_op = define_backend("triton", forward, backward)
