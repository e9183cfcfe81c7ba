#include "runtime/tensor.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "common/status.h"

namespace ravnest::rt {
namespace {

// Tensors of activations, gradients and frames are allocated and freed at a
// high rate with the same sizes. glibc serves blocks over 128 KiB with fresh
// mmaps, so every such tensor costs page faults and zeroing by the kernel;
// keeping freed memory in the heap lets the next tensor of the same size reuse
// it. (Measured: a 16 MiB ring all-reduce spent ~30% of its time in page faults.)
const bool kHeapTuned = [] {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return true;
}();

}  // namespace

Tensor Tensor::empty(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.numel_ = ravnest::numel(shape);
  t.shape_ = std::move(shape);
  size_t bytes = t.bytes();
  size_t rounded = ((bytes + 63) / 64) * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  RN_ENFORCE(p != nullptr, "out of memory allocating ", rounded, " bytes");
  t.storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data_ = p;
  return t;
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t = empty(dtype, std::move(shape));
  t.fill_zero();
  return t;
}

Tensor Tensor::view(DType dtype, Shape shape, void* data) {
  Tensor t;
  t.dtype_ = dtype;
  t.numel_ = ravnest::numel(shape);
  t.shape_ = std::move(shape);
  t.data_ = data;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(dtype_, shape_);
  if (bytes()) std::memcpy(t.data_, data_, bytes());
  return t;
}

void Tensor::fill_zero() {
  if (bytes()) std::memset(data_, 0, bytes());
}

Tensor Tensor::reshaped(Shape shape) const {
  RN_ENFORCE(ravnest::numel(shape) == numel_, "reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

}  // namespace ravnest::rt
