// Element types shared by the CPU and CUDA kernels. Values match m3kernels/_native.py (DTYPE_CODES).
#pragma once
#include <cstdint>
#include <cstring>

namespace m3k {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// Host-side conversions (CUDA kernels use the cuda_fp16 / cuda_bf16 intrinsics instead).
inline float bf16_to_float(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float half_to_float(uint16_t h) {
#if defined(__FLT16_MANT_DIG__) && !defined(__CUDACC__)
  _Float16 f;  // hardware conversion (F16C / AVX512-FP16) where the compiler supports _Float16
  std::memcpy(&f, &h, sizeof f);
  return static_cast<float>(f);
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {  // inf / nan
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {  // normal
    u = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {  // zero
    u = sign;
  } else {  // subnormal: renormalise
    exp = 113;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    u = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

struct Bf16 { uint16_t bits; };
struct Half { uint16_t bits; };

inline float to_float(float x) { return x; }
inline float to_float(Bf16 x) { return bf16_to_float(x.bits); }
inline float to_float(Half x) { return half_to_float(x.bits); }

// Calls fn(T{}) with T the C++ type of `dt`; used to instantiate a templated kernel per dtype.
template <typename Fn>
void dispatch_dtype(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::F32: fn(float{}); break;
    case DType::F16: fn(Half{}); break;
    case DType::BF16: fn(Bf16{}); break;
  }
}

}  // namespace m3k
