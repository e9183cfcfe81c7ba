// The oneDNN side of the CPU runtime: one engine per process, one stream per
// thread, memory descriptors for our row-major tensors, and the conversion of
// oneDNN's exceptions into Status. oneDNN types appear only under runtime/cpu/.
//
// Guarantees: engine() is created once (thread-safe static); oneDNN threading
// follows OpenMP (OMP_NUM_THREADS), nothing here sets a thread count. A
// PlainArg binds a row-major tensor to a primitive argument, reordering through a
// buffer allocated once at build time when the primitive chose another layout.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"
#include "runtime/kernel.h"

namespace ravnest::rt::cpu {

dnnl::engine& engine();
// The calling thread's stream on engine().
dnnl::stream& stream();

dnnl::memory::dims to_dims(const Shape& shape);
// Row-major format tag for a rank (a, ab, abc, ...); rank 1..6.
dnnl::memory::format_tag plain_tag(size_t rank);
dnnl::memory::desc plain_desc(const Shape& shape);

// Runs `fn`, converting a dnnl::error into a Status naming `what`:
// dnnl_unimplemented becomes kUnsupported (the candidate declines), anything else kInternal.
template <typename Fn>
Status onednn_guard(const std::string& what, Fn&& fn) {
  try {
    return fn();
  } catch (const dnnl::error& e) {
    Code code = e.status == dnnl_unimplemented ? Code::kUnsupported : Code::kInternal;
    return error(code, what, ": oneDNN: ", e.what(), " (status ", static_cast<int>(e.status), ")");
  }
}

// A oneDNN primitive whose arguments are the kernel's tensors as they are (no
// reorder): `args` maps each kernel input, then the output, to its oneDNN argument
// (all of one descriptor: eltwise, softmax; or each with its own: a matmul reading a
// row-major [N, K] weight as [K, N] "ba"); memories are created once and rebound per run.
class OnednnPrimitiveKernel final : public Kernel {
 public:
  OnednnPrimitiveKernel(dnnl::primitive prim, const dnnl::memory::desc& desc, const std::vector<int>& args,
                        std::string what);
  OnednnPrimitiveKernel(dnnl::primitive prim, const std::vector<std::pair<int, dnnl::memory::desc>>& args,
                        std::string what);
  Status run(const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) override;

 private:
  dnnl::primitive prim_;
  std::vector<std::pair<int, dnnl::memory>> mems_;
  std::string what_;
};

// One primitive argument seen by the executor as a row-major tensor.
class PlainArg {
 public:
  PlainArg() = default;
  // `plain`: the row-major layout of the tensor; `chosen`: what the primitive wants.
  PlainArg(const dnnl::memory::desc& plain, const dnnl::memory::desc& chosen, bool is_output);

  // For an input: binds the data and, if needed, reorders it into the buffer;
  // returns the memory to give the primitive.
  dnnl::memory& bind_input(const void* data, dnnl::stream& s);
  // For an output: returns the memory the primitive writes; call finish_output after.
  dnnl::memory& bind_output(void* data);
  void finish_output(dnnl::stream& s);

 private:
  dnnl::memory plain_;
  dnnl::memory chosen_;  // empty when the layouts agree
  dnnl::reorder reorder_;
};

}  // namespace ravnest::rt::cpu
