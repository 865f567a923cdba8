#include "bindings.h"

void bind_maxsim(py::module_& m) {
  m.def(
      "maxsim_forward_cpu",
      [](uintptr_t q, int q_dtype, uintptr_t d, int d_dtype, int64_t hidden, uintptr_t q_off, uintptr_t q_len, int64_t nq,
         int64_t q_rows, uintptr_t d_off, uintptr_t d_len, int64_t nd, int64_t d_rows, bool pairwise, uintptr_t scores, uintptr_t argmax,
         int threads) {
        m3k::maxsim_forward_cpu(maxsim_problem(q, q_dtype, d, d_dtype, hidden, q_off, q_len, nq, q_rows, d_off, d_len, nd, d_rows, pairwise),
                                ptr<float>(scores), ptr<int32_t>(argmax), threads);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "maxsim_backward_cpu",
      [](uintptr_t q, int q_dtype, uintptr_t d, int d_dtype, int64_t hidden, uintptr_t q_off, uintptr_t q_len, int64_t nq,
         int64_t q_rows, uintptr_t d_off, uintptr_t d_len, int64_t nd, int64_t d_rows, bool pairwise, uintptr_t grad, uintptr_t argmax,
         uintptr_t dq, uintptr_t dd, int threads) {
        m3k::maxsim_backward_cpu(maxsim_problem(q, q_dtype, d, d_dtype, hidden, q_off, q_len, nq, q_rows, d_off, d_len, nd, d_rows, pairwise),
                                 ptr<const float>(grad), ptr<const int32_t>(argmax), ptr<float>(dq),
                                 ptr<float>(dd), threads);
      },
      py::call_guard<py::gil_scoped_release>());
}
