#include <omp.h>

#include "bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "m3kernels compiled kernels (C++ CPU kernels; CUDA kernels when built with M3K_WITH_CUDA)";
  m.attr("abi_version") = kAbiVersion;
  bind_maxsim(m);
  bind_sparse(m);
#ifdef M3K_WITH_CUDA
  bind_cuda(m);
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
#ifdef M3K_CUDA_EMU
  m.attr("cuda_emulated") = true;  // CUDA kernels built for the host emulation (csrc/emu): they take host memory
#else
  m.attr("cuda_emulated") = false;
#endif
#if defined(__AVX512F__)
  m.attr("simd") = "avx512";
#elif defined(__AVX2__)
  m.attr("simd") = "avx2";
#else
  m.attr("simd") = "generic";
#endif
  m.attr("openmp_max_threads") = omp_get_max_threads();
}
