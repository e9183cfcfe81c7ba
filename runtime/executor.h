// Executor: runs one stage program (a Graph with static shapes) on one device.
//
// Guarantees: kernels are chosen once, at create(); intermediate values live in
// one arena whose offsets come from a liveness-based memory plan (a buffer is
// reused once its last reader has run); graph outputs are returned as freshly
// owned tensors so callers may keep them (stash, send) past the next run.
// Graph inputs are bound by the caller; kernels that update state in place
// (optimizers) mutate the caller's tensors.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/graph.h"
#include "runtime/kernel.h"
#include "runtime/tensor.h"

namespace ravnest::rt {

struct ExecutorOptions {
  Device device = Device::kCpu;
};

using TensorMap = std::unordered_map<std::string, Tensor>;

// The feeds of `program`: each graph input looked up in `sources`, in order (the
// first map that holds it wins). An input none holds is an error naming the program
// and the input.
Result<TensorMap> gather_feeds(const Graph& program, std::initializer_list<const TensorMap*> sources);

class Executor {
 public:
  static Result<std::unique_ptr<Executor>> create(Graph program, const KernelRegistry& registry,
                                                  ExecutorOptions options = {});
  virtual ~Executor() = default;

  // `feeds` must bind every graph input (dtype and shape are checked, the error
  // names the input). Graph outputs are written into `*outputs`.
  virtual Status run(const TensorMap& feeds, TensorMap* outputs, const RunContext& context = {}) = 0;

  virtual const Graph& program() const = 0;
  // Bytes of the intermediate-value arena after the memory plan, and the bytes
  // the same values would take without reuse.
  virtual size_t arena_bytes() const = 0;
  virtual size_t unplanned_bytes() const = 0;
  // Per node, the kernel implementation chosen ("onednn", "ref", ...).
  virtual std::vector<std::string> chosen_kernels() const = 0;
};

}  // namespace ravnest::rt
