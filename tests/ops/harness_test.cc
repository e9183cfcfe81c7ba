// The per-op suite: one test per registered case (named after its label, so
// --gtest_filter='*Mul*' selects Mul's cases), plus checks that the case list is
// well formed and covers every op that has a gradient rule or a kernel.
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <set>
#include <string>

#include "frontend/op_table.h"
#include "runtime/kernel.h"
#include "tests/ops/harness.h"

namespace ravnest::ops_test {

// gtest prints a failing parameter with this (not the raw bytes of an OpCase).
void PrintTo(const OpCase& c, std::ostream* os) { *os << c.label; }

namespace {

// "Mul/broadcast_row" -> "Mul_broadcast_row": gtest names allow [A-Za-z0-9_].
std::string sanitise(const std::string& label) {
  std::string out;
  for (char ch : label) out += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return out.empty() ? "unnamed" : out;
}

std::string case_name(const testing::TestParamInfo<OpCase>& info) {
  // Labels are unique (RegistrationIsClean checks), but two may sanitise alike:
  // keep gtest's names unique anyway so one clash cannot hide every other case.
  std::string name = sanitise(info.param.label);
  const auto& cases = all_cases();
  for (size_t i = 0; i < info.index && i < cases.size(); ++i)
    if (sanitise(cases[i].label) == name) return name + "_" + std::to_string(info.index);
  return name;
}

class OpCaseTest : public testing::TestWithParam<OpCase> {};

TEST_P(OpCaseTest, ForwardAndGradients) {
  const OpCase& c = GetParam();
  Status s = run_case(c, 20240611u);
  EXPECT_TRUE(s.ok()) << s.to_string();
}

INSTANTIATE_TEST_SUITE_P(Ops, OpCaseTest, testing::ValuesIn(all_cases()), case_name);

TEST(OpHarness, RegistrationIsClean) {
  std::string problems;
  for (const auto& p : registration_problems()) problems += "\n  " + p;
  EXPECT_TRUE(problems.empty()) << "the case list is malformed:" << problems;
  std::set<std::string> names;
  for (const OpCase& c : all_cases())
    EXPECT_TRUE(names.insert(sanitise(c.label)).second)
        << "case '" << c.label << "' has the same test name as another case; rename one";
}

// Every op of the table that can be differentiated or run has a case, except
// those folded at compile time only.
TEST(OpHarness, EveryOpHasACase) {
  const std::set<std::string> folded_only = {"Constant", "ConstantOfShape", "Shape", "Range"};
  std::set<std::string> covered;
  for (const OpCase& c : all_cases())
    if (c.node.domain.empty() || c.node.domain == "ai.onnx") covered.insert(c.node.op);
  std::set<std::string> missing;
  for (const fe::OpDef& def : fe::all_ops()) {
    if (!def.domain.empty() || folded_only.count(def.op) || covered.count(def.op)) continue;
    if (def.grad || rt::KernelRegistry::global().has("", def.op)) missing.insert(def.op);
  }
  std::string list;
  for (const auto& op : missing) list += (list.empty() ? "" : ", ") + op;
  EXPECT_TRUE(missing.empty()) << missing.size() << " ops with a gradient rule or a kernel have no case in tests/ops: "
                               << list;
}

// Every case's op has a reference (run_case would fail anyway; this names them all).
TEST(OpHarness, EveryCaseHasAReference) {
  std::set<std::string> missing;
  for (const OpCase& c : all_cases())
    if (!find_reference(c.node.op)) missing.insert(c.node.op);
  std::string list;
  for (const auto& op : missing) list += (list.empty() ? "" : ", ") + op;
  EXPECT_TRUE(missing.empty()) << "ops with cases but no reference: " << list;
}

// ---- the harness can fail: wrong references must be caught -----------------

// Replaces op's registered reference for the scope of a test.
class ScopedReference {
 public:
  ScopedReference(const std::string& op, ReferenceFn replacement)
      : slot_(const_cast<ReferenceFn*>(find_reference(op))) {
    if (slot_) {
      saved_ = *slot_;
      *slot_ = std::move(replacement);
    }
  }
  ~ScopedReference() {
    if (slot_) *slot_ = saved_;
  }
  bool ok() const { return slot_ != nullptr; }

 private:
  ReferenceFn* slot_;
  ReferenceFn saved_;
};

// A reference equal to `base` at the first point it is called with (the forward
// check) but twice as sensitive to input `j` around it: the forward passes and
// only the gradient of input j disagrees with the runtime.
ReferenceFn doubled_slope(ReferenceFn base, size_t j) {
  auto origin = std::make_shared<std::optional<Vec>>();
  return [base, j, origin](const Node& node, const std::vector<RefTensor>& in) -> Result<std::vector<RefTensor>> {
    if (!*origin) *origin = in[j].data;
    RN_ASSIGN_OR_RETURN(std::vector<RefTensor> y, base(node, in));
    if (in[j].data == **origin) return y;
    std::vector<RefTensor> at_origin = in;
    at_origin[j].data = **origin;
    RN_ASSIGN_OR_RETURN(std::vector<RefTensor> y0, base(node, at_origin));
    for (size_t k = 0; k < y.size(); ++k)
      for (size_t i = 0; i < y[k].data.size(); ++i) y[k].data[i] = y0[k].data[i] + 2 * (y[k].data[i] - y0[k].data[i]);
    return y;
  };
}

OpCase gemm_with_weight() {
  OpCase c;
  c.label = "selftest/Gemm";
  c.node.op = "Gemm";
  c.node.inputs = {"a", "w"};
  c.node.outputs = {"y"};
  c.inputs = {InputSpec{"a", {3, 4}}, InputSpec{"w", {4, 2}, Role::kParameter}};
  return c;
}

std::string failure_of(const OpCase& c) {
  Status s = run_case(c, 7);
  return s.ok() ? std::string("(passed)") : s.message();
}

TEST(OpHarness, CaseWithCorrectReferencePasses) {
  Status s = run_case(gemm_with_weight(), 7);
  EXPECT_TRUE(s.ok()) << s.to_string();
}

TEST(OpHarness, WrongForwardIsCaughtWithItsIndex) {
  const ReferenceFn* gemm = find_reference("Gemm");
  ASSERT_NE(gemm, nullptr);
  ReferenceFn base = *gemm;
  ScopedReference wrong("Gemm", [base](const Node& node, const std::vector<RefTensor>& in) {
    auto y = base(node, in);
    if (y.ok()) (*y)[0].data[5] += 0.01;
    return y;
  });
  const std::string message = failure_of(gemm_with_weight());
  EXPECT_NE(message.find("selftest/Gemm: output 0 'y' [flat 5]: got "), std::string::npos) << message;
  EXPECT_NE(message.find(", want "), std::string::npos) << message;
}

TEST(OpHarness, WrongWGradientIsCaught) {
  ReferenceFn base = *find_reference("Gemm");
  ScopedReference wrong("Gemm", doubled_slope(base, 1));
  const std::string message = failure_of(gemm_with_weight());
  EXPECT_NE(message.find("selftest/Gemm: W gradient of parameter 'w' [flat "), std::string::npos) << message;
}

TEST(OpHarness, WrongBGradientIsCaught) {
  ReferenceFn base = *find_reference("Gemm");
  ScopedReference wrong("Gemm", doubled_slope(base, 0));
  const std::string message = failure_of(gemm_with_weight());
  EXPECT_NE(message.find("selftest/Gemm: B gradient of input 'a' [flat "), std::string::npos) << message;
}

TEST(OpHarness, WrongOutputShapeIsCaught) {
  ReferenceFn base = *find_reference("Gemm");
  ScopedReference wrong("Gemm", [base](const Node& node, const std::vector<RefTensor>& in) {
    auto y = base(node, in);
    if (y.ok()) (*y)[0].shape = {2, 3};
    return y;
  });
  const std::string message = failure_of(gemm_with_weight());
  EXPECT_NE(message.find("the shape rule says float32[3x2], the reference float32[2x3]"), std::string::npos)
      << message;
}

TEST(OpHarness, MismatchedInputNamesAreRejected) {
  OpCase c = gemm_with_weight();
  c.inputs[1].name = "b";
  const std::string message = failure_of(c);
  EXPECT_NE(message.find("node input 1 is 'w' but its InputSpec is named 'b'"), std::string::npos) << message;
}

TEST(OpHarness, GeneratorsFillEveryElement) {
  std::mt19937 rng(1);
  auto u = uniform(2.0, 3.0);
  auto i = integers(-1, 1);
  for (int k = 0; k < 100; ++k) {
    const double a = u(rng).at(0), b = i(rng).at(0);
    EXPECT_TRUE(a >= 2.0 && a < 3.0) << a;
    EXPECT_TRUE(b == -1 || b == 0 || b == 1) << b;
  }
  EXPECT_EQ(fixed({1, 2, 3})(rng), (Vec{1, 2, 3}));
}

}  // namespace
}  // namespace ravnest::ops_test
