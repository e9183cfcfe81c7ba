// The per-op harness: one case list covering every op of the op table.
//
// For each case the harness builds a one-node graph, runs the op table's shape
// rule, then
//  * forward: runs the node through the runtime (Executor, float32 kernels chosen
//    by KernelRegistry::global()) and compares every output with the op's float64
//    reference (register_reference);
//  * backward: seeds each float output y_k with a random r_k (loss = sum r_k * y_k),
//    derives the backward with fe::build_backward (B work for kActivation inputs, W
//    work for kParameter inputs), runs it through the runtime and compares every
//    input gradient with central finite differences of the float64 reference.
// A value v passes when |got - want| <= tolerance * max(1, max|want|).
//
// Families add references and cases in their own files (tests/ops/<family>_cases.cc)
// through static registration:
//   const bool kRegistered = ops_test::register_reference("Sigmoid", sigmoid_ref) &&
//                            ops_test::register_cases({...});
#pragma once

#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/graph.h"

namespace ravnest::ops_test {

using Vec = std::vector<double>;

// A tensor in float64 (integer tensors hold exact integer values).
struct RefTensor {
  DType dtype = DType::kF32;
  Shape shape;
  Vec data;
};

// The float64 forward of one op: outputs in the node's output order (omitted
// outputs may be given as empty RefTensors).
using ReferenceFn = std::function<Result<std::vector<RefTensor>>(const Node& node, const std::vector<RefTensor>& inputs)>;

// Registers the reference of op `op` (one per op name): a default-domain op, or an
// ai.ravnest op that a model's forward may hold (MseLoss). Returns true.
bool register_reference(const std::string& op, ReferenceFn fn);
const ReferenceFn* find_reference(const std::string& op);

enum class Role {
  kActivation,  // a graph input; its gradient (B work) is checked
  kParameter,   // a trainable initializer; its gradient (W work) is checked
  kConstant,    // a constant initializer (shapes, axes, indices, frozen tensors): no gradient
  kData,        // a graph input that needs no gradient (labels, masks, indices)
};

struct InputSpec {
  std::string name;  // "" = the optional input is omitted
  Shape shape;
  Role role = Role::kActivation;
  DType dtype = DType::kF32;
  // Values; default uniform in [-1, 1] rounded to float (integers: must be given).
  // A generator returning numel values gives the whole tensor; one returning a
  // single value (uniform, integers) is called once per element.
  std::function<Vec(std::mt19937&)> values = {};
};

struct OpCase {
  std::string label;  // unique, e.g. "Mul/broadcast_row"
  Node node;          // inputs must name the InputSpecs in order ("" for omitted)
  std::vector<InputSpec> inputs;
  int opset = 17;
  double tolerance = 1e-4;
  double fd_step = 1e-6;          // central-difference step, relative to max(1, |x|)
  bool check_gradients = true;    // false for non-differentiable ops (Equal, Shape...)
};

// Registers cases (labels must be unique). Returns true.
bool register_cases(std::vector<OpCase> cases);
const std::vector<OpCase>& all_cases();
// Duplicate references or case labels seen at registration (empty when none).
const std::vector<std::string>& registration_problems();

// A default-domain node for a case (the harness names it after the case's label).
Node make_node(std::string op, std::vector<std::string> inputs, std::vector<std::string> outputs,
               std::map<std::string, AttrValue> attrs = {});

// Value generators.
std::function<Vec(std::mt19937&)> uniform(double lo, double hi);
std::function<Vec(std::mt19937&)> integers(int64_t lo, int64_t hi);  // uniform in [lo, hi]
std::function<Vec(std::mt19937&)> fixed(Vec values);

// Runs one case: an error describing the first mismatch (which output or
// gradient, index, got, want), or OK.
Status run_case(const OpCase& c, uint32_t seed);

}  // namespace ravnest::ops_test
