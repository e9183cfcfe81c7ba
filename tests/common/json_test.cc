// JSON parser, printer and typed path getters.
#include "common/json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

namespace ravnest {
namespace {

Json parse_ok(std::string_view text) {
  Result<Json> r = parse_json(text);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? *r : Json();
}

std::string parse_error(std::string_view text) {
  Result<Json> r = parse_json(text);
  EXPECT_FALSE(r.ok()) << "accepted: " << text;
  return r.ok() ? std::string() : r.status().message();
}

TEST(Json, ParsesAllKinds) {
  Json j = parse_ok(R"( {"n": null, "t": true, "f": false, "i": -42, "d": 2.5, "s": "a\"b\\c\n\u00e9\ud83d\ude00",
                         "a": [1, [2, {}], []], "o": {"x": {"y": "z"}}} )");
  ASSERT_TRUE(j.is_object());
  EXPECT_TRUE(j.find("n")->is_null());
  EXPECT_TRUE(j.find("t")->as_bool());
  EXPECT_FALSE(j.find("f")->as_bool());
  EXPECT_EQ(j.find("i")->as_int(), -42);
  EXPECT_FALSE(j.find("d")->is_int());
  EXPECT_EQ(j.find("d")->as_double(), 2.5);
  EXPECT_EQ(j.find("s")->as_string(), "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(j.find("a")->size(), 3u);
  EXPECT_EQ(*j.get_string("o.x.y"), "z");
}

TEST(Json, KeepsKeyOrderAndRoundTrips) {
  std::string text = R"({"zeta":1,"alpha":[true,null,"x"],"mid":{"b":-0.125,"a":1e+300}})";
  Json j = parse_ok(text);
  ASSERT_EQ(j.members().size(), 3u);
  EXPECT_EQ(j.members()[0].first, "zeta");
  EXPECT_EQ(j.members()[1].first, "alpha");
  EXPECT_EQ(j.members()[2].first, "mid");
  EXPECT_EQ(j.dump(0), text);
  for (int indent : {0, 2, 4}) {
    Json again = parse_ok(j.dump(indent));
    EXPECT_EQ(again, j) << j.dump(indent);
  }
  EXPECT_EQ(parse_ok("[1,{\"a\":2}]").dump(2), "[\n  1,\n  {\n    \"a\": 2\n  }\n]");
}

TEST(Json, IntegersAreExactBeyondDoublePrecision) {
  Json j = parse_ok("[9007199254740993, -9223372036854775808, 9223372036854775807, 18446744073709551616, 3.0]");
  EXPECT_EQ(j.items()[0].as_int(), 9007199254740993LL);
  EXPECT_EQ(j.items()[1].as_int(), INT64_MIN);
  EXPECT_EQ(j.items()[2].as_int(), INT64_MAX);
  EXPECT_FALSE(j.items()[3].is_int());  // beyond int64: a double only
  EXPECT_EQ(j.items()[3].as_double(), 18446744073709551616.0);
  EXPECT_TRUE(j.items()[4].is_int());  // integral double
  EXPECT_EQ(j.items()[4].as_int(), 3);
  EXPECT_EQ(parse_ok(j.dump()).items()[0].as_int(), 9007199254740993LL);
}

TEST(Json, ErrorsGiveLineColumnAndExpectation) {
  std::string e = parse_error("{\n  \"a\": 1,\n  \"b\" 2\n}");
  EXPECT_NE(e.find("line 3, column 7"), std::string::npos) << e;
  EXPECT_NE(e.find("expected ':'"), std::string::npos) << e;
  EXPECT_NE(e.find("found '2'"), std::string::npos) << e;

  e = parse_error("[1, 2");
  EXPECT_NE(e.find("expected ',' or ']'"), std::string::npos) << e;
  EXPECT_NE(e.find("the end of the input"), std::string::npos) << e;

  EXPECT_NE(parse_error("{\"a\":1,}").find("expected a string key"), std::string::npos);
  EXPECT_NE(parse_error("[01]").find("expected ',' or ']'"), std::string::npos);
  EXPECT_NE(parse_error("{\"k\":1,\"k\":2}").find("duplicate object key \"k\""), std::string::npos);
  EXPECT_NE(parse_error("1 2").find("end of the document"), std::string::npos);
  EXPECT_NE(parse_error("\"tab\there\"").find("control character"), std::string::npos);
  EXPECT_NE(parse_error("\"\\ud800x\"").find("low surrogate"), std::string::npos);
  EXPECT_NE(parse_error("[1e999]").find("out of the range"), std::string::npos);
  EXPECT_NE(parse_error("tru").find("expected a value"), std::string::npos);
  EXPECT_NE(parse_error("").find("expected a value"), std::string::npos);
  EXPECT_NE(parse_error("[-]").find("expected a digit"), std::string::npos);
  EXPECT_NE(parse_error("[1.]").find("after '.'"), std::string::npos);
  EXPECT_NE(parse_error("{\"a\":\"x\\q\"}").find("after '\\'"), std::string::npos);
}

TEST(Json, NestingDepthIsBounded) {
  std::string ok_text = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(parse_json(ok_text).ok());
  std::string deep = std::string(kMaxJsonDepth + 1, '[') + std::string(kMaxJsonDepth + 1, ']');
  EXPECT_NE(parse_error(deep).find("nesting deeper than 128"), std::string::npos);
  // Far deeper input must fail cleanly, not overflow the stack.
  EXPECT_FALSE(parse_json(std::string(1000000, '[')).ok());
}

TEST(Json, TypedGettersNameThePath) {
  Json j = parse_ok(R"({"training": {"batch": 64, "lr": 0.01, "name": "mnist", "on": true},
                       "stages": [{"node": "n0"}, {"node": "n1"}]})");
  EXPECT_EQ(*j.get_int("training.batch"), 64);
  EXPECT_DOUBLE_EQ(*j.get_double("training.lr"), 0.01);
  EXPECT_DOUBLE_EQ(*j.get_double("training.batch"), 64.0);
  EXPECT_EQ(*j.get_string("stages[1].node"), "n1");
  EXPECT_TRUE(*j.get_bool("training.on"));
  EXPECT_EQ((*j.get_array("stages"))->size(), 2u);
  EXPECT_TRUE((*j.get_object("training"))->is_object());

  Result<int64_t> wrong = j.get_int("training.lr");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().message(), "key 'training.lr': expected an integer, found number 0.01");

  Result<std::string> missing = j.get_string("training.optimizer");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_EQ(missing.status().message(), "missing key 'training.optimizer' ('training' has keys: batch, lr, name, on)");

  Result<std::string> out_of_range = j.get_string("stages[5].node");
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_NE(out_of_range.status().message().find("index 5 is out of range; 'stages' has 2 items"), std::string::npos);

  Result<int64_t> not_object = j.get_int("training.name.x");
  ASSERT_FALSE(not_object.ok());
  EXPECT_NE(not_object.status().message().find("'training.name' is string \"mnist\", not an object"),
            std::string::npos);

  EXPECT_FALSE(j.get_int("training..batch").ok());
  EXPECT_FALSE(j.get_int("stages[x]").ok());
}

TEST(Json, OptionalGetters) {
  Json j = parse_ok(R"({"a": {"b": 3, "n": null, "s": "x"}})");
  EXPECT_EQ(*j.get_int_or("a.b", 7), 3);
  EXPECT_EQ(*j.get_int_or("a.missing", 7), 7);
  EXPECT_EQ(*j.get_int_or("a.n", 7), 7);
  EXPECT_EQ(*j.get_string_or("z", "dflt"), "dflt");
  EXPECT_FALSE(*j.get_bool_or("a.q", false));
  EXPECT_DOUBLE_EQ(*j.get_double_or("a.q", 1.5), 1.5);
  Result<int64_t> wrong = j.get_int_or("a.s", 7);  // present with the wrong type: an error, not the fallback
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("key 'a.s': expected an integer"), std::string::npos);
}

TEST(Json, BuildAndDump) {
  Json j = Json::object();
  j.set("name", "bundle");
  j.set("version", 1);
  Json& list = j.set("files", Json::array());
  list.push_back("a.onnx");
  list.push_back(Json(uint64_t{1} << 40));
  j.set("version", 2);  // replaces in place
  j.set("ratio", 0.5);
  j.set("bad", std::nan(""));
  EXPECT_EQ(j.dump(0), R"({"name":"bundle","version":2,"files":["a.onnx",1099511627776],"ratio":0.5,"bad":null})");
  Json s("ctl\x01\"q\"");
  EXPECT_EQ(s.dump(), "\"ctl\\u0001\\\"q\\\"\"");
  EXPECT_EQ(*parse_json(s.dump()), s);
}

TEST(Json, ReadFileNamesTheFile) {
  std::string path = ::testing::TempDir() + "/json_test_manifest.json";
  {
    std::ofstream out(path);
    out << "{\n  \"format\": 1,\n  \"x\": [1,, 2]\n}\n";
  }
  Result<Json> r = read_json_file(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().rfind(path + ":3:11: expected a value", 0), 0u) << r.status().message();
  {
    std::ofstream out(path);
    out << "{\"format\": 1}";
  }
  r = read_json_file(path);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r->get_int("format"), 1);
  std::remove(path.c_str());
  Result<Json> missing = read_json_file(path);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find(path), std::string::npos);
}

}  // namespace
}  // namespace ravnest
