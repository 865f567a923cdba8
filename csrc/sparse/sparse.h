// Sparse (lexical) head kernels: raw-pointer entry points shared by the bindings.
#pragma once
#include <cstdint>

#include "common/dtype.h"

namespace m3k {

// Fused relu(h . w + b) + max-pool by token id, per text, into a compact per-text layout.
// hidden [T, H] (dtype), ids [T] int64, text b = rows off[b] .. off[b] + len[b]; weight [H] fp32.
// Text b's pooled entries go to slots off[b] .. off[b] + counts[b] of out_ids / out_vals / out_src (each [T]),
// ids ascending; out_src is the token row that gave the max (the first such row on ties). Ids listed in
// skip_ids[nskip] and weights <= 0 are dropped; a NaN weight is kept (as NaN) so that NaN input is detectable.
struct LexicalPoolProblem {
  const void* hidden;
  DType dtype;
  int64_t hidden_size;
  const int64_t* ids;
  const int32_t* off;
  const int32_t* len;
  int64_t batch;
  const float* weight;
  float bias;
  const int64_t* skip_ids;
  int64_t nskip;
};

void lexical_pool_cpu(const LexicalPoolProblem& p, int64_t* out_ids, float* out_vals, int64_t* out_src,
                      int64_t* counts, int num_threads);

// Sparse rows in CSR form: row r = entries indptr[r] .. indptr[r+1] of ids / vals (ids ascending, unique).
struct SparseRows {
  const int64_t* indptr;
  const int64_t* ids;
  const float* vals;
  int64_t rows;
};

// scores = sum over shared ids of wq * wd: all pairs [q.rows, d.rows] or pairwise [rows].
void lexical_scores_cpu(const SparseRows& q, const SparseRows& d, bool pairwise, float* scores, int num_threads);

}  // namespace m3k
