// MaxSim (late interaction) CUDA kernels: raw-pointer launchers, no torch headers (includable by g++).
//
// The MaxSimProblem of csrc/maxsim/maxsim.h, with q and d of one element type (q_dtype == d_dtype: fp32 / fp16
// / bf16), both [T, H] row-major:
//   all-pairs : scores [nq, nd] fp32, argmax [Tq, nd] int32 (row = global query token, value = global doc token)
//   pairwise  : scores [n] (q i with d i), argmax [Tq]
//   score(i, j) = sum over query tokens t of max over doc tokens u of <q_t, d_u>, accumulated in fp32;
//   a doc without tokens adds 0 and gives argmax -1; ties keep the first doc token; argmax may be null.
// All pointers are device pointers; every launch is asynchronous on `stream`. A launcher returns "" on
// success, else a message (an argument error, or the CUDA error of the launch).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "maxsim/maxsim.h"

namespace m3k {


// Forward: tensor-core MMA (mma.sync m16n8k16) for fp16 / bf16, FMA for fp32; doc tiles stream through
// shared memory with cp.async. Needs 16-byte aligned q and d and rows of a multiple of 16 bytes
// (H % 8 == 0 for fp16 / bf16, H % 4 == 0 for fp32); the Python layer pads H with zeros otherwise.
// tile picks the block shape, an index into kFwdTileShapes; every tile gives the same row maxima and arg-maxes,
// bit for bit (each dot product takes the same k steps).
struct FwdTileShape {
  int warps;      // warps per block, in a grid of warps_m (query rows) x warps / warps_m (doc columns)
  int vecs;       // 16-byte vectors of hidden per row and pipeline stage
  int stages;     // cp.async pipeline depth
  bool ldmatrix;  // fp16 / bf16 fragments by ldmatrix.x4 (3 per 4 MMAs) instead of 32-bit loads (12 per 4 MMAs)
  int qrows;      // query rows per tile: 32, or a multiple of 32 for the row-block forward only
  int prefetch;   // cp.async's L2 prefetch size in bytes: 0 (no hint) or 256 (the aligned 256 B around each copy)
  int warps_m;    // warps along the query rows: each warp owns qrows / warps_m rows of every tile
  int warp_cols;  // doc columns per warp (a multiple of 16): a doc tile has warp_cols * warps / warps_m columns
};
// Every warp reads its query rows and its doc columns of each stage from shared memory; wider warp tiles (more
// columns, or fewer warps sharing the rows) read each staged byte fewer times: per stage, the warps read
// qrows * (warps / warps_m) + doc_cols * warps_m rows, against qrows + doc_cols rows staged.
constexpr FwdTileShape kFwdTileShapes[] = {
    {8, 8, 3, false, 32, 0, 1, 16},    // 0: the default, measured on the H200
    {4, 16, 3, false, 32, 0, 1, 16},   // 1
    {8, 16, 3, false, 32, 0, 1, 16},   // 2: 127.5 KiB of shared memory (not on sm_86 / sm_89)
    {4, 8, 3, false, 32, 0, 1, 16},    // 3
    {4, 8, 4, false, 32, 0, 1, 16},    // 4: deeper pipeline, four blocks per SM
    {4, 16, 2, false, 32, 0, 1, 16},   // 5: Triton's rerank footprint (2 x 24 KiB buffers, four blocks per SM)
    {8, 8, 4, false, 32, 0, 1, 16},    // 6
    {8, 8, 3, true, 32, 0, 1, 16},     // 7: tile 0 with ldmatrix
    {4, 8, 4, true, 32, 0, 1, 16},     // 8: tile 4 with ldmatrix
    {8, 8, 3, true, 128, 0, 1, 16},    // 9: row blocks, Triton's row-block tile (128 x 128 x 64 fp16, 3 stages)
    {8, 8, 2, true, 128, 0, 1, 16},    // 10: tile 9 with 2 stages (72 KiB: fits sm_86 / sm_89)
    {4, 8, 3, true, 128, 0, 1, 16},    // 11: row blocks, 64 doc columns
    {4, 32, 2, true, 32, 0, 1, 16},    // 12: 512 B of each doc row per stage (longer DRAM runs; 100 KiB: not sm_86/89)
    {8, 8, 3, false, 32, 256, 1, 16},  // 13: tile 0 with an L2 prefetch of 256 B (DRAM reads in 256 B runs)
    {8, 8, 3, true, 32, 256, 1, 16},   // 14: tile 7 (ldmatrix) with the 256 B prefetch
    {4, 8, 3, true, 32, 0, 1, 32},     // 15: tile 7's 128-column doc tile on 4 warps of 32 columns (2/3 of its reads)
    {4, 16, 2, true, 32, 0, 1, 32},    // 16: tile 15 with 256 B per doc row and stage, 2 stages
    {4, 8, 4, true, 32, 256, 1, 32},   // 17: tile 15 with 4 stages and the 256 B prefetch
    {8, 8, 3, true, 128, 0, 2, 32},    // 18: tile 9 as 2 x 4 warps of 64 rows x 32 columns (2/3 of its reads)
    {8, 8, 3, true, 128, 0, 4, 64},    // 19: tile 9 as 4 x 2 warps of 32 rows x 64 columns
    {2, 8, 3, true, 32, 0, 1, 32},     // 20: a 64-column doc tile on 2 warps of 32 columns (1.33x; five blocks per SM)
    {2, 8, 4, true, 32, 0, 1, 32},     // 21: tile 20 with 4 stages (four blocks per SM)
};
constexpr int kFwdTiles = static_cast<int>(sizeof(kFwdTileShapes) / sizeof(kFwdTileShapes[0]));
// Doc columns per tile.
constexpr int fwd_tile_doc_cols(const FwdTileShape& s) { return s.warps / s.warps_m * s.warp_cols; }
// Dynamic shared memory of a tile (the same for every element type: rows of 16 * vecs bytes plus 16 of padding).
constexpr int64_t fwd_tile_smem_bytes(const FwdTileShape& s) {
  return int64_t(s.stages) * (s.qrows + fwd_tile_doc_cols(s)) * (16 * s.vecs + 16);
}
// Static shared memory of a tile: the cross-warp reduction's maxima and arg-maxes (column warps x query rows).
constexpr int64_t fwd_tile_static_smem_bytes(const FwdTileShape& s) {
  return int64_t(s.warps / s.warps_m) * s.qrows * (sizeof(float) + sizeof(int32_t));
}
// One block per (query, doc) pair, or per query when pairwise (tiles with 32 query rows).
std::string maxsim_forward_cuda(const MaxSimProblem& p, float* scores, int32_t* argmax, cudaStream_t stream,
                                int tile = 0);

// All pairs of several queries by row blocks: one block per (qrows consecutive query rows, doc), the rows spanning
// queries, so a doc is read total_q / qrows times instead of nq times; each row's max goes to a [total_q, nd] fp32
// buffer in the workspace, summed per query in row order by a second kernel (deterministic; the sum order differs
// from maxsim_forward_cuda's, so scores may differ in their last bits). total_q = p.q_rows; argmax [total_q, nd]
// as for all pairs, its rows outside every query left as they are (the caller fills -1). Any tile.
size_t maxsim_forward_rows_cuda_workspace_bytes(int64_t total_q, int64_t nd);
std::string maxsim_forward_rows_cuda(const MaxSimProblem& p, float* scores, int32_t* argmax, void* workspace,
                                     cudaStream_t stream, int tile);

// All pairs by token tiles: one block per (qrows query rows, kBN consecutive doc rows), whatever queries and docs
// they belong to, so no tile is padded past the end of a doc (the per-pair blocks pad each doc to whole tiles).
// Each (query row, doc) max with its first arg-max merges into a [total_q, nd] buffer of 64-bit keys in the
// workspace (atomicMax), which a second kernel sums per query as maxsim_forward_cuda sums them: the same scores and
// argmax, bit for bit, except that a max of -0 counts as +0. Needs the doc rows' doc ids (a segment-id kernel
// writes them to the workspace). argmax [total_q, nd] as for all pairs; rows outside every query left as they are.
// Any tile.
size_t maxsim_forward_tokens_cuda_workspace_bytes(int64_t total_q, int64_t nd, int64_t total_d);
std::string maxsim_forward_tokens_cuda(const MaxSimProblem& p, float* scores, int32_t* argmax, void* workspace,
                                       cudaStream_t stream, int tile);

// Backward from the saved argmax: grad [nq, nd] or [n] fp32; dq [Tq, H] and dd [Td, H] fp32, zero-filled by
// the caller. dq_t = sum_j g(i, j) d_argmax(t, j) (a gather: deterministic);
// dd_argmax(t, j) += g(i, j) q_t: float atomics, or with deterministic = true one owner per doc column
// (fixed summation order, bitwise reproducible). Any H and alignment.
std::string maxsim_backward_cuda(const MaxSimProblem& p, const float* grad, const int32_t* argmax, float* dq,
                                 float* dd, bool deterministic, cudaStream_t stream);

}  // namespace m3k
