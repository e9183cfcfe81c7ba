// The inspect report over the PyTorch CNN: rows, totals and the printed table.
#include "frontend/inspect.h"

#include <gtest/gtest.h>

#include "frontend/import.h"
#include "model_builder.h"

namespace ravnest::fe {
namespace {

TEST(Inspect, CnnRowsAndTotals) {
  ImportOptions options;
  options.batch = 64;
  auto graph = import_model(testing::cnn_model_path(), options);
  ASSERT_TRUE(graph.ok()) << graph.status().to_string();
  auto report = inspect_graph(graph.value());
  ASSERT_TRUE(report.ok()) << report.status().to_string();

  ASSERT_EQ(report->rows.size(), 10u);
  const InspectRow& conv1 = report->rows[0];
  EXPECT_EQ(conv1.op, "Conv");
  EXPECT_EQ(conv1.output_shapes, (std::vector<std::string>{"64x32x28x28"}));
  EXPECT_EQ(conv1.parameters, 32 * 9 + 32);
  double conv1_out = 64.0 * 32 * 28 * 28;
  EXPECT_DOUBLE_EQ(conv1.flops, 2 * conv1_out * 9 + conv1_out);
  // F + B + W: B = 2*MACs, W = 2*MACs + bias gradient.
  EXPECT_DOUBLE_EQ(conv1.train_flops, conv1.flops + 2 * conv1_out * 9 + 2 * conv1_out * 9 + conv1_out);
  EXPECT_DOUBLE_EQ(conv1.activation_bytes, conv1_out * 4);
  EXPECT_EQ(report->rows[9].output_shapes, (std::vector<std::string>{"64x10"}));
  EXPECT_EQ(report->rows[9].parameters, 128 * 10 + 10);

  EXPECT_EQ(report->parameters, 421642);
  EXPECT_DOUBLE_EQ(report->parameter_bytes, 421642.0 * 4);
  double flops = 0, train = 0, act = 0;
  for (const InspectRow& row : report->rows) {
    flops += row.flops;
    train += row.train_flops;
    act += row.activation_bytes;
    EXPECT_GE(row.train_flops, row.flops) << row.name;
  }
  EXPECT_DOUBLE_EQ(report->flops, flops);
  EXPECT_DOUBLE_EQ(report->train_flops, train);
  EXPECT_DOUBLE_EQ(report->activation_bytes, act);
  EXPECT_GT(report->train_flops, 2.5 * report->flops);  // conv/gemm dominate: F+B+W ~ 3F

  std::string text = format_report(report.value());
  EXPECT_NE(text.find("total: 10 nodes"), std::string::npos) << text;
  EXPECT_NE(text.find("421,642"), std::string::npos) << text;
  EXPECT_NE(text.find("30,507,008"), std::string::npos) << text;
  EXPECT_NE(text.find("64x3136"), std::string::npos) << text;
}

}  // namespace
}  // namespace ravnest::fe
