// SoftmaxCrossEntropyLoss (ONNX, scores [N,C], labels [N] int64, no weights) and
// its gradient ai.ravnest.SoftmaxCrossEntropyLossGrad; the mean squared error
// ai.ravnest.MseLoss (scores [N,C], labels [N] int64) and its gradient
// ai.ravnest.MseLossGrad.
//
// Guarantees: log_prob = log_softmax(scores) computed stably (max subtracted);
// per-sample loss = -log_prob[n, label[n]], 0 for samples whose label equals
// ignore_index. reduction "none" gives loss [N], "sum" the scalar sum, "mean" the
// sum divided by the number of samples not ignored (ONNX), and 0 when every sample
// is ignored (ONNX would divide by zero; a micro-batch of padding must not poison
// the step). The gradient is dscores = g_n * (softmax - onehot(label)) with g_n =
// dloss (scalar; per sample [N] for "none"), divided by the same count for "mean",
// and 0 for ignored rows. A label outside [0, C) that is not ignore_index is an
// error naming the node, the sample, the label and C.
// MseLoss: per-sample loss = mean over C of (scores - onehot(label))^2 (in double),
// 0 for ignored samples; "sum" (its default) and "mean" reduce as above ("none" is
// not offered). MseLossGrad: dscores = g * 2 (scores - onehot(label)) / C with g =
// dloss, divided by the count for "mean", and 0 for ignored rows. Both kernels
// sum per-sample results in sample order, so the thread count never changes a bit.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "runtime/cpu/common.h"

namespace ravnest::rt::cpu {
namespace {

enum class Reduction { kNone, kSum, kMean };

struct LossSpec {
  std::string who;
  Reduction reduction = Reduction::kMean;
  int64_t ignore_index = 0;
  bool has_ignore_index = false;
  int64_t n = 0, c = 0;

  bool ignored(int64_t label) const { return has_ignore_index && label == ignore_index; }

  // Checks the labels; returns how many samples count (not ignored).
  Result<int64_t> check_labels(const int64_t* labels) const {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (ignored(labels[i])) continue;
      if (labels[i] < 0 || labels[i] >= c)
        return error(Code::kInvalidArgument, who, ": label ", labels[i], " of sample ", i, " is outside [0, ", c,
                     ") for C=", c, " classes", has_ignore_index ? " and is not ignore_index" : "",
                     "; labels must be class indices of the scores");
      ++count;
    }
    return count;
  }
};

// Parses attrs and checks scores/log_prob [N,C] and labels [N]. `default_reduction`
// applies when the attribute is absent; `with_none` offers reduction "none".
Result<LossSpec> loss_spec(const KernelRequest& request, const Shape& scores, const Shape& labels,
                           const char* default_reduction = "mean", bool with_none = true) {
  const Node& node = *request.node;
  LossSpec spec;
  spec.who = node.describe();
  const std::string reduction = node.attr_string("reduction", default_reduction);
  if (reduction == "none" && !with_none)
    return error(Code::kInvalidArgument, spec.who, ": reduction 'none' is not offered; use sum or mean");
  if (reduction == "none") spec.reduction = Reduction::kNone;
  else if (reduction == "sum") spec.reduction = Reduction::kSum;
  else if (reduction == "mean") spec.reduction = Reduction::kMean;
  else return error(Code::kInvalidArgument, spec.who, ": reduction '", reduction, "' is not none, sum or mean");
  spec.has_ignore_index = node.has_attr("ignore_index");
  spec.ignore_index = node.attr_int("ignore_index", 0);
  if (scores.size() != 2)
    return decline(request, "only [N, C] scores are supported, got ", shape_str(scores));
  if (labels != Shape{scores[0]})
    return error(Code::kInvalidArgument, spec.who, ": labels ", shape_str(labels), " do not match scores ",
                 shape_str(scores));
  spec.n = scores[0];
  spec.c = scores[1];
  return spec;
}

Shape loss_shape(const LossSpec& spec) { return spec.reduction == Reduction::kNone ? Shape{spec.n} : Shape{}; }

Result<std::unique_ptr<Kernel>> build_loss(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 3, 1, 2));
  if (has_input(request, 2)) return decline(request, "class weights (input 2) are not supported");
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 1, DType::kI64));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  const bool with_log_prob = has_output(request, 1);
  if (with_log_prob) RN_RETURN_IF_ERROR(check_output_dtype(request, 1, DType::kF32));
  RN_ASSIGN_OR_RETURN(LossSpec spec, loss_spec(request, input_shape(request, 0), input_shape(request, 1)));
  if (output_shape(request, 0) != loss_shape(spec) ||
      (with_log_prob && output_shape(request, 1) != input_shape(request, 0)))
    return error(Code::kInvalidArgument, spec.who, ": output shapes do not match the reduction and the scores");
  return make_kernel([spec, with_log_prob](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* scores = in[0]->data<float>();
    const int64_t* labels = in[1]->data<int64_t>();
    RN_ASSIGN_OR_RETURN(int64_t count, spec.check_labels(labels));
    float* loss = out[0]->data<float>();
    float* log_prob = with_log_prob ? out[1]->data<float>() : nullptr;
    // Rows in parallel; the per-sample losses are summed afterwards in sample order.
    std::vector<float> samples(static_cast<size_t>(spec.n));
    parallel_for(spec.n, 4 * spec.c, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* row = scores + i * spec.c;
        float max = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < spec.c; ++j) max = std::max(max, row[j]);
        double sum = 0.0;
        for (int64_t j = 0; j < spec.c; ++j) sum += std::exp(static_cast<double>(row[j] - max));
        const float log_norm = max + static_cast<float>(std::log(sum));
        if (log_prob)
          for (int64_t j = 0; j < spec.c; ++j) log_prob[i * spec.c + j] = row[j] - log_norm;
        samples[static_cast<size_t>(i)] = spec.ignored(labels[i]) ? 0.0f : log_norm - row[labels[i]];
      }
    });
    double total = 0.0;
    for (int64_t i = 0; i < spec.n; ++i) {
      const float sample = samples[static_cast<size_t>(i)];
      if (spec.reduction == Reduction::kNone) loss[i] = sample;
      total += sample;
    }
    if (spec.reduction == Reduction::kSum) loss[0] = static_cast<float>(total);
    if (spec.reduction == Reduction::kMean) loss[0] = count ? static_cast<float>(total / count) : 0.0f;
    return ok_status();
  });
}

Result<std::unique_ptr<Kernel>> build_loss_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 3, 3, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 1, DType::kF32));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 2, DType::kI64));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  RN_ASSIGN_OR_RETURN(LossSpec spec, loss_spec(request, input_shape(request, 1), input_shape(request, 2)));
  const Shape dloss = input_shape(request, 0);
  const bool per_sample = spec.reduction == Reduction::kNone;
  if ((per_sample && dloss != Shape{spec.n}) || (!per_sample && numel(dloss) != 1) ||
      output_shape(request, 0) != input_shape(request, 1))
    return error(Code::kInvalidArgument, spec.who, ": dloss ", shape_str(dloss), " or dscores ",
                 shape_str(output_shape(request, 0)), " do not match reduction and log_prob ",
                 shape_str(input_shape(request, 1)));
  return make_kernel([spec, per_sample](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* dloss = in[0]->data<float>();
    const float* log_prob = in[1]->data<float>();
    const int64_t* labels = in[2]->data<int64_t>();
    float* dscores = out[0]->data<float>();
    RN_ASSIGN_OR_RETURN(int64_t count, spec.check_labels(labels));
    float scale = per_sample ? 1.0f : dloss[0];
    if (spec.reduction == Reduction::kMean) scale = count ? scale / static_cast<float>(count) : 0.0f;
    parallel_for(spec.n, 4 * spec.c, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float* drow = dscores + i * spec.c;
        const float* row = log_prob + i * spec.c;
        if (spec.ignored(labels[i])) {
          std::fill(drow, drow + spec.c, 0.0f);
          continue;
        }
        const float g = per_sample ? dloss[i] : scale;
        for (int64_t j = 0; j < spec.c; ++j) drow[j] = g * std::exp(row[j]);
        drow[labels[i]] -= g;
      }
    });
    return ok_status();
  });
}

// MseLoss / MseLossGrad: inputs (scores, labels) of the forward start at `scores_at`.
Result<LossSpec> mse_spec(const KernelRequest& request, size_t scores_at) {
  RN_RETURN_IF_ERROR(check_input_dtype(request, scores_at, DType::kF32));
  RN_RETURN_IF_ERROR(check_input_dtype(request, scores_at + 1, DType::kI64));
  RN_RETURN_IF_ERROR(check_output_dtype(request, 0, DType::kF32));
  return loss_spec(request, input_shape(request, scores_at), input_shape(request, scores_at + 1), "sum", false);
}

// 1 / (number of samples the reduction divides by): 1 for "sum".
double reduction_scale(const LossSpec& spec, int64_t count) {
  if (spec.reduction != Reduction::kMean) return 1.0;
  return count ? 1.0 / static_cast<double>(count) : 0.0;
}

Result<std::unique_ptr<Kernel>> build_mse_loss(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 2, 2, 1, 1));
  RN_ASSIGN_OR_RETURN(LossSpec spec, mse_spec(request, 0));
  if (output_shape(request, 0) != Shape{})
    return error(Code::kInvalidArgument, spec.who, ": the loss must be a scalar, got ",
                 shape_str(output_shape(request, 0)));
  return make_kernel([spec](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* scores = in[0]->data<float>();
    const int64_t* labels = in[1]->data<int64_t>();
    RN_ASSIGN_OR_RETURN(int64_t count, spec.check_labels(labels));
    std::vector<double> samples(static_cast<size_t>(spec.n), 0.0);
    parallel_for(spec.n, 3 * spec.c, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (spec.ignored(labels[i])) continue;
        const float* row = scores + i * spec.c;
        double sum = 0.0;
        for (int64_t j = 0; j < spec.c; ++j) {
          const double d = static_cast<double>(row[j]) - (j == labels[i] ? 1.0 : 0.0);
          sum += d * d;
        }
        samples[static_cast<size_t>(i)] = sum / static_cast<double>(spec.c);
      }
    });
    double total = 0.0;
    for (double v : samples) total += v;
    *out[0]->data<float>() = static_cast<float>(total * reduction_scale(spec, count));
    return ok_status();
  });
}

Result<std::unique_ptr<Kernel>> build_mse_loss_grad(const KernelRequest& request) {
  RN_RETURN_IF_ERROR(check_arity(request, 3, 3, 1, 1));
  RN_RETURN_IF_ERROR(check_input_dtype(request, 0, DType::kF32));
  RN_ASSIGN_OR_RETURN(LossSpec spec, mse_spec(request, 1));
  if (numel(input_shape(request, 0)) != 1 || output_shape(request, 0) != input_shape(request, 1))
    return error(Code::kInvalidArgument, spec.who, ": dloss ", shape_str(input_shape(request, 0)),
                 " must be a scalar and dscores ", shape_str(output_shape(request, 0)), " shaped like scores ",
                 shape_str(input_shape(request, 1)));
  return make_kernel([spec](const std::vector<Tensor*>& in, const std::vector<Tensor*>& out) -> Status {
    const float* scores = in[1]->data<float>();
    const int64_t* labels = in[2]->data<int64_t>();
    float* dscores = out[0]->data<float>();
    RN_ASSIGN_OR_RETURN(int64_t count, spec.check_labels(labels));
    // d/ds of mean_j (s_j - t_j)^2 is 2 (s_j - t_j) / C.
    const float g = static_cast<float>(in[0]->data<float>()[0] * reduction_scale(spec, count) * 2.0 /
                                       static_cast<double>(spec.c));
    parallel_for(spec.n, 2 * spec.c, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float* drow = dscores + i * spec.c;
        if (spec.ignored(labels[i])) {
          std::fill(drow, drow + spec.c, 0.0f);
          continue;
        }
        const float* row = scores + i * spec.c;
        for (int64_t j = 0; j < spec.c; ++j) drow[j] = g * (row[j] - (j == labels[i] ? 1.0f : 0.0f));
      }
    });
    return ok_status();
  });
}

}  // namespace

void register_loss_kernels(KernelRegistry& registry) {
  registry.add("", "SoftmaxCrossEntropyLoss", {"ref", Device::kCpu, build_loss});
  registry.add(kRavnestDomain, "SoftmaxCrossEntropyLossGrad", {"ref", Device::kCpu, build_loss_grad});
  registry.add(kRavnestDomain, "MseLoss", {"ref", Device::kCpu, build_mse_loss});
  registry.add(kRavnestDomain, "MseLossGrad", {"ref", Device::kCpu, build_mse_loss_grad});
}

}  // namespace ravnest::rt::cpu
