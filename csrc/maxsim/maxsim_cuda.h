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

#include <cstdint>
#include <string>

#include "maxsim/maxsim.h"

namespace m3k {


// Forward: tensor-core MMA (mma.sync m16n8k16) for fp16 / bf16, FMA for fp32; doc tiles stream through
// shared memory with cp.async. Needs 16-byte aligned q and d and rows of a multiple of 16 bytes
// (H % 8 == 0 for fp16 / bf16, H % 4 == 0 for fp32); the Python layer pads H with zeros otherwise.
// tile picks the block shape, an index into kFwdTileShapes; every tile gives the same result, bit for bit.
struct FwdTileShape {
  int warps;      // doc columns per tile = 16 * warps (the query tile is 32 tokens)
  int vecs;       // 16-byte vectors of hidden per row and pipeline stage
  int stages;     // cp.async pipeline depth
  bool ldmatrix;  // fp16 / bf16 fragments by ldmatrix.x4 (3 per 4 MMAs) instead of 32-bit loads (12 per 4 MMAs)
};
constexpr FwdTileShape kFwdTileShapes[] = {
    {8, 8, 3, false},   // 0: the default, measured on the H200
    {4, 16, 3, false},  // 1
    {8, 16, 3, false},  // 2: 127.5 KiB of shared memory (not on sm_86 / sm_89)
    {4, 8, 3, false},   // 3
    {4, 8, 4, false},   // 4: deeper pipeline, four blocks per SM
    {4, 16, 2, false},  // 5: Triton's footprint at the rerank shape (2 x 24 KiB buffers, four blocks per SM)
    {8, 8, 4, false},   // 6
    {8, 8, 3, true},    // 7: tile 0 with ldmatrix
    {4, 8, 4, true},    // 8: tile 4 with ldmatrix
};
constexpr int kFwdTiles = static_cast<int>(sizeof(kFwdTileShapes) / sizeof(kFwdTileShapes[0]));
// Dynamic shared memory of a tile (the same for every element type: rows of 16 * vecs bytes plus 16 of padding).
constexpr int64_t fwd_tile_smem_bytes(const FwdTileShape& s) {
  return int64_t(s.stages) * (32 + 16 * s.warps) * (16 * s.vecs + 16);
}
// Static shared memory of a tile: the cross-warp reduction's maxima and arg-maxes (warps x 32 query rows).
constexpr int64_t fwd_tile_static_smem_bytes(const FwdTileShape& s) {
  return int64_t(s.warps) * 32 * (sizeof(float) + sizeof(int32_t));
}
std::string maxsim_forward_cuda(const MaxSimProblem& p, float* scores, int32_t* argmax, cudaStream_t stream,
                                int tile = 0);

// Backward from the saved argmax: grad [nq, nd] or [n] fp32; dq [Tq, H] and dd [Td, H] fp32, zero-filled by
// the caller. dq_t = sum_j g(i, j) d_argmax(t, j) (a gather: deterministic);
// dd_argmax(t, j) += g(i, j) q_t: float atomics, or with deterministic = true one owner per doc column
// (fixed summation order, bitwise reproducible). Any H and alignment.
std::string maxsim_backward_cuda(const MaxSimProblem& p, const float* grad, const int32_t* argmax, float* dq,
                                 float* dd, bool deterministic, cudaStream_t stream);

}  // namespace m3k
