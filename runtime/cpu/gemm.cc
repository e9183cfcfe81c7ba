// Gemm and MatMul on oneDNN's sgemm (row-major, OpenMP-threaded).
//
// Guarantees: Gemm computes Y = alpha * A' * B' + beta * C with A' = transA ? A^T : A
// (likewise B'), C optional and unidirectionally broadcast to [M, N]. MatMul follows
// numpy matmul: 1-D operands are promoted (and the added dim dropped), batch dims
// broadcast; when B has no batch dims the batch is folded into one large GEMM.
// dnnl_sgemm serves every case but one: a Gemm with transB=1, transA=0, alpha=1 and
// no C or a C of N elements with beta=1 (PyTorch's Linear) runs the oneDNN matmul
// primitive (built once per node) reading B as [K, N] "ba" and C as its bias: oneDNN
// 2.6's sgemm with a transposed B and few rows is up to 2-3x slower than with B plain
// (16 x 128 x 3136: 0.32 ms against 0.16 ms for the primitive, one thread, here).
#include <oneapi/dnnl/dnnl.h>

#include "runtime/cpu/common.h"
#include "runtime/cpu/onednn.h"

namespace ravnest::rt::cpu {
namespace {

// Row-major C[M,N] = alpha * op(A) * op(B) + beta * C; the error names the node.
Status sgemm(const char* who, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const float* a, const float* b, float beta, float* c) {
  if (m == 0 || n == 0) return ok_status();
  const dnnl_dim_t lda = trans_a ? m : k;
  const dnnl_dim_t ldb = trans_b ? k : n;
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, n);
  if (st != dnnl_success)
    return error(Code::kInternal, who, ": dnnl_sgemm failed with status ", static_cast<int>(st), " (M=", m,
                 " N=", n, " K=", k, ")");
  return ok_status();
}

Result<std::unique_ptr<Kernel>> build_gemm(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 3, 1, 1));
  for (size_t i = 0; i < 3; ++i)
    if (has_input(request, i)) RN_RETURN_IF_ERROR(check_input_dtype(request, i, DType::kF32));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  const Node& node = *request.node;
  const bool trans_a = node.attr_int("transA", 0) != 0;
  const bool trans_b = node.attr_int("transB", 0) != 0;
  const float alpha = node.attr_float("alpha", 1.0f);
  const float beta = node.attr_float("beta", 1.0f);
  const Shape a = input_shape(request, 0), b = input_shape(request, 1), y = output_shape(request, 0);
  if (a.size() != 2 || b.size() != 2 || y.size() != 2)
    return error(Code::kInvalidArgument, node.describe(), ": Gemm takes 2-D A and B, got ", shape_str(a), " and ",
                 shape_str(b));
  const int64_t m = trans_a ? a[1] : a[0], k = trans_a ? a[0] : a[1];
  const int64_t kb = trans_b ? b[1] : b[0], n = trans_b ? b[0] : b[1];
  if (k != kb || y != Shape{m, n})
    return error(Code::kInvalidArgument, node.describe(), ": A ", shape_str(a), " (transA=", trans_a, ") times B ",
                 shape_str(b), " (transB=", trans_b, ") does not give Y ", shape_str(y));
  const bool with_c = has_input(request, 2) && beta != 0.0f;
  std::vector<int64_t> c_strides;
  if (with_c) {
    const Shape c = input_shape(request, 2);
    Result<Shape> bc = broadcast_shapes(c, y);
    if (c.size() > 2 || !bc.ok() || *bc != y)
      return error(Code::kInvalidArgument, node.describe(), ": C ", shape_str(c), " does not broadcast to Y ",
                   shape_str(y));
    c_strides = broadcast_strides(c, y);
  }
  const bool c_is_row = has_input(request, 2) && numel(input_shape(request, 2)) == n &&
                        (input_shape(request, 2).size() == 1 || input_shape(request, 2)[0] == 1);
  if (trans_b && !trans_a && alpha == 1.0f && (!has_input(request, 2) || (beta == 1.0f && c_is_row))) {
    std::unique_ptr<Kernel> linear;
    RN_RETURN_IF_ERROR(onednn_guard(node.describe(), [&]() -> Status {
      using tag = dnnl::memory::format_tag;
      const auto f32 = dnnl::memory::data_type::f32;
      const dnnl::memory::desc a_desc({m, k}, f32, tag::ab), b_desc({k, n}, f32, tag::ba),
          bias_desc({1, n}, f32, tag::ab), y_desc({m, n}, f32, tag::ab);
      const bool bias = has_input(request, 2);
      auto desc = bias ? dnnl::matmul::desc(a_desc, b_desc, bias_desc, y_desc) : dnnl::matmul::desc(a_desc, b_desc, y_desc);
      std::vector<std::pair<int, dnnl::memory::desc>> args{{DNNL_ARG_SRC, a_desc}, {DNNL_ARG_WEIGHTS, b_desc}};
      if (bias) args.emplace_back(DNNL_ARG_BIAS, bias_desc);
      args.emplace_back(DNNL_ARG_DST, y_desc);
      linear = std::make_unique<OnednnPrimitiveKernel>(dnnl::matmul(dnnl::matmul::primitive_desc(desc, engine())),
                                                       args, "Gemm");
      return ok_status();
    }));
    return linear;
  }
  const std::vector<int64_t> y_strides = contiguous_strides(y);
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    float* dst = out[0]->data<float>();
    if (with_c) {
      // Y = beta * broadcast(C), then accumulate the product into it.
      const float* c = in[2]->data<float>();
      for_each_strided<2>(y, {y_strides, c_strides}, [&](const auto& off, int64_t len, const auto& step) {
        for (int64_t j = 0; j < len; ++j) dst[off[0] + j * step[0]] = beta * c[off[1] + j * step[1]];
      });
    }
    return sgemm("Gemm", trans_a, trans_b, m, n, k, alpha, in[0]->data<float>(), in[1]->data<float>(),
                 with_c ? 1.0f : 0.0f, dst);
  });
}

Result<std::unique_ptr<Kernel>> build_matmul(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 1, DType::kF32));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  const Node& node = *request.node;
  Shape a = input_shape(request, 0), b = input_shape(request, 1);
  const Shape y = output_shape(request, 0);
  if (a.empty() || b.empty())
    return error(Code::kInvalidArgument, node.describe(), ": MatMul operands must have rank >= 1");
  const bool a_vector = a.size() == 1, b_vector = b.size() == 1;
  if (a_vector) a.insert(a.begin(), 1);
  if (b_vector) b.push_back(1);
  const int64_t m = a[a.size() - 2], k = a.back(), n = b.back();
  if (b[b.size() - 2] != k)
    return error(Code::kInvalidArgument, node.describe(), ": inner dims differ: A ", shape_str(a), ", B ",
                 shape_str(b));
  const Shape a_batch(a.begin(), a.end() - 2), b_batch(b.begin(), b.end() - 2);
  Result<Shape> batch = broadcast_shapes(a_batch, b_batch);
  if (!batch.ok()) return batch.status().with_context(node.describe() + ": batch dims");
  Shape expected = *batch;
  if (!a_vector) expected.push_back(m);
  if (!b_vector) expected.push_back(n);
  if (expected != y)
    return error(Code::kInvalidArgument, node.describe(), ": program says Y is ", shape_str(y), ", A ",
                 shape_str(input_shape(request, 0)), " x B ", shape_str(input_shape(request, 1)), " gives ",
                 shape_str(expected));
  const Shape batch_shape = *batch;
  // B without batch dims: fold A's batch into M (A is contiguous [batch*M, K]) when A is not broadcast.
  const bool fold = b_batch.empty();
  const int64_t batch_count = numel(batch_shape);
  std::vector<int64_t> a_strides = broadcast_strides(a_batch, batch_shape);
  std::vector<int64_t> b_strides = broadcast_strides(b_batch, batch_shape);
  std::vector<int64_t> y_strides = contiguous_strides(batch_shape);
  for (int64_t& s : a_strides) s *= m * k;
  for (int64_t& s : b_strides) s *= k * n;
  for (int64_t& s : y_strides) s *= m * n;
  return make_kernel([=](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* pa = in[0]->data<float>();
    const float* pb = in[1]->data<float>();
    float* py = out[0]->data<float>();
    if (fold) return sgemm("MatMul", false, false, batch_count * m, n, k, 1.0f, pa, pb, 0.0f, py);
    Status status;
    for_each_strided<3>(batch_shape, {a_strides, b_strides, y_strides},
                        [&](const auto& off, int64_t len, const auto& step) {
                          for (int64_t j = 0; j < len && status.ok(); ++j)
                            status = sgemm("MatMul", false, false, m, n, k, 1.0f, pa + off[0] + j * step[0],
                                           pb + off[1] + j * step[1], 0.0f, py + off[2] + j * step[2]);
                        });
    return status;
  });
}

}  // namespace

void register_gemm_kernels(KernelRegistry& registry) {
  registry.add("", "Gemm", {"onednn-sgemm", Device::kCpu, build_gemm});
  registry.add("", "MatMul", {"onednn-sgemm", Device::kCpu, build_matmul});
}

}  // namespace ravnest::rt::cpu
