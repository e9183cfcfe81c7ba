#include "runtime/data/dataset.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "runtime/bundle.h"
#include "runtime/data/mnist_idx.h"

namespace ravnest::rt {
namespace {

Status check_rows(const std::string& kind, const char* what, const Tensor& t, const std::vector<int64_t>& indices) {
  if (t.rank() == 0 || t.dim(0) != static_cast<int64_t>(indices.size()))
    return error(Code::kInvalidArgument, "dataset '", kind, "': the ", what, " tensor ", shape_str(t.shape()),
                 " does not have one row per sample (", indices.size(), ")");
  return ok_status();
}

class FashionMnist final : public Dataset {
 public:
  explicit FashionMnist(ImageDataset data) : data_(std::move(data)) {}
  int64_t count() const override { return data_.count; }

  Status fill_inputs(const std::vector<int64_t>& indices, Tensor* inputs) const override {
    RN_RETURN_IF_ERROR(check_rows("fashion-mnist", "input", *inputs, indices));
    if (inputs->dtype() != DType::kF32 || inputs->rank() != 4)
      return error(Code::kInvalidArgument, "dataset 'fashion-mnist' feeds f32 images [N, C, H, W], but the model's data "
                   "input is ", dtype_name(inputs->dtype()), " ", shape_str(inputs->shape()),
                   "; compile with --data sort for token models");
    const int64_t n = inputs->dim(0), c = inputs->dim(1), h = inputs->dim(2), w = inputs->dim(3);
    if (c == 1 && h == data_.rows && w == data_.cols) {
      Tensor labels;
      fill_batch(data_, indices, inputs, &labels);
      return ok_status();
    }
    // Bilinear resize of the normalised 28x28 image (align_corners=false), replicated over channels.
    std::array<float, 256> table{};
    for (int v = 0; v < 256; ++v) table[v] = (static_cast<float>(v) / 255.0f - kPixelMean) / kPixelStd;
    auto axis = [](int64_t out, int64_t in) {
      std::vector<std::pair<int64_t, float>> taps(static_cast<size_t>(out));
      const double scale = static_cast<double>(in) / static_cast<double>(out);
      for (int64_t o = 0; o < out; ++o) {
        double src = std::max(0.0, (static_cast<double>(o) + 0.5) * scale - 0.5);
        int64_t i0 = std::min<int64_t>(static_cast<int64_t>(src), in - 1);
        taps[static_cast<size_t>(o)] = {i0, static_cast<float>(src - static_cast<double>(i0))};
      }
      return taps;
    };
    const auto ys = axis(h, data_.rows), xs = axis(w, data_.cols);
    float* dst = inputs->data<float>();
    for (int64_t b = 0; b < n; ++b) {
      RN_ENFORCE(indices[b] >= 0 && indices[b] < data_.count, "sample index out of range");
      const uint8_t* img = data_.pixels.data() + indices[b] * data_.rows * data_.cols;
      float* plane = dst + b * c * h * w;
      for (int64_t y = 0; y < h; ++y) {
        const auto [y0, fy] = ys[static_cast<size_t>(y)];
        const int64_t y1 = std::min(y0 + 1, data_.rows - 1);
        for (int64_t x = 0; x < w; ++x) {
          const auto [x0, fx] = xs[static_cast<size_t>(x)];
          const int64_t x1 = std::min(x0 + 1, data_.cols - 1);
          auto at = [&](int64_t r, int64_t q) { return table[img[r * data_.cols + q]]; };
          float top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx;
          float bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx;
          plane[y * w + x] = top * (1 - fy) + bottom * fy;
        }
      }
      for (int64_t ch = 1; ch < c; ++ch) std::copy(plane, plane + h * w, plane + ch * h * w);
    }
    return ok_status();
  }

  Status fill_labels(const std::vector<int64_t>& indices, Tensor* labels) const override {
    RN_RETURN_IF_ERROR(check_rows("fashion-mnist", "labels", *labels, indices));
    if (labels->dtype() != DType::kI64 || labels->rank() != 1)
      return error(Code::kInvalidArgument, "dataset 'fashion-mnist' gives i64 class labels [N], but the model's labels "
                   "input is ", dtype_name(labels->dtype()), " ", shape_str(labels->shape()));
    for (size_t b = 0; b < indices.size(); ++b) {
      RN_ENFORCE(indices[b] >= 0 && indices[b] < data_.count, "sample index out of range");
      labels->data<int64_t>()[b] = data_.labels[static_cast<size_t>(indices[b])];
    }
    return ok_status();
  }

 private:
  ImageDataset data_;
};

class SortTask final : public Dataset {
 public:
  SortTask(uint64_t split, int64_t count, bool classification)
      : split_(split), count_(count), classification_(classification) {}
  int64_t count() const override { return count_; }

  Status fill_inputs(const std::vector<int64_t>& indices, Tensor* inputs) const override {
    RN_RETURN_IF_ERROR(check_rows("sort", "input", *inputs, indices));
    if (inputs->dtype() != DType::kI64 || inputs->rank() != 2)
      return error(Code::kInvalidArgument, "dataset 'sort' feeds i64 tokens [N, T], but the model's data input is ",
                   dtype_name(inputs->dtype()), " ", shape_str(inputs->shape()));
    const int64_t t = inputs->dim(1);
    for (size_t b = 0; b < indices.size(); ++b) {
      std::vector<int64_t> s = sequence(indices[b], t);
      std::copy(s.begin(), s.begin() + t, inputs->data<int64_t>() + static_cast<int64_t>(b) * t);
    }
    return ok_status();
  }

  Status fill_labels(const std::vector<int64_t>& indices, Tensor* labels) const override {
    RN_RETURN_IF_ERROR(check_rows("sort", "labels", *labels, indices));
    if (labels->dtype() != DType::kI64 || labels->rank() < 1 || labels->rank() > 2)
      return error(Code::kInvalidArgument, "dataset 'sort' gives i64 labels [N] (is it sorted?) or [N, T] (next "
                   "tokens), but the model's labels input is ", dtype_name(labels->dtype()), " ",
                   shape_str(labels->shape()));
    int64_t* out = labels->data<int64_t>();
    if (labels->rank() == 1) {
      // Classification needs the input length, which the labels do not carry: the
      // label depends only on whether the sample was drawn sorted.
      for (size_t b = 0; b < indices.size(); ++b) out[b] = drawn_sorted(indices[b]) ? 1 : 0;
      return ok_status();
    }
    const int64_t t = labels->dim(1);
    const int64_t n = (t + 1) / 2;
    for (size_t b = 0; b < indices.size(); ++b) {
      std::vector<int64_t> s = lm_sequence(indices[b], t);
      for (int64_t i = 0; i < t; ++i)
        out[static_cast<int64_t>(b) * t + i] = (i >= n - 1 && i + 1 < 2 * n) ? s[static_cast<size_t>(i + 1)] : -1;
    }
    return ok_status();
  }

 private:
  uint64_t stream(int64_t index) const {
    return split_ * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(index) + 1) * 0xD1B54A32D192ED03ull;
  }
  bool drawn_sorted(int64_t index) const {
    uint64_t state = stream(index);
    return (Sampler::splitmix64(&state) & 1) == 1;
  }
  std::vector<int64_t> digits(uint64_t* state, int64_t n) const {
    std::vector<int64_t> x(static_cast<size_t>(n));
    for (auto& d : x) d = static_cast<int64_t>(Sampler::splitmix64(state) % kSortDigits);
    return x;
  }
  // The LM sample: x ++ sort(x), with n = (t + 1) / 2 digits.
  std::vector<int64_t> lm_sequence(int64_t index, int64_t t) const {
    uint64_t state = stream(index);
    Sampler::splitmix64(&state);  // the classification draw, kept so both tasks share one stream layout
    std::vector<int64_t> x = digits(&state, (t + 1) / 2);
    std::vector<int64_t> s = x;
    std::sort(x.begin(), x.end());
    s.insert(s.end(), x.begin(), x.end());
    return s;
  }
  // The input of a sample: the LM sequence for models whose labels are tokens; for
  // classification (where the labels cannot tell) the same layout is used, so the
  // input is the first t tokens of a sequence drawn sorted or not.
  std::vector<int64_t> sequence(int64_t index, int64_t t) const {
    if (!classification_) return lm_sequence(index, t);
    uint64_t state = stream(index);
    bool sorted = (Sampler::splitmix64(&state) & 1) == 1;
    std::vector<int64_t> x = digits(&state, t);
    if (sorted) std::sort(x.begin(), x.end());
    return x;
  }

  uint64_t split_;
  int64_t count_;
  bool classification_;
};

}  // namespace

Result<std::unique_ptr<Dataset>> open_dataset(const DataConfig& config, bool train) {
  if (config.kind == "fashion-mnist") {
    RN_ASSIGN_OR_RETURN(ImageDataset data, load_fashion_mnist(config.dir, train));
    return std::unique_ptr<Dataset>(std::make_unique<FashionMnist>(std::move(data)));
  }
  if (config.kind == "sort" || config.kind == "sort-classify") {
    return std::unique_ptr<Dataset>(std::make_unique<SortTask>(train ? 1 : 2, train ? kSortTrainCount : kSortTestCount,
                                                               config.kind == "sort-classify"));
  }
  return error(Code::kUnsupported, "data kind '", config.kind,
               "' is not supported; use fashion-mnist (images), sort (token language models) or sort-classify "
               "(token classifiers)");
}

Tally tally_predictions(const Tensor& logits, const Tensor& labels, int64_t real_samples) {
  Tally t;
  const int64_t classes = logits.rank() ? logits.dim(logits.rank() - 1) : 0;
  if (classes == 0 || labels.numel() == 0) return t;
  const int64_t rows = logits.numel() / classes;
  if (rows != labels.numel() || labels.dim(0) == 0) return t;
  const int64_t rows_per_sample = rows / labels.dim(0);
  const float* x = logits.data<float>();
  const int64_t* y = labels.data<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    if (y[r] < 0 || r / rows_per_sample >= real_samples) continue;
    const float* row = x + r * classes;
    t.correct += (std::max_element(row, row + classes) - row) == y[r];
    ++t.counted;
  }
  return t;
}

}  // namespace ravnest::rt
