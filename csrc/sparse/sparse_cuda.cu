// Sparse lexical head on CUDA: token weights (one warp per hidden row), per-text max-pool by id (one block per
// text: compact the kept tokens, sort them by id, keep each id's max) and batched lexical scores.
#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <climits>

#include "common/cuda_utils.cuh"
#include "sparse/sparse_cuda.h"

namespace m3k {
namespace {

using cuda::ceil_div;
using cuda::round_up16;

// ---------------------------------------------------------------- token weights: w[r] = relu(h[r] . w + b)

constexpr int kWeightThreads = 256;

// kVector: 16-byte loads (hidden 16-byte aligned and H * sizeof(T) % 16 == 0), else one element per lane.
template <typename T, bool kVector>
__global__ void __launch_bounds__(kWeightThreads)
    token_weights_kernel(const T* __restrict__ h, int64_t rows, int64_t H, const float* __restrict__ weight,
                         const float* __restrict__ bias, float* __restrict__ w) {
  constexpr int kWarps = kWeightThreads / 32;
  const int lane = threadIdx.x & 31;
  const float b = *bias;
  for (int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; row < rows;
       row += int64_t(gridDim.x) * kWarps) {
    const T* x = h + row * H;
    float acc = 0.f;
    if constexpr (kVector) {
      constexpr int V = 16 / sizeof(T);
      for (int64_t k = int64_t(lane) * V; k < H; k += 32 * V) {
        float v[V];
        cuda::load_floats<V>(x + k, v);
#pragma unroll
        for (int e = 0; e < V; ++e) acc = fmaf(v[e], weight[k + e], acc);
      }
    } else {
      for (int64_t k = lane; k < H; k += 32) acc = fmaf(cuda::load_float(x + k), weight[k], acc);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    const float y = acc + b;
    if (lane == 0) w[row] = y > 0.f || isnan(y) ? y : 0.f;  // relu that keeps NaN (reported by the caller)
  }
}

// ---------------------------------------------------------------- per-text max-pool by id

constexpr int kPoolThreads = 512;
constexpr int kSmallItems = 2;   // texts with <= 1024 kept tokens
constexpr int kLargeItems = 16;  // <= 8192 kept tokens; beyond: bitonic sort in the workspace
using Scan = cub::BlockScan<int, kPoolThreads>;
template <int kItems>
using Sort = cub::BlockRadixSort<uint64_t, kPoolThreads, kItems, int32_t>;

constexpr size_t cmax(size_t a, size_t b) { return a > b ? a : b; }
constexpr size_t kPoolSmem = cmax(sizeof(Scan::TempStorage), cmax(sizeof(typename Sort<kSmallItems>::TempStorage),
                                                                  sizeof(typename Sort<kLargeItems>::TempStorage)));

// Workspace: w [rows] fp32, keys [rows] int64 (token ids), local rows [rows] int32; text b uses entries
// off[b] .. off[b] + len[b] of keys / local rows.
struct PoolWorkspace {
  float* w;
  int64_t* keys;
  int32_t* rows;
};

PoolWorkspace carve(void* base, int64_t rows) {
  unsigned char* p = static_cast<unsigned char*>(base);
  const size_t wb = round_up16(size_t(rows) * sizeof(float)), kb = round_up16(size_t(rows) * sizeof(int64_t));
  return {reinterpret_cast<float*>(p), reinterpret_cast<int64_t*>(p + wb), reinterpret_cast<int32_t*>(p + wb + kb)};
}

struct PoolArgs {
  const int64_t* ids;
  const int32_t* off;
  const int32_t* len;
  const int64_t* skip;
  int64_t nskip;
  PoolWorkspace ws;
  int64_t* out_ids;
  float* out_vals;
  int64_t* out_src;
  int64_t* counts;
};

// Sorts entries [0, n) of (keys, rows) by key (stable: rows stay ascending within a key) in registers.
// Keys are ids in [min_id, min_id + 2^end_bit - 1): shifted to unsigned, sorted on end_bit bits only; the
// padding key ~0 exceeds every shifted id in those bits.
template <int kItems>
__device__ void sort_in_block(int64_t* keys, int32_t* rows, int n, int64_t min_id, int end_bit, void* smem) {
  uint64_t k[kItems];
  int32_t v[kItems];
#pragma unroll
  for (int e = 0; e < kItems; ++e) {
    const int idx = threadIdx.x * kItems + e;
    k[e] = idx < n ? uint64_t(keys[idx]) - uint64_t(min_id) : ~uint64_t(0);
    v[e] = idx < n ? rows[idx] : INT_MAX;
  }
  // Sort synchronises the block before it writes its storage: every thread has read its items by then.
  Sort<kItems>(*static_cast<typename Sort<kItems>::TempStorage*>(smem)).Sort(k, v, 0, end_bit);
#pragma unroll
  for (int e = 0; e < kItems; ++e) {
    const int idx = threadIdx.x * kItems + e;
    if (idx < n) {
      keys[idx] = int64_t(k[e] + uint64_t(min_id));
      rows[idx] = v[e];
    }
  }
  __syncthreads();
}

// Sorts entries [0, n) of (keys, rows) by (key, row) in place (global memory): bitonic network over the next
// power of two with every comparator ascending (first step of each merge compares mirrored positions), so
// the virtual +inf padding at positions >= n never moves and is never touched.
__device__ void bitonic_sort(int64_t* keys, int32_t* rows, int64_t n) {
  int64_t size_pow2 = 1;
  while (size_pow2 < n) size_pow2 <<= 1;
  for (int64_t size = 2; size <= size_pow2; size <<= 1) {
    for (int64_t stride = size / 2; stride > 0; stride /= 2) {
      for (int64_t x = threadIdx.x; x < size_pow2 / 2; x += kPoolThreads) {
        int64_t lo, hi;
        if (stride == size / 2) {
          const int64_t block = x / stride, pos = x % stride;
          lo = block * size + pos;
          hi = block * size + size - 1 - pos;
        } else {
          lo = (x / stride) * 2 * stride + x % stride;
          hi = lo + stride;
        }
        if (hi >= n) continue;
        const int64_t klo = keys[lo], khi = keys[hi];
        const int32_t rlo = rows[lo], rhi = rows[hi];
        if (klo > khi || (klo == khi && rlo > rhi)) {
          keys[lo] = khi;
          keys[hi] = klo;
          rows[lo] = rhi;
          rows[hi] = rlo;
        }
      }
      __syncthreads();
    }
  }
}

__device__ __forceinline__ int bit_width(uint64_t x) { return x == 0 ? 0 : 64 - __clzll(static_cast<long long>(x)); }

__global__ void __launch_bounds__(kPoolThreads) pool_kernel(PoolArgs a) {
  M3K_DYNAMIC_SMEM(smem);
  __shared__ long long s_min_id, s_max_id;
  auto& scan = *reinterpret_cast<Scan::TempStorage*>(smem);
  const int tid = threadIdx.x;
  const int64_t b = blockIdx.x;
  const int64_t base = a.off[b];
  const int len = a.len[b];
  int64_t* keys = a.ws.keys + base;
  int32_t* rows = a.ws.rows + base;
  const float* w = a.ws.w + base;
  if (tid == 0) {
    s_min_id = LLONG_MAX;
    s_max_id = LLONG_MIN;
  }
  __syncthreads();

  // 1. Compact the kept tokens (weight > 0 or NaN, id not skipped) in row order.
  int n = 0;
  for (int t0 = 0; t0 < len; t0 += kPoolThreads) {
    const int t = t0 + tid;
    bool kept = false;
    int64_t id = 0;
    if (t < len) {
      id = a.ids[base + t];
      kept = w[t] > 0.f || isnan(w[t]);
      for (int64_t s = 0; s < a.nskip && kept; ++s) kept = a.skip[s] != id;
    }
    int pos, count;
    Scan(scan).ExclusiveSum(kept ? 1 : 0, pos, count);
    if (kept) {
      keys[n + pos] = id;
      rows[n + pos] = t;
      atomicMin(&s_min_id, static_cast<long long>(id));
      atomicMax(&s_max_id, static_cast<long long>(id));
    }
    n += count;
    __syncthreads();  // scan storage reuse; keys / rows visible to the block
  }
  if (n == 0) {
    if (tid == 0) a.counts[b] = 0;
    return;
  }

  // 2. Sort by id.
  const int64_t min_id = s_min_id;
  const uint64_t range = uint64_t(s_max_id) - uint64_t(min_id);
  const int end_bit = range == ~uint64_t(0) ? 64 : max(1, bit_width(range + 1));
  if (n <= kPoolThreads * kSmallItems) {
    sort_in_block<kSmallItems>(keys, rows, n, min_id, end_bit, smem);
  } else if (n <= kPoolThreads * kLargeItems) {
    sort_in_block<kLargeItems>(keys, rows, n, min_id, end_bit, smem);
  } else {
    bitonic_sort(keys, rows, n);
  }

  // 3. One entry per id: its max weight (first row on ties), at the id's rank among the text's ids.
  int written = 0;
  for (int p0 = 0; p0 < n; p0 += kPoolThreads) {
    const int p = p0 + tid;
    const bool head = p < n && (p == 0 || keys[p] != keys[p - 1]);
    int slot, count;
    Scan(scan).ExclusiveSum(head ? 1 : 0, slot, count);
    if (head) {
      const int64_t id = keys[p];
      int32_t best_row = rows[p];
      float best = w[best_row];
      for (int x = p + 1; x < n && keys[x] == id; ++x) {
        const int32_t r = rows[x];
        const float v = w[r];
        if (v > best || (v == best && r < best_row) || (isnan(v) && !isnan(best))) {
          best = v;
          best_row = r;
        }
      }
      const int64_t out = base + written + slot;
      a.out_ids[out] = id;
      a.out_vals[out] = best;
      a.out_src[out] = base + best_row;
    }
    written += count;
    __syncthreads();  // scan storage reuse
  }
  if (tid == 0) a.counts[b] = written;
}

// ---------------------------------------------------------------- lexical scores

constexpr int kScoreThreads = 256;

// First position of `id` in ids[lo, hi) (ascending, unique), or -1.
__device__ __forceinline__ int64_t find_id(const int64_t* ids, int64_t lo, int64_t end, int64_t id) {
  int64_t hi = end;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (ids[mid] < id) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return (lo < end && ids[lo] == id) ? lo : -1;
}

__global__ void __launch_bounds__(kScoreThreads, 1)
    scores_kernel(SparseRows q, SparseRows d, bool pairwise, int64_t pairs, float* __restrict__ scores) {
  constexpr int kWarps = kScoreThreads / 32;
  const int lane = threadIdx.x & 31;
  for (int64_t pair = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; pair < pairs;
       pair += int64_t(gridDim.x) * kWarps) {
    const int64_t r = pairwise ? pair : pair / d.rows;
    const int64_t c = pairwise ? pair : pair % d.rows;
    const int64_t qa = q.indptr[r], qe = q.indptr[r + 1], da = d.indptr[c], de = d.indptr[c + 1];
    const bool q_short = qe - qa <= de - da;  // walk the shorter row, search the longer
    const int64_t sa = q_short ? qa : da, se = q_short ? qe : de, la = q_short ? da : qa, le = q_short ? de : qe;
    const int64_t* s_ids = q_short ? q.ids : d.ids;
    const float* s_vals = q_short ? q.vals : d.vals;
    const int64_t* l_ids = q_short ? d.ids : q.ids;
    const float* l_vals = q_short ? d.vals : q.vals;
    float s = 0.f;
    for (int64_t x = sa + lane; x < se; x += 32) {
      const int64_t at = find_id(l_ids, la, le, s_ids[x]);
      if (at >= 0) s = fmaf(s_vals[x], l_vals[at], s);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) scores[pair] = s;
  }
}

unsigned grid_for(int64_t items, int per_block) {
  return static_cast<unsigned>(std::min<int64_t>(ceil_div(items, per_block), int64_t(1) << 20));
}

}  // namespace

size_t lexical_pool_cuda_workspace_bytes(int64_t rows) {
  if (rows <= 0) return 0;
  return round_up16(size_t(rows) * sizeof(float)) + round_up16(size_t(rows) * sizeof(int64_t)) +
         round_up16(size_t(rows) * sizeof(int32_t));
}

std::string lexical_pool_cuda(const LexicalPoolCudaProblem& p, int64_t* out_ids, float* out_vals, int64_t* out_src,
                              int64_t* counts, void* workspace, cudaStream_t stream) {
  const std::string fn = "lexical_pool_cuda: ";
  if (p.hidden_size < 1) return fn + "hidden size must be >= 1, got " + std::to_string(p.hidden_size);
  if (p.rows < 0 || p.batch < 0 || p.nskip < 0)
    return fn + "negative size (rows=" + std::to_string(p.rows) + ", batch=" + std::to_string(p.batch) +
           ", nskip=" + std::to_string(p.nskip) + ")";
  if (p.batch > INT_MAX || p.rows > INT_MAX) return fn + "batch and rows must be < 2^31";
  if (p.rows > 0 && (!p.hidden || !p.ids || !p.weight || !p.bias || !workspace))
    return fn + "null hidden, ids, weight, bias or workspace pointer";
  if (p.batch > 0 && (!p.off || !p.len || !counts)) return fn + "null offset, length or counts pointer";
  // Zero rows (every text empty) leave the per-token outputs empty: their pointers may be null then.
  if (p.rows > 0 && (!out_ids || !out_vals || !out_src)) return fn + "null output pointer";
  if (p.nskip > 0 && !p.skip_ids) return fn + "null skip_ids pointer";
  if (p.batch == 0) return {};
  const PoolWorkspace ws = carve(workspace, p.rows);
  if (p.rows > 0) {
    std::string err = cuda::with_dtype(p.dtype, [&](auto tag) -> std::string {
      using T = cuda::Elem<decltype(tag)::value>;
      const T* h = static_cast<const T*>(p.hidden);
      const unsigned grid = grid_for(p.rows, kWeightThreads / 32);
      if ((p.hidden_size * int64_t(sizeof(T))) % 16 == 0 && cuda::aligned16(h)) {
        cuda::launch(token_weights_kernel<T, true>, grid, kWeightThreads, 0, stream, h, p.rows, p.hidden_size,
                     p.weight, p.bias, ws.w);
      } else {
        cuda::launch(token_weights_kernel<T, false>, grid, kWeightThreads, 0, stream, h, p.rows, p.hidden_size,
                     p.weight, p.bias, ws.w);
      }
      return cuda::launch_status("lexical_pool_cuda (token weights)");
    });
    if (!err.empty()) return err;
  } else if (p.dtype != DType::F32 && p.dtype != DType::F16 && p.dtype != DType::BF16) {
    return fn + "unsupported dtype code " + std::to_string(static_cast<int>(p.dtype));
  }
  const cudaError_t e =
      cudaFuncSetAttribute(pool_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kPoolSmem));
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it so that a later launch_status does not report it
    return fn + "cudaFuncSetAttribute: " + cudaGetErrorString(e);
  }
  const PoolArgs a{p.ids, p.off, p.len, p.skip_ids, p.nskip, ws, out_ids, out_vals, out_src, counts};
  cuda::launch(pool_kernel, static_cast<unsigned>(p.batch), kPoolThreads, kPoolSmem, stream, a);
  return cuda::launch_status("lexical_pool_cuda (pool)");
}

std::string lexical_scores_cuda(const SparseRows& q, const SparseRows& d, bool pairwise, float* scores,
                                cudaStream_t stream) {
  const std::string fn = "lexical_scores_cuda: ";
  if (q.rows < 0 || d.rows < 0)
    return fn + "negative row count (q=" + std::to_string(q.rows) + ", d=" + std::to_string(d.rows) + ")";
  if (pairwise && q.rows != d.rows)
    return fn + "pairwise needs as many q rows as d rows, got " + std::to_string(q.rows) + " and " +
           std::to_string(d.rows);
  if (q.rows > INT_MAX || d.rows > INT_MAX) return fn + "row counts must be < 2^31";
  const int64_t pairs = pairwise ? q.rows : q.rows * d.rows;
  if (pairs == 0) return {};
  if (!q.indptr || !d.indptr || !scores) return fn + "null indptr or scores pointer";
  cuda::launch(scores_kernel, grid_for(pairs, kScoreThreads / 32), kScoreThreads, 0, stream, q, d, pairwise, pairs,
               scores);
  return cuda::launch_status("lexical_scores_cuda");
}

}  // namespace m3k
