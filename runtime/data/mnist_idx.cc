// IDX reader, Sampler and batch assembly; the guarantees are listed in mnist_idx.h.
#include "runtime/data/mnist_idx.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <system_error>

#include "common/dtype.h"

namespace ravnest::rt {
namespace {

// Bytes requested per gzread call; the buffer grows by at most this much ahead of the data actually read.
constexpr int64_t kReadChunk = int64_t{1} << 20;

struct IdxFile {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Owns a zlib file handle. gzopen also reads plain (non-gzip) files transparently.
class GzReader {
 public:
  explicit GzReader(gzFile f) : f_(f) {}
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;
  ~GzReader() {
    if (f_ != nullptr) gzclose(f_);
  }

  // Reads up to `n` bytes into dst, stopping early only at end of data. Sets *got to the bytes read.
  // A zlib error (corrupt or truncated gzip stream) is kCorrupt naming `path`.
  Status read(const std::string& path, uint8_t* dst, int64_t n, int64_t* got) {
    *got = 0;
    while (*got < n) {
      const unsigned want = static_cast<unsigned>(std::min(n - *got, kReadChunk));
      const int r = gzread(f_, dst + *got, want);
      if (r < 0 || (r == 0 && zlib_failed())) {
        int errnum = Z_OK;
        const char* msg = gzerror(f_, &errnum);
        return error(Code::kCorrupt, "IDX file '", path, "' is truncated or corrupt (zlib: ", msg,
                     "); re-download or reinstall it");
      }
      if (r == 0) break;
      *got += r;
    }
    return ok_status();
  }

 private:
  bool zlib_failed() {
    int errnum = Z_OK;
    gzerror(f_, &errnum);
    return errnum != Z_OK;
  }
  gzFile f_;
};

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads an IDX file whose magic must be `magic` (uint8 data, `ndims` dimensions).
Result<IdxFile> read_idx(const std::string& path, uint32_t magic, int ndims) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return error(Code::kNotFound, "IDX file '", path, "' not found: install `dataset-fashion-mnist` with apt-get ",
                 "(it puts the files in ", kFashionMnistDir, "), or pass the folder that holds the IDX files");
  }
  gzFile raw = gzopen(path.c_str(), "rb");
  if (raw == nullptr) return error(Code::kNotFound, "IDX file '", path, "' cannot be opened; check its permissions");
  GzReader in(raw);
  gzbuffer(raw, 1 << 17);

  // Header: big-endian u32 magic, then one big-endian u32 per dimension.
  std::array<uint8_t, 4 * 4> header{};
  const int64_t header_bytes = 4 + 4 * int64_t{ndims};
  int64_t got = 0;
  RN_RETURN_IF_ERROR(in.read(path, header.data(), header_bytes, &got));
  if (got < 4) return error(Code::kCorrupt, "IDX file '", path, "' is truncated: ", got, " bytes, no header");
  const uint32_t found = read_be32(header.data());
  if (found != magic) {
    return error(Code::kCorrupt, "IDX file '", path, "' has magic ", found, ", expected ", magic,
                 magic == kIdxImagesMagic ? " (images)" : " (labels)", "; is it the right file?");
  }
  if (got < header_bytes) {
    return error(Code::kCorrupt, "IDX file '", path, "' is truncated: header needs ", header_bytes, " bytes, has ",
                 got);
  }

  IdxFile out;
  int64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    const int64_t d = read_be32(header.data() + 4 + 4 * i);
    out.dims.push_back(d);
    if (mul_overflows(total, d, &total)) {
      return error(Code::kCorrupt, "IDX file '", path, "' has dims ", shape_str(out.dims), " that overflow int64");
    }
  }

  // Grow as data arrives, so that a corrupt header cannot make us allocate gigabytes up front.
  while (static_cast<int64_t>(out.data.size()) < total) {
    const int64_t have = static_cast<int64_t>(out.data.size());
    const int64_t want = std::min(total - have, kReadChunk);
    out.data.resize(static_cast<size_t>(have + want));
    RN_RETURN_IF_ERROR(in.read(path, out.data.data() + have, want, &got));
    if (got < want) {
      return error(Code::kCorrupt, "IDX file '", path, "' is truncated: header says ", shape_str(out.dims), " = ",
                   total, " bytes of data, the file has ", have + got);
    }
  }
  uint8_t extra = 0;
  RN_RETURN_IF_ERROR(in.read(path, &extra, 1, &got));
  if (got != 0) {
    return error(Code::kCorrupt, "IDX file '", path, "' has bytes after the ", total, " data bytes its header (",
                 shape_str(out.dims), ") announces; is it the right file?");
  }
  return out;
}

}  // namespace

Result<ImageDataset> load_idx_dataset(const std::string& images_path, const std::string& labels_path) {
  RN_ASSIGN_OR_RETURN(IdxFile images, read_idx(images_path, kIdxImagesMagic, 3));
  RN_ASSIGN_OR_RETURN(IdxFile labels, read_idx(labels_path, kIdxLabelsMagic, 1));
  if (images.dims[1] == 0 || images.dims[2] == 0) {
    return error(Code::kCorrupt, "IDX file '", images_path, "' has empty images (", shape_str(images.dims), ")");
  }
  if (images.dims[0] != labels.dims[0]) {
    return error(Code::kInvalidArgument, "IDX files disagree: '", images_path, "' has ", images.dims[0],
                 " images but '", labels_path, "' has ", labels.dims[0], " labels; pass files of the same split");
  }
  ImageDataset out;
  out.count = images.dims[0];
  out.rows = images.dims[1];
  out.cols = images.dims[2];
  out.pixels = std::move(images.data);
  out.labels = std::move(labels.data);
  return out;
}

Result<ImageDataset> load_fashion_mnist(const std::string& dir, bool train) {
  const std::filesystem::path base(dir);
  const std::string prefix = train ? "train" : "t10k";
  return load_idx_dataset((base / (prefix + "-images-idx3-ubyte.gz")).string(),
                          (base / (prefix + "-labels-idx1-ubyte.gz")).string());
}

uint64_t Sampler::splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<int64_t> Sampler::permutation(uint64_t epoch) const {
  // RN_ENFORCE streams a single message part, so multi-part messages are built with error().
  RN_ENFORCE(count_ >= 0, error(Code::kInternal, "Sampler count ", count_, " is negative").message());
  std::vector<int64_t> p(static_cast<size_t>(count_));
  for (int64_t i = 0; i < count_; ++i) p[i] = i;
  uint64_t state = seed_ ^ (0xD1B54A32D192ED03ull * (epoch + 1));
  for (int64_t i = count_ - 1; i > 0; --i) {
    // Unbiased draw in [0, bound): reject the lowest (2^64 mod bound) outputs.
    const uint64_t bound = static_cast<uint64_t>(i) + 1;
    const uint64_t threshold = (0 - bound) % bound;
    uint64_t r = splitmix64(&state);
    while (r < threshold) r = splitmix64(&state);
    std::swap(p[i], p[r % bound]);
  }
  return p;
}

void fill_batch(const ImageDataset& data, const std::vector<int64_t>& indices, Tensor* images, Tensor* labels) {
  const int64_t n = static_cast<int64_t>(indices.size());
  const int64_t plane = data.rows * data.cols;
  const Shape image_shape{n, 1, data.rows, data.cols};
  const Shape label_shape{n};
  if (images->dtype() != DType::kF32 || images->shape() != image_shape || !images->defined()) {
    *images = Tensor::empty(DType::kF32, image_shape);
  }
  if (labels->dtype() != DType::kI64 || labels->shape() != label_shape || !labels->defined()) {
    *labels = Tensor::empty(DType::kI64, label_shape);
  }

  // One table for all 256 pixel values; the float32 expression matches fashion_mnist.normalize bit for bit.
  std::array<float, 256> table{};
  for (int v = 0; v < 256; ++v) table[v] = (static_cast<float>(v) / 255.0f - kPixelMean) / kPixelStd;

  float* dst = images->data<float>();
  int64_t* lab = labels->data<int64_t>();
  for (int64_t b = 0; b < n; ++b) {
    const int64_t idx = indices[b];
    RN_ENFORCE(idx >= 0 && idx < data.count,
               error(Code::kInternal, "fill_batch index ", idx, " outside [0, ", data.count, ")").message());
    const uint8_t* src = data.pixels.data() + idx * plane;
    for (int64_t k = 0; k < plane; ++k) dst[b * plane + k] = table[src[k]];
    lab[b] = data.labels[idx];
  }
}

}  // namespace ravnest::rt
