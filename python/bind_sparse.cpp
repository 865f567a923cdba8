#include "bindings.h"
#include "sparse/sparse.h"

void bind_sparse(py::module_& m) {
  m.def(
      "lexical_pool_cpu",
      [](uintptr_t hidden, int dtype, int64_t hidden_size, uintptr_t ids, uintptr_t off, uintptr_t len,
         int64_t batch, uintptr_t weight, float bias, uintptr_t skip_ids, int64_t nskip, uintptr_t out_ids,
         uintptr_t out_vals, uintptr_t out_src, uintptr_t counts, int threads) {
        const m3k::LexicalPoolProblem p{ptr<const void>(hidden),  static_cast<m3k::DType>(dtype),
                                        hidden_size,              ptr<const int64_t>(ids),
                                        ptr<const int32_t>(off),  ptr<const int32_t>(len),
                                        batch,                    ptr<const float>(weight),
                                        bias,                     ptr<const int64_t>(skip_ids),
                                        nskip};
        m3k::lexical_pool_cpu(p, ptr<int64_t>(out_ids), ptr<float>(out_vals), ptr<int64_t>(out_src),
                              ptr<int64_t>(counts), threads);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "lexical_scores_cpu",
      [](uintptr_t q_indptr, uintptr_t q_ids, uintptr_t q_vals, int64_t q_rows, uintptr_t d_indptr,
         uintptr_t d_ids, uintptr_t d_vals, int64_t d_rows, bool pairwise, uintptr_t scores, int threads) {
        const m3k::SparseRows q{ptr<const int64_t>(q_indptr), ptr<const int64_t>(q_ids),
                                ptr<const float>(q_vals), q_rows};
        const m3k::SparseRows d{ptr<const int64_t>(d_indptr), ptr<const int64_t>(d_ids),
                                ptr<const float>(d_vals), d_rows};
        m3k::lexical_scores_cpu(q, d, pairwise, ptr<float>(scores), threads);
      },
      py::call_guard<py::gil_scoped_release>());
}
