#include "bindings.h"
#include "maxsim/maxsim.h"

namespace {

m3k::MaxSimProblem problem(uintptr_t q, uintptr_t d, int dtype, int64_t hidden, uintptr_t q_off, uintptr_t q_len,
                           int64_t nq, uintptr_t d_off, uintptr_t d_len, int64_t nd, bool pairwise) {
  return {ptr<const float>(q),       ptr<const void>(d),        static_cast<m3k::DType>(dtype), hidden,
          ptr<const int32_t>(q_off), ptr<const int32_t>(q_len), nq,
          ptr<const int32_t>(d_off), ptr<const int32_t>(d_len), nd, pairwise};
}

}  // namespace

void bind_maxsim(py::module_& m) {
  m.def(
      "maxsim_forward_cpu",
      [](uintptr_t q, uintptr_t d, int dtype, int64_t hidden, uintptr_t q_off, uintptr_t q_len, int64_t nq,
         uintptr_t d_off, uintptr_t d_len, int64_t nd, bool pairwise, uintptr_t scores, uintptr_t argmax,
         int threads) {
        m3k::maxsim_forward_cpu(problem(q, d, dtype, hidden, q_off, q_len, nq, d_off, d_len, nd, pairwise),
                                ptr<float>(scores), ptr<int32_t>(argmax), threads);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "maxsim_backward_cpu",
      [](uintptr_t q, uintptr_t d, int dtype, int64_t hidden, uintptr_t q_off, uintptr_t q_len, int64_t nq,
         uintptr_t d_off, uintptr_t d_len, int64_t nd, bool pairwise, uintptr_t grad, uintptr_t argmax,
         uintptr_t dq, uintptr_t dd, int threads) {
        m3k::maxsim_backward_cpu(problem(q, d, dtype, hidden, q_off, q_len, nq, d_off, d_len, nd, pairwise),
                                 ptr<const float>(grad), ptr<const int32_t>(argmax), ptr<float>(dq),
                                 ptr<float>(dd), threads);
      },
      py::call_guard<py::gil_scoped_release>());
}
