// The kernel registry: ordered candidates per (domain, op); the first candidate
// that accepts a request wins.
//
// Guarantees: build() tries candidates of the requested device in registration
// order; a candidate returning Code::kUnsupported is a rejection (logged under
// verbose mode) and the next one is tried; any other error stops the search. When
// every candidate declines, the error names the node, its input shapes and every
// rejection with its reason.
#include "runtime/kernel.h"

#include <sstream>

#include "common/log.h"
#include "runtime/cpu/registration.h"

namespace ravnest::rt {
namespace {

std::string describe_inputs(const KernelRequest& request) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    if (i) out << ", ";
    const ValueInfo& in = request.inputs[i];
    if (in.name.empty() && in.dtype == DType::kUndefined) {
      out << "<omitted>";
    } else {
      out << dtype_name(in.dtype) << "[" << in.shape_string() << "]";
    }
  }
  out << ")";
  return out.str();
}

}  // namespace

const KernelRegistry& KernelRegistry::global() {
  static const KernelRegistry registry = [] {
    KernelRegistry r;
    cpu::register_all_kernels(r);
    return r;
  }();
  return registry;
}

void KernelRegistry::add(const std::string& domain, const std::string& op, KernelCandidate candidate) {
  table_[{domain, op}].push_back(std::move(candidate));
}

bool KernelRegistry::has(const std::string& domain, const std::string& op) const {
  return table_.count({domain, op}) != 0;
}

Result<std::unique_ptr<Kernel>> KernelRegistry::build(const KernelRequest& request, std::string* chosen_impl) const {
  RN_ENFORCE(request.node != nullptr, "KernelRequest without a node");
  const Node& node = *request.node;
  auto it = table_.find({node.domain, node.op});
  if (it == table_.end()) {
    return error(Code::kUnsupported, "no kernel for ", node.describe(), " with inputs ", describe_inputs(request),
                 ": the op is not in the runtime's kernel registry (domain '", node.domain,
                 "'); see docs/training-ops.md for the ops the runtime executes");
  }
  std::ostringstream rejections;
  int tried = 0;
  for (const KernelCandidate& candidate : it->second) {
    if (candidate.device != request.device) continue;
    ++tried;
    Result<std::unique_ptr<Kernel>> kernel = candidate.build(request);
    if (kernel.ok()) {
      RN_VERBOSE("kernel: ", node.describe(), " ", describe_inputs(request), " -> '", candidate.impl, "'");
      if (chosen_impl) *chosen_impl = candidate.impl;
      return kernel;
    }
    if (kernel.status().code() != Code::kUnsupported) {
      return kernel.status().with_context("building kernel '" + candidate.impl + "' for " + node.describe());
    }
    RN_VERBOSE("kernel: ", node.describe(), " rejected '", candidate.impl, "': ", kernel.status().message());
    rejections << "\n  '" << candidate.impl << "': " << kernel.status().message();
  }
  if (tried == 0) {
    return error(Code::kUnsupported, "no kernel for ", node.describe(), " with inputs ", describe_inputs(request),
                 " on this device: the op has kernels only for other devices");
  }
  return error(Code::kUnsupported, "no kernel accepts ", node.describe(), " with inputs ", describe_inputs(request),
               "; every candidate declined:", rejections.str());
}

}  // namespace ravnest::rt
