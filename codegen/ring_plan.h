// The ring plan for parameter averaging across clusters.
//
// Every cluster holds the whole model, cut into its own stages. Parameters are
// laid end to end in one canonical order (order of first use in the model);
// each cluster's stages then own contiguous ranges of that space. The plan cuts
// the space at the union of all clusters' stage boundaries: each segment is
// held by exactly one node of every cluster, and those nodes form its ring.
// All rings run at once, each on its own tag. When clusters are partitioned
// identically this is one ring per stage position.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "runtime/bundle.h"

namespace ravnest::cg {

struct ClusterLayout {
  std::vector<std::string> node_ids;                 // one per stage
  std::vector<std::vector<std::string>> stage_params;  // parameters of each stage
};

// `params`: every parameter in canonical order with its element count.
// Errors if a cluster's stages do not own contiguous ranges of the space
// (a parameter used by two stages) or do not cover it.
Result<std::vector<rt::RingSpec>> plan_rings(const std::vector<std::pair<std::string, int64_t>>& params,
                                             const std::vector<ClusterLayout>& clusters);

}  // namespace ravnest::cg
