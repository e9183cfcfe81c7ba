// Cases and the float64 reference for ai.ravnest.MseLoss (frontend/ops/training.cc,
// runtime/cpu/loss.cc): forward against the reference, the B gradient (MseLossGrad)
// against finite differences, for both reductions, with and without ignore_index,
// at odd sizes; and the runtime error for a label outside [0, C).
//
// Guarantees: the reference is the definition in docs/training-ops.md written out
// in float64: per sample, the mean over C of (scores - onehot(label))^2, 0 for an
// ignored sample; "sum" adds the samples, "mean" divides by those not ignored.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "runtime/executor.h"
#include "tests/ops/harness.h"

namespace ravnest::ops_test {
namespace {

Result<std::vector<RefTensor>> mse_ref(const Node& node, const std::vector<RefTensor>& in) {
  const Shape& ss = in[0].shape;
  if (ss.size() != 2) return error(Code::kUnsupported, node.describe(), ": the reference handles [N, C] scores");
  const int64_t N = ss[0], C = ss[1];
  const bool has_ignore = node.has_attr("ignore_index");
  const int64_t ignore = node.attr_int("ignore_index", 0);
  double sum = 0;
  int64_t counted = 0;
  for (int64_t n = 0; n < N; ++n) {
    const auto label = static_cast<int64_t>(in[1].data[static_cast<size_t>(n)]);
    if (has_ignore && label == ignore) continue;
    if (label < 0 || label >= C)
      return error(Code::kInvalidArgument, node.describe(), ": label ", label, " is outside [0, ", C, ")");
    double row = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double d = in[0].data[static_cast<size_t>(n * C + c)] - (c == label ? 1.0 : 0.0);
      row += d * d;
    }
    sum += row / static_cast<double>(C);
    ++counted;
  }
  if (node.attr_string("reduction", "sum") == "mean") sum = counted ? sum / static_cast<double>(counted) : 0.0;
  return std::vector<RefTensor>{RefTensor{DType::kF32, {}, {sum}}};
}

Node mse_node(std::map<std::string, AttrValue> attrs) {
  Node n = make_node("MseLoss", {"scores", "labels"}, {"loss"}, std::move(attrs));
  n.domain = kRavnestDomain;
  return n;
}

// Scores around the one-hot targets (some near 1, most near 0), labels in [lo, c - 1].
OpCase mse_case(std::string label, int64_t n, int64_t c, std::map<std::string, AttrValue> attrs, int64_t lo = 0) {
  return OpCase{std::move(label), mse_node(std::move(attrs)),
                {InputSpec{"scores", {n, c}, Role::kActivation, DType::kF32, uniform(-1.5, 1.5)},
                 InputSpec{"labels", {n}, Role::kData, DType::kI64, integers(lo, c - 1)}}};
}

std::vector<OpCase> loss_cases() {
  const std::string sum = "sum", mean = "mean";
  return {
      mse_case("MseLoss/sum_default", 5, 4, {}),
      mse_case("MseLoss/sum", 6, 3, {{"reduction", sum}}),
      mse_case("MseLoss/mean", 6, 3, {{"reduction", mean}}),
      mse_case("MseLoss/odd_7x11_mean", 7, 11, {{"reduction", mean}}),
      mse_case("MseLoss/one_class", 4, 1, {}),
      // Label -1 marks rows without a target (the sequence form ravnestc appends).
      mse_case("MseLoss/ignore_index_sum", 9, 4, {{"ignore_index", int64_t{-1}}}, -1),
      mse_case("MseLoss/ignore_index_mean", 9, 5, {{"reduction", mean}, {"ignore_index", int64_t{-1}}}, -1),
      mse_case("MseLoss/ignore_index_in_range", 8, 4, {{"reduction", mean}, {"ignore_index", int64_t{2}}}),
  };
}

const bool kRegistered = register_reference("MseLoss", mse_ref) && register_cases(loss_cases());

// A label outside [0, C) stops the kernel with an error naming the node, the
// sample, the label and C; ignore_index is exempt.
Status run_mse(const std::vector<int64_t>& labels, std::map<std::string, AttrValue> attrs) {
  Graph g;
  g.name = "mse";
  g.opset = 17;
  g.inputs = {"scores", "labels"};
  g.outputs = {"loss"};
  const auto n = static_cast<int64_t>(labels.size());
  const double counted = static_cast<double>(n) - (attrs.empty() ? 0 : 1);  // the callers ignore one sample
  g.set_value(ValueInfo::of("scores", DType::kF32, {n, 4}));
  g.set_value(ValueInfo::of("labels", DType::kI64, {n}));
  g.set_value(ValueInfo::of("loss", DType::kF32, {}));
  Node node = mse_node(std::move(attrs));
  node.name = "the_loss";
  g.nodes.push_back(node);
  RN_ASSIGN_OR_RETURN(auto exec, rt::Executor::create(std::move(g), rt::KernelRegistry::global()));
  rt::TensorMap feeds;
  feeds["scores"] = rt::Tensor::empty(DType::kF32, {n, 4});
  for (int64_t i = 0; i < 4 * n; ++i) feeds["scores"].data<float>()[i] = 0.25f;
  feeds["labels"] = rt::Tensor::empty(DType::kI64, {n});
  for (int64_t i = 0; i < n; ++i) feeds["labels"].data<int64_t>()[i] = labels[static_cast<size_t>(i)];
  rt::TensorMap out;
  RN_RETURN_IF_ERROR(exec->run(feeds, &out));
  // Every row holds 0.25 everywhere: (0.75^2 + 3 * 0.25^2) / 4 = 0.1875 per counted sample.
  if (std::abs(*out.at("loss").data<float>() - 0.1875 * counted) > 1e-6)
    return error(Code::kInternal, "loss ", *out.at("loss").data<float>(), ", want ", 0.1875 * counted);
  return ok_status();
}

TEST(MseLossKernel, LabelOutsideTheClassesIsAnErrorNamingLabelAndC) {
  Status bad = run_mse({0, 7, 1}, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("the_loss"), std::string::npos) << bad.message();
  EXPECT_NE(bad.message().find("label 7 of sample 1 is outside [0, 4) for C=4 classes"), std::string::npos)
      << bad.message();
  Status negative = run_mse({-1, 2}, {});
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.message().find("label -1 of sample 0"), std::string::npos) << negative.message();
  // With ignore_index -1 the same labels are fine (one sample ignored).
  Status ignored = run_mse({-1, 2}, {{"ignore_index", int64_t{-1}}});
  EXPECT_TRUE(ignored.ok()) << ignored.to_string();
}

}  // namespace
}  // namespace ravnest::ops_test
