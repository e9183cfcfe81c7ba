// Op families: groups of op-table rows that live in their own files under
// frontend/ops/, each with its shape, cost, fold and gradient rules side by side.
// op_table.cc concatenates the core rows (op_table.cc) and every family's rows; a
// family row replaces a core row of the same (domain, op), and no two families
// may define the same op (checked when the table is built).
#pragma once

#include <string>
#include <vector>

#include "frontend/op_table.h"

namespace ravnest::fe {

// Row builders shared by op_table.cc and the families.
OpDef op_row(std::string op, ShapeFn shape, CostFn cost);            // default ONNX domain
OpDef ravnest_op_row(std::string op, ShapeFn shape, CostFn cost);    // ai.ravnest domain
OpDef with_grad(OpDef d, GradFn grad);
OpDef with_fold(OpDef d, FoldFn fold);

std::vector<OpDef> math_ops();           // frontend/ops/math.cc: elementwise math, comparisons, reductions, softmax
std::vector<OpDef> movement_ops();       // frontend/ops/movement.cc: transpose, concat/split/slice, gather, pad, dropout
std::vector<OpDef> normalization_ops();  // frontend/ops/normalization.cc: BatchNorm, LayerNorm, pooling, conv variants
std::vector<OpDef> training_ops();       // frontend/ops/training.cc: losses and optimizers

}  // namespace ravnest::fe
