// ONNX model import: the compiler's entry point from a model file to the IR.
//
// Guarantees of import_model(): the returned Graph passes Graph::validate(); every
// value has a static shape; shape-computing subgraphs whose inputs are known at
// compile time are folded into constant initializers (PyTorch's
// Shape->Gather->Unsqueeze->Concat->Reshape becomes a Reshape with a constant
// shape); every node is in the op table at the model's opset; no node is dead; and
// graph.parameters holds exactly the float initializers of the file that compute
// nodes read. Every failure is a Status whose message names the file, node, input
// or opset at fault and says what to do.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/graph.h"

namespace ravnest::fe {

struct ImportOptions {
  // Full shapes for graph inputs, by name (`--shape input=64x1x28x28`).
  std::map<std::string, Shape> shapes;
  // Sets dim 0 of every graph input whose dim 0 is symbolic or unknown (`--batch 64`).
  std::optional<int64_t> batch;
};

// Parses one `--shape` value "NAME=64x1x28x28" into options.shapes.
Status add_shape_option(const std::string& spec, ImportOptions& options);
// Parses one `--batch` value (a positive integer) into options.batch.
Status set_batch_option(const std::string& text, ImportOptions& options);

Result<Graph> import_model(const std::string& path, const ImportOptions& options);

}  // namespace ravnest::fe
