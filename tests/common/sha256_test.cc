// SHA-256 against the FIPS 180-4 / NIST example vectors, incremental and file hashing.
#include "common/sha256.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <unistd.h>

namespace ravnest {
namespace {

TEST(Sha256, FipsVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalEqualsOneShotForEverySplit) {
  std::string msg;
  for (int i = 0; i < 200; ++i) msg.push_back(static_cast<char>(i * 7 + 3));
  std::string expected = sha256_hex(msg);
  for (size_t split = 0; split <= msg.size(); split += 13) {
    Sha256 h;
    h.update(std::string_view(msg).substr(0, split));
    h.update(std::string_view(msg).substr(split));
    EXPECT_EQ(h.finish_hex(), expected) << "split at " << split;
  }
}

TEST(Sha256, FileMatchesBytesAndMissingFileIsNamed) {
  std::string path = ::testing::TempDir() + "/sha256_test_file.bin";
  std::string content(3 * (1 << 20) + 17, 'a');
  for (size_t i = 0; i < content.size(); i += 101) content[i] = static_cast<char>(i);
  {
    std::ofstream out(path, std::ios::binary);
    out << content;
  }
  Result<std::string> digest = sha256_file(path);
  ASSERT_TRUE(digest.ok()) << digest.status().to_string();
  EXPECT_EQ(*digest, sha256_hex(content));
  std::remove(path.c_str());

  Result<std::string> missing = sha256_file(path + ".nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("sha256_test_file.bin.nope"), std::string::npos);
}

// Regular files are hashed through 8 MiB mapped windows: sizes on and around a
// window's end, and files whose size stat does not report (/proc), which are read.
TEST(Sha256, FileAcrossMappedWindowsAndUnsizedFiles) {
  std::string path = ::testing::TempDir() + "/sha256_test_windows_" + std::to_string(::getpid()) + ".bin";
  constexpr size_t kWindow = size_t{8} << 20;
  for (size_t size : {size_t{0}, size_t{1}, kWindow - 1, kWindow, kWindow + 1, 2 * kWindow + 65}) {
    std::string content(size, '\0');
    for (size_t i = 0; i < size; ++i) content[i] = static_cast<char>((i * 2654435761u) >> 13);
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out << content;
    }
    Result<std::string> digest = sha256_file(path);
    ASSERT_TRUE(digest.ok()) << digest.status().to_string();
    EXPECT_EQ(*digest, sha256_hex(content)) << size << " bytes";
  }
  std::remove(path.c_str());

  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(bytes.empty());
  Result<std::string> proc = sha256_file("/proc/self/cmdline");
  ASSERT_TRUE(proc.ok()) << proc.status().to_string();
  EXPECT_EQ(*proc, sha256_hex(bytes));
}

std::string hex_with(Sha256Impl impl, std::string_view bytes) {
  Sha256 h(impl);
  h.update(bytes);
  return h.finish_hex();
}

// The SHA-extensions path (where this CPU has it) and the portable one on the NIST vectors.
TEST(Sha256, BothImplementationsPassFipsVectors) {
  if (!sha256_cpu_has_sha_extensions()) GTEST_LOG_(INFO) << "no SHA extensions here: both runs are portable";
  for (Sha256Impl impl : {Sha256Impl::kPortable, Sha256Impl::kShaExtensions}) {
    EXPECT_EQ(hex_with(impl, ""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(hex_with(impl, "abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(hex_with(impl, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(hex_with(impl, "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
                             "lmnopqrsmnopqrstnopqrstu"),
              "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    EXPECT_EQ(hex_with(impl, std::string(1000000, 'a')),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
}

// Random contents of every length around the block and padding edges, fed in random pieces.
TEST(Sha256, ImplementationsAgreeOnRandomLengthsAndSplits) {
  std::mt19937_64 rng(7);
  std::string data(5000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t len = 0; len < data.size(); len += (len < 300 ? 1 : 97)) {
    const std::string_view msg = std::string_view(data).substr(0, len);
    const std::string expected = hex_with(Sha256Impl::kPortable, msg);
    Sha256 pieces(Sha256Impl::kShaExtensions);
    for (size_t at = 0; at < len;) {
      const size_t take = std::min<size_t>(len - at, rng() % 150);
      pieces.update(msg.substr(at, take));
      at += take;
    }
    ASSERT_EQ(pieces.finish_hex(), expected) << "length " << len;
    ASSERT_EQ(hex_with(Sha256Impl::kAuto, msg), expected) << "length " << len;
  }
}

}  // namespace
}  // namespace ravnest
