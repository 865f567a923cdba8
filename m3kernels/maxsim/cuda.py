"""MaxSim on the hand-written CUDA kernels (csrc/maxsim/maxsim_cuda.cu), launched on the current stream."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from m3kernels import _native
from m3kernels.maxsim.ops import ROW_MAX_BUFFER, define_backend, kernel_args, new_outputs, use_row_blocks

# Block shapes of the forward kernel, indices into csrc/maxsim/maxsim_cuda.h's kFwdTileShapes. Per pair: 0 (8 warps
# x 128 B of hidden per stage x 3 stages, 32 query rows; the shape measured on the H200). Row blocks (several
# queries, all pairs): 19 (128 query rows x 128 doc rows x 128 B, 3 stages, 4 x 2 warps of 32 rows x 64 columns:
# the fastest in the H200 sweep of 2026-11-28, 1.22x tile 9), or on cards with less shared memory per block than it
# needs (110 KiB; sm_86 / sm_89 have 99 KiB) 10, tile 9's two-stage twin (80 KiB). m3kernels/benchmarks/tune.py
# times the others.
_FWD_TILE = 0
# All pairs of one query (or of several, where row blocks do not run) by token tiles of this tile shape instead of
# per pair: blocks of consecutive doc rows across doc boundaries, so no doc is padded to whole tiles (at the rerank
# shape, 17% of the rows a per-pair block walks with 128-row tiles are padding). None: per pair. Not yet timed on a GPU;
# the rerank sweep (m3kernels/benchmarks/tune.py) times every tile both ways.
_TOKENS_TILE: int | None = None
_ROWS_TILE = 19
_ROWS_TILE_SMALL_SMEM = 10
_ROW_MAX_BUFFER = ROW_MAX_BUFFER  # see ops.use_row_blocks (0: always the per-pair kernel unless training)
_EMULATED_SMEM = 227 * 1024  # csrc/emu/cuda_emu.h's limit (sm_90's)


@functools.cache
def _card_smem(index: int) -> int:
    return torch.cuda.get_device_properties(index).shared_memory_per_block_optin


def shared_memory_per_block(device: torch.device) -> int:
    """Bytes of shared memory one block may opt into on device (sm_90's 227 KiB under the host emulation)."""
    if _native.cuda_emulated():
        return _EMULATED_SMEM
    return _card_smem(device.index if device.index is not None else torch.cuda.current_device())


def tile_smem(tile: int) -> int:
    """Shared memory (dynamic + static) of forward tile `tile`."""
    shape = _native.C.maxsim_forward_cuda_tile_shapes[tile]
    return shape[3] + shape[4]


def _rows_tile(device: torch.device) -> int:
    """_ROWS_TILE, or _ROWS_TILE_SMALL_SMEM where the card cannot hold it (an index out of range goes on to the
    launcher, whose error names it)."""
    in_table = 0 <= _ROWS_TILE < len(_native.C.maxsim_forward_cuda_tile_shapes)
    if in_table and tile_smem(_ROWS_TILE) > shared_memory_per_block(device):
        return _ROWS_TILE_SMALL_SMEM
    return _ROWS_TILE


def _forward_rows(x: Tensor) -> Tensor:
    """[T, H] -> contiguous, 16-byte aligned, rows of a multiple of 16 bytes (H zero-padded: the dot products
    do not change) and at least one row (so that every pointer is valid), as the forward kernel needs."""
    x = x.contiguous()
    pad = (-x.shape[1]) % (16 // x.element_size())
    if pad or x.shape[0] == 0:
        x = torch.nn.functional.pad(x, (0, pad, 0, 1 if x.shape[0] == 0 else 0))
    return x if x.data_ptr() % 16 == 0 else x.clone()


def _int32(t: Tensor) -> Tensor:
    return t.to(torch.int32).contiguous()


def forward(q, q_off, q_len, d, d_off, d_len, pairwise, need_argmax):
    """q [Tq, H], d [Td, H] (same dtype: fp32 / fp16 / bf16) -> (scores fp32 [Nq, Nd] or [N], argmax int32
    [Tq, Nd] / [Tq] or [0]); score = sum_t max_u <q_t, d_u> with fp32 accumulation (see ops.py). Several queries
    against all docs go by row blocks (ops.use_row_blocks), other all-pairs calls by token tiles when _TOKENS_TILE is
    set, the rest per (query, doc) pair."""
    q_off, q_len, d_off, d_len = map(_int32, (q_off, q_len, d_off, d_len))
    qk, dk = _forward_rows(q), _forward_rows(d)
    nq, nd = q_off.shape[0], d_off.shape[0]
    scores, argmax = new_outputs(q, nq, nd, pairwise, need_argmax)
    argmax.fill_(-1)  # rows of tokens outside every item stay -1
    args = kernel_args(qk, q_off, q_len, dk, d_off, d_len, pairwise, q.shape[0], d.shape[0])
    arg_addr = _native.addr(argmax) if need_argmax else 0
    with _native.cuda_launch(q.device) as stream:
        if use_row_blocks(nq, q.shape[0], nd, pairwise, need_argmax, _ROW_MAX_BUFFER):
            workspace = torch.empty(_native.C.maxsim_forward_rows_cuda_workspace_bytes(q.shape[0], nd),
                                    dtype=torch.uint8, device=q.device)
            _native.C.maxsim_forward_rows_cuda(*args[:-1], _native.addr(scores), arg_addr,
                                               _native.addr(workspace), stream, _rows_tile(q.device))
        elif _TOKENS_TILE is not None and not pairwise and (need_argmax or q.shape[0] * nd <= _ROW_MAX_BUFFER):
            workspace = torch.empty(_native.C.maxsim_forward_tokens_cuda_workspace_bytes(q.shape[0], nd, d.shape[0]),
                                    dtype=torch.uint8, device=q.device)
            _native.C.maxsim_forward_tokens_cuda(*args[:-1], _native.addr(scores), arg_addr, _native.addr(workspace),
                                                 stream, _TOKENS_TILE)
        else:
            _native.C.maxsim_forward_cuda(*args, _native.addr(scores), arg_addr, stream, _FWD_TILE)
    return scores, argmax


def backward(grad, q, q_off, q_len, d, d_off, d_len, argmax, pairwise, deterministic):
    """(dq fp32 [Tq, H], dd fp32 [Td, H]) through the saved argmax; deterministic=True scatters dd without
    float atomics (one owner per doc column, fixed order)."""
    q_off, q_len, d_off, d_len = map(_int32, (q_off, q_len, d_off, d_len))
    q, d, grad, argmax = q.contiguous(), d.contiguous(), grad.float().contiguous(), argmax.contiguous()
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dd = torch.zeros(d.shape, dtype=torch.float32, device=d.device)
    if q.shape[0] == 0 or d.shape[0] == 0:  # no token pairs: no gradient
        return dq, dd
    with _native.cuda_launch(q.device) as stream:
        _native.C.maxsim_backward_cuda(
            *kernel_args(q, q_off, q_len, d, d_off, d_len, pairwise, q.shape[0], d.shape[0]),
            _native.addr(grad),
            _native.addr(argmax),
            _native.addr(dq),
            _native.addr(dd),
            deterministic,
            stream,
        )
    return dq, dd


op, eager_op = define_backend("cuda", forward, backward)
