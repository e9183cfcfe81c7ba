// The runtime stays lean: no file under runtime/ includes a compiler header
// (frontend/, partitioner/, codegen/), so a node ships without the compiler.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

namespace {

TEST(Layering, RuntimeIncludesNoCompilerHeader) {
  namespace fs = std::filesystem;
  const std::regex include(R"(^\s*#\s*include\s*[<"](frontend|partitioner|codegen)/)");
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(std::string(RAVNEST_SOURCE_DIR) + "/runtime")) {
    auto ext = entry.path().extension();
    if (ext != ".h" && ext != ".cc" && ext != ".cu" && ext != ".cuh") continue;
    ++files;
    std::ifstream in(entry.path());
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
      ++number;
      EXPECT_FALSE(std::regex_search(line, include)) << entry.path().string() << ":" << number << ": " << line;
    }
  }
  EXPECT_GT(files, 10);  // the scan really looked at the runtime's sources
}

}  // namespace
