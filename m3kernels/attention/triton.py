"""FlashAttention-2 Triton kernels for packed varlen bidirectional attention (the "triton" backend).

Layout: q, k, v, out [T, heads, D] contiguous, sequences packed along T by ``cu_seqlens`` (int32 [B+1]);
the logsumexp ``lse[h, t] = log sum_j exp(scale * q_t . k_j)`` (natural log, fp32 [heads, T]) is saved for
backward. One program per (query or key block of ``max_seqlen``, sequence, head) on a flattened 1-D grid;
blocks past a sequence's end exit at once, so memory is O(tokens) and work O(sum of n^2).

Forward: online softmax in base 2 (log2(e) folded into the scale), fp32 accumulators, P cast to the input
dtype for the P @ V product. Backward (FA2): delta = rowsum(dO * O), then one kernel accumulating dK, dV per
key block over the query blocks and one accumulating dQ per query block over the key blocks (no atomics, so
deterministic). head_dim is padded to a power of two (>= 16) with masked loads; tiles come from ``CONFIGS``
(``AMPERE_OVERRIDES`` on sm_8x, ``FP32_CONFIGS`` for fp32).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from m3kernels import _arch, _triton_compat
from m3kernels.attention.ops import define_backend

_triton_compat.patch_interpreter()

LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) = exp2(x * LOG2E)
MAX_HEAD_DIM = 128


class Tiles(NamedTuple):
    """One kernel's launch config: rows of the query tile, rows of the key tile, warps, pipeline stages."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


class Configs(NamedTuple):
    """Tiles of the forward kernel, the dK/dV kernel (block_n keys per program) and the dQ kernel."""

    fwd: Tiles
    dkdv: Tiles
    dq: Tiles


# Fixed tiles per padded head_dim (no autotuning at call time: calls are graph-capturable). 16-bit inputs run on
# tensor cores with pipelined loads. float32 inputs (IEEE dots, no tensor cores) take one stage and the tiles that
# spilled least in a sweep of .ci/compile_triton.py's stand-in compile (32 x 32, 8 warps; dQ at head_dim 128:
# 16 x 16, 4 warps): they still spill at head_dim >= 64, where the fp32 operand rows outgrow the registers.
CONFIGS: dict[int, Configs] = {
    block_d: Configs(Tiles(128, 64, 8, 3), Tiles(32, 128, 8, 3), Tiles(128, 32, 4, 3)) for block_d in (16, 32, 64)
}
# head_dim 64 (BGE-M3), H200 sweep (bench/RESULTS.md): 64 x 64 tiles, 4 warps were the fastest of 14 on both
# shapes, 1.08x the 128 x 64 entry on 32 texts of U[95, 2026] tokens, level on one 8192-token text.
CONFIGS[64] = CONFIGS[64]._replace(fwd=Tiles(64, 64, 4, 3))
CONFIGS[128] = Configs(Tiles(128, 64, 8, 3), Tiles(32, 64, 8, 3), Tiles(64, 32, 4, 3))
# Ampere and Ada (sm_8x): at head_dim 128 the backward tiles above spill on sm_80 (dK/dV 704 B, dQ 1,064 B of spill
# stores per thread); these compile without spills on sm_80 for fp16 and bf16 (.ci/compile_triton.py; on sm_86 the
# dQ tile still spills 4 B). Only the kinds named here differ from CONFIGS. Not yet timed on an sm_8x card.
AMPERE_OVERRIDES: dict[int, dict[str, Tiles]] = {128: {"dkdv": Tiles(64, 32, 8, 2), "dq": Tiles(128, 32, 8, 2)}}
_FP32_TILES = Tiles(32, 32, 8, 1)
FP32_CONFIGS: dict[int, Configs] = {block_d: Configs(*[_FP32_TILES] * 3) for block_d in (16, 32, 64)}
FP32_CONFIGS[128] = Configs(_FP32_TILES, _FP32_TILES, Tiles(16, 16, 4, 1))


def _tiles(kind: str, block_d: int, dtype: torch.dtype, device: torch.device) -> Tiles:
    """The fixed tiles of one kernel: per head_dim bucket, dtype (fp32 or 16-bit) and architecture family."""
    if dtype == torch.float32:
        return getattr(FP32_CONFIGS[block_d], kind)
    if _arch.is_sm8x(device) and kind in AMPERE_OVERRIDES.get(block_d, {}):
        return AMPERE_OVERRIDES[block_d][kind]
    return getattr(CONFIGS[block_d], kind)


@triton.jit
def _locate(CU, num_blocks, BLOCK: tl.constexpr, H, T):
    """Program id -> (block index inside the sequence, head (int64), first token (int64), sequence length).
    head and start are int64 so that h * T (lse / delta rows) and start * stride_t never wrap in int32. The
    offsets are clamped to 0 <= start <= end <= T and the length to the num_blocks * BLOCK rows the grid covers
    (what _check_seq_offsets bounds), so that unchecked cu_seqlens and max_seqlen (the public op reads their values
    after the launch, or never with the data checks off) keep every access in bounds; valid ones are unchanged."""
    pid = tl.program_id(0)
    blk = pid % num_blocks
    bh = pid // num_blocks
    b = bh // H
    start = tl.minimum(tl.maximum(tl.load(CU + b), 0), T)
    end = tl.minimum(tl.maximum(tl.load(CU + b + 1), start), T)
    return blk, (bh % H).to(tl.int64), start.to(tl.int64), tl.minimum(end - start, num_blocks * BLOCK)


@triton.jit
def _load(ptr, rows, n, offs_d, stride_t, D: tl.constexpr, EVEN_D: tl.constexpr, MASK_ROWS: tl.constexpr):
    """Tile [len(rows), BLOCK_D] of ptr[rows, :D]; rows >= n (when MASK_ROWS) and columns >= D read as 0."""
    ptrs = ptr + rows[:, None] * stride_t + offs_d[None, :]
    if MASK_ROWS:
        mask = (rows[:, None] < n) if EVEN_D else (rows[:, None] < n) & (offs_d[None, :] < D)
        x = tl.load(ptrs, mask=mask, other=0.0)
    else:
        x = tl.load(ptrs) if EVEN_D else tl.load(ptrs, mask=offs_d[None, :] < D, other=0.0)
    return x


@triton.jit
def _store(ptr, x, rows, n, offs_d, stride_t, D: tl.constexpr):
    """ptr[rows, :D] = x for rows < n (x cast to ptr's element type)."""
    mask = (rows[:, None] < n) & (offs_d[None, :] < D)
    tl.store(ptr + rows[:, None] * stride_t + offs_d[None, :], x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fwd_step(
    acc,
    m_i,
    l_i,
    q,
    K,
    V,
    cols,
    n,
    offs_d,
    stride_t,
    qk_scale,
    D: tl.constexpr,
    EVEN_D: tl.constexpr,
    MASK_N: tl.constexpr,
):
    """One key tile of the online softmax: base-2 running max m_i, running sum l_i, unnormalised acc."""
    k = _load(K, cols, n, offs_d, stride_t, D, EVEN_D, MASK_N)
    v = _load(V, cols, n, offs_d, stride_t, D, EVEN_D, MASK_N)
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
    if MASK_N:
        s = tl.where((cols < n)[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision="ieee")
    return acc, m_new, l_i


@triton.jit
def _fwd_kernel(
    Q,
    K,
    V,
    OUT,
    LSE,
    CU,
    num_blocks,
    T,
    H,
    stride_t,
    qk_scale,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    blk, h, start, n = _locate(CU, num_blocks, BLOCK_M, H, T)
    if blk * BLOCK_M >= n:
        return
    EVEN_D: tl.constexpr = D == BLOCK_D
    base = start * stride_t + h * D
    rows = blk * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load(Q + base, rows, n, offs_d, stride_t, D, EVEN_D, True)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    full = n - n % BLOCK_N
    for start_n in range(0, full, BLOCK_N):
        acc, m_i, l_i = _fwd_step(
            acc,
            m_i,
            l_i,
            q,
            K + base,
            V + base,
            start_n + offs_n,
            n,
            offs_d,
            stride_t,
            qk_scale,
            D,
            EVEN_D,
            False,
        )
    if full < n:
        acc, m_i, l_i = _fwd_step(
            acc,
            m_i,
            l_i,
            q,
            K + base,
            V + base,
            full + offs_n,
            n,
            offs_d,
            stride_t,
            qk_scale,
            D,
            EVEN_D,
            True,
        )
    _store(OUT + base, acc / l_i[:, None], rows, n, offs_d, stride_t, D)
    lse = (m_i + tl.math.log2(l_i)) / LOG2E
    tl.store(LSE + h * T + start + rows, lse, mask=rows < n)


@triton.jit
def _delta_kernel(OUT, DO, DELTA, T, stride_t, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr):
    """delta[h, t] = sum_d dO[t, h, d] * out[t, h, d] in fp32. rows are global token indices: int64, since
    rows * stride_t reaches T * heads * D, which exceeds 2^31 for large batches."""
    h = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    o = _load(OUT + h * D, rows, T, offs_d, stride_t, D, D == BLOCK_D, True).to(tl.float32)
    do = _load(DO + h * D, rows, T, offs_d, stride_t, D, D == BLOCK_D, True).to(tl.float32)
    tl.store(DELTA + h * T + rows, tl.sum(o * do, 1), mask=rows < T)


@triton.jit
def _dkdv_step(
    dk,
    dv,
    k,
    v,
    Q,
    DO,
    LSE,
    DELTA,
    rows,
    n,
    offs_d,
    stride_t,
    qk_scale,
    D: tl.constexpr,
    EVEN_D: tl.constexpr,
    MASK_M: tl.constexpr,
):
    """One query tile: dV += P^T dO, dK += dS^T Q with P^T = exp2(s K Q^T - lse), dS = P (dO V^T - delta)."""
    q = _load(Q, rows, n, offs_d, stride_t, D, EVEN_D, MASK_M)
    do = _load(DO, rows, n, offs_d, stride_t, D, EVEN_D, MASK_M)
    if MASK_M:
        # Rows past the end load q = dO = 0, so their P^T columns add nothing to dV or dK.
        lse = tl.load(LSE + rows, mask=rows < n, other=0.0)
        delta = tl.load(DELTA + rows, mask=rows < n, other=0.0)
    else:
        lse = tl.load(LSE + rows)
        delta = tl.load(DELTA + rows)
    p_t = tl.math.exp2(tl.dot(k, tl.trans(q), input_precision="ieee") * qk_scale - (lse * LOG2E)[None, :])
    dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision="ieee")
    dp_t = tl.dot(v, tl.trans(do), input_precision="ieee")
    ds_t = p_t * (dp_t - delta[None, :])
    dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision="ieee")
    return dk, dv


@triton.jit
def _dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    CU,
    num_blocks,
    T,
    H,
    stride_t,
    scale,
    qk_scale,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    blk, h, start, n = _locate(CU, num_blocks, BLOCK_N, H, T)
    if blk * BLOCK_N >= n:
        return
    EVEN_D: tl.constexpr = D == BLOCK_D
    base = start * stride_t + h * D
    row_base = h * T + start
    cols = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    k = _load(K + base, cols, n, offs_d, stride_t, D, EVEN_D, True)
    v = _load(V + base, cols, n, offs_d, stride_t, D, EVEN_D, True)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    full = n - n % BLOCK_M
    for start_m in range(0, full, BLOCK_M):
        dk, dv = _dkdv_step(
            dk,
            dv,
            k,
            v,
            Q + base,
            DO + base,
            LSE + row_base,
            DELTA + row_base,
            start_m + offs_m,
            n,
            offs_d,
            stride_t,
            qk_scale,
            D,
            EVEN_D,
            False,
        )
    if full < n:
        dk, dv = _dkdv_step(
            dk,
            dv,
            k,
            v,
            Q + base,
            DO + base,
            LSE + row_base,
            DELTA + row_base,
            full + offs_m,
            n,
            offs_d,
            stride_t,
            qk_scale,
            D,
            EVEN_D,
            True,
        )
    _store(DK + base, dk * scale, cols, n, offs_d, stride_t, D)
    _store(DV + base, dv, cols, n, offs_d, stride_t, D)


@triton.jit
def _dq_step(
    dq,
    q,
    do,
    lse2,
    delta,
    K,
    V,
    cols,
    n,
    offs_d,
    stride_t,
    qk_scale,
    D: tl.constexpr,
    EVEN_D: tl.constexpr,
    MASK_N: tl.constexpr,
):
    """One key tile: dQ += dS K with P = exp2(s Q K^T - lse), dS = P (dO V^T - delta)."""
    k = _load(K, cols, n, offs_d, stride_t, D, EVEN_D, MASK_N)
    v = _load(V, cols, n, offs_d, stride_t, D, EVEN_D, MASK_N)
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
    if MASK_N:
        # Keys past the end are 0 (so is their dS K term) but exp2(0 - lse) may overflow: give them P = 0.
        s = tl.where((cols < n)[None, :], s, float("-inf"))
    p = tl.math.exp2(s - lse2[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision="ieee")
    ds = p * (dp - delta[:, None])
    return tl.dot(ds.to(k.dtype), k, dq, input_precision="ieee")


@triton.jit
def _dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    CU,
    num_blocks,
    T,
    H,
    stride_t,
    scale,
    qk_scale,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    blk, h, start, n = _locate(CU, num_blocks, BLOCK_M, H, T)
    if blk * BLOCK_M >= n:
        return
    EVEN_D: tl.constexpr = D == BLOCK_D
    base = start * stride_t + h * D
    row_base = h * T + start
    rows = blk * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load(Q + base, rows, n, offs_d, stride_t, D, EVEN_D, True)
    do = _load(DO + base, rows, n, offs_d, stride_t, D, EVEN_D, True)
    lse2 = tl.load(LSE + row_base + rows, mask=rows < n, other=0.0) * LOG2E
    delta = tl.load(DELTA + row_base + rows, mask=rows < n, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    full = n - n % BLOCK_N
    for start_n in range(0, full, BLOCK_N):
        dq = _dq_step(
            dq,
            q,
            do,
            lse2,
            delta,
            K + base,
            V + base,
            start_n + offs_n,
            n,
            offs_d,
            stride_t,
            qk_scale,
            D,
            EVEN_D,
            False,
        )
    if full < n:
        dq = _dq_step(
            dq,
            q,
            do,
            lse2,
            delta,
            K + base,
            V + base,
            full + offs_n,
            n,
            offs_d,
            stride_t,
            qk_scale,
            D,
            EVEN_D,
            True,
        )
    _store(DQ + base, dq * scale, rows, n, offs_d, stride_t, D)


def _block_d(head_dim: int) -> int:
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"the triton attention kernels take head_dim <= {MAX_HEAD_DIM}; got {head_dim}")
    return max(16, triton.next_power_of_2(head_dim))


def _check_seq_offsets(max_seqlen: int, q) -> None:
    """Offsets inside one sequence (row * stride_t, row < max_seqlen) are int32 in the kernels; the sequence
    start and the head are int64, so only a single sequence of >= 2^31 elements per tensor is refused."""
    if (max_seqlen + 128) * q.stride(0) >= 2**31:
        raise ValueError(
            f"max_seqlen ({max_seqlen}) x heads x head_dim ({q.stride(0)}) must stay below 2^31 for the triton "
            "attention kernels"
        )


def _launch(
    kernel, tiles: Tiles, block: int, max_seqlen: int, cu_seqlens, tensors: tuple, scalars: tuple, **meta
) -> None:
    """Flattened grid: program = (sequence * heads + head) * num_blocks + block of `block` rows, where
    num_blocks = ceil(max_seqlen / block); kernel args are (*tensors, cu_seqlens, num_blocks, *scalars)."""
    heads = tensors[0].shape[1]
    num_blocks = triton.cdiv(max_seqlen, block)
    grid = (num_blocks * (cu_seqlens.numel() - 1) * heads,)
    if grid[0] >= 2**31:
        raise ValueError(f"attention grid of {grid[0]} programs exceeds CUDA's 2^31 - 1 (lower max_seqlen or split)")
    kernel[grid](
        *tensors,
        cu_seqlens,
        num_blocks,
        *scalars,
        **meta,
        BLOCK_M=tiles.block_m,
        BLOCK_N=tiles.block_n,
        num_warps=tiles.num_warps,
        num_stages=tiles.num_stages,
    )


def forward(q, k, v, cu_seqlens, max_seqlen, scale):
    """q, k, v [T, heads, D] (fp16 / bf16 / fp32, contiguous), cu_seqlens int32 [B+1] on q's device,
    max_seqlen >= every sequence length. Returns out [T, heads, D] (input dtype) with
    out_t = sum_{j in seq(t)} softmax_j(scale q_t . k_j) v_j and lse fp32 [heads, T] (natural log)."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # the kernels share q.stride(0): no-op if packed
    T, H, D = q.shape
    out = torch.empty_like(q)
    lse = torch.empty((H, T), dtype=torch.float32, device=q.device)
    if T == 0 or max_seqlen == 0:
        return out, lse
    block_d = _block_d(D)
    _check_seq_offsets(max_seqlen, q)
    tiles = _tiles("fwd", block_d, q.dtype, q.device)
    with _triton_compat.device_context(q):
        _launch(
            _fwd_kernel,
            tiles,
            tiles.block_m,
            max_seqlen,
            cu_seqlens,
            (q, k, v, out, lse),
            (T, H, q.stride(0), scale * LOG2E.value),
            D=D,
            BLOCK_D=block_d,
        )
    return out, lse


def backward(dout, q, k, v, out, lse, cu_seqlens, max_seqlen, scale):
    """Gradients of forward: with P = softmax(scale Q K^T) per sequence and head (rebuilt from lse),
    delta = rowsum(dO * O), dS = P * (dO V^T - delta): dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO.
    All [T, heads, D] in the input dtype; fp32 accumulation."""
    q, k, v, out, dout = (x.contiguous() for x in (q, k, v, out, dout))
    T, H, D = q.shape
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if T == 0 or max_seqlen == 0:
        return dq, dk, dv
    block_d = _block_d(D)
    _check_seq_offsets(max_seqlen, q)
    delta = torch.empty_like(lse)
    with _triton_compat.device_context(q):
        block_t = 64
        _delta_kernel[(triton.cdiv(T, block_t), H)](
            out, dout, delta, T, q.stride(0), D=D, BLOCK_D=block_d, BLOCK_T=block_t
        )
        inputs = (q, k, v, dout, lse, delta)
        scalars = (T, H, q.stride(0), scale, scale * LOG2E.value)
        tiles = _tiles("dkdv", block_d, q.dtype, q.device)
        _launch(
            _dkdv_kernel,
            tiles,
            tiles.block_n,
            max_seqlen,
            cu_seqlens,
            (*inputs, dk, dv),
            scalars,
            D=D,
            BLOCK_D=block_d,
        )
        tiles = _tiles("dq", block_d, q.dtype, q.device)
        _launch(_dq_kernel, tiles, tiles.block_m, max_seqlen, cu_seqlens, (*inputs, dq), scalars, D=D, BLOCK_D=block_d)
    return dq, dk, dv


op, eager_op = define_backend("triton", forward, backward)
