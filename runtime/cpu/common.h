// Helpers shared by the CPU kernel families: argument checks that turn a request a
// kernel cannot serve into a kUnsupported rejection with the reason, and a strided
// row-major walker used by broadcasting, transposition and reduction, and the
// OpenMP helpers that thread the plain loops over their outer dimension.
//
// Guarantees: every check names the node and the offending input/output;
// for_each_strided visits every index of a shape exactly once, in row-major order;
// parallel_for and parallel_for_each_strided visit every item exactly once, on
// OMP_NUM_THREADS threads at most, and stay on the calling thread below
// kParallelGrain units of work (or when already inside a parallel region). They only
// split the items: a body that writes nothing but its own items' outputs gives the
// same bits whatever the thread count.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/graph.h"
#include "common/status.h"
#include "runtime/kernel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

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

// Work (about one unit per element touched) below which a loop stays on the calling
// thread: an OpenMP fork/join costs microseconds. Above it, one thread per grain.
inline constexpr int64_t kParallelGrain = int64_t{1} << 15;

// The threads worth using for `work` units: 1 below two grains, never more than
// OMP_NUM_THREADS (omp_get_max_threads), 1 inside a parallel region or without OpenMP.
inline int parallel_threads(int64_t work) {
#ifdef _OPENMP
  if (work < 2 * kParallelGrain || omp_in_parallel()) return 1;
  const int64_t wanted = work / kParallelGrain;
  return static_cast<int>(std::min<int64_t>(wanted, omp_get_max_threads()));
#else
  (void)work;
  return 1;
#endif
}

// Calls body(begin, end) on disjoint contiguous chunks that cover [0, n), one per
// thread (see parallel_threads for n * work_per_item units), or body(0, n) here.
template <typename Body>
void parallel_for(int64_t n, int64_t work_per_item, const Body& body) {
  if (n <= 0) return;
  const int threads = static_cast<int>(std::min<int64_t>(n, parallel_threads(n * std::max<int64_t>(work_per_item, 1))));
  if (threads <= 1) {
    body(int64_t{0}, n);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) body(begin, end);
  }
#endif
}

// body(i) for every i < n, threaded in contiguous chunks of a flat loop.
template <typename Body>
void flat_for(int64_t n, const Body& body) {
  parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) body(i);
  });
}

// for_each_strided over `shape`, threaded: size-1 dims are dropped, then a single
// remaining dim is split into contiguous ranges, or the leading dims (as few as give
// every thread several slices) are split between threads, each slice walked by
// for_each_strided. row() sees absolute offsets. Rows of different parts may run
// concurrently, so row() must write only its own elements. `unit_work`: the work of
// one index of `shape` (1 for an element).
template <size_t K, typename Row>
void parallel_for_each_strided(const Shape& shape, const std::array<std::vector<int64_t>, K>& strides, Row&& row,
                               int64_t unit_work = 1) {
  int64_t total = 1;
  for (int64_t d : shape) total *= d;
  const int threads = parallel_threads(total * unit_work);
  if (threads <= 1) {
    for_each_strided<K>(shape, strides, row);
    return;
  }
  Shape dims;
  std::array<std::vector<int64_t>, K> dim_strides;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    dims.push_back(shape[d]);
    for (size_t k = 0; k < K; ++k) dim_strides[k].push_back(strides[k][d]);
  }
  if (dims.empty()) {  // one index (every dim is 1, or none): one row of length 1
    for_each_strided<K>(shape, strides, row);
    return;
  }
  if (dims.size() == 1) {
    parallel_for(dims[0], unit_work, [&](int64_t begin, int64_t end) {
      std::array<int64_t, K> at, step;
      for (size_t k = 0; k < K; ++k) {
        at[k] = begin * dim_strides[k][0];
        step[k] = dim_strides[k][0];
      }
      row(at, end - begin, step);
    });
    return;
  }
  // Split after dim `split`: outer = prod(dims[0..split]) slices of the inner dims.
  size_t split = 0;
  int64_t outer = dims[0];
  while (outer < 4 * threads && split + 2 < dims.size()) outer *= dims[++split];
  const Shape inner(dims.begin() + static_cast<long>(split) + 1, dims.end());
  std::array<std::vector<int64_t>, K> inner_strides;
  for (size_t k = 0; k < K; ++k)
    inner_strides[k].assign(dim_strides[k].begin() + static_cast<long>(split) + 1, dim_strides[k].end());
  parallel_for(outer, total / outer * unit_work, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      std::array<int64_t, K> base{};
      int64_t rest = u;
      for (size_t d = split + 1; d-- > 0;) {
        const int64_t i = rest % dims[d];
        rest /= dims[d];
        for (size_t k = 0; k < K; ++k) base[k] += i * dim_strides[k][d];
      }
      for_each_strided<K>(inner, inner_strides, [&](const auto& off, int64_t len, const auto& step) {
        std::array<int64_t, K> at;
        for (size_t k = 0; k < K; ++k) at[k] = base[k] + off[k];
        row(at, len, step);
      });
    }
  });
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
