// Sparse (lexical) head CUDA kernels: raw-pointer launchers, no torch headers (includable by g++).
// Same layouts and semantics as csrc/sparse/sparse.h; all pointers are device pointers and every launch is
// asynchronous on `stream`. A launcher returns "" on success, else a message (an argument error, or the
// CUDA error of the launch).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/dtype.h"
#include "sparse/sparse.h"

namespace m3k {

// As LexicalPoolProblem, plus the number of hidden rows and a device-side bias (no host sync).
struct LexicalPoolCudaProblem {
  const void* hidden;  // [rows, hidden_size], dtype
  DType dtype;
  int64_t hidden_size;
  int64_t rows;
  const int64_t* ids;  // [rows]
  const int32_t* off;  // [batch]
  const int32_t* len;  // [batch]
  int64_t batch;
  const float* weight;  // [hidden_size]
  const float* bias;    // [1]
  const int64_t* skip_ids;
  int64_t nskip;
};

// Bytes of device scratch that lexical_pool_cuda needs for `rows` hidden rows.
size_t lexical_pool_cuda_workspace_bytes(int64_t rows);

// relu(h . w + b) for every row (one warp per row, hidden read once), then one block per text: keep tokens with
// weight > 0 (or NaN, propagated for the caller to report) and an id outside skip_ids, sort them by id
// (cub::BlockRadixSort in registers up to 8192 kept tokens, a bitonic sort in the workspace beyond), keep the
// max per id (first row on ties) and write text b's entries to slots off[b] .. off[b] + counts[b] of out_ids /
// out_vals / out_src (out_src = the token row). Slots past counts[b] are not written. Texts must not overlap.
std::string lexical_pool_cuda(const LexicalPoolCudaProblem& p, int64_t* out_ids, float* out_vals, int64_t* out_src,
                              int64_t* counts, void* workspace, cudaStream_t stream);

// scores = sum over shared ids of wq * wd (fp32): all pairs [q.rows, d.rows] or pairwise [rows]. One warp per
// pair: each lane takes entries of the shorter row and binary-searches them in the longer one.
std::string lexical_scores_cuda(const SparseRows& q, const SparseRows& d, bool pairwise, float* scores,
                                cudaStream_t stream);

}  // namespace m3k
