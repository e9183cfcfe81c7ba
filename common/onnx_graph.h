// The bridge between ONNX protobuf and the Graph IR, in both directions.
//
// Guarantees: graph_from_proto keeps node order, attributes, value types and
// initializers (external data resolved against `base_dir`); graph_to_proto
// writes a ModelProto that onnx.checker accepts for standard ops, with our own
// ops in the `ai.ravnest` domain. Round-tripping a Graph is lossless.
#pragma once

#include <string>

#include "common/graph.h"

namespace onnx {
class ModelProto;
class TensorProto;
}  // namespace onnx

namespace ravnest {

// Reads a serialized ModelProto; errors name the file and say what is wrong
// (missing, unreadable, not an ONNX protobuf).
Result<onnx::ModelProto> read_model_proto(const std::string& path);

// `base_dir` locates external-data files of initializers ("" = no external data allowed).
Result<Graph> graph_from_proto(const onnx::ModelProto& model, const std::string& base_dir);
Result<TensorData> tensor_from_proto(const onnx::TensorProto& tensor, const std::string& base_dir);

// Writes a model with opset `graph.opset` for the default domain and 1 for ai.ravnest.
onnx::ModelProto graph_to_proto(const Graph& graph);
Status write_model_proto(const onnx::ModelProto& model, const std::string& path);

}  // namespace ravnest
