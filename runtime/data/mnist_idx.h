// IDX image datasets (MNIST, Fashion-MNIST): reading, deterministic shuffling and batch assembly.
//
// Guarantees:
//  * load_idx_dataset reads gzipped or plain IDX files (images: magic 2051, N x rows x cols uint8; labels: magic
//    2049, N uint8) and fails, naming the file, when a file is missing, has the wrong magic, is truncated or has
//    trailing bytes, or when the image and label counts differ. Memory grows only as data actually arrives, so a
//    corrupt header cannot trigger a huge allocation.
//  * Sampler gives the same permutation for the same (count, seed, epoch) on every machine and compiler: it uses
//    only 64-bit integer arithmetic (splitmix64 + Fisher-Yates with unbiased rejection sampling, see below).
//  * fill_batch normalises exactly as models/cnn/fashion_mnist.py does, in float32:
//        x = (float(p) / 255.0f - kPixelMean) / kPixelStd
//    so C++ batches are bit-identical to the PyTorch reference input.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/tensor.h"

namespace ravnest::rt {

// Where the Debian package `dataset-fashion-mnist` installs the four .gz files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
// Fashion-MNIST training-set mean and standard deviation of pixels scaled to [0, 1] (models/README.md).
inline constexpr float kPixelMean = 0.2860f;
inline constexpr float kPixelStd = 0.3530f;

inline constexpr uint32_t kIdxImagesMagic = 2051;  // 0x00000803: uint8, 3 dims
inline constexpr uint32_t kIdxLabelsMagic = 2049;  // 0x00000801: uint8, 1 dim

struct ImageDataset {
  int64_t count = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> pixels;  // count * rows * cols, row-major, image after image
  std::vector<uint8_t> labels;  // count
};

Result<ImageDataset> load_idx_dataset(const std::string& images_path, const std::string& labels_path);

// Reads DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.
Result<ImageDataset> load_fashion_mnist(const std::string& dir = kFashionMnistDir, bool train = true);

// Deterministic per-epoch shuffling of [0, count).
//
// PRNG: splitmix64 (Steele, Lea, Flood 2014):
//     state += 0x9E3779B97F4A7C15; z = state;
//     z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31);
// The stream of epoch e starts from state = seed ^ (0xD1B54A32D192ED03 * (e + 1)) (mod 2^64).
// Permutation: start from the identity; for i = count-1 down to 1, draw j uniform in [0, i] and swap p[i], p[j].
// j is drawn without modulo bias: with b = i + 1, draw r until r >= (2^64 - b) mod b, then j = r mod b.
class Sampler {
 public:
  Sampler(int64_t count, uint64_t seed) : count_(count), seed_(seed) {}

  int64_t count() const { return count_; }
  uint64_t seed() const { return seed_; }
  std::vector<int64_t> permutation(uint64_t epoch) const;

  // One step of splitmix64: advances *state and returns the next output.
  static uint64_t splitmix64(uint64_t* state);

 private:
  int64_t count_;
  uint64_t seed_;
};

// Copies the images and labels at `indices` into `images` (f32, N x 1 x rows x cols, normalised as above) and
// `labels` (i64, N). A tensor that already has that dtype and shape is written in place (so callers may reuse
// buffers); otherwise it is replaced by a newly allocated one. An index outside [0, count) is a bug: RN_ENFORCE.
void fill_batch(const ImageDataset& data, const std::vector<int64_t>& indices, Tensor* images, Tensor* labels);

}  // namespace ravnest::rt
