// MaxSim on the CPU: register-tiled GEMM micro-kernel (MR query rows x BW doc tokens) over doc panels that
// are converted to fp32 and transposed once per doc block, with the running max (and argmax) per query
// token kept across panels. The [Lq, Ld] similarity block never leaves registers.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "maxsim/maxsim.h"

namespace m3k {
namespace {

#if defined(__AVX512F__)
constexpr int VW = 16;
#else
constexpr int VW = 8;
#endif
typedef float vf __attribute__((vector_size(VW * sizeof(float))));
constexpr int NV = 2;        // vectors per panel row
constexpr int BW = VW * NV;  // doc tokens per panel
constexpr int MR = 6;        // query rows per micro-kernel call
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<float, FreeDeleter>;

AlignedBuf aligned_floats(int64_t n) {
  const size_t bytes = ((static_cast<size_t>(n) * sizeof(float) + 63) / 64) * 64;
  return AlignedBuf(static_cast<float*>(std::aligned_alloc(64, bytes)));
}

// panel[k * BW + c] = d[u0 + c][k] for c < n, 0 beyond; bias[c] = 0 for real tokens, -inf for the tail so
// that zero-padded columns can never win a max.
template <typename T>
void pack_panel(const T* d, int64_t H, int64_t u0, int n, float* panel, float* bias) {
  for (int c = 0; c < n; ++c) {
    const T* row = d + (u0 + c) * H;
    for (int64_t k = 0; k < H; ++k) panel[k * BW + c] = to_float(row[k]);
  }
  for (int c = n; c < BW; ++c)
    for (int64_t k = 0; k < H; ++k) panel[k * BW + c] = 0.f;
  for (int c = 0; c < BW; ++c) bias[c] = c < n ? 0.f : kNegInf;
}

// acc[r] = q[r, :] . panel for R query rows (row stride H).
template <int R>
inline void micro_kernel(const float* __restrict q, int64_t H, const float* __restrict panel, vf acc[][NV]) {
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = vf{};
  const float* pk = static_cast<const float*>(__builtin_assume_aligned(panel, 64));
  for (int64_t k = 0; k < H; ++k, pk += BW) {
    vf b[NV];
    for (int v = 0; v < NV; ++v) b[v] = *reinterpret_cast<const vf*>(pk + v * VW);
    for (int r = 0; r < R; ++r) {
      const float a = q[r * H + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
}

// Folds one panel's similarities of a query row into its running max / argmax (first max wins).
inline void update_row(const vf acc[NV], const vf bias[NV], int32_t u0, float& best, int32_t& arg) {
  alignas(64) float vals[BW];
  for (int v = 0; v < NV; ++v) *reinterpret_cast<vf*>(vals + v * VW) = acc[v] + bias[v];
  float m = vals[0];
  for (int c = 1; c < BW; ++c) m = std::max(m, vals[c]);
  if (m > best) {
    int c = 0;
    while (vals[c] != m) ++c;
    best = m;
    arg = u0 + c;
  }
}

template <int R>
void rows_against_panel(const float* q, int64_t H, const float* panel, const vf* bias, int32_t u0, float* best,
                        int32_t* arg) {
  vf acc[R][NV];
  micro_kernel<R>(q, H, panel, acc);
  for (int r = 0; r < R; ++r) update_row(acc[r], bias, u0, best[r], arg[r]);
}

void query_against_panel(const float* q, int64_t len, int64_t H, const float* panel, const vf* bias, int32_t u0,
                         float* best, int32_t* arg) {
  int64_t t = 0;
  for (; t + MR <= len; t += MR) rows_against_panel<MR>(q + t * H, H, panel, bias, u0, best + t, arg + t);
  switch (len - t) {
    case 5: rows_against_panel<5>(q + t * H, H, panel, bias, u0, best + t, arg + t); break;
    case 4: rows_against_panel<4>(q + t * H, H, panel, bias, u0, best + t, arg + t); break;
    case 3: rows_against_panel<3>(q + t * H, H, panel, bias, u0, best + t, arg + t); break;
    case 2: rows_against_panel<2>(q + t * H, H, panel, bias, u0, best + t, arg + t); break;
    case 1: rows_against_panel<1>(q + t * H, H, panel, bias, u0, best + t, arg + t); break;
    default: break;
  }
}

template <typename T>
void forward_impl(const MaxSimProblem& p, float* scores, int32_t* argmax, int num_threads) {
  const int64_t H = p.hidden;
  const T* d = static_cast<const T*>(p.d);
  const int64_t ndocs = p.nd;
  // Work item = one doc against a range of queries. Split the queries when there are too few docs to keep
  // every thread busy; each item packs its doc's panels once and reuses them for all its queries.
  const int64_t qsplit =
      p.pairwise ? 1 : std::max<int64_t>(1, std::min<int64_t>(p.nq, (4 * num_threads + ndocs - 1) / ndocs));
  const int64_t items = ndocs * qsplit;

#pragma omp parallel num_threads(num_threads)
  {
    AlignedBuf panel = aligned_floats(BW * H);
    alignas(64) vf bias[NV];
    std::vector<float> best;
    std::vector<int32_t> arg;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t j = item / qsplit;
      const int64_t chunk = item % qsplit;
      const int64_t qa = p.pairwise ? j : chunk * p.nq / qsplit;
      const int64_t qb = p.pairwise ? j + 1 : (chunk + 1) * p.nq / qsplit;
      int64_t rows = 0;
      for (int64_t i = qa; i < qb; ++i) rows += p.q_len[i];
      best.assign(rows, kNegInf);
      arg.assign(rows, -1);
      const int64_t doc0 = p.d_off[j];
      const int64_t ld = p.d_len[j];
      for (int64_t u0 = 0; u0 < ld; u0 += BW) {
        const int n = static_cast<int>(std::min<int64_t>(BW, ld - u0));
        pack_panel(d, H, doc0 + u0, n, panel.get(), reinterpret_cast<float*>(bias));
        int64_t slot = 0;
        for (int64_t i = qa; i < qb; ++i) {
          query_against_panel(p.q + static_cast<int64_t>(p.q_off[i]) * H, p.q_len[i], H, panel.get(), bias,
                              static_cast<int32_t>(doc0 + u0), best.data() + slot, arg.data() + slot);
          slot += p.q_len[i];
        }
      }
      int64_t slot = 0;
      for (int64_t i = qa; i < qb; ++i) {
        double s = 0.0;
        for (int64_t t = 0; t < p.q_len[i]; ++t, ++slot) {
          if (ld > 0) s += best[slot];
          if (argmax) {
            const int64_t row = p.q_off[i] + t;
            argmax[p.pairwise ? row : row * ndocs + j] = arg[slot];
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
        const float* src = p.q + row * H;
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
