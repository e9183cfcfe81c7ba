// .rvt tensor file: round trips, the atomic writer, and every corruption the reader must reject.
#include "runtime/tensor_file.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "common/sha256.h"

namespace ravnest::rt {
namespace {

// Unique per test and process: ctest runs tests of this file in parallel.
std::string temp_path(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return ::testing::TempDir() + "/tensor_file_test_" + std::to_string(getpid()) + "_" + info->name() + "_" + name;
}

Tensor iota(DType dtype, Shape shape) {
  Tensor t = Tensor::empty(dtype, std::move(shape));
  auto* bytes = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.bytes(); ++i) bytes[i] = static_cast<uint8_t>(i * 31 + 7);
  return t;
}

// Builds .rvt bytes by hand so that each field can be made wrong.
struct Bytes {
  std::string data;
  template <typename T>
  Bytes& le(T v) {
    data.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& raw(const std::string& s) {
    data += s;
    return *this;
  }
};

Bytes header(uint32_t count) {
  return std::move(Bytes().raw("RVNTENS1").le<uint32_t>(count));
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_error(const std::string& bytes, Code expected_code = Code::kCorrupt) {
  std::string path = temp_path("corrupt.rvt");
  write_raw(path, bytes);
  Result<NamedTensors> r = read_tensor_file(path);
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), expected_code) << r.status().to_string();
  EXPECT_NE(r.status().message().find(path), std::string::npos) << "error must name the file: " << r.status().message();
  return r.status().message();
}

TEST(TensorFile, RoundTripsSeveralDtypes) {
  NamedTensors in;
  in.emplace_back("fc1.weight", iota(DType::kF32, {4, 3}));
  in.emplace_back("step", iota(DType::kI64, {}));
  in.emplace_back("mask", iota(DType::kBool, {2, 2, 2}));
  in.emplace_back("half", iota(DType::kF16, {5}));
  in.emplace_back("bf", iota(DType::kBF16, {1, 1, 1, 1, 1, 1, 1, 3}));
  in.emplace_back("double", iota(DType::kF64, {2}));
  in.emplace_back("empty", iota(DType::kI32, {0, 7}));
  in.emplace_back("", iota(DType::kU8, {9}));
  std::string path = temp_path("round.rvt");
  ASSERT_TRUE(write_tensor_file(path, in).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  Result<NamedTensors> out = read_tensor_file(path);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  ASSERT_EQ(out->size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const auto& [name, t] = (*out)[i];
    EXPECT_EQ(name, in[i].first);
    EXPECT_EQ(t.dtype(), in[i].second.dtype()) << name;
    EXPECT_EQ(t.shape(), in[i].second.shape()) << name;
    ASSERT_EQ(t.bytes(), in[i].second.bytes()) << name;
    EXPECT_EQ(std::memcmp(t.raw(), in[i].second.raw(), t.bytes()), 0) << name;
  }
}

TEST(TensorFile, LayoutMatchesTheSpec) {
  Tensor t = Tensor::empty(DType::kF32, {2});
  t.data<float>()[0] = 1.0f;
  t.data<float>()[1] = -2.0f;
  std::string path = temp_path("layout.rvt");
  ASSERT_TRUE(write_tensor_file(path, {{"ab", t}}).ok());
  std::ifstream f(path, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  Bytes expected = header(1);
  expected.le<uint32_t>(2).raw("ab").le<int32_t>(1).le<uint32_t>(1).le<int64_t>(2).le<uint64_t>(8);
  expected.le<float>(1.0f).le<float>(-2.0f);
  EXPECT_EQ(got, expected.data);
}

// Small tensors are staged with the metadata and large ones written from their own
// storage: sizes around the staging limit (64 KiB), interleaved, must still give the
// spec's bytes, and the digest computed while writing must be that of those bytes.
TEST(TensorFile, StagedAndDirectTensorsGiveTheSpecBytesAndTheirDigest) {
  NamedTensors in;
  Bytes expected = header(0);
  uint32_t count = 0;
  for (int64_t n : {int64_t{3}, int64_t{16383}, int64_t{16384}, int64_t{0}, int64_t{16385}, int64_t{5},
                    int64_t{300000}, int64_t{1}, int64_t{200000}}) {
    std::string name = "t" + std::to_string(count++);
    Tensor t = iota(DType::kF32, {n});
    expected.le<uint32_t>(static_cast<uint32_t>(name.size())).raw(name).le<int32_t>(1).le<uint32_t>(1).le<int64_t>(n);
    expected.le<uint64_t>(t.bytes()).raw(std::string(static_cast<const char*>(t.raw()), t.bytes()));
    in.emplace_back(name, t);
  }
  std::memcpy(expected.data.data() + 8, &count, sizeof(count));
  std::string path = temp_path("mixed.rvt");
  std::string digest;
  ASSERT_TRUE(write_tensor_file(path, in, &digest).ok());
  std::ifstream f(path, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, expected.data);
  EXPECT_EQ(digest, sha256_hex(expected.data));
  Result<std::string> from_disk = sha256_file(path);
  ASSERT_TRUE(from_disk.ok());
  EXPECT_EQ(digest, *from_disk);

  // Without tensors the file is the header alone; a failed write leaves the digest untouched.
  ASSERT_TRUE(write_tensor_file(path, {}, &digest).ok());
  EXPECT_EQ(digest, sha256_hex(header(0).data));
  std::string untouched = "unchanged";
  EXPECT_FALSE(write_tensor_file(temp_path("no/such/dir/y.rvt"), in, &untouched).ok());
  EXPECT_EQ(untouched, "unchanged");
}

TEST(TensorFile, WriterReplacesAtomicallyAndRejectsBadTensors) {
  std::string path = temp_path("replace.rvt");
  ASSERT_TRUE(write_tensor_file(path, {{"a", iota(DType::kF32, {100})}}).ok());
  ASSERT_TRUE(write_tensor_file(path, {{"b", iota(DType::kI8, {3})}}).ok());
  Result<NamedTensors> r = read_tensor_file(path);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].first, "b");

  Status long_name = write_tensor_file(path, {{std::string(4097, 'n'), iota(DType::kF32, {1})}});
  EXPECT_EQ(long_name.code(), Code::kInvalidArgument);
  EXPECT_NE(long_name.message().find("4096"), std::string::npos);
  Status rank9 = write_tensor_file(path, {{"deep", iota(DType::kF32, {1, 1, 1, 1, 1, 1, 1, 1, 1})}});
  EXPECT_NE(rank9.message().find("tensor #0 'deep' has rank 9"), std::string::npos) << rank9.message();
  // The failed writes left the previous file intact.
  r = read_tensor_file(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].first, "b");

  Status no_dir = write_tensor_file(temp_path("no/such/dir/x.rvt"), {});
  EXPECT_FALSE(no_dir.ok());
  EXPECT_NE(no_dir.message().find("no/such/dir/x.rvt.tmp"), std::string::npos);
}

TEST(TensorFile, RejectsBadMagic) {
  EXPECT_NE(read_error(Bytes().raw("RVNTENS2").le<uint32_t>(0).data).find("bad magic"), std::string::npos);
  EXPECT_NE(read_error("RVN").find("truncated: the magic needs 8 bytes"), std::string::npos);
}

TEST(TensorFile, RejectsTruncation) {
  EXPECT_NE(read_error(Bytes().raw("RVNTENS1").le<uint16_t>(1).data).find("truncated: the tensor count"),
            std::string::npos);
  // Count says 2 tensors, the file holds none: the first name length is missing.
  EXPECT_NE(read_error(header(2).data).find("truncated: tensor #0 name length"), std::string::npos);
  // Name shorter than its length.
  EXPECT_NE(read_error(header(1).le<uint32_t>(10).raw("abc").data).find("truncated: tensor #0 name needs 10"),
            std::string::npos);
  // Dims cut short.
  std::string e = read_error(header(1).le<uint32_t>(1).raw("w").le<int32_t>(1).le<uint32_t>(2).le<int64_t>(3).data);
  EXPECT_NE(e.find("truncated: tensor #0 'w' dims"), std::string::npos) << e;
  // Data shorter than nbytes: rejected before allocating.
  e = read_error(header(1)
                     .le<uint32_t>(1)
                     .raw("w")
                     .le<int32_t>(1)
                     .le<uint32_t>(1)
                     .le<int64_t>(1000000000)
                     .le<uint64_t>(4000000000ULL)
                     .raw("xxxx")
                     .data);
  EXPECT_NE(e.find("tensor #0 'w': truncated: data needs 4000000000 bytes but only 4 remain"), std::string::npos) << e;
}

TEST(TensorFile, RejectsBadFields) {
  std::string e = read_error(header(1)
                                 .le<uint32_t>(1)
                                 .raw("w")
                                 .le<int32_t>(1)
                                 .le<uint32_t>(1)
                                 .le<int64_t>(3)
                                 .le<uint64_t>(8)
                                 .raw(std::string(8, 'x'))
                                 .data);
  EXPECT_NE(e.find("tensor #0 'w': nbytes 8 does not match shape 3 of float32 (12 bytes)"), std::string::npos) << e;

  e = read_error(header(1).le<uint32_t>(1).raw("w").le<int32_t>(1).le<uint32_t>(9).data);
  EXPECT_NE(e.find("tensor #0 'w': rank 9 exceeds the limit of 8"), std::string::npos) << e;

  e = read_error(header(1).le<uint32_t>(5000).raw(std::string(5000, 'n')).data);
  EXPECT_NE(e.find("tensor #0: name length 5000 exceeds the limit of 4096"), std::string::npos) << e;

  e = read_error(header(1).le<uint32_t>(1).raw("w").le<int32_t>(99).data, Code::kUnsupported);
  EXPECT_NE(e.find("tensor #0 'w': element type code 99"), std::string::npos) << e;

  e = read_error(header(1).le<uint32_t>(1).raw("w").le<int32_t>(1).le<uint32_t>(1).le<int64_t>(-4).data);
  EXPECT_NE(e.find("dimension 0 is negative (-4)"), std::string::npos) << e;

  e = read_error(header(1)
                     .le<uint32_t>(1)
                     .raw("w")
                     .le<int32_t>(11)
                     .le<uint32_t>(2)
                     .le<int64_t>(INT64_MAX / 2)
                     .le<int64_t>(4)
                     .data);
  EXPECT_NE(e.find("is too large"), std::string::npos) << e;

  e = read_error(header(0).raw("junk").data);
  EXPECT_NE(e.find("4 unexpected bytes after the last of 0 tensors"), std::string::npos) << e;

  // The second tensor is named in its error.
  Bytes two = header(2);
  two.le<uint32_t>(1).raw("a").le<int32_t>(2).le<uint32_t>(1).le<int64_t>(1).le<uint64_t>(1).raw("z");
  two.le<uint32_t>(1).raw("b").le<int32_t>(2).le<uint32_t>(1).le<int64_t>(2).le<uint64_t>(1).raw("z");
  e = read_error(two.data);
  EXPECT_NE(e.find("tensor #1 'b': nbytes 1 does not match shape 2 of uint8 (2 bytes)"), std::string::npos) << e;
}

TEST(TensorFile, MissingFileIsNotFound) {
  Result<NamedTensors> r = read_tensor_file(temp_path("does_not_exist.rvt"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("does_not_exist.rvt"), std::string::npos);
}

}  // namespace
}  // namespace ravnest::rt
