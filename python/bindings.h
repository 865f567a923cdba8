// Shared helpers of the pybind11 module m3kernels._C. Tensors cross the boundary as raw addresses (ints)
// that m3kernels/_native.py takes from already-validated, contiguous torch tensors.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

#include "maxsim/maxsim.h"

namespace py = pybind11;

template <typename T>
inline T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// The MaxSimProblem of the argument list shared by the CPU and CUDA MaxSim bindings.
inline m3k::MaxSimProblem maxsim_problem(uintptr_t q, int q_dtype, uintptr_t d, int d_dtype, int64_t hidden,
                                         uintptr_t q_off, uintptr_t q_len, int64_t nq, uintptr_t d_off,
                                         uintptr_t d_len, int64_t nd, bool pairwise) {
  return {ptr<const void>(q),        static_cast<m3k::DType>(q_dtype), ptr<const void>(d),
          static_cast<m3k::DType>(d_dtype), hidden,                  ptr<const int32_t>(q_off),
          ptr<const int32_t>(q_len), nq,                               ptr<const int32_t>(d_off),
          ptr<const int32_t>(d_len), nd,                               pairwise};
}

void bind_maxsim(py::module_& m);
void bind_sparse(py::module_& m);
void bind_cuda(py::module_& m);
