// Device and launch helpers shared by the CUDA kernels (nvcc only; no torch headers).
//   * Elem<DType>      : the CUDA element type of a dtype code (float, __half, __nv_bfloat16).
//   * load_float       : one element as fp32; load_floats: V consecutive elements with one load.
//   * atomic_add_floats: V consecutive float atomics (one vector atomic on sm_90+).
//   * cp_async_16 & co : sm_80 asynchronous global -> shared copies (cp.async.cg, zero-fill).
//   * ldmatrix_x4      : four 8x8 16-bit matrices shared -> registers (the MMA fragment layout).
//   * mma_16816        : one m16n8k16 tensor-core MMA (fp16 / bf16 inputs, fp32 accumulators).
//   * launch           : kernel<<<grid, block, smem, stream>>>(args...) as a function call.
//   * M3K_DYNAMIC_SMEM : the declaration of a kernel's dynamic shared memory.
//   * launch_status    : the error of the last launch as a message ("" on success).
// With -DM3K_CUDA_EMU (g++, csrc/emu/include first on the include path) the same kernels build for the host
// emulation of csrc/emu/cuda_emu.h, which stands in for the inline PTX below.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "common/dtype.h"

// Declares `name` as the kernel's dynamic shared memory (unsigned char[], 16-byte aligned).
#ifdef M3K_CUDA_EMU
#define M3K_DYNAMIC_SMEM(name) unsigned char* name = ::m3k::emu::running()->smem.get()
#else
#define M3K_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace m3k {
namespace cuda {

template <DType D> struct ElemOf;
template <> struct ElemOf<DType::F32> { using type = float; };
template <> struct ElemOf<DType::F16> { using type = __half; };
template <> struct ElemOf<DType::BF16> { using type = __nv_bfloat16; };
template <DType D> using Elem = typename ElemOf<D>::type;

__device__ __forceinline__ float load_float(const float* p) { return *p; }
__device__ __forceinline__ float load_float(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_float(const __nv_bfloat16* p) { return __bfloat162float(*p); }

// The unsigned word of 2, 4, 8 or 16 bytes: one load instruction.
template <int kBytes> struct WordOf;
template <> struct WordOf<2> { using type = unsigned short; };
template <> struct WordOf<4> { using type = unsigned; };
template <> struct WordOf<8> { using type = uint2; };
template <> struct WordOf<16> { using type = uint4; };

// V consecutive elements from p (aligned to V * sizeof(T) bytes) as fp32, read with one load.
template <int V, typename T>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[V]) {
  using W = typename WordOf<V * static_cast<int>(sizeof(T))>::type;
  const W raw = *reinterpret_cast<const W*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = load_float(e + i);
}

// p[i] += v[i] for i < V with float atomics: on sm_90+ one vector atomic for V = 2 or 4 (p aligned to 4 V bytes).
template <int V>
__device__ __forceinline__ void atomic_add_floats(float* p, const float (&v)[V]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (V == 4) {
    atomicAdd(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
    return;
  } else if constexpr (V == 2) {
    atomicAdd(reinterpret_cast<float2*>(p), make_float2(v[0], v[1]));
    return;
  } else
#endif
  {
#pragma unroll
    for (int i = 0; i < V; ++i) atomicAdd(p + i, v[i]);
  }
}

// 16 bytes global -> shared, bypassing L1; with valid == false the 16 shared bytes are zero-filled and
// nothing is read (src must still be a valid address). kPrefetch = 256: the hint .L2::256B, which brings the
// aligned 256 bytes around src into L2 (a copy loop reading 128 B of a row per step then reads DRAM in 256 B runs).
template <int kPrefetch = 0>
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
  static_assert(kPrefetch == 0 || kPrefetch == 256, "prefetch: 0 or 256 bytes");
#ifdef M3K_CUDA_EMU
  emu::cp_async_16(smem_dst, gmem_src, valid);
#else
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? 16 : 0;
  if constexpr (kPrefetch == 256) {
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src),
                 "r"(src_bytes)
                 : "memory");
  } else {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes)
                 : "memory");
  }
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifdef M3K_CUDA_EMU
  emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef M3K_CUDA_EMU
  emu::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Four 8x8 matrices of 16-bit elements from shared memory, one warp: lane 8 * i + r gives the address of row r
// of matrix i (16 bytes, 16-byte aligned); lane l receives in r[i] the two elements (row l / 4, columns
// 2 * (l % 4), + 1) of matrix i, which is how mma_16816 below lays out its a and b fragments.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
#ifdef M3K_CUDA_EMU
  emu::ldmatrix_x4(r, smem_row);
#else
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

// acc[16x8] += A[16x16] (row-major fragment a) * B[16x8] (column-major fragment b). Fragment layouts
// (PTX ISA, "Matrix Fragments for mma.m16n8k16"), g = lane / 4, t = lane % 4:
//   a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..2t+1]   a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]   b[1] = B[2t+8..2t+9][g]
//   acc[0..1] = C[g][2t..2t+1]   acc[2..3] = C[g+8][2t..2t+1]
template <typename T>
__device__ __forceinline__ void mma_16816(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(sizeof(T) == 2, "mma_16816 takes fp16 or bf16 operands");
#if defined(M3K_CUDA_EMU)
  emu::mma_16816<T>(acc, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  __trap();  // the kernels are only built for sm_80+
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...); the emulation runs the kernel's blocks in turn instead.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
#ifdef M3K_CUDA_EMU
  (void)stream;
  emu::launch(kernel, grid, block, smem, std::forward<A>(args)...);
#else
  kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
#endif
}

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// "" when the last launch succeeded, else "<what>: <CUDA error name>: <CUDA message>".
inline std::string launch_status(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return {};
  return std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// bytes rounded up to a multiple of 16 (workspace carving: every part 16-byte aligned).
constexpr size_t round_up16(size_t bytes) { return (bytes + 15) / 16 * 16; }

// Calls fn(std::integral_constant<DType, D>{}) for the dtype code; "" on success, else the error.
template <typename Fn>
std::string with_dtype(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::F32: return fn(std::integral_constant<DType, DType::F32>{});
    case DType::F16: return fn(std::integral_constant<DType, DType::F16>{});
    case DType::BF16: return fn(std::integral_constant<DType, DType::BF16>{});
  }
  return "unsupported dtype code " + std::to_string(static_cast<int>(dt)) + " (0 = fp32, 1 = fp16, 2 = bf16)";
}

}  // namespace cuda
}  // namespace m3k
