// Portable SIMD vectors for the CPU kernels (GCC / Clang vector extensions): as wide as the target's registers
// (16 floats with AVX-512, 8 with AVX, 4 otherwise), so that the micro-kernels' accumulators stay in registers.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "common/dtype.h"

namespace m3k {

#if defined(__AVX512F__)
constexpr int VW = 16;
#elif defined(__AVX__)
constexpr int VW = 8;
#else
constexpr int VW = 4;
#endif
typedef float vf __attribute__((vector_size(VW * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VW * sizeof(int32_t))));

typedef uint16_t vu16 __attribute__((vector_size(VW * sizeof(uint16_t))));
typedef uint32_t vu32 __attribute__((vector_size(VW * sizeof(uint32_t))));

// VW consecutive elements of p, converted to fp32 (p need not be aligned). The 16-bit conversions are whole-vector
// operations (bf16: widen + shift; fp16: the F16C / AVX-512 vcvtph2ps), not VW scalar conversions.
template <typename T>
inline vf load_vf(const T* p) {
  vf v;
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(&v, p, sizeof v);
  } else if constexpr (std::is_same_v<T, Bf16>) {
    vu16 bits;
    std::memcpy(&bits, p, sizeof bits);
    const vu32 wide = __builtin_convertvector(bits, vu32) << 16;
    std::memcpy(&v, &wide, sizeof v);
  } else {
#if defined(__AVX512F__)  // VW == 16
    v = reinterpret_cast<vf>(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#elif defined(__AVX__) && defined(__F16C__)  // VW == 8
    v = reinterpret_cast<vf>(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#elif !defined(__AVX__) && defined(__F16C__)  // VW == 4
    v = reinterpret_cast<vf>(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
    for (int i = 0; i < VW; ++i) v[i] = to_float(p[i]);
#endif
  }
  return v;
}

inline float hsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < VW; ++i) s += v[i];
  return s;
}

}  // namespace m3k
