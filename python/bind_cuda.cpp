// Bindings of the CUDA launchers (compiled only with -DM3K_WITH_CUDA=ON; no torch headers). Tensors arrive as
// device addresses (ints) from m3kernels/{maxsim,sparse}/cuda.py, the stream as the integer handle of
// torch.cuda.current_stream().cuda_stream; a failed launcher raises RuntimeError with its message.
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "bindings.h"
#include "maxsim/maxsim_cuda.h"
#include "sparse/sparse_cuda.h"

namespace {

cudaStream_t stream_of(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

void raise_on_error(const std::string& err) {
  if (!err.empty()) throw std::runtime_error(err);
}

m3k::SparseRows sparse_rows(uintptr_t indptr, uintptr_t ids, uintptr_t vals, int64_t rows) {
  return {ptr<const int64_t>(indptr), ptr<const int64_t>(ids), ptr<const float>(vals), rows};
}

}  // namespace

void bind_cuda(py::module_& m) {
  m.def(
      "maxsim_forward_cuda",
      [](uintptr_t q, int q_dtype, uintptr_t d, int d_dtype, int64_t hidden, uintptr_t q_off, uintptr_t q_len, int64_t nq,
         int64_t q_rows, uintptr_t d_off, uintptr_t d_len, int64_t nd, int64_t d_rows, bool pairwise, uintptr_t scores, uintptr_t argmax,
         uintptr_t stream, int tile) {
        raise_on_error(m3k::maxsim_forward_cuda(
            maxsim_problem(q, q_dtype, d, d_dtype, hidden, q_off, q_len, nq, q_rows, d_off, d_len, nd, d_rows, pairwise), ptr<float>(scores),
            ptr<int32_t>(argmax), stream_of(stream), tile));
      },
      "MaxSim forward on device addresses (see csrc/maxsim/maxsim_cuda.h); argmax may be 0; tile in "
      "[0, kFwdTiles) picks the block shape.",
      py::arg("q"), py::arg("q_dtype"), py::arg("d"), py::arg("d_dtype"), py::arg("hidden"), py::arg("q_off"),
      py::arg("q_len"), py::arg("nq"), py::arg("q_rows"), py::arg("d_off"), py::arg("d_len"), py::arg("nd"),
      py::arg("d_rows"), py::arg("pairwise"),
      py::arg("scores"), py::arg("argmax"), py::arg("stream"), py::arg("tile") = 0,
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "maxsim_forward_rows_cuda",
      [](uintptr_t q, int q_dtype, uintptr_t d, int d_dtype, int64_t hidden, uintptr_t q_off, uintptr_t q_len, int64_t nq,
         int64_t q_rows, uintptr_t d_off, uintptr_t d_len, int64_t nd, int64_t d_rows, uintptr_t scores, uintptr_t argmax,
         uintptr_t workspace, uintptr_t stream, int tile) {
        raise_on_error(m3k::maxsim_forward_rows_cuda(
            maxsim_problem(q, q_dtype, d, d_dtype, hidden, q_off, q_len, nq, q_rows, d_off, d_len, nd, d_rows, false),
            ptr<float>(scores), ptr<int32_t>(argmax), ptr<void>(workspace), stream_of(stream), tile));
      },
      "MaxSim forward of several queries against all docs by row blocks (see csrc/maxsim/maxsim_cuda.h); argmax "
      "may be 0; workspace of maxsim_forward_rows_cuda_workspace_bytes(total_q, nd) bytes.",
      py::call_guard<py::gil_scoped_release>());
  m.def("maxsim_forward_rows_cuda_workspace_bytes", &m3k::maxsim_forward_rows_cuda_workspace_bytes,
        "Bytes of device scratch maxsim_forward_rows_cuda needs for total_q query rows and nd docs.");
  m.def(
      "maxsim_forward_tokens_cuda",
      [](uintptr_t q, int q_dtype, uintptr_t d, int d_dtype, int64_t hidden, uintptr_t q_off, uintptr_t q_len, int64_t nq,
         int64_t q_rows, uintptr_t d_off, uintptr_t d_len, int64_t nd, int64_t d_rows, uintptr_t scores, uintptr_t argmax,
         uintptr_t workspace, uintptr_t stream, int tile) {
        raise_on_error(m3k::maxsim_forward_tokens_cuda(
            maxsim_problem(q, q_dtype, d, d_dtype, hidden, q_off, q_len, nq, q_rows, d_off, d_len, nd, d_rows, false),
            ptr<float>(scores), ptr<int32_t>(argmax), ptr<void>(workspace), stream_of(stream), tile));
      },
      "MaxSim forward of all pairs by token tiles (see csrc/maxsim/maxsim_cuda.h); argmax may be 0; workspace of "
      "maxsim_forward_tokens_cuda_workspace_bytes(total_q, nd, total_d) bytes.",
      py::call_guard<py::gil_scoped_release>());
  m.def("maxsim_forward_tokens_cuda_workspace_bytes", &m3k::maxsim_forward_tokens_cuda_workspace_bytes,
        "Bytes of device scratch maxsim_forward_tokens_cuda needs for total_q query rows, nd docs, total_d doc rows.");
  m.attr("maxsim_forward_cuda_tiles") = m3k::kFwdTiles;
  py::list shapes;
  for (const m3k::FwdTileShape& s : m3k::kFwdTileShapes)
    shapes.append(py::make_tuple(s.warps, 16 * s.vecs, s.stages, m3k::fwd_tile_smem_bytes(s),
                                 m3k::fwd_tile_static_smem_bytes(s), s.ldmatrix, s.qrows, s.prefetch, s.warps_m,
                                 s.warp_cols));
  // (warps, hidden bytes per row and stage, stages, dynamic and static shared memory bytes, ldmatrix, query rows,
  // L2 prefetch bytes, warps along the query rows, doc columns per warp) per tile
  m.attr("maxsim_forward_cuda_tile_shapes") = shapes;
  m.def(
      "maxsim_backward_cuda",
      [](uintptr_t q, int q_dtype, uintptr_t d, int d_dtype, int64_t hidden, uintptr_t q_off, uintptr_t q_len, int64_t nq,
         int64_t q_rows, uintptr_t d_off, uintptr_t d_len, int64_t nd, int64_t d_rows, bool pairwise, uintptr_t grad, uintptr_t argmax,
         uintptr_t dq, uintptr_t dd, bool deterministic, uintptr_t stream) {
        raise_on_error(m3k::maxsim_backward_cuda(
            maxsim_problem(q, q_dtype, d, d_dtype, hidden, q_off, q_len, nq, q_rows, d_off, d_len, nd, d_rows, pairwise),
            ptr<const float>(grad), ptr<const int32_t>(argmax), ptr<float>(dq), ptr<float>(dd), deterministic,
            stream_of(stream)));
      },
      "MaxSim backward from the argmax (dq, dd zero-filled fp32).", py::call_guard<py::gil_scoped_release>());
  m.def("lexical_pool_cuda_workspace_bytes", &m3k::lexical_pool_cuda_workspace_bytes,
        "Bytes of device scratch lexical_pool_cuda needs for a number of hidden rows.");
  m.def(
      "lexical_pool_cuda",
      [](uintptr_t hidden, int dtype, int64_t hidden_size, int64_t rows, uintptr_t ids, uintptr_t off,
         uintptr_t len, int64_t batch, uintptr_t weight, uintptr_t bias, uintptr_t skip_ids, int64_t nskip,
         uintptr_t out_ids, uintptr_t out_vals, uintptr_t out_src, uintptr_t counts, uintptr_t workspace,
         uintptr_t stream) {
        const m3k::LexicalPoolCudaProblem p{ptr<const void>(hidden),   static_cast<m3k::DType>(dtype),
                                            hidden_size,               rows,
                                            ptr<const int64_t>(ids),   ptr<const int32_t>(off),
                                            ptr<const int32_t>(len),   batch,
                                            ptr<const float>(weight),  ptr<const float>(bias),
                                            ptr<const int64_t>(skip_ids), nskip};
        raise_on_error(m3k::lexical_pool_cuda(p, ptr<int64_t>(out_ids), ptr<float>(out_vals),
                                              ptr<int64_t>(out_src), ptr<int64_t>(counts), ptr<void>(workspace),
                                              stream_of(stream)));
      },
      "Fused relu(h.w+b) + max-pool by id per text (see csrc/sparse/sparse_cuda.h).",
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "lexical_scores_cuda",
      [](uintptr_t q_indptr, uintptr_t q_ids, uintptr_t q_vals, int64_t q_rows, uintptr_t d_indptr,
         uintptr_t d_ids, uintptr_t d_vals, int64_t d_rows, bool pairwise, uintptr_t scores, uintptr_t stream) {
        raise_on_error(m3k::lexical_scores_cuda(sparse_rows(q_indptr, q_ids, q_vals, q_rows),
                                                sparse_rows(d_indptr, d_ids, d_vals, d_rows), pairwise,
                                                ptr<float>(scores), stream_of(stream)));
      },
      "Lexical scores of two CSR batches, all pairs or pairwise.", py::call_guard<py::gil_scoped_release>());
}
