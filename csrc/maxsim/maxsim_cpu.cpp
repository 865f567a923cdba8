// MaxSim on the CPU: a register-tiled GEMM micro-kernel computes MR doc tokens x BW query tokens at a time
// against query panels (fp32, transposed once per call), and folds the MR rows into a running max / argmax per
// query token with lane-wise compares (no horizontal reductions). The [Lq, Ld] similarity block never leaves
// registers; docs in fp16/bf16 are converted one chunk of rows at a time.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "common/simd.h"
#include "maxsim/maxsim.h"

namespace m3k {
namespace {

constexpr int NV = 2;         // vectors per query panel row
constexpr int BW = VW * NV;   // query tokens per panel
constexpr int MR = VW == 16 ? 12 : 6;  // doc tokens per micro-kernel call (2*MR accumulators fit the registers)
constexpr int64_t CHUNK = 96; // doc rows converted / kept hot at a time (multiple of MR)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kLineFloats = 16;       // floats per 64-byte cache line
constexpr int64_t kPrefetchMaxH = 256;    // rows up to 1 KiB get software prefetches
constexpr int64_t kPrefetchRows = 2 * MR;  // prefetch distance in doc rows

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<float, FreeDeleter>;

AlignedBuf aligned_floats(int64_t n) {
  const size_t bytes = ((static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float) + 63) / 64) * 64;
  return AlignedBuf(static_cast<float*>(std::aligned_alloc(64, bytes)));
}

// Running max / argmax of BW query tokens (one panel).
struct PanelState {
  vf best[NV];
  vi arg[NV];
};

// acc[r] = d[r, :] . panel  for R doc rows (row stride H); panel[k * BW + c] = q_c[k].
template <int R>
inline void micro_kernel(const float* __restrict d, int64_t H, const float* __restrict panel, vf acc[][NV]) {
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vf{};
  const float* pk = static_cast<const float*>(__builtin_assume_aligned(panel, 64));
  for (int64_t k = 0; k < H; ++k, pk += BW) {
    vf b[NV];
    for (int v = 0; v < NV; ++v) b[v] = *reinterpret_cast<const vf*>(pk + v * VW);
    for (int r = 0; r < R; ++r) {
      const float a = d[r * H + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
}

// Rows are visited in increasing doc order and only a strictly larger value replaces the max: first max wins.
// A NaN similarity (NaN in q or d) sticks, so the pair's score is NaN (the Python layer then raises).
template <int R>
inline void rows_into_state(const float* d, int64_t H, const float* panel, int32_t u0, PanelState& st) {
  // With short rows (H <= kPrefetchMaxH) the R rows interleave as R streams inside one 4 KiB page, which the
  // hardware prefetcher does not follow: fetch the rows kPrefetchRows ahead now (measured 1.06-1.36x on ragged
  // H=128 docs; staging the rows through a copy instead was slower). Rows of >= 4 KiB are one stream per page
  // and prefetch fine by themselves (software prefetches there cost 1.6x). Prefetches never fault.
  if (H <= kPrefetchMaxH) {
    const uintptr_t ahead = reinterpret_cast<uintptr_t>(d) + kPrefetchRows * H * sizeof(float);
    for (int64_t e = 0; e < R * H; e += kLineFloats)
      __builtin_prefetch(reinterpret_cast<const void*>(ahead + e * sizeof(float)), 0, 3);
  }
  vf acc[R][NV];
  micro_kernel<R>(d, H, panel, acc);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      // NaN propagates: a NaN similarity replaces the max and no number compares greater than it.
      const vi better = (acc[r][v] > st.best[v]) | (acc[r][v] != acc[r][v]);
      st.best[v] = better ? acc[r][v] : st.best[v];
      st.arg[v] = better ? (vi{} + (u0 + r)) : st.arg[v];
    }
}

// Rows r0 .. r0 + n of a chunk for n < MR: dispatches to the micro-kernel of exactly n rows.
template <int R>
void tail_into_state(int64_t n, const float* d, int64_t H, const float* panel, int32_t u0, PanelState& st) {
  if constexpr (R > 0) {
    if (n == R)
      rows_into_state<R>(d, H, panel, u0, st);
    else
      tail_into_state<R - 1>(n, d, H, panel, u0, st);
  }
}

void chunk_into_state(const float* d, int64_t rows, int64_t H, const float* panel, int32_t u0, PanelState& st) {
  int64_t r = 0;
  for (; r + MR <= rows; r += MR) rows_into_state<MR>(d + r * H, H, panel, u0 + r, st);
  tail_into_state<MR - 1>(rows - r, d + r * H, H, panel, static_cast<int32_t>(u0 + r), st);
}

// Query panels: query i's tokens in ceil(len / BW) panels of [H][BW] fp32, zero-padded; first_panel[i] indexes them.
struct QueryPanels {
  AlignedBuf data;
  std::vector<int64_t> first_panel;
};

QueryPanels pack_queries(const MaxSimProblem& p, int num_threads) {
  const int64_t H = p.hidden;
  QueryPanels out;
  out.first_panel.resize(p.nq + 1, 0);
  for (int64_t i = 0; i < p.nq; ++i) out.first_panel[i + 1] = out.first_panel[i] + (p.q_len[i] + BW - 1) / BW;
  out.data = aligned_floats(out.first_panel[p.nq] * H * BW);
  float* data = out.data.get();
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t i = 0; i < p.nq; ++i) {
    for (int64_t b = 0; b < out.first_panel[i + 1] - out.first_panel[i]; ++b) {
      float* panel = data + (out.first_panel[i] + b) * H * BW;
      std::fill(panel, panel + H * BW, 0.f);
      const int64_t n = std::min<int64_t>(BW, p.q_len[i] - b * BW);
      for (int64_t c = 0; c < n; ++c) {
        const float* row = static_cast<const float*>(p.q) + (p.q_off[i] + b * BW + c) * H;
        for (int64_t k = 0; k < H; ++k) panel[k * BW + c] = row[k];
      }
    }
  }
  return out;
}

template <typename T>
const float* doc_rows_fp32(const T* d, int64_t row0, int64_t rows, int64_t H, float* buf) {
  if constexpr (std::is_same_v<T, float>) {
    return d + row0 * H;
  } else {
    const T* src = d + row0 * H;
    const int64_t n = rows * H;
    int64_t e = 0;
    for (; e + VW <= n; e += VW) {
      const vf v = load_vf(src + e);
      std::memcpy(buf + e, &v, sizeof v);
    }
    for (; e < n; ++e) buf[e] = to_float(src[e]);
    return buf;
  }
}

template <typename T>
void forward_impl(const MaxSimProblem& p, float* scores, int32_t* argmax, int num_threads) {
  const int64_t H = p.hidden;
  const T* d = static_cast<const T*>(p.d);
  const int64_t ndocs = p.nd;
  const QueryPanels qp = pack_queries(p, num_threads);
  // Work item = one doc against a range of queries. Split the queries when there are too few docs to keep
  // every thread busy.
  const int64_t qsplit =
      p.pairwise ? 1 : std::max<int64_t>(1, std::min<int64_t>(p.nq, (4 * num_threads + ndocs - 1) / ndocs));
  const int64_t items = ndocs * qsplit;

#pragma omp parallel num_threads(num_threads)
  {
    AlignedBuf conv = aligned_floats(std::is_same_v<T, float> ? 1 : CHUNK * H);
    std::vector<PanelState> states;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t j = item / qsplit;
      const int64_t chunk = item % qsplit;
      const int64_t qa = p.pairwise ? j : chunk * p.nq / qsplit;
      const int64_t qb = p.pairwise ? j + 1 : (chunk + 1) * p.nq / qsplit;
      const int64_t pa = qp.first_panel[qa], pb = qp.first_panel[qb];
      states.resize(pb - pa);
      for (auto& st : states)
        for (int v = 0; v < NV; ++v) {
          st.best[v] = vf{} + kNegInf;
          st.arg[v] = vi{} - 1;
        }
      const int64_t doc0 = p.d_off[j];
      const int64_t ld = p.d_len[j];
      for (int64_t u0 = 0; u0 < ld; u0 += CHUNK) {
        const int64_t rows = std::min<int64_t>(CHUNK, ld - u0);
        const float* rows_fp32 = doc_rows_fp32(d, doc0 + u0, rows, H, conv.get());
        for (int64_t pi = pa; pi < pb; ++pi)
          chunk_into_state(rows_fp32, rows, H, qp.data.get() + pi * H * BW, static_cast<int32_t>(doc0 + u0),
                           states[pi - pa]);
      }
      for (int64_t i = qa; i < qb; ++i) {
        double s = 0.0;
        for (int64_t t = 0; t < p.q_len[i]; ++t) {
          const PanelState& st = states[qp.first_panel[i] - pa + t / BW];
          const int lane = static_cast<int>(t % BW);
          if (ld > 0) s += st.best[lane / VW][lane % VW];
          if (argmax) {
            const int64_t row = p.q_off[i] + t;
            argmax[p.pairwise ? row : row * ndocs + j] = ld > 0 ? st.arg[lane / VW][lane % VW] : -1;
          }
        }
        scores[p.pairwise ? j : i * ndocs + j] = static_cast<float>(s);
      }
    }
  }
}

template <typename T>
void backward_impl(const MaxSimProblem& p, const float* grad, const int32_t* argmax, float* dq, float* dd,
                   int num_threads) {
  const int64_t H = p.hidden;
  const T* d = static_cast<const T*>(p.d);
  const int64_t nd = p.nd;
  // dq: each query's rows belong to one thread.
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t i = 0; i < p.nq; ++i) {
    for (int64_t t = 0; t < p.q_len[i]; ++t) {
      const int64_t row = p.q_off[i] + t;
      float* out = dq + row * H;
      const int64_t j0 = p.pairwise ? i : 0;
      const int64_t j1 = p.pairwise ? i + 1 : nd;
      for (int64_t j = j0; j < j1; ++j) {
        const int32_t u = argmax[p.pairwise ? row : row * nd + j];
        if (u < 0) continue;
        const float g = grad[p.pairwise ? i : i * nd + j];
        const T* src = d + static_cast<int64_t>(u) * H;
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) out[k] += g * to_float(src[k]);
      }
    }
  }
  // dd: argmax of doc j always points into doc j's rows, so each doc's rows belong to one thread.
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t j = 0; j < nd; ++j) {
    const int64_t i0 = p.pairwise ? j : 0;
    const int64_t i1 = p.pairwise ? j + 1 : p.nq;
    for (int64_t i = i0; i < i1; ++i) {
      const float g = grad[p.pairwise ? j : i * nd + j];
      for (int64_t t = 0; t < p.q_len[i]; ++t) {
        const int64_t row = p.q_off[i] + t;
        const int32_t u = argmax[p.pairwise ? row : row * nd + j];
        if (u < 0) continue;
        float* out = dd + static_cast<int64_t>(u) * H;
        const float* src = static_cast<const float*>(p.q) + row * H;
#pragma omp simd
        for (int64_t k = 0; k < H; ++k) out[k] += g * src[k];
      }
    }
  }
}

}  // namespace

void maxsim_forward_cpu(const MaxSimProblem& p, float* scores, int32_t* argmax, int num_threads) {
  dispatch_dtype(p.d_dtype, [&](auto tag) { forward_impl<decltype(tag)>(p, scores, argmax, num_threads); });
}

void maxsim_backward_cpu(const MaxSimProblem& p, const float* grad, const int32_t* argmax, float* dq, float* dd,
                         int num_threads) {
  dispatch_dtype(p.d_dtype,
                 [&](auto tag) { backward_impl<decltype(tag)>(p, grad, argmax, dq, dd, num_threads); });
}

}  // namespace m3k
