// Reader and atomic writer of the .rvt tensor file (see tensor_file.h).
#include "runtime/tensor_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/sha256.h"

namespace ravnest::rt {
namespace {

static_assert(std::endian::native == std::endian::little, "the .rvt reader/writer assumes a little-endian host");

// Closes a POSIX file descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// ------------------------------------------------------------------ writing

Status write_all(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return error(Code::kResourceExhausted, "writing '", path, "' failed: ", std::strerror(errno));
    p += n;
    size -= static_cast<size_t>(n);
  }
  return ok_status();
}

template <typename T>
void append_le(std::string* out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out->append(bytes, sizeof(T));
}

Status check_writable(const std::string& path, size_t index, const std::string& name, const Tensor& t) {
  auto bad = [&](const auto&... why) {
    return error(Code::kInvalidArgument, "cannot write '", path, "': tensor #", index, " '", name, "' ", why...);
  };
  if (name.size() > kTensorFileMaxNameBytes) return bad("has a name of ", name.size(), " bytes; the limit is 4096");
  if (t.rank() > kTensorFileMaxRank) return bad("has rank ", t.rank(), "; the format allows at most 8");
  if (!dtype_from_onnx(static_cast<int32_t>(t.dtype())).ok()) return bad("has dtype ", dtype_name(t.dtype()));
  if (t.bytes() > 0 && t.raw() == nullptr) return bad("has no data");
  return ok_status();
}

// The file's bytes as spans in file order: the header, every tensor's metadata and
// the data of every tensor under kStageBelowBytes are copied into one staging
// buffer; larger tensors' data is referenced where it lies (no copy). Consecutive
// staged bytes form one span, so a file of many small tensors takes a few write()s.
class FileImage {
 public:
  explicit FileImage(const NamedTensors& tensors) {
    staged_.assign(kTensorFileMagic, sizeof(kTensorFileMagic));
    append_le<uint32_t>(&staged_, static_cast<uint32_t>(tensors.size()));
    for (const auto& [name, t] : tensors) {
      append_le<uint32_t>(&staged_, static_cast<uint32_t>(name.size()));
      staged_ += name;
      append_le<int32_t>(&staged_, static_cast<int32_t>(t.dtype()));
      append_le<uint32_t>(&staged_, static_cast<uint32_t>(t.rank()));
      for (int64_t d : t.shape()) append_le<int64_t>(&staged_, d);
      append_le<uint64_t>(&staged_, static_cast<uint64_t>(t.bytes()));
      if (t.bytes() < kStageBelowBytes) {
        staged_.append(static_cast<const char*>(t.raw()), t.bytes());
      } else {
        close_staged_span();
        spans_.push_back({false, 0, static_cast<const char*>(t.raw()), t.bytes()});
      }
    }
    close_staged_span();
    for (Span& s : spans_)
      if (s.staged) s.data = staged_.data() + s.offset;  // the buffer no longer moves
  }

  // fn(data, size) for each span in file order; stops at the first error.
  template <typename Fn>
  Status for_each_span(Fn&& fn) const {
    for (const Span& s : spans_) RN_RETURN_IF_ERROR(fn(s.data, s.size));
    return ok_status();
  }

 private:
  static constexpr size_t kStageBelowBytes = 64 * 1024;
  struct Span {
    bool staged;    // data is staged_.data() + offset
    size_t offset;
    const char* data;
    size_t size;
  };
  void close_staged_span() {
    if (staged_.size() > span_begin_) spans_.push_back({true, span_begin_, nullptr, staged_.size() - span_begin_});
    span_begin_ = staged_.size();
  }

  std::string staged_;
  size_t span_begin_ = 0;
  std::vector<Span> spans_;
};

// Writes the image to fd. With sha256_hex, each piece of at most kHashChunkBytes is
// hashed right after it is written, while it is still in the CPU's cache, and the hex
// digest is stored there once every byte is written.
Status write_file_contents(int fd, const std::string& path, const NamedTensors& tensors, std::string* sha256_hex) {
  constexpr size_t kHashChunkBytes = 256 * 1024;
  const FileImage image(tensors);
  if (sha256_hex == nullptr)
    return image.for_each_span([&](const char* data, size_t size) { return write_all(fd, data, size, path); });
  Sha256 hasher;
  RN_RETURN_IF_ERROR(image.for_each_span([&](const char* data, size_t size) -> Status {
    for (size_t done = 0; done < size;) {
      const size_t n = std::min(kHashChunkBytes, size - done);
      RN_RETURN_IF_ERROR(write_all(fd, data + done, n, path));
      hasher.update(data + done, n);
      done += n;
    }
    return ok_status();
  }));
  *sha256_hex = hasher.finish_hex();
  return ok_status();
}

// ------------------------------------------------------------------ reading

// Reads fixed-size fields from a file whose size is known, so that every length
// can be checked against what is left before anything is allocated.
class Reader {
 public:
  Reader(int fd, uint64_t size, const std::string& path) : fd_(fd), remaining_(size), size_(size), path_(path) {}

  uint64_t remaining() const { return remaining_; }
  uint64_t offset() const { return size_ - remaining_; }

  // `what` names the field for the truncation message.
  Status read(void* out, uint64_t n, const std::string& what) {
    if (n > remaining_) {
      return error(Code::kCorrupt, path_, ": truncated: ", what, " needs ", n, " bytes at offset ", offset(),
                   " but only ", remaining_, " remain (file is ", size_, " bytes)");
    }
    char* p = static_cast<char*>(out);
    uint64_t left = n;
    while (left > 0) {
      ssize_t got = ::read(fd_, p, left);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return error(Code::kCorrupt, path_, ": read error at offset ", offset(), ": ", std::strerror(errno));
      if (got == 0) return error(Code::kCorrupt, path_, ": file shrank while being read (at offset ", offset(), ")");
      p += got;
      left -= static_cast<uint64_t>(got);
      remaining_ -= static_cast<uint64_t>(got);
    }
    return ok_status();
  }

  template <typename T>
  Result<T> read_le(const std::string& what) {
    T value;
    RN_RETURN_IF_ERROR(read(&value, sizeof(T), what));
    return value;
  }

 private:
  int fd_;
  uint64_t remaining_;
  uint64_t size_;
  const std::string& path_;
};

Result<std::pair<std::string, Tensor>> read_one(Reader& in, const std::string& path, uint32_t index) {
  std::string label = "tensor #" + std::to_string(index);
  auto corrupt = [&](const auto&... why) { return error(Code::kCorrupt, path, ": ", label, ": ", why...); };

  RN_ASSIGN_OR_RETURN(uint32_t name_len, in.read_le<uint32_t>(label + " name length"));
  if (name_len > kTensorFileMaxNameBytes) {
    return corrupt("name length ", name_len, " exceeds the limit of ", kTensorFileMaxNameBytes, " bytes");
  }
  std::string name(name_len, '\0');
  RN_RETURN_IF_ERROR(in.read(name.data(), name_len, label + " name"));
  label += " '" + name + "'";

  RN_ASSIGN_OR_RETURN(int32_t dtype_code, in.read_le<int32_t>(label + " dtype"));
  Result<DType> dtype = dtype_from_onnx(dtype_code);
  if (!dtype.ok()) return Status(Code::kUnsupported, path + ": " + label + ": " + dtype.status().message());

  RN_ASSIGN_OR_RETURN(uint32_t rank, in.read_le<uint32_t>(label + " rank"));
  if (rank > kTensorFileMaxRank) return corrupt("rank ", rank, " exceeds the limit of ", kTensorFileMaxRank);
  Shape shape(rank);
  for (uint32_t i = 0; i < rank; ++i) {
    RN_ASSIGN_OR_RETURN(shape[i], in.read_le<int64_t>(label + " dims"));
    if (shape[i] < 0) return corrupt("dimension ", i, " is negative (", shape[i], ")");
  }
  Result<int64_t> count = checked_numel(shape);
  int64_t expected = 0;
  if (!count.ok() || mul_overflows(*count, static_cast<int64_t>(dtype_size(*dtype)), &expected)) {
    return corrupt("shape ", shape_str(shape), " is too large");
  }

  RN_ASSIGN_OR_RETURN(uint64_t nbytes, in.read_le<uint64_t>(label + " nbytes"));
  if (nbytes != static_cast<uint64_t>(expected)) {
    return corrupt("nbytes ", nbytes, " does not match shape ", shape_str(shape), " of ", dtype_name(*dtype), " (",
                   expected, " bytes)");
  }
  if (nbytes > in.remaining()) {
    return corrupt("truncated: data needs ", nbytes, " bytes but only ", in.remaining(), " remain");
  }
  Tensor t = Tensor::empty(*dtype, shape);
  RN_RETURN_IF_ERROR(in.read(t.raw(), nbytes, label + " data"));
  return std::make_pair(std::move(name), std::move(t));
}

}  // namespace

Status write_tensor_file(const std::string& path, const NamedTensors& tensors, std::string* sha256_hex,
                         FileSync sync) {
  if (tensors.size() > UINT32_MAX) return error(Code::kInvalidArgument, "cannot write '", path, "': too many tensors");
  for (size_t i = 0; i < tensors.size(); ++i) {
    RN_RETURN_IF_ERROR(check_writable(path, i, tensors[i].first, tensors[i].second));
  }
  std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return error(Code::kInvalidArgument, "cannot create '", tmp, "': ", std::strerror(errno));
  std::string digest;  // handed out only when the file is complete and renamed into place
  Status written = write_file_contents(fd.get(), tmp, tensors, sha256_hex != nullptr ? &digest : nullptr);
  if (written.ok() && sync == FileSync::kDurable && ::fsync(fd.get()) != 0) {
    written = error(Code::kResourceExhausted, "fsync of '", tmp, "' failed: ", std::strerror(errno));
  }
  if (written.ok() && ::close(fd.release()) != 0) {
    written = error(Code::kResourceExhausted, "closing '", tmp, "' failed: ", std::strerror(errno));
  }
  // Renaming over an existing file makes ext4 (auto_da_alloc) start writing the new file back inside
  // rename(); without fsync that wait buys nothing, so the old file goes first (0.15 s per 200 MB here).
  if (written.ok() && sync == FileSync::kRenameOnly) ::unlink(path.c_str());
  if (written.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    written = error(Code::kResourceExhausted, "renaming '", tmp, "' to '", path, "' failed: ", std::strerror(errno));
  }
  if (!written.ok()) {
    fd.reset();
    ::unlink(tmp.c_str());
    return written;
  }
  if (sync == FileSync::kDurable) {  // make the rename itself durable
    std::string dir = std::filesystem::path(path).parent_path().string();
    Fd dir_fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir_fd.get() >= 0) ::fsync(dir_fd.get());
  }
  if (sha256_hex != nullptr) *sha256_hex = std::move(digest);
  return ok_status();
}

Result<NamedTensors> read_tensor_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return error(Code::kNotFound, "cannot open tensor file '", path, "': ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return error(Code::kInvalidArgument, "'", path, "' is not a regular file");
  }
  Reader in(fd.get(), static_cast<uint64_t>(st.st_size), path);

  char magic[sizeof(kTensorFileMagic)];
  RN_RETURN_IF_ERROR(in.read(magic, sizeof(magic), "the magic"));
  if (std::memcmp(magic, kTensorFileMagic, sizeof(magic)) != 0) {
    return error(Code::kCorrupt, path,
                 ": bad magic (not a Ravnest tensor file; expected it to start with \"RVNTENS1\")");
  }
  RN_ASSIGN_OR_RETURN(uint32_t count, in.read_le<uint32_t>("the tensor count"));
  NamedTensors tensors;
  // Each tensor takes at least 20 bytes, so a count larger than that bound is corrupt; reserve only what fits.
  tensors.reserve(std::min<uint64_t>(count, in.remaining() / 20));
  for (uint32_t i = 0; i < count; ++i) {
    RN_ASSIGN_OR_RETURN(auto named, read_one(in, path, i));
    tensors.push_back(std::move(named));
  }
  if (in.remaining() != 0) {
    return error(Code::kCorrupt, path, ": ", in.remaining(), " unexpected bytes after the last of ", count, " tensors");
  }
  return tensors;
}

}  // namespace ravnest::rt
