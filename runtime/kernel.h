// Kernels and their selection.
//
// Each (domain, op) has an ordered list of candidate implementations per device
// (fast ones first, the reference implementation last). The executor asks each
// candidate in turn to build a kernel for a node with fully static input and
// output types; the first that accepts wins. A candidate that declines returns
// Code::kUnsupported with the reason, which verbose mode (RAVNEST_VERBOSE=1)
// prints; any other error fails the load.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/graph.h"
#include "runtime/tensor.h"

namespace ravnest::rt {

enum class Device { kCpu, kCuda };

// Everything a kernel may know at build time: the node and its static types.
struct KernelRequest {
  const Node* node = nullptr;
  std::vector<ValueInfo> inputs;   // "" inputs have dtype kUndefined
  std::vector<ValueInfo> outputs;
  Device device = Device::kCpu;
};

// What a run of a program is for. Kernels whose result depends on it (Dropout's
// mask, BatchNormalization's batch vs running statistics) read it; the others
// ignore it. A random kernel derives its stream from (seed, step, microbatch, its
// node name), so a run is reproducible per step, micro-batch and node.
struct RunContext {
  uint64_t seed = 0;
  int64_t step = 0;
  int64_t microbatch = 0;
  bool training = true;  // false: evaluation (no dropout, running statistics)
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  // inputs/outputs follow the node's order; omitted optional ones are nullptr.
  // Outputs are preallocated with the static shapes of the program. Ops that
  // update state in place (optimizers, BatchNormalization's running statistics)
  // document which inputs they mutate.
  virtual Status run(const std::vector<Tensor*>& inputs, const std::vector<Tensor*>& outputs) = 0;
  // The entry the executor calls; context-dependent kernels override it.
  virtual Status run(const std::vector<Tensor*>& inputs, const std::vector<Tensor*>& outputs,
                     const RunContext& context) {
    (void)context;
    return run(inputs, outputs);
  }
};

using KernelBuilder = std::function<Result<std::unique_ptr<Kernel>>(const KernelRequest&)>;

struct KernelCandidate {
  std::string impl;  // "onednn", "ref", ...
  Device device = Device::kCpu;
  KernelBuilder build;
};

class KernelRegistry {
 public:
  // The registry with every kernel of this build.
  static const KernelRegistry& global();

  void add(const std::string& domain, const std::string& op, KernelCandidate candidate);
  // Tries candidates in order; the error lists every rejection.
  Result<std::unique_ptr<Kernel>> build(const KernelRequest& request, std::string* chosen_impl = nullptr) const;
  bool has(const std::string& domain, const std::string& op) const;

 private:
  std::map<std::pair<std::string, std::string>, std::vector<KernelCandidate>> table_;
};

}  // namespace ravnest::rt
