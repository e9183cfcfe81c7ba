// Datasets behind one interface: what the trainer feeds the first stage's data
// input and the last stage's labels input, for any target model.
//
// Kinds (DataConfig::kind, docs/training.md "Data"):
//  * "fashion-mnist": Debian's dataset-fashion-mnist. Images go to an f32
//    [N, C, H, W] input: 1x28x28 is written exactly as fill_batch does (bit-
//    identical to models/cnn/fashion_mnist.py); other sizes are resized bilinearly
//    (align_corners=false, as torch.nn.functional.interpolate) and replicated over
//    C channels, so ResNet (3x32x32) and Inception (3x75x75) train on real images.
//    Labels: i64 [N].
//  * "sort": the minGPT sorting task, generated from (seed, split, index) alone,
//    so every node derives the same sample without sharing files. Tokens are
//    digits 0..kSortDigits-1 in an i64 [N, T] input.
//      - language modelling (labels i64 [N, T]): n = (T + 1) / 2 digits x, the
//        sequence s = x ++ sort(x); input s[0..T), target t = s[t+1] for
//        t >= n - 1 (the answer), -1 (ignored) on the prompt and past the end;
//      - classification (labels i64 [N]): T digits, sorted for half of the
//        samples; label 1 when non-decreasing, else 0.
//
// Guarantees: fill_inputs/fill_labels accept exactly the dtypes and shapes above
// and otherwise fail naming the kind, the tensor and what it supports; the same
// (kind, split, index) always gives the same sample.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/tensor.h"

namespace ravnest::rt {

struct DataConfig;

inline constexpr int64_t kSortDigits = 3;
inline constexpr int64_t kSortTrainCount = 60000;
inline constexpr int64_t kSortTestCount = 10000;

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t count() const = 0;
  // `inputs` / `labels` come preallocated with the program's static type; row b
  // receives sample indices[b] (indices.size() == the tensor's first dim).
  virtual Status fill_inputs(const std::vector<int64_t>& indices, Tensor* inputs) const = 0;
  virtual Status fill_labels(const std::vector<int64_t>& indices, Tensor* labels) const = 0;
};

// The training (train = true) or test split of the configured dataset.
Result<std::unique_ptr<Dataset>> open_dataset(const DataConfig& config, bool train);

// Accuracy bookkeeping for a batch of logits: rows are logits flattened to
// [M, C] (every dim but the last), labels flattened to M; rows whose label is
// negative (ignored positions) or that belong to samples >= real_samples
// (padding) are not counted.
struct Tally {
  int64_t correct = 0;
  int64_t counted = 0;
};
Tally tally_predictions(const Tensor& logits, const Tensor& labels, int64_t real_samples);

}  // namespace ravnest::rt
