// Host emulation of the CUDA subset that the kernels in csrc/ use, so that a machine without a GPU runs them:
// tests/cuda_emu.py compiles the real .cu sources with g++ -DM3K_CUDA_EMU and csrc/emu/include first on the
// include path (its cuda_runtime.h, cuda_fp16.h, cub/... lead here), into a build of m3kernels._C whose CUDA
// backend takes CPU tensors; `.ci/run` runs the CUDA backend's tests on it.
//
// A launch runs its blocks one after another on the calling thread. The threads of a block are fibers (ucontext)
// switched only where a thread waits: at __syncthreads and at the warp-wide operations (__shfl_xor_sync, and the
// ldmatrix / mma of cuda_utils.cuh), which exchange the lanes' operands through a per-warp buffer. Nothing
// preempts a thread, so atomics are plain read-modify-writes.
//
// Checked on the way, as a GPU would fail or misbehave:
//   * a cp.async copy garbles its destination when issued and lands only at the cp.async.wait_group that covers
//     it: a stage read before its wait, or still being read by another thread when a copy into it is issued,
//     holds garbage; the addresses must be 16-byte aligned and inside the dynamic shared memory;
//   * dynamic shared memory starts each block as a 0xA5 byte pattern, not zeros;
//   * a launch needs a valid configuration, and its dynamic shared memory must not exceed the kernel's
//     cudaFuncAttributeMaxDynamicSharedMemorySize (48 KiB unless raised; at most 227 KiB, sm_90's limit);
//   * a barrier that some thread of the block (or warp) never reaches ends the launch with an error instead of
//     hanging, as does a warp-wide operation in a partial warp, with a partial mask, or with lanes at different
//     warp-wide operations.
// Not emulated: timing; the tensor cores' internal rounding (the emulated mma sums exact products in fp32 in k
// order); other races between threads that a barrier would have to order (fibers run in a fixed order); static
// __shared__ variables start as zeros and keep their values from block to block (a GPU leaves them undefined);
// threads that exit before a __syncthreads others wait at count as a deadlock (a GPU releases the barrier);
// concurrency between blocks.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/dtype.h"

#if defined(__SANITIZE_ADDRESS__)  // tests/cuda_emu.py --asan: tell AddressSanitizer about every stack switch
#include <sanitizer/common_interface_defs.h>
#define M3K_EMU_START_SWITCH(bottom, size) __sanitizer_start_switch_fiber(nullptr, bottom, size)
#define M3K_EMU_FINISH_SWITCH(bottom, size) __sanitizer_finish_switch_fiber(nullptr, bottom, size)
#else
#define M3K_EMU_START_SWITCH(bottom, size) ((void)(bottom), (void)(size))
#define M3K_EMU_FINISH_SWITCH(bottom, size) ((void)(bottom), (void)(size))
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __restrict__ __restrict
#define __shared__ static  // one block runs at a time: a static local is the running block's shared memory

using std::isnan;  // the CUDA math functions the kernels call unqualified
using std::max;
using std::min;

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) { return m3k::half_to_float(h.bits); }
inline float __bfloat162float(__nv_bfloat16 h) { return m3k::bf16_to_float(h.bits); }

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace m3k::emu {

constexpr int kWarpSize = 32;
constexpr size_t kDefaultDynamicSmem = 48 * 1024;
constexpr size_t kMaxDynamicSmem = 227 * 1024;
constexpr size_t kStackBytes = 256 * 1024;

struct Copy {
  void* dst;
  const void* src;
  bool valid;
};

struct Barrier {
  int arrived = 0;
  uint64_t generation = 0;
};

struct Fiber {
  ucontext_t ctx;
  dim3 tid;
  int warp = 0, lane = 0;
  bool done = false;
  std::vector<Copy> open;                // cp.async copies since the last commit
  std::deque<std::vector<Copy>> groups;  // committed groups not yet waited for
};

enum class WarpOp { kShuffle, kLdmatrix, kMma };

struct Warp {
  int lanes = 0;
  Barrier bar;
  WarpOp op[kWarpSize];                            // the warp-wide operation each lane is at
  alignas(16) unsigned char slot[kWarpSize][64];  // each lane's operands of that operation
};

struct Launch {
  dim3 grid, block, bid;
  std::function<void()> body;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  Barrier block_bar;
  size_t smem_bytes = 0;
  std::unique_ptr<unsigned char[]> smem;
  std::unique_ptr<char[]> stacks;
  ucontext_t scheduler;
  const void* scheduler_stack = nullptr;  // for AddressSanitizer's stack switches
  size_t scheduler_stack_size = 0;
  size_t current = 0;
  uint64_t progress = 0;  // barrier arrivals and finished threads: a pass without any is a deadlock
  std::string failure;
};

inline Launch*& running() {
  static Launch* launch = nullptr;
  return launch;
}
inline Fiber& self() { return running()->fibers[running()->current]; }
inline cudaError_t& last_error() {
  static cudaError_t error = cudaSuccess;
  return error;
}
inline std::string& last_failure() {
  static std::string message;
  return message;
}
inline std::map<const void*, size_t>& dynamic_smem_limits() {
  static std::map<const void*, size_t> limits;
  return limits;
}

inline dim3 thread_index() { return self().tid; }

// Ends the launch: the calling thread never resumes and the launch reports cudaErrorLaunchFailure.
[[noreturn]] inline void fail(const std::string& why) {
  Launch* l = running();
  const Fiber& f = self();
  if (l->failure.empty())
    l->failure = why + " (block " + std::to_string(l->bid.x) + "," + std::to_string(l->bid.y) + "," +
                 std::to_string(l->bid.z) + ", thread " + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) +
                 "," + std::to_string(f.tid.z) + ")";
  self().done = true;
  M3K_EMU_START_SWITCH(l->scheduler_stack, l->scheduler_stack_size);
  setcontext(&l->scheduler);
  std::abort();
}

inline void yield() {
  Launch* l = running();
  M3K_EMU_START_SWITCH(l->scheduler_stack, l->scheduler_stack_size);
  swapcontext(&self().ctx, &l->scheduler);
  M3K_EMU_FINISH_SWITCH(&l->scheduler_stack, &l->scheduler_stack_size);
}

inline void arrive_and_wait(Barrier& b, int participants) {
  ++running()->progress;
  const uint64_t generation = b.generation;
  if (++b.arrived == participants) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  while (b.generation == generation) yield();
}

inline void sync_block() { arrive_and_wait(running()->block_bar, static_cast<int>(running()->fibers.size())); }

// The warp-wide exchange: every lane publishes `bytes` of operands, then `read` runs once all lanes have, with
// the warp's slots; a second barrier keeps the slots until every lane has read them.
template <typename Read>
void warp_exchange(WarpOp op, const void* mine, size_t bytes, unsigned mask, Read&& read) {
  Warp& w = running()->warps[self().warp];
  if (w.lanes != kWarpSize || mask != 0xffffffffu) fail("warp-wide operation without a full warp and mask");
  w.op[self().lane] = op;
  std::memcpy(w.slot[self().lane], mine, bytes);
  arrive_and_wait(w.bar, w.lanes);
  for (int l = 0; l < kWarpSize; ++l)
    if (w.op[l] != op) fail("lanes of a warp at different warp-wide operations (divergent warp)");
  read(static_cast<const Warp&>(w));
  arrive_and_wait(w.bar, w.lanes);
}

template <typename T>
T shfl_xor(unsigned mask, T value, int lane_mask, int width) {
  static_assert(sizeof(T) <= sizeof(Warp::slot[0]), "operand too large");
  if (width != kWarpSize || lane_mask < 0 || lane_mask >= kWarpSize) fail("__shfl_xor_sync: unsupported lane mask");
  T out;
  const int lane = self().lane;
  warp_exchange(WarpOp::kShuffle, &value, sizeof value, mask,
                [&](const Warp& w) { std::memcpy(&out, w.slot[lane ^ lane_mask], sizeof out); });
  return out;
}

inline bool in_dynamic_smem(const void* p, size_t bytes) {
  const Launch* l = running();
  const unsigned char* c = static_cast<const unsigned char*>(p);
  return c >= l->smem.get() && c + bytes <= l->smem.get() + l->smem_bytes;
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline void cp_async_16(void* dst, const void* src, bool valid) {
  if (!aligned16(dst) || !aligned16(src)) fail("cp.async: address not 16-byte aligned");
  if (!in_dynamic_smem(dst, 16)) fail("cp.async: destination outside the dynamic shared memory");
  if (valid) {  // the source must be readable now (AddressSanitizer, if on, reports the kernel's line here)
    unsigned char probe[16];
    std::memcpy(probe, src, 16);
  }
  std::memset(dst, 0xA5, 16);  // in flight: a thread still reading the old contents there sees garbage
  self().open.push_back({dst, src, valid});
}

inline void cp_async_commit() {
  Fiber& f = self();
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}

inline void cp_async_wait(int pending) {
  Fiber& f = self();
  while (static_cast<int>(f.groups.size()) > pending) {
    for (const Copy& c : f.groups.front()) {
      if (c.valid) {
        std::memcpy(c.dst, c.src, 16);
      } else {
        std::memset(c.dst, 0, 16);
      }
    }
    f.groups.pop_front();
  }
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lane 8 i + r names row r of matrix i; lane l receives in r[i] the
// 32 bits at columns 2 (l % 4), + 1 of row l / 4 of matrix i.
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  if (!aligned16(row) || !in_dynamic_smem(row, 16)) fail("ldmatrix: row not 16-byte aligned in shared memory");
  const int lane = self().lane;
  warp_exchange(WarpOp::kLdmatrix, &row, sizeof row, 0xffffffffu, [&](const Warp& w) {
    for (int i = 0; i < 4; ++i) {
      const unsigned char* src;
      std::memcpy(&src, w.slot[8 * i + lane / 4], sizeof src);
      std::memcpy(&r[i], src + 4 * (lane % 4), 4);
    }
  });
}

template <typename T>
float element(uint32_t word, int high) {
  const uint16_t bits = static_cast<uint16_t>(high ? word >> 16 : word & 0xffffu);
  if constexpr (std::is_same_v<T, __half>) {
    return half_to_float(bits);
  } else {
    return bf16_to_float(bits);
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: the fragment layout of cuda_utils.cuh's mma_16816.
template <typename T>
void mma_16816(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  struct Fragments {
    uint32_t a[4], b[2];
  };
  const Fragments mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  const int lane = self().lane, g = lane / 4, t = lane % 4;
  warp_exchange(WarpOp::kMma, &mine, sizeof mine, 0xffffffffu, [&](const Warp& w) {
    auto of = [&](int l) {
      Fragments f;
      std::memcpy(&f, w.slot[l], sizeof f);
      return f;
    };
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      float sum = 0.f;
      for (int k = 0; k < 16; ++k) {
        const float x = element<T>(of((row % 8) * 4 + (k % 8) / 2).a[row / 8 + 2 * (k / 8)], k % 2);
        const float y = element<T>(of(col * 4 + (k % 8) / 2).b[k / 8], k % 2);
        sum += x * y;
      }
      acc[i] += sum;
    }
  });
}

inline void fiber_main() {
  Launch* l = running();
  M3K_EMU_FINISH_SWITCH(&l->scheduler_stack, &l->scheduler_stack_size);
  l->body();
  self().done = true;
  ++l->progress;
  M3K_EMU_START_SWITCH(l->scheduler_stack, l->scheduler_stack_size);
}  // returning resumes uc_link: the scheduler

// Runs thread i of the block until it waits or ends (kept out of line: swapcontext returns twice).
[[gnu::noinline]] inline void resume(Launch& l, size_t i) {
  M3K_EMU_START_SWITCH(l.stacks.get() + i * kStackBytes, kStackBytes);
  swapcontext(&l.scheduler, &l.fibers[i].ctx);
  M3K_EMU_FINISH_SWITCH(nullptr, nullptr);
}

inline void run_block(Launch& l) {
  std::memset(l.smem.get(), 0xA5, l.smem_bytes);
  l.block_bar = {};
  for (Warp& w : l.warps) w.bar = {};
  for (size_t i = 0; i < l.fibers.size(); ++i) {
    Fiber& f = l.fibers[i];
    f.done = false;
    f.open.clear();
    f.groups.clear();
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = l.stacks.get() + i * kStackBytes;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &l.scheduler;
    makecontext(&f.ctx, fiber_main, 0);
  }
  for (;;) {
    const uint64_t before = l.progress;
    bool live = false;
    for (size_t i = 0; i < l.fibers.size(); ++i) {
      if (l.fibers[i].done) continue;
      live = true;
      l.current = i;
      resume(l, i);
      if (!l.failure.empty()) return;
    }
    if (!live) return;
    if (l.progress == before) {
      l.failure = "deadlock: threads of block " + std::to_string(l.bid.x) + "," + std::to_string(l.bid.y) + "," +
                  std::to_string(l.bid.z) + " wait at a barrier that others never reach";
      return;
    }
  }
}

template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A&&... args) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > INT_MAX || grid.y > 65535 || grid.z > 65535 ||
      threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
    last_error() = cudaErrorInvalidConfiguration;
    return;
  }
  const auto limit = dynamic_smem_limits().find(reinterpret_cast<const void*>(kernel));
  if (smem > (limit == dynamic_smem_limits().end() ? kDefaultDynamicSmem : limit->second)) {
    last_error() = cudaErrorInvalidValue;
    return;
  }
  Launch l;
  l.grid = grid;
  l.block = block;
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  l.body = [&] { std::apply(kernel, params); };
  l.fibers.resize(threads);
  l.warps.resize((threads + kWarpSize - 1) / kWarpSize);
  for (size_t i = 0; i < threads; ++i) {
    Fiber& f = l.fibers[i];
    f.tid = dim3(static_cast<unsigned>(i % block.x), static_cast<unsigned>(i / block.x % block.y),
                 static_cast<unsigned>(i / (uint64_t(block.x) * block.y)));
    f.warp = static_cast<int>(i / kWarpSize);
    f.lane = static_cast<int>(i % kWarpSize);
    ++l.warps[f.warp].lanes;
  }
  l.smem_bytes = smem;
  l.smem.reset(new unsigned char[std::max<size_t>(smem, 1)]);
  l.stacks.reset(new char[threads * kStackBytes]);
  Launch* outer = running();
  running() = &l;
  for (unsigned z = 0; z < grid.z && l.failure.empty(); ++z)
    for (unsigned y = 0; y < grid.y && l.failure.empty(); ++y)
      for (unsigned x = 0; x < grid.x && l.failure.empty(); ++x) {
        l.bid = dim3(x, y, z);
        run_block(l);
      }
  running() = outer;
  if (!l.failure.empty()) {
    last_error() = cudaErrorLaunchFailure;
    last_failure() = l.failure;
  }
}

}  // namespace m3k::emu

#define threadIdx (::m3k::emu::thread_index())
#define blockIdx (::m3k::emu::running()->bid)
#define blockDim (::m3k::emu::running()->block)
#define gridDim (::m3k::emu::running()->grid)

inline void __syncthreads() { m3k::emu::sync_block(); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = m3k::emu::kWarpSize) {
  return m3k::emu::shfl_xor(mask, value, lane_mask, width);
}

inline float atomicAdd(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}
inline long long atomicMin(long long* p, long long v) {
  const long long old = *p;
  *p = std::min(old, v);
  return old;
}
inline long long atomicMax(long long* p, long long v) {
  const long long old = *p;
  *p = std::max(old, v);
  return old;
}
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
  const unsigned long long old = *p;
  *p = std::max(old, v);
  return old;
}
inline unsigned __float_as_uint(float x) {
  unsigned u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
}
inline float __uint_as_float(unsigned u) {
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
[[noreturn]] inline void __trap() { m3k::emu::fail("__trap()"); }

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = m3k::emu::last_error();
  m3k::emu::last_error() = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}
// The emulation's launch failures carry what failed, where.
inline const char* cudaGetErrorString(cudaError_t e) {
  if (e == cudaErrorLaunchFailure) return m3k::emu::last_failure().c_str();
  return e == cudaSuccess ? "no error" : "invalid argument or launch configuration (emulated)";
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > m3k::emu::kMaxDynamicSmem)
    return cudaErrorInvalidValue;
  m3k::emu::dynamic_smem_limits()[reinterpret_cast<const void*>(kernel)] = static_cast<size_t>(value);
  return cudaSuccess;
}
