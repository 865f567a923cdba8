// MaxSim on CUDA. Forward: a block walks its query rows in tiles of kBM tokens and a doc in tiles of kBN tokens;
// each (query tile, doc tile) similarity block is a small GEMM over H, streamed through a kStages-deep cp.async
// pipeline of [kBM + kBN, kBK] shared-memory tiles. The warps form a kWarpsM x kWarpsN grid: warp (wm, wn) owns
// query rows [wm * kWarpRows, + kWarpRows) and doc columns [wn * kWarpCols, + kWarpCols) of every tile, so the
// running max / argmax of its columns stays in registers across the whole doc; one cross-warp reduction per query
// tile (over the kWarpsN column warps) gives the row maxima and their arg-max. The [Lq, Ld] similarity block never
// leaves registers. Three ways to lay blocks out:
//   * per pair (maxsim_forward_cuda): block = (query, doc); the rows' maxima are summed into the pair's score;
//   * row blocks (maxsim_forward_rows_cuda, several queries, all pairs): block = (kBM consecutive query rows, doc),
//     the rows spanning queries; each row's max goes to a [Tq, nd] buffer that a second kernel sums per query;
//   * token tiles (maxsim_forward_tokens_cuda, all pairs): block = (kBM query rows, kBN consecutive doc rows), the
//     doc rows spanning docs, so no tile is padded past a doc's end; the block's [kBM, kBN] similarities go through
//     shared memory, where each row's maxima per doc (segmented by the docs' row ids) are merged into a [Tq, nd]
//     buffer of 64-bit (value, first row) keys by atomicMax; a second kernel sums them per query.
#include <algorithm>
#include <climits>

#include "common/cuda_utils.cuh"
#include "maxsim/maxsim_cuda.h"

namespace m3k {
namespace {

using cuda::ceil_div;
using cuda::round_up16;

// Tile shape kFwdTileShapes[kIndex] (maxsim_cuda.h): kWarps warps in a kWarpsM x kWarpsN grid, each owning
// kWarpRows query rows (kMT MMA row tiles of 16) and kWarpCols doc columns (kNT MMA column tiles of 8) of a
// kBM x kBN tile, kBKVecs 16-byte vectors of hidden per row and stage, kStages pipeline stages. Picked at run
// time (the Python layer's _FWD_TILE / _ROWS_TILE, swept by m3kernels/benchmarks/tune.py).
template <typename T, int kIndex>
struct FwdTile {
  static constexpr FwdTileShape kShape = kFwdTileShapes[kIndex];
  static constexpr int kBKVecs = kShape.vecs;
  static constexpr int kBM = kShape.qrows;        // query tokens per tile
  static constexpr int kWarps = kShape.warps;
  static constexpr int kWarpsM = kShape.warps_m;    // warps along the query rows
  static constexpr int kWarpsN = kWarps / kWarpsM;  // warps along the doc columns
  static constexpr int kWarpRows = kBM / kWarpsM;   // query rows per warp
  static constexpr int kMT = kWarpRows / 16;        // 16-row MMA tiles per warp
  static constexpr int kWarpCols = kShape.warp_cols;
  static constexpr int kNT = kWarpCols / 8;         // n8 MMA tiles per warp
  static constexpr int kBN = kWarpsN * kWarpCols;   // doc tokens per tile
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStages = kShape.stages;
  static constexpr int kVec = 16 / sizeof(T);     // elements per 16-byte cp.async
  static constexpr int kBK = kBKVecs * kVec;      // hidden elements per stage
  static constexpr int kLds = kBK + kVec;         // padded smem row: a 4-bank shift per row, conflict-free
  static constexpr int kRows = kBM + kBN;
  static constexpr int kStageElems = kRows * kLds;
  static constexpr size_t kSmemBytes = size_t(kStages) * kStageElems * sizeof(T);
  static_assert(kBM % 32 == 0 && kBM <= kThreads, "one thread per query row in the cross-warp reduction");
  static_assert(kWarps % kWarpsM == 0 && kBM % kWarpsM == 0 && kWarpRows % 16 == 0,
                "a whole number of warps and of 16-row MMA tiles per warp row");
  static_assert(kWarpCols % 16 == 0, "ldmatrix.x4 loads 16 doc columns");
  static_assert(kBN == fwd_tile_doc_cols(kShape), "maxsim_cuda.h states the doc columns");
  static_assert((kLds * sizeof(T) / 4) % 32 == 4, "fragment loads assume rows 4 banks apart");
  static_assert((kRows * (kBK / kVec)) % kThreads == 0, "each thread issues the same number of copies");
  static_assert(kStages >= 2, "the pipeline overlaps the next stage's copy with this stage's products");
  static_assert(int64_t(kSmemBytes) == fwd_tile_smem_bytes(kShape), "maxsim_cuda.h states the footprint");
};

// Kernel arguments: the problem (maxsim.h) and the outputs. Row blocks (rowmax != null): block b covers query
// rows [(b % num_m) * kBM, + kBM) of p.q_rows against doc b / num_m; q_seg[t] is row t's query (-1: none).
// Token tiles (keys != null): block b covers the same query rows against doc rows [(b / num_m) * kBN, + kBN) of
// p.d_rows; d_seg[u] is doc row u's doc (-1: none); keys [q_rows, nd] (zeroed) receive max_key of every (row, doc).
struct FwdArgs {
  MaxSimProblem p;
  float* scores;
  int32_t* argmax;
  float* rowmax;
  const int32_t* q_seg;
  int64_t num_m;
  unsigned long long* keys;
  const int32_t* d_seg;
};

// A row's max over a doc with its arg-max (the global doc row, -1 for none) as one 64-bit key whose unsigned order
// is keep_best's: the value's bits mapped to an order-preserving unsigned (NaN made +NaN, above +inf; -0 made +0,
// equal to it) above, the complement of the row below (the smaller row wins a tie). 0, below every key, is "no
// doc token": the score adds 0 and the arg-max is -1, as for an empty doc per pair. (-inf, -1) keeps its -inf.
__device__ __forceinline__ unsigned long long max_key(float v, int32_t row) {
  unsigned bits = isnan(v) ? 0x7fc00000u : (v == 0.f ? 0u : __float_as_uint(v));
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<unsigned long long>(bits) << 32) | (0xffffffffu - static_cast<unsigned>(row));
}

__device__ __forceinline__ void unpack_max_key(unsigned long long key, float& v, int32_t& row) {
  if (key == 0) {
    v = 0.f;
    row = -1;
    return;
  }
  const unsigned bits = static_cast<unsigned>(key >> 32);
  v = __uint_as_float((bits & 0x80000000u) ? (bits & 0x7fffffffu) : ~bits);
  row = static_cast<int32_t>(0xffffffffu - static_cast<unsigned>(key));
}

// Item i's rows [start, start + n), clamped into [0, rows) (maxsim.h: offsets may reach a launch unvalidated).
// In int32 (rows < 2^31, check_problem): the same clamps in int64 cost the per-pair forward 26 more registers.
struct ItemRows {
  int start;
  int n;
};
__device__ __forceinline__ ItemRows item_rows(const int32_t* off, const int32_t* len, int64_t i, int64_t rows) {
  const int r = static_cast<int>(rows);
  const int start = min(max(off[i], 0), r);
  return {start, min(max(len[i], 0), r - start)};
}

// Position of an iteration in the flattened (query tile, doc tile, k chunk) sequence.
struct Cursor {
  int kc = 0, nt = 0, mt = 0;
  __device__ void next(int nk, int nnt) {
    if (++kc == nk) {
      kc = 0;
      if (++nt == nnt) {
        nt = 0;
        ++mt;
      }
    }
  }
};

__device__ __forceinline__ uint32_t ld_u32(const void* p) { return *static_cast<const uint32_t*>(p); }

// (v, a) <- the better of (v, a) and (v2, a2): larger value, then smaller index (first max on ties). NaN beats
// every number, so a NaN similarity (NaN in q or d) reaches the score and the Python layer reports it; between
// NaNs the smaller index wins too, so that every tile shape picks the same (first) NaN column.
__device__ __forceinline__ void keep_best(float& v, int& a, float v2, int a2) {
  if (v2 > v || (v2 == v && a2 < a) || (isnan(v2) && (!isnan(v) || a2 < a))) {
    v = v2;
    a = a2;
  }
}

// acc[mt][nt][h * 2 + e] += <q row (mt * 16 + h * 8 + g), d row (nt * 8 + 2t + e)> over kBK, sq and sd pointing
// at the warp's first query row and doc column of the stage.
template <typename T, typename C>
__device__ __forceinline__ void tile_products(const T* sq, const T* sd, int lane, float (&acc)[C::kMT][C::kNT][4]) {
  const int g = lane >> 2, t = lane & 3;
  if constexpr (sizeof(T) == 2) {
#pragma unroll
    for (int k = 0; k < C::kBK; k += 16) {
      uint32_t b[C::kNT][2];
      if constexpr (C::kShape.ldmatrix) {
#pragma unroll
        for (int nt = 0; nt < C::kNT; nt += 2) {
          // B: (doc rows 0-7, k 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15) of columns nt * 8 .. nt * 8 + 15.
          uint32_t bb[4];
          cuda::ldmatrix_x4(bb, sd + (nt * 8 + (lane >> 4) * 8 + (lane & 7)) * C::kLds + k + ((lane >> 3) & 1) * 8);
          b[nt][0] = bb[0];
          b[nt][1] = bb[1];
          b[nt + 1][0] = bb[2];
          b[nt + 1][1] = bb[3];
        }
      } else {
#pragma unroll
        for (int nt = 0; nt < C::kNT; ++nt) {
          const T* c0 = sd + (nt * 8 + g) * C::kLds + k + 2 * t;
          b[nt][0] = ld_u32(c0);
          b[nt][1] = ld_u32(c0 + 8);
        }
      }
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt) {
        uint32_t a[4];
        if constexpr (C::kShape.ldmatrix) {
          // A: matrices (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) of the 16-row query tile mt.
          cuda::ldmatrix_x4(a, sq + (mt * 16 + (lane & 15)) * C::kLds + k + (lane >> 4) * 8);
        } else {
          const T* r0 = sq + (mt * 16 + g) * C::kLds + k + 2 * t;
          const T* r1 = r0 + 8 * C::kLds;
          a[0] = ld_u32(r0);
          a[1] = ld_u32(r1);
          a[2] = ld_u32(r0 + 8);
          a[3] = ld_u32(r1 + 8);
        }
#pragma unroll
        for (int nt = 0; nt < C::kNT; ++nt) cuda::mma_16816<T>(acc[mt][nt], a, b[nt]);
      }
    }
  } else {
#pragma unroll 2
    for (int k = 0; k < C::kBK; k += 4) {
      float4 dv[C::kNT][2];
#pragma unroll
      for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          dv[nt][e] = *reinterpret_cast<const float4*>(sd + (nt * 8 + 2 * t + e) * C::kLds + k);
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt) {
        float4 qv[2];
#pragma unroll
        for (int h = 0; h < 2; ++h)
          qv[h] = *reinterpret_cast<const float4*>(sq + (mt * 16 + h * 8 + g) * C::kLds + k);
#pragma unroll
        for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float& c = acc[mt][nt][h * 2 + e];
              const float4 x = qv[h], y = dv[nt][e];
              c = fmaf(x.x, y.x, c);
              c = fmaf(x.y, y.y, c);
              c = fmaf(x.z, y.z, c);
              c = fmaf(x.w, y.w, c);
            }
      }
    }
  }
}

// Token tiles: columns [c0, c1) of one query row's similarities sim (doc ids seg) in order, keeping the max of each
// run of one doc's rows (first column on ties, NaN wins: the per-pair fold); each run merges into out[doc] with one
// atomicMax.
__device__ __forceinline__ void merge_token_row(unsigned long long* out, const float* sim, const int32_t* seg, int d0,
                                                int c0, int c1) {
  if (c0 >= c1) return;
  float best = -INFINITY;
  int at = -1, doc = seg[c0];
  for (int c = c0; c < c1; ++c) {
    if (seg[c] != doc) {
      if (doc >= 0) atomicMax(out + doc, max_key(best, at < 0 ? -1 : d0 + at));
      best = -INFINITY;
      at = -1;
      doc = seg[c];
    }
    const float v = sim[c];
    if (v > best || (isnan(v) && !isnan(best))) {
      best = v;
      at = c;
    }
  }
  if (doc >= 0) atomicMax(out + doc, max_key(best, at < 0 ? -1 : d0 + at));
}

// Token tiles, after the block's last k step: its similarities acc (thread rows row0 + mt * 16 + h * 8, columns
// col0 + nt * 8 + e of the tile) and its doc rows' doc ids go to shared memory, where the pipeline's stages are no
// longer read; then merge_token_row per query row and chunk of columns.
template <typename C>
__device__ __forceinline__ void merge_token_tile(const FwdArgs& args, unsigned char* smem_raw,
                                                 const float (&acc)[C::kMT][C::kNT][4], int64_t q0, int lq, int d0,
                                                 int ld, int row0, int col0) {
  constexpr int kLd = C::kBN + 1;  // rows one bank apart: the 32 row walkers of a warp read 32 banks
  constexpr int kChunks = C::kThreads / C::kBM;
  static_assert(C::kThreads % C::kBM == 0 && C::kBN % kChunks == 0, "whole chunks of columns per thread");
  static_assert((int64_t(C::kBM) * kLd + C::kBN) * 4 <= int64_t(C::kSmemBytes),
                "the similarity tile and its doc ids fit the pipeline's shared memory");
  float* sim = reinterpret_cast<float*>(smem_raw);
  int32_t* seg = reinterpret_cast<int32_t*>(sim + C::kBM * kLd);
  __syncthreads();  // every warp is done with the last stage
#pragma unroll
  for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) sim[(row0 + mt * 16 + h * 8) * kLd + col0 + nt * 8 + e] = acc[mt][nt][h * 2 + e];
  for (int c = threadIdx.x; c < C::kBN; c += C::kThreads) seg[c] = c < ld ? args.d_seg[d0 + c] : -1;
  __syncthreads();
  const int r = threadIdx.x % C::kBM, c0 = threadIdx.x / C::kBM * (C::kBN / kChunks);
  if (r < lq)
    merge_token_row(args.keys + (q0 + r) * args.p.nd, sim + r * kLd, seg, d0, c0, min(c0 + C::kBN / kChunks, ld));
}

template <typename T, typename C>
__global__ void __launch_bounds__(C::kThreads) maxsim_fwd_kernel(FwdArgs args) {
  M3K_DYNAMIC_SMEM(smem_raw);
  T* smem = reinterpret_cast<T*>(smem_raw);
  __shared__ float red_val[C::kWarpsN][C::kBM];
  __shared__ int32_t red_arg[C::kWarpsN][C::kBM];
  static_assert(int64_t(sizeof(red_val) + sizeof(red_arg)) == fwd_tile_static_smem_bytes(C::kShape),
                "maxsim_cuda.h states the static footprint");

  const T* q = static_cast<const T*>(args.p.q);
  const T* d = static_cast<const T*>(args.p.d);
  const int64_t H = args.p.hidden, nd = args.p.nd;
  const int64_t block = blockIdx.x;
  const bool rows = args.rowmax != nullptr, tokens = args.keys != nullptr;
  // Per pair, all pairs: consecutive blocks share a doc (reused from L2 by the queries); so do row blocks and
  // token tiles.
  int64_t i = 0, j = 0, q0;
  int lq;
  if (rows || tokens) {
    j = block / args.num_m;
    q0 = block % args.num_m * C::kBM;
    lq = static_cast<int>(min(int64_t(C::kBM), args.p.q_rows - q0));
  } else {
    i = args.p.pairwise ? block : block % args.p.nq;
    j = args.p.pairwise ? block : block / args.p.nq;
    const ItemRows query = item_rows(args.p.q_off, args.p.q_len, i, args.p.q_rows);
    q0 = query.start;
    lq = query.n;
  }
  // Token tiles: "doc" j is the block's doc rows, j * kBN onwards.
  const ItemRows doc = tokens ? ItemRows{static_cast<int>(j * C::kBN),
                                         static_cast<int>(min(int64_t(C::kBN), args.p.d_rows - j * C::kBN))}
                              : item_rows(args.p.d_off, args.p.d_len, j, args.p.d_rows);
  const int64_t d0 = doc.start;
  const int ld = doc.n;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  // (threadIdx.x < kThreads is unknown to the compiler: a single row of warps is spelled out, or the index math
  // costs tile 0 twelve registers and a block per SM.)
  const int wn = C::kWarpsM == 1 ? warp : warp % C::kWarpsN;
  const int warp_row0 = C::kWarpsM == 1 ? 0 : warp / C::kWarpsN * C::kWarpRows;
  const int nk = static_cast<int>(ceil_div(H, C::kBK));
  const int nnt = static_cast<int>(ceil_div(ld, C::kBN));
  const int nmt = static_cast<int>(ceil_div(lq, C::kBM));
  const int64_t total = int64_t(nmt) * nnt * nk;
  // The argmax / rowmax slot of row `row` of this block's query rows (pairwise: one doc per query row).
  auto out_at = [&](int row) { return args.p.pairwise ? q0 + row : (q0 + row) * nd + j; };
  auto in_query = [&](int row) { return !rows || args.q_seg[q0 + row] >= 0; };

  // Stage `slot` <- q rows [mt * kBM, +kBM) and d rows [nt * kBN, +kBN), hidden [kc * kBK, +kBK); rows past
  // the item and columns past H are zero-filled (H * sizeof(T) is a multiple of 16: a chunk is all in or out).
  // Copy `rep` of a thread moves 16-byte chunk ch of stage row r0 + rep * kRowsPerRep (query rows first): both
  // fixed per thread, so a stage costs one pointer step and one bounds check per copy, not the row's index math
  // (which made the copies two thirds of the loop's instructions, and the kernel issue-bound, on the H200).
  constexpr int kChunks = C::kBK / C::kVec;
  constexpr int kRowsPerRep = C::kThreads / kChunks;
  constexpr int kQReps = C::kBM / kRowsPerRep;
  static_assert(C::kThreads % kChunks == 0 && C::kBM % kRowsPerRep == 0 && C::kBN % kRowsPerRep == 0,
                "each copy of a thread stays in one row, and all of a rep's rows are query rows or doc rows");
  const int r0 = tid / kChunks, ch = tid % kChunks;
  T* const smem_thread = smem + r0 * C::kLds + ch * C::kVec;
  auto load_stage = [&](const Cursor& c, int slot) {
    T* const dst = smem_thread + slot * C::kStageElems;
    const int64_t k = int64_t(c.kc) * C::kBK + ch * C::kVec;
    const bool k_in = k < H;
    const int q_left = lq - c.mt * C::kBM - r0, d_left = ld - c.nt * C::kBN - r0;
    const T* const q_src = q + (q0 + c.mt * C::kBM + r0) * H + k;
    const T* const d_src = d + (d0 + c.nt * C::kBN + r0) * H + k;
    const int64_t step = kRowsPerRep * H;
#pragma unroll
    for (int rep = 0; rep < C::kRows / kRowsPerRep; ++rep) {
      const bool is_q = rep < kQReps;
      const int n = is_q ? rep : rep - kQReps;  // this copy's row is the thread's first + n * kRowsPerRep
      const bool valid = k_in && n * kRowsPerRep < (is_q ? q_left : d_left);
      const T* src = (is_q ? q_src : d_src) + n * step;
      cuda::cp_async_16<C::kShape.prefetch>(dst + rep * kRowsPerRep * C::kLds, valid ? src : q, valid);
    }
  };

  float acc[C::kMT][C::kNT][4];
  float best[C::kMT][2];
  int arg[C::kMT][2];
#pragma unroll
  for (int a = 0; a < C::kMT * C::kNT * 4; ++a) (&acc[0][0][0])[a] = 0.f;
#pragma unroll
  for (int a = 0; a < C::kMT * 2; ++a) {
    (&best[0][0])[a] = -INFINITY;
    (&arg[0][0])[a] = -1;
  }
  float score = 0.f;  // per pair: lane 0 of warp 0

  Cursor load_at;
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < total) {
      load_stage(load_at, s);
      load_at.next(nk, nnt);
    }
    cuda::cp_async_commit();
  }

  Cursor at;
  int read_slot = 0, write_slot = C::kStages - 1;  // it % kStages and (it + kStages - 1) % kStages
  for (int64_t it = 0; it < total; ++it) {
    cuda::cp_async_wait<C::kStages - 2>();
    // Stage `it` is visible to all, and every warp is done with stage it - 1, which the next copy reuses.
    __syncthreads();
    if (it + C::kStages - 1 < total) {
      load_stage(load_at, write_slot);
      load_at.next(nk, nnt);
    }
    cuda::cp_async_commit();
    const T* sq = smem + read_slot * C::kStageElems;
    read_slot = read_slot == C::kStages - 1 ? 0 : read_slot + 1;
    write_slot = write_slot == C::kStages - 1 ? 0 : write_slot + 1;
    tile_products<T, C>(sq + warp_row0 * C::kLds, sq + (C::kBM + wn * C::kWarpCols) * C::kLds, lane, acc);

    if (!tokens && at.kc == nk - 1) {  // this doc tile's similarities are complete: fold them into the running max
      const int n0 = at.nt * C::kBN + wn * C::kWarpCols + 2 * t;
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int nt = 0; nt < C::kNT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int col = n0 + nt * 8 + e;  // increasing: strict '>' keeps the first max
              const float v = acc[mt][nt][h * 2 + e];
              if (col < ld && (v > best[mt][h] || (isnan(v) && !isnan(best[mt][h])))) {
                best[mt][h] = v;
                arg[mt][h] = col;
              }
            }
#pragma unroll
      for (int a = 0; a < C::kMT * C::kNT * 4; ++a) (&acc[0][0][0])[a] = 0.f;

      if (at.nt == nnt - 1) {  // the whole doc is seen: reduce this query tile's rows
#pragma unroll
        for (int mt = 0; mt < C::kMT; ++mt)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float v = best[mt][h];
            int a = arg[mt][h];
#pragma unroll
            for (int off = 1; off < 4; off <<= 1)
              keep_best(v, a, __shfl_xor_sync(0xffffffffu, v, off), __shfl_xor_sync(0xffffffffu, a, off));
            if (t == 0) {
              red_val[wn][warp_row0 + mt * 16 + h * 8 + g] = v;
              red_arg[wn][warp_row0 + mt * 16 + h * 8 + g] = a;
            }
            best[mt][h] = -INFINITY;
            arg[mt][h] = -1;
          }
        __syncthreads();
        if (tid < C::kBM) {  // thread r: query row r of the tile
          float v = red_val[0][tid];
          int a = red_arg[0][tid];
#pragma unroll
          for (int w = 1; w < C::kWarpsN; ++w) keep_best(v, a, red_val[w][tid], red_arg[w][tid]);
          const int row = at.mt * C::kBM + tid;
          // a == -1 when the row's max is -inf (every similarity -inf): no doc token, as on the CPU.
          const int32_t doc_row = a < 0 ? -1 : static_cast<int32_t>(d0 + a);
          const bool mine = row < lq && in_query(row);
          if (mine && args.argmax != nullptr) args.argmax[out_at(row)] = doc_row;
          if (rows) {
            if (mine) args.rowmax[out_at(row)] = v;
          } else if constexpr (C::kBM == 32) {  // per pair (the launcher takes 32-row tiles only): warp 0
            float s = row < lq ? v : 0.f;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
            score += s;
          }
        }
        // red_* is rewritten only after the next iteration's __syncthreads.
      }
    }
    at.next(nk, nnt);
  }
  if (tokens) {
    merge_token_tile<C>(args, smem_raw, acc, q0, lq, int(d0), ld, warp_row0 + g, wn * C::kWarpCols + 2 * t);
    return;
  }

  if (ld == 0) {  // no doc tokens, no tile walked: every row's max is an empty one (0, no arg-max)
    for (int r = tid; r < lq; r += C::kThreads) {
      if (!in_query(r)) continue;
      if (args.argmax != nullptr) args.argmax[out_at(r)] = -1;
      if (rows) args.rowmax[out_at(r)] = 0.f;
    }
  }
  if (!rows && tid == 0) args.scores[args.p.pairwise ? i : i * nd + j] = score;
}

// seg[off[i] + r] = i for r < len[i] (block i); the other rows keep the caller's -1.
constexpr int kSegThreads = 256;
__global__ void __launch_bounds__(kSegThreads) segment_ids_kernel(const int32_t* off, const int32_t* len,
                                                                   int64_t rows, int32_t* seg) {
  const ItemRows item = item_rows(off, len, blockIdx.x, rows);
  for (int r = threadIdx.x; r < item.n; r += kSegThreads) seg[item.start + r] = static_cast<int32_t>(blockIdx.x);
}

// scores[i, j] = sum of rowmax[t, j] over query i's rows t, in row order (thread (i, j), j fastest).
constexpr int kSumThreads = 256;
__global__ void __launch_bounds__(kSumThreads) segment_sum_kernel(const float* rowmax, const int32_t* q_off,
                                                                   const int32_t* q_len, int64_t q_rows,
                                                                   int64_t pairs, int64_t nd, float* scores) {
  const int64_t e = int64_t(blockIdx.x) * kSumThreads + threadIdx.x;
  if (e >= pairs) return;
  const int64_t i = e / nd, j = e % nd;
  const ItemRows query = item_rows(q_off, q_len, i, q_rows);
  float acc = 0.f;
  for (int r = 0; r < query.n; ++r) acc += rowmax[(query.start + r) * nd + j];
  scores[e] = acc;
}

// scores[i, j] = the sum of query i's rows' maxima in keys (token tiles), added as the per-pair kernel adds them:
// tiles of 32 rows from the query's first, each summed by its warp's xor butterfly (here lane 0's half of it), so
// the scores are maxsim_forward_cuda's bits. argmax (may be null) <- the rows' arg-maxes (thread (i, j), j fastest).
__global__ void __launch_bounds__(kSumThreads) token_sum_kernel(const unsigned long long* keys, const int32_t* q_off,
                                                                 const int32_t* q_len, int64_t q_rows, int64_t pairs,
                                                                 int64_t nd, float* scores, int32_t* argmax) {
  const int64_t e = int64_t(blockIdx.x) * kSumThreads + threadIdx.x;
  if (e >= pairs) return;
  const int64_t i = e / nd, j = e % nd;
  const ItemRows query = item_rows(q_off, q_len, i, q_rows);
  float score = 0.f;
  for (int m0 = 0; m0 < query.n; m0 += 32) {
    float s[32];
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      float v = 0.f;
      if (m0 + l < query.n) {
        const int64_t at = (query.start + m0 + l) * nd + j;
        int32_t row;
        unpack_max_key(keys[at], v, row);
        if (argmax != nullptr) argmax[at] = row;
      }
      s[l] = v;
    }
#pragma unroll
    for (int step = 0; step < 5; ++step)  // offsets 16, 8, 4, 2, 1; lane l's partner l ^ off is l + off for l < off
#pragma unroll
      for (int l = 0; l < (16 >> step); ++l) s[l] += s[l + (16 >> step)];
    score += s[0];
  }
  scores[e] = score;
}

struct BwdArgs {
  MaxSimProblem p;
  const float* grad;
  const int32_t* argmax;
  float* dq;
  float* dd;
};

constexpr int kBwdThreads = 128;
constexpr int kDqTokenSplit = 32;  // blocks per query along its tokens (gridDim.y): one token each at Lq <= 32
constexpr int kDdTokenSplit = 8;   // blocks per pair along the query's tokens for the atomic dd

__device__ __forceinline__ int64_t arg_index(const BwdArgs& a, int64_t row, int64_t j) {
  return a.p.pairwise ? row : row * a.p.nd + j;
}

__device__ __forceinline__ float grad_at(const BwdArgs& a, int64_t i, int64_t j) {
  return a.grad[a.p.pairwise ? i : i * a.p.nd + j];
}

// dq[row] = sum_j g(i, j) d[argmax(row, j)], j ascending: block (i, y) owns query i's tokens y, y + gridDim.y, ...;
// a thread owns V consecutive hidden elements per step and reads them with one load per doc (V > 1 needs rows
// of a multiple of 16 bytes, 16-byte aligned d and dq).
template <typename T, int V>
__global__ void __launch_bounds__(kBwdThreads) maxsim_dq_kernel(BwdArgs a) {
  const T* d = static_cast<const T*>(a.p.d);
  const int64_t i = blockIdx.x, H = a.p.hidden;
  const int64_t j0 = a.p.pairwise ? i : 0, j1 = a.p.pairwise ? i + 1 : a.p.nd;
  const ItemRows query = item_rows(a.p.q_off, a.p.q_len, i, a.p.q_rows);
  for (int tok = blockIdx.y; tok < query.n; tok += gridDim.y) {
    const int64_t row = query.start + tok;
    for (int64_t k = int64_t(threadIdx.x) * V; k < H; k += int64_t(kBwdThreads) * V) {
      float acc[V] = {};
#pragma unroll 4
      for (int64_t j = j0; j < j1; ++j) {
        const int32_t u = a.argmax[arg_index(a, row, j)];
        if (u < 0) continue;
        const float g = grad_at(a, i, j);
        float x[V];
        cuda::load_floats<V>(d + int64_t(u) * H + k, x);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] = fmaf(g, x[e], acc[e]);
      }
#pragma unroll
      for (int e = 0; e < V; ++e) a.dq[row * H + k + e] = acc[e];
    }
  }
}

// dd[argmax(row, j)] += g(i, j) q[row] with float atomics: block (pair, y) owns the pair's tokens y, y + ...; a
// thread adds V consecutive hidden elements per step (V = 4: one vector atomic on sm_90+; needs H % 4 == 0, q and
// dd aligned to 4 elements).
template <typename T, int V>
__global__ void __launch_bounds__(kBwdThreads) maxsim_dd_atomic_kernel(BwdArgs a) {
  const T* q = static_cast<const T*>(a.p.q);
  const int64_t pair = blockIdx.x, H = a.p.hidden;
  const int64_t i = a.p.pairwise ? pair : pair % a.p.nq;
  const int64_t j = a.p.pairwise ? pair : pair / a.p.nq;
  const float gij = grad_at(a, i, j);
  const ItemRows query = item_rows(a.p.q_off, a.p.q_len, i, a.p.q_rows);
  for (int tok = blockIdx.y; tok < query.n; tok += gridDim.y) {
    const int64_t row = query.start + tok;
    const int32_t u = a.argmax[arg_index(a, row, j)];
    if (u < 0) continue;
    for (int64_t k = int64_t(threadIdx.x) * V; k < H; k += int64_t(kBwdThreads) * V) {
      float x[V];
      cuda::load_floats<V>(q + row * H + k, x);
#pragma unroll
      for (int e = 0; e < V; ++e) x[e] *= gij;
      cuda::atomic_add_floats<V>(a.dd + int64_t(u) * H + k, x);
    }
  }
}

// Deterministic dd: block (j, y) owns columns [y * kBwdThreads, +kBwdThreads) of doc j's rows (an argmax of
// doc j always points into doc j) and adds every query token's contribution in a fixed order. Tokens go kDdBatch
// at a time: each distinct doc row of a batch is read once, updated by its tokens in order (the same fmaf chain as
// one token at a time, so the same bits) and written once, which puts kDdBatch reads in flight instead of one
// read-after-write round trip per token.
constexpr int kDdBatch = 8;

template <typename T>
__global__ void __launch_bounds__(kBwdThreads) maxsim_dd_ordered_kernel(BwdArgs a) {
  __shared__ int32_t s_arg[kBwdThreads];
  const T* q = static_cast<const T*>(a.p.q);
  const int64_t j = blockIdx.x;
  const int64_t k = int64_t(blockIdx.y) * kBwdThreads + threadIdx.x;
  const int64_t i0 = a.p.pairwise ? j : 0, i1 = a.p.pairwise ? j + 1 : a.p.nq;
  for (int64_t i = i0; i < i1; ++i) {
    const float gij = grad_at(a, i, j);
    const ItemRows query = item_rows(a.p.q_off, a.p.q_len, i, a.p.q_rows);
    const int64_t q0 = query.start;
    const int lq = query.n;
    for (int t0 = 0; t0 < lq; t0 += kBwdThreads) {
      const int n = min(kBwdThreads, lq - t0);
      __syncthreads();  // the previous chunk's indices are consumed
      if (static_cast<int>(threadIdx.x) < n) s_arg[threadIdx.x] = a.argmax[arg_index(a, q0 + t0 + threadIdx.x, j)];
      __syncthreads();
      if (k < a.p.hidden) {
        for (int tt = 0; tt < n; tt += kDdBatch) {
          int32_t u[kDdBatch];
          float x[kDdBatch], acc[kDdBatch];
          bool first[kDdBatch];  // the batch's first token on doc row u[e]: it holds that row's running value
#pragma unroll
          for (int e = 0; e < kDdBatch; ++e) {
            u[e] = tt + e < n ? s_arg[tt + e] : -1;
            x[e] = u[e] >= 0 ? cuda::load_float(q + (q0 + t0 + tt + e) * a.p.hidden + k) : 0.f;
            first[e] = u[e] >= 0;
#pragma unroll
            for (int f = 0; f < e; ++f) first[e] = first[e] && u[f] != u[e];
            acc[e] = first[e] ? a.dd[int64_t(u[e]) * a.p.hidden + k] : 0.f;
          }
#pragma unroll
          for (int e = 0; e < kDdBatch; ++e)
#pragma unroll
            for (int f = 0; f <= e; ++f)
              if (first[f] && u[f] == u[e]) acc[f] = fmaf(gij, x[e], acc[f]);
#pragma unroll
          for (int e = 0; e < kDdBatch; ++e)
            if (first[e]) a.dd[int64_t(u[e]) * a.p.hidden + k] = acc[e];
        }
      }
    }
  }
}

std::string check_problem(const char* fn, const MaxSimProblem& p) {
  const std::string where = std::string(fn) + ": ";
  if (p.hidden < 1) return where + "hidden size must be >= 1, got " + std::to_string(p.hidden);
  if (p.q_dtype != p.d_dtype) return where + "q and d must have the same dtype";
  if (p.nq < 0 || p.nd < 0)
    return where + "negative item count (nq=" + std::to_string(p.nq) + ", nd=" + std::to_string(p.nd) + ")";
  if (p.pairwise && p.nq != p.nd)
    return where + "pairwise needs nq == nd, got " + std::to_string(p.nq) + " and " + std::to_string(p.nd);
  if (p.nq > INT_MAX || p.nd > INT_MAX) return where + "nq and nd must be < 2^31";
  if (p.q_rows < 0 || p.q_rows > INT_MAX || p.d_rows < 0 || p.d_rows > INT_MAX)
    return where + "q_rows and d_rows must be in [0, 2^31), got " + std::to_string(p.q_rows) + " and " +
           std::to_string(p.d_rows);
  const int64_t pairs = p.pairwise ? p.nq : p.nq * p.nd;
  if (pairs > INT_MAX) return where + "too many (query, doc) pairs for one launch: " + std::to_string(pairs);
  if (pairs > 0 && (!p.q || !p.d || !p.q_off || !p.q_len || !p.d_off || !p.d_len))
    return where + "null q, d, offset or length pointer";
  return {};
}

// Launches tile kIndex, or the next index's launcher: the run-time tile picks one of the compiled shapes.
template <typename T, int kIndex = 0>
std::string launch_forward(const char* fn, int tile, const FwdArgs& a, int64_t blocks, cudaStream_t stream) {
  if constexpr (kIndex + 1 < kFwdTiles) {
    if (tile != kIndex) return launch_forward<T, kIndex + 1>(fn, tile, a, blocks, stream);
  }
  using C = FwdTile<T, kIndex>;
  auto kernel = maxsim_fwd_kernel<T, C>;
  cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::kSmemBytes));
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it so that a later launch_status does not report it
    return std::string(fn) + ": cudaFuncSetAttribute: " + cudaGetErrorString(e);
  }
  cuda::launch(kernel, static_cast<unsigned>(blocks), C::kThreads, C::kSmemBytes, stream, a);
  return cuda::launch_status(fn);
}

std::string check_tile(const char* fn, int tile) {
  if (tile < 0 || tile >= kFwdTiles)
    return std::string(fn) + ": tile must be in [0, " + std::to_string(kFwdTiles) + "), got " + std::to_string(tile);
  return {};
}

// The forward kernel's input errors for `blocks` blocks ("" if none), checked before a launcher touches its outputs
// or workspace: rows of a multiple of 16 bytes, 16-byte aligned q and d, at most INT_MAX blocks.
std::string forward_input_error(const char* fn, const MaxSimProblem& p, int64_t blocks) {
  return cuda::with_dtype(p.d_dtype, [&](auto tag) -> std::string {
    using T = cuda::Elem<decltype(tag)::value>;
    if ((p.hidden * int64_t(sizeof(T))) % 16 != 0)
      return std::string(fn) + ": hidden size " + std::to_string(p.hidden) + " gives rows of " +
             std::to_string(p.hidden * sizeof(T)) + " bytes; rows must be a multiple of 16 bytes (H % " +
             std::to_string(16 / sizeof(T)) + " == 0): pad H with zeros";
    if (!cuda::aligned16(p.q) || !cuda::aligned16(p.d)) return std::string(fn) + ": q and d must be 16-byte aligned";
    if (blocks > INT_MAX) return std::string(fn) + ": too many blocks for one launch: " + std::to_string(blocks);
    return {};
  });
}

// Launches `blocks` blocks of tile `tile` for the inputs' dtype (forward_input_error checked).
std::string launch_checked_forward(const char* fn, int tile, const FwdArgs& a, int64_t blocks, cudaStream_t stream) {
  return cuda::with_dtype(a.p.d_dtype, [&](auto tag) -> std::string {
    return launch_forward<cuda::Elem<decltype(tag)::value>>(fn, tile, a, blocks, stream);
  });
}


}  // namespace

std::string maxsim_forward_cuda(const MaxSimProblem& p, float* scores, int32_t* argmax, cudaStream_t stream,
                                int tile) {
  constexpr const char* kFn = "maxsim_forward_cuda";
  std::string err = check_problem(kFn, p);
  if (err.empty()) err = check_tile(kFn, tile);
  if (!err.empty()) return err;
  if (kFwdTileShapes[tile].qrows != 32)
    return std::string(kFn) + ": tile " + std::to_string(tile) + " has " + std::to_string(kFwdTileShapes[tile].qrows) +
           " query rows: row blocks only (maxsim_forward_rows_cuda)";
  const int64_t pairs = p.pairwise ? p.nq : p.nq * p.nd;
  if (pairs == 0) return {};
  if (!scores) return std::string(kFn) + ": null scores pointer";
  err = forward_input_error(kFn, p, pairs);
  if (!err.empty()) return err;
  const FwdArgs a{p, scores, argmax, nullptr, nullptr, 0, nullptr, nullptr};
  return launch_checked_forward(kFn, tile, a, pairs, stream);
}

// Row-block workspace: rowmax [total_q, nd] fp32, then q_seg [total_q] int32.
size_t maxsim_forward_rows_cuda_workspace_bytes(int64_t total_q, int64_t nd) {
  if (total_q <= 0 || nd <= 0) return 0;
  return round_up16(size_t(total_q) * size_t(nd) * sizeof(float)) + round_up16(size_t(total_q) * sizeof(int32_t));
}

std::string maxsim_forward_rows_cuda(const MaxSimProblem& p, float* scores, int32_t* argmax, void* workspace,
                                     cudaStream_t stream, int tile) {
  constexpr const char* kFn = "maxsim_forward_rows_cuda";
  std::string err = check_problem(kFn, p);
  if (err.empty()) err = check_tile(kFn, tile);
  if (!err.empty()) return err;
  if (p.pairwise) return std::string(kFn) + ": row blocks score all pairs; pairwise goes to maxsim_forward_cuda";
  const int64_t total_q = p.q_rows;
  const int64_t pairs = p.nq * p.nd;
  if (pairs == 0) return {};
  if (!scores) return std::string(kFn) + ": null scores pointer";
  if (total_q == 0) {  // no query rows: every score is an empty sum
    (void)cudaMemsetAsync(scores, 0, size_t(pairs) * sizeof(float), stream);
    return cuda::launch_status(kFn);
  }
  if (!workspace) return std::string(kFn) + ": null workspace pointer";
  const int64_t num_m = ceil_div(total_q, kFwdTileShapes[tile].qrows);
  err = forward_input_error(kFn, p, num_m * p.nd);
  if (!err.empty()) return err;
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  float* rowmax = reinterpret_cast<float*>(ws);
  int32_t* q_seg = reinterpret_cast<int32_t*>(ws + round_up16(size_t(total_q) * size_t(p.nd) * sizeof(float)));
  (void)cudaMemsetAsync(q_seg, 0xff, size_t(total_q) * sizeof(int32_t), stream);  // -1: in no query
  cuda::launch(segment_ids_kernel, static_cast<unsigned>(p.nq), kSegThreads, 0, stream, p.q_off, p.q_len, total_q,
               q_seg);
  err = cuda::launch_status("maxsim_forward_rows_cuda (segment ids)");
  if (!err.empty()) return err;
  const FwdArgs a{p, scores, argmax, rowmax, q_seg, num_m, nullptr, nullptr};
  err = launch_checked_forward(kFn, tile, a, num_m * p.nd, stream);
  if (!err.empty()) return err;
  cuda::launch(segment_sum_kernel, static_cast<unsigned>(ceil_div(pairs, kSumThreads)), kSumThreads, 0, stream,
               rowmax, p.q_off, p.q_len, total_q, pairs, p.nd, scores);
  return cuda::launch_status("maxsim_forward_rows_cuda (segment sums)");
}

// Token-tile workspace: keys [total_q, nd] uint64, then d_seg [total_d] int32.
size_t maxsim_forward_tokens_cuda_workspace_bytes(int64_t total_q, int64_t nd, int64_t total_d) {
  if (total_q <= 0 || nd <= 0) return 0;
  return round_up16(size_t(total_q) * size_t(nd) * sizeof(unsigned long long)) +
         round_up16(size_t(std::max<int64_t>(total_d, 0)) * sizeof(int32_t));
}

std::string maxsim_forward_tokens_cuda(const MaxSimProblem& p, float* scores, int32_t* argmax, void* workspace,
                                       cudaStream_t stream, int tile) {
  constexpr const char* kFn = "maxsim_forward_tokens_cuda";
  std::string err = check_problem(kFn, p);
  if (err.empty()) err = check_tile(kFn, tile);
  if (!err.empty()) return err;
  if (p.pairwise) return std::string(kFn) + ": token tiles score all pairs; pairwise goes to maxsim_forward_cuda";
  const int64_t pairs = p.nq * p.nd;
  if (pairs == 0) return {};
  if (!scores) return std::string(kFn) + ": null scores pointer";
  if (p.q_rows == 0) {  // no query rows: every score is an empty sum
    (void)cudaMemsetAsync(scores, 0, size_t(pairs) * sizeof(float), stream);
    return cuda::launch_status(kFn);
  }
  if (!workspace) return std::string(kFn) + ": null workspace pointer";
  const FwdTileShape& shape = kFwdTileShapes[tile];
  const int64_t num_m = ceil_div(p.q_rows, shape.qrows);
  const int64_t blocks = num_m * ceil_div(p.d_rows, fwd_tile_doc_cols(shape));
  err = forward_input_error(kFn, p, blocks);
  if (!err.empty()) return err;
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  const size_t keys_bytes = size_t(p.q_rows) * size_t(p.nd) * sizeof(unsigned long long);
  auto* keys = reinterpret_cast<unsigned long long*>(ws);
  (void)cudaMemsetAsync(keys, 0, keys_bytes, stream);  // 0: no doc token seen yet
  if (p.d_rows > 0) {
    int32_t* d_seg = reinterpret_cast<int32_t*>(ws + round_up16(keys_bytes));
    (void)cudaMemsetAsync(d_seg, 0xff, size_t(p.d_rows) * sizeof(int32_t), stream);  // -1: in no doc
    cuda::launch(segment_ids_kernel, static_cast<unsigned>(p.nd), kSegThreads, 0, stream, p.d_off, p.d_len, p.d_rows,
                 d_seg);
    err = cuda::launch_status("maxsim_forward_tokens_cuda (segment ids)");
    if (!err.empty()) return err;
    const FwdArgs a{p, scores, argmax, nullptr, nullptr, num_m, keys, d_seg};
    err = launch_checked_forward(kFn, tile, a, blocks, stream);
    if (!err.empty()) return err;
  }
  cuda::launch(token_sum_kernel, static_cast<unsigned>(ceil_div(pairs, kSumThreads)), kSumThreads, 0, stream, keys,
               p.q_off, p.q_len, p.q_rows, pairs, p.nd, scores, argmax);
  return cuda::launch_status("maxsim_forward_tokens_cuda (sums)");
}

std::string maxsim_backward_cuda(const MaxSimProblem& p, const float* grad, const int32_t* argmax, float* dq,
                                 float* dd, bool deterministic, cudaStream_t stream) {
  constexpr const char* kFn = "maxsim_backward_cuda";
  std::string err = check_problem(kFn, p);
  if (!err.empty()) return err;
  const int64_t pairs = p.pairwise ? p.nq : p.nq * p.nd;
  if (pairs == 0) return {};
  if (!grad || !argmax || !dq || !dd) return std::string(kFn) + ": null grad, argmax, dq or dd pointer";
  const int64_t col_blocks = ceil_div(p.hidden, kBwdThreads);
  if (col_blocks > 65535) return std::string(kFn) + ": hidden size too large: " + std::to_string(p.hidden);
  return cuda::with_dtype(p.d_dtype, [&](auto tag) -> std::string {
    using T = cuda::Elem<decltype(tag)::value>;
    const BwdArgs a{p, grad, argmax, dq, dd};
    // Vector steps on rows of a multiple of 16 bytes (the forward's layout; fp32 dq / dd rows then too).
    const bool vector = (p.hidden * int64_t(sizeof(T))) % 16 == 0 && cuda::aligned16(p.q) && cuda::aligned16(p.d) &&
                        cuda::aligned16(dq) && cuda::aligned16(dd);
    constexpr int kVec = 16 / sizeof(T);
    const dim3 dq_grid(static_cast<unsigned>(p.nq), kDqTokenSplit);
    if (vector) {
      cuda::launch(maxsim_dq_kernel<T, kVec>, dq_grid, kBwdThreads, 0, stream, a);
    } else {
      cuda::launch(maxsim_dq_kernel<T, 1>, dq_grid, kBwdThreads, 0, stream, a);
    }
    std::string e = cuda::launch_status("maxsim_backward_cuda (dq)");
    if (!e.empty()) return e;
    if (deterministic) {
      const dim3 grid(static_cast<unsigned>(p.nd), static_cast<unsigned>(col_blocks));
      cuda::launch(maxsim_dd_ordered_kernel<T>, grid, kBwdThreads, 0, stream, a);
    } else {
      const dim3 grid(static_cast<unsigned>(pairs), kDdTokenSplit);
      if (vector) {
        cuda::launch(maxsim_dd_atomic_kernel<T, 4>, grid, kBwdThreads, 0, stream, a);
      } else {
        cuda::launch(maxsim_dd_atomic_kernel<T, 1>, grid, kBwdThreads, 0, stream, a);
      }
    }
    return cuda::launch_status("maxsim_backward_cuda (dd)");
  });
}

}  // namespace m3k
