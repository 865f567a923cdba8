// MaxSim (late interaction) kernels: raw-pointer entry points shared by the bindings.
//
// Layout: query tokens q [Tq, H] (q_dtype), doc tokens d [Td, H] (d_dtype), both row-major contiguous; the CPU
// kernels take fp32 queries, the CUDA kernels (maxsim_cuda.h) one dtype for both.
// Query i occupies rows q_off[i] .. q_off[i] + q_len[i]; doc j rows d_off[j] .. d_off[j] + d_len[j]
// (int32 offsets and lengths; padded batches use off = i * L, packed batches the cu_seqlens). q_rows = Tq and
// d_rows = Td: the CUDA kernels clamp every item into them, so that a launch on offsets not yet validated stays in
// bounds (the caller checks them after the launch and discards the output when they are bad); the CPU kernels
// trust them: the Python layer clamps their offsets into the rows and makes items disjoint first
// (m3kernels/_checks.py launch_segments). Valid items never share rows: the backward kernels give each row one
// owner.
//   all-pairs : scores [nq, nd], argmax [Tq, nd]   (row = global query token, value = global doc token)
//   pairwise  : scores [n]  (q i with d i), argmax [Tq]
// score(i, j) = sum over query tokens t of max over doc tokens u of <q_t, d_u>; a doc without tokens adds 0
// and gives argmax -1. Ties keep the first doc token. argmax may be null (inference). A NaN similarity makes
// the pair's score NaN.
#pragma once
#include <cstdint>

#include "common/dtype.h"

namespace m3k {

struct MaxSimProblem {
  const void* q;
  DType q_dtype;
  const void* d;
  DType d_dtype;
  int64_t hidden;
  const int32_t* q_off;
  const int32_t* q_len;
  int64_t nq;
  int64_t q_rows;
  const int32_t* d_off;
  const int32_t* d_len;
  int64_t nd;
  int64_t d_rows;
  bool pairwise;
};

void maxsim_forward_cpu(const MaxSimProblem& p, float* scores, int32_t* argmax, int num_threads);

// Gradients from the saved argmax: grad [nq, nd] or [n]; dq [Tq, H] and dd [Td, H] fp32, zero-filled by the
// caller. dq_t = sum_j g(i, j) d_argmax(t, j); dd_argmax(t, j) += g(i, j) q_t.
void maxsim_backward_cpu(const MaxSimProblem& p, const float* grad, const int32_t* argmax, float* dq, float* dd,
                         int num_threads);

}  // namespace m3k
