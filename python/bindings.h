// Shared helpers of the pybind11 module m3kernels._C. Tensors cross the boundary as raw addresses (ints)
// that m3kernels/_native.py takes from already-validated, contiguous torch tensors.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

#include "maxsim/maxsim.h"

namespace py = pybind11;

// The binding interface's version, which m3kernels/_native.py compares with its own (ABI_VERSION there): raise both
// whenever a binding's argument list changes, so that a stale build is reported instead of a pybind signature
// error (or wrong arguments) at the first call.
constexpr int kAbiVersion = 4;

template <typename T>
inline T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// The MaxSimProblem of the argument list shared by the CPU and CUDA MaxSim bindings.
inline m3k::MaxSimProblem maxsim_problem(uintptr_t q, int q_dtype, uintptr_t d, int d_dtype, int64_t hidden,
                                         uintptr_t q_off, uintptr_t q_len, int64_t nq, int64_t q_rows,
                                         uintptr_t d_off, uintptr_t d_len, int64_t nd, int64_t d_rows, bool pairwise) {
  return {ptr<const void>(q), static_cast<m3k::DType>(q_dtype), ptr<const void>(d), static_cast<m3k::DType>(d_dtype),
          hidden, ptr<const int32_t>(q_off), ptr<const int32_t>(q_len), nq, q_rows, ptr<const int32_t>(d_off),
          ptr<const int32_t>(d_len), nd, d_rows, pairwise};
}

void bind_maxsim(py::module_& m);
void bind_sparse(py::module_& m);
void bind_cuda(py::module_& m);
