// Sparse lexical head on the CPU: one pass over the hidden states for the token weights, a per-text sort
// for the max-pool by id, and an inverted index of the queries for the lexical scores.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "common/simd.h"
#include "sparse/sparse.h"

namespace m3k {
namespace {

constexpr int kRows = 4;  // tokens per dot-product block: independent accumulator chains, shared weight loads

// w[t] = relu(h[t] . weight + bias) for kRows tokens at once (rows beyond `rows` repeat the last one, unused).
template <typename T>
void dot_rows(const T* h, int64_t H, int64_t t0, int rows, const float* weight, float bias, float* w) {
  const T* row[kRows];
  for (int r = 0; r < kRows; ++r) row[r] = h + (t0 + std::min(r, rows - 1)) * H;
  vf acc[kRows][2] = {};
  int64_t k = 0;
  for (; k + 2 * VW <= H; k += 2 * VW) {
    const vf w0 = load_vf(weight + k), w1 = load_vf(weight + k + VW);
    for (int r = 0; r < kRows; ++r) {
      acc[r][0] += load_vf(row[r] + k) * w0;
      acc[r][1] += load_vf(row[r] + k + VW) * w1;
    }
  }
  for (int r = 0; r < rows; ++r) {
    float x = hsum(acc[r][0] + acc[r][1]) + bias;
    for (int64_t j = k; j < H; ++j) x += to_float(row[r][j]) * weight[j];
    // NaN is kept (not clamped to 0) so that NaN hidden states surface in the output.
    w[t0 + r] = x > 0.f || std::isnan(x) ? x : 0.f;
  }
}

template <typename T>
void token_weights(const LexicalPoolProblem& p, float* w, int num_threads) {
  const T* h = static_cast<const T*>(p.hidden);
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t end = int64_t(p.off[b]) + p.len[b];
    for (int64_t t0 = p.off[b]; t0 < end; t0 += kRows)
      dot_rows(h, p.hidden_size, t0, static_cast<int>(std::min<int64_t>(kRows, end - t0)), p.weight, p.bias, w);
  }
}

}  // namespace

void lexical_pool_cpu(const LexicalPoolProblem& p, int64_t* out_ids, float* out_vals, int64_t* out_src,
                      int64_t* counts, int num_threads) {
  int64_t total = 0;
  for (int64_t b = 0; b < p.batch; ++b) total = std::max<int64_t>(total, int64_t(p.off[b]) + p.len[b]);
  std::vector<float> w(total);
  dispatch_dtype(p.dtype, [&](auto tag) { token_weights<decltype(tag)>(p, w.data(), num_threads); });
  const std::vector<int64_t> skip(p.skip_ids, p.skip_ids + p.nskip);

#pragma omp parallel num_threads(num_threads)
  {
    std::vector<std::pair<int64_t, int64_t>> entries;  // (id, row), sorted: rows of one id in token order
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < p.batch; ++b) {
      entries.clear();
      for (int64_t t = p.off[b]; t < p.off[b] + p.len[b]; ++t) {
        // !(w > 0) keeps NaN weights, so NaN hidden states surface as NaN values (the Python layer raises).
        if (!(w[t] > 0.f) && !std::isnan(w[t])) continue;
        if (std::find(skip.begin(), skip.end(), p.ids[t]) != skip.end()) continue;
        entries.emplace_back(p.ids[t], t);
      }
      std::sort(entries.begin(), entries.end());
      int64_t n = 0;
      for (size_t e = 0; e < entries.size(); ++e) {
        const auto [id, row] = entries[e];
        if (e > 0 && entries[e - 1].first == id) {
          const int64_t slot = p.off[b] + n - 1;
          if (w[row] > out_vals[slot] || (std::isnan(w[row]) && !std::isnan(out_vals[slot]))) {
            out_vals[slot] = w[row];
            out_src[slot] = row;
          }
          continue;
        }
        const int64_t slot = p.off[b] + n++;
        out_ids[slot] = id;
        out_vals[slot] = w[row];
        out_src[slot] = row;
      }
      counts[b] = n;
    }
  }
}

void lexical_scores_cpu(const SparseRows& q, const SparseRows& d, bool pairwise, float* scores, int num_threads) {
  if (pairwise) {
#pragma omp parallel for schedule(dynamic, 64) num_threads(num_threads)
    for (int64_t r = 0; r < q.rows; ++r) {
      int64_t a = q.indptr[r], ae = q.indptr[r + 1], b = d.indptr[r], be = d.indptr[r + 1];
      double s = 0.0;
      while (a < ae && b < be) {
        if (q.ids[a] < d.ids[b]) {
          ++a;
        } else if (q.ids[a] > d.ids[b]) {
          ++b;
        } else {
          s += double(q.vals[a++]) * d.vals[b++];
        }
      }
      scores[r] = static_cast<float>(s);
    }
    return;
  }
  // Inverted index of the queries: postings of id v are post_q/post_w[head[key] .. head[key + 1]]. Ids up to a
  // few million (BGE-M3: 250002) are their own key, and a bitset of the query ids (31 KB for BGE-M3's
  // vocabulary, L1-resident) answers most doc ids without touching head. Larger (hashed) or negative ids are
  // keyed by their rank among the sorted distinct query ids instead: head and the bitset stay O(nnz).
  const int64_t nnz_q = q.indptr[q.rows];
  int64_t max_id = -1, min_id = 0;
  for (int64_t e = 0; e < nnz_q; ++e) {
    max_id = std::max(max_id, q.ids[e]);
    min_id = std::min(min_id, q.ids[e]);
  }
  const bool ranked = min_id < 0 || max_id >= std::max<int64_t>(int64_t{1} << 22, 8 * nnz_q);
  std::vector<int64_t> distinct;
  if (ranked) {
    distinct.assign(q.ids, q.ids + nnz_q);
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  }
  const int64_t vocab = ranked ? static_cast<int64_t>(distinct.size()) : max_id + 1;
  // The key of id v, or -1 when no query holds v.
  auto key_of = [&](int64_t v) -> int64_t {
    if (!ranked) return v >= 0 && v < vocab ? v : -1;
    const auto it = std::lower_bound(distinct.begin(), distinct.end(), v);
    return it != distinct.end() && *it == v ? it - distinct.begin() : -1;
  };
  std::vector<int32_t> head(vocab + 1, 0);
  std::vector<uint64_t> present((vocab + 63) / 64, 0);
  for (int64_t e = 0; e < nnz_q; ++e) {
    const int64_t k = key_of(q.ids[e]);
    ++head[k + 1];
    present[k >> 6] |= uint64_t{1} << (k & 63);
  }
  for (int64_t v = 0; v < vocab; ++v) head[v + 1] += head[v];
  std::vector<int32_t> fill(head.begin(), head.end() - 1);
  std::vector<int32_t> post_q(nnz_q);
  std::vector<float> post_w(nnz_q);
  for (int64_t r = 0; r < q.rows; ++r)
    for (int64_t e = q.indptr[r]; e < q.indptr[r + 1]; ++e) {
      const int32_t slot = fill[key_of(q.ids[e])]++;
      post_q[slot] = static_cast<int32_t>(r);
      post_w[slot] = q.vals[e];
    }
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<double> acc(q.rows);
#pragma omp for schedule(dynamic, 16)
    for (int64_t c = 0; c < d.rows; ++c) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t e = d.indptr[c]; e < d.indptr[c + 1]; ++e) {
        const int64_t v = key_of(d.ids[e]);
        if (v < 0 || !((present[v >> 6] >> (v & 63)) & 1)) continue;
        const double wd = d.vals[e];
        for (int32_t s = head[v]; s < head[v + 1]; ++s) acc[post_q[s]] += wd * post_w[s];
      }
      for (int64_t r = 0; r < q.rows; ++r) scores[r * d.rows + c] = static_cast<float>(acc[r]);
    }
  }
}

}  // namespace m3k
