// Portable SIMD vectors for the CPU kernels (GCC / Clang vector extensions): as wide as the target's registers
// (16 floats with AVX-512, 8 with AVX, 4 otherwise), so that the micro-kernels' accumulators stay in registers.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

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

// VW consecutive elements of p, converted to fp32 (p need not be aligned).
template <typename T>
inline vf load_vf(const T* p) {
  vf v;
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(&v, p, sizeof v);
  } else {
    for (int i = 0; i < VW; ++i) v[i] = to_float(p[i]);
  }
  return v;
}

inline float hsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < VW; ++i) s += v[i];
  return s;
}

}  // namespace m3k
