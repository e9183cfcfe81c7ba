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
#include "frontend/model_reader.h"

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

// import_model that leaves the large weights in the model file instead of copying them: every
// initializer read_model_mapped left in the mapped file that is still a parameter after import
// has empty `bytes` in the returned Graph (its dtype and shape set), and its bytes are
// views->bytes[name], valid while views->file lives (shared: keep a copy of `views`). Every other
// initializer owns its bytes, as with import_model; views->bytes names exactly the empty ones.
Result<Graph> import_model(const std::string& path, const ImportOptions& options, WeightViews* views);

}  // namespace ravnest::fe
