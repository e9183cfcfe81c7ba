// fails_with: a gtest predicate that a Status is an error of one code whose message
// contains every given part; the failure message says which expectation was missed.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "common/status.h"

namespace ravnest::testing {

inline ::testing::AssertionResult fails_with(const Status& st, Code code, std::initializer_list<std::string> parts) {
  if (st.ok()) return ::testing::AssertionFailure() << "expected an error, got OK";
  if (st.code() != code) {
    return ::testing::AssertionFailure() << "expected code " << code_name(code) << ", got " << st.to_string();
  }
  for (const std::string& p : parts) {
    if (st.message().find(p) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks '" << p << "': " << st.message();
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace ravnest::testing
