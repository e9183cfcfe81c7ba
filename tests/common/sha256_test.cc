// SHA-256 against the FIPS 180-4 / NIST example vectors, incremental and file hashing.
#include "common/sha256.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

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

}  // namespace
}  // namespace ravnest
