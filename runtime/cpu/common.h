// Helpers shared by the CPU kernel families: argument checks that turn a request a
// kernel cannot serve into a kUnsupported rejection with the reason, and a strided
// row-major walker used by broadcasting, transposition and reduction.
//
// Guarantees: every check names the node and the offending input/output;
// for_each_strided visits every index of a shape exactly once, in row-major order.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/graph.h"
#include "common/status.h"
#include "runtime/kernel.h"

namespace ravnest::rt::cpu {

// kUnsupported naming the node: how a candidate declines.
template <typename... Parts>
Status decline(const KernelRequest& request, const Parts&... parts) {
  return error(Code::kUnsupported, request.node->describe(), ": ", parts...);
}

// Input/output counts within [min, max] (omitted trailing optional ones count).
Status check_arity(const KernelRequest& request, size_t min_inputs, size_t max_inputs, size_t min_outputs,
                   size_t max_outputs);
// True when input/output i is present (not omitted).
bool has_input(const KernelRequest& request, size_t i);
bool has_output(const KernelRequest& request, size_t i);
// Declines unless input/output i is present with the given dtype.
Status check_input_dtype(const KernelRequest& request, size_t i, DType dtype);
Status check_output_dtype(const KernelRequest& request, size_t i, DType dtype);
// Static shape of input/output i (the executor only builds fully static programs).
Shape input_shape(const KernelRequest& request, size_t i);
Shape output_shape(const KernelRequest& request, size_t i);

// Row-major contiguous strides of a shape (in elements).
std::vector<int64_t> contiguous_strides(const Shape& shape);
// Strides for reading `in` broadcast (numpy rules) to `out`: 0 on broadcast dims.
// Requires `in` to be broadcastable to `out`.
std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out);
// numpy broadcast of two shapes; an error when incompatible.
Result<Shape> broadcast_shapes(const Shape& a, const Shape& b);

// Walks every index of `shape` with K operands, each with its own element strides.
// Dimensions that are contiguous for every operand are merged first, so the inner
// callback sees runs as long as possible: row(offsets, n, steps) covers n elements,
// operand k at offsets[k] + j * steps[k] for j < n.
template <size_t K>
using StridedRow = std::function<void(const std::array<int64_t, K>&, int64_t, const std::array<int64_t, K>&)>;

template <size_t K, typename Row>
void for_each_strided(Shape shape, std::array<std::vector<int64_t>, K> strides, Row&& row) {
  // Merge dim i into dim i+1 when every operand steps through it contiguously.
  for (size_t i = shape.size(); i-- > 1;) {
    bool mergeable = true;
    for (size_t k = 0; k < K; ++k)
      if (strides[k][i - 1] != strides[k][i] * shape[i]) mergeable = false;
    if (shape[i - 1] == 1) mergeable = true;  // a size-1 dim never moves
    if (!mergeable) continue;
    shape[i] *= shape[i - 1];
    shape.erase(shape.begin() + static_cast<long>(i - 1));
    for (size_t k = 0; k < K; ++k) strides[k].erase(strides[k].begin() + static_cast<long>(i - 1));
  }
  std::array<int64_t, K> offsets{};
  std::array<int64_t, K> steps{};
  if (shape.empty()) {
    row(offsets, int64_t{1}, steps);
    return;
  }
  for (int64_t d : shape)
    if (d == 0) return;
  const size_t rank = shape.size();
  for (size_t k = 0; k < K; ++k) steps[k] = strides[k][rank - 1];
  std::vector<int64_t> index(rank - 1, 0);
  while (true) {
    row(offsets, shape[rank - 1], steps);
    // Advance the outer multi-index (odometer), updating the offsets incrementally.
    size_t d = rank - 1;
    while (d > 0) {
      --d;
      ++index[d];
      for (size_t k = 0; k < K; ++k) offsets[k] += strides[k][d];
      if (index[d] < shape[d]) break;
      for (size_t k = 0; k < K; ++k) offsets[k] -= strides[k][d] * shape[d];
      index[d] = 0;
      if (d == 0) return;
    }
    if (rank == 1) return;
  }
}

// A kernel from a lambda, for families whose run needs no state beyond captures.
template <typename Fn>
class LambdaKernel final : public Kernel {
 public:
  explicit LambdaKernel(Fn fn) : fn_(std::move(fn)) {}
  Status run(const std::vector<Tensor*>& inputs, const std::vector<Tensor*>& outputs) override {
    return fn_(inputs, outputs);
  }

 private:
  Fn fn_;
};

template <typename Fn>
Result<std::unique_ptr<Kernel>> make_kernel(Fn fn) {
  return std::unique_ptr<Kernel>(std::make_unique<LambdaKernel<Fn>>(std::move(fn)));
}

}  // namespace ravnest::rt::cpu
