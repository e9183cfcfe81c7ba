// Helpers for tests that run ravnest-rt nodes by hand (backups, joins, kills): starting a node of
// a compiled folder with every other node's address, and comparing saved parameters.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/process.h"

namespace ravnest::testing {

// Starts node `i` of `dir` listening at address[i], every other node's address given with --peer, with a
// 30 s receive timeout, saving its final parameters to save_dir/node<i>.rvt; `extra` arguments are appended.
inline std::unique_ptr<Process> start_node(const std::string& dir, int i, const std::vector<std::string>& address,
                                           const std::string& save_dir, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv{binary("ravnest-rt"), "--bundle", dir + "/node" + std::to_string(i), "--listen",
                                address[static_cast<size_t>(i)], "--recv-timeout", "30", "--save-params",
                                save_dir + "/node" + std::to_string(i) + ".rvt"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  for (size_t j = 0; j < address.size(); ++j)
    if (static_cast<int>(j) != i) argv.insert(argv.end(), {"--peer", "node" + std::to_string(j) + "=" + address[j]});
  return std::make_unique<Process>(argv, std::vector<std::string>{"OMP_NUM_THREADS=1"});
}

// The run of `dir` without failures, under ravnest-launch, each node's final parameters saved to dir/base:
// what runs with kills and joins are compared with.
inline ProcessResult run_uninterrupted(const std::string& dir) {
  return run_process({binary("ravnest-launch"), dir, "--save-params", dir + "/base", "--timeout", "240"}, 300,
                     {"OMP_NUM_THREADS=1"});
}

// Every tensor of `want` is in `got` and within 1e-5 relative of it.
inline void expect_params_close(const std::map<std::string, rt::Tensor>& want,
                                const std::map<std::string, rt::Tensor>& got, const std::string& what) {
  ASSERT_FALSE(want.empty()) << what;
  ASSERT_EQ(got.size(), want.size()) << what;
  for (const auto& [name, t] : want) {
    ASSERT_TRUE(got.count(name)) << what << ": no " << name;
    EXPECT_LE(relative_diff(got.at(name), t), 1e-5) << what << ": " << name;
  }
}

}  // namespace ravnest::testing
