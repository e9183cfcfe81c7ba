// Tensor: a typed, shaped view of bytes, owning its storage or borrowing it.
//
// Invariants: data is 64-byte aligned when owned; bytes() == numel * dtype_size;
// copies share storage (use clone() for a deep copy).
#pragma once

#include <cstdint>
#include <memory>

#include "common/dtype.h"

namespace ravnest::rt {

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised owned storage.
  static Tensor empty(DType dtype, Shape shape);
  static Tensor zeros(DType dtype, Shape shape);
  // Borrows `data`; the caller keeps it alive.
  static Tensor view(DType dtype, Shape shape, void* data);

  bool defined() const { return data_ != nullptr || numel_ == 0; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_[i]; }
  size_t rank() const { return shape_.size(); }
  int64_t numel() const { return numel_; }
  size_t bytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T> T* data() { return static_cast<T*>(data_); }
  template <typename T> const T* data() const { return static_cast<const T*>(data_); }

  Tensor clone() const;
  void fill_zero();
  // Same storage, new shape of the same numel.
  Tensor reshaped(Shape shape) const;

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  DType dtype_ = DType::kUndefined;
  Shape shape_;
  int64_t numel_ = 0;
};

}  // namespace ravnest::rt
