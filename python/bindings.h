// Shared helpers of the pybind11 module m3kernels._C. Tensors cross the boundary as raw addresses (ints)
// that m3kernels/_native.py takes from already-validated, contiguous torch tensors.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

namespace py = pybind11;

template <typename T>
inline T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

void bind_maxsim(py::module_& m);
void bind_sparse(py::module_& m);
void bind_cuda(py::module_& m);
