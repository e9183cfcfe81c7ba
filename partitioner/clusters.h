// Cluster formation: which machines train one pipeline together (a cluster),
// chosen to maximise the total training throughput over all clusters.
//
// The model of one cluster of p machines (cost_model.h, memory_model.h):
//  * machine i takes t_i seconds for F+B+W of one micro-batch of the whole model;
//    its share of the model is proportional to its speed 1/t_i, so the balanced
//    stage time is 1 / sum(1/t_i), plus, when p > 1, half the largest op on the
//    slowest member (ops are indivisible: a perfect balance is rarely possible);
//  * a hop moves the boundary activation forward and its gradient back; the
//    per-micro-batch bottleneck is max(stage time, slowest hop's transfer);
//  * a step of m micro-batches takes (m + p - 1) bottlenecks (1F1B-like);
//  * each member must hold its share (memory_model.h) in pipeline order, the
//    machine with the most memory first (the first stage keeps the most in flight).
// Clusters average parameters every K steps over a ring whose time is set by the
// slowest link between machines of different clusters:
//   averaging = 2 (C-1)/C * param_bytes / min_stages / bandwidth + 2 (C-1) latency;
//   total samples/s = sum over clusters of samples_per_step * K / (K * step + averaging).
//
// The search: workers are ordered by speed (fastest first, ties by id); clusters
// are contiguous runs of that order and machines between runs are left out. For
// each cluster count C, a dynamic program over the order maximises the sum of the
// clusters' own throughputs; the C whose total (with averaging) is largest wins,
// ties to fewer clusters. Same inputs, same plan: no randomness, no hash order.
// Backups (role "backup") never join a cluster. Every machine left out gets a
// reason; the explanation is human-readable text.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "partitioner/cost_model.h"
#include "partitioner/devices.h"
#include "partitioner/memory_model.h"

namespace ravnest::part {

struct ClusterOptions {
  int clusters = 0;            // > 0: exactly this many clusters
  int stages_per_cluster = 0;  // > 0: exactly this many machines per cluster
  int max_stages = 16;         // the most machines one cluster may have (when not fixed)
  MemoryPlan memory;           // optimizer, schedule and micro-batches per step
  double samples_per_microbatch = 1;
  int average_every = 10;         // K: steps between averagings (>= 1)
  double workspace_bytes = 0;     // per stage, on top of the memory model's terms
  double largest_op_fraction = 0; // the model's largest op / the whole model (0..1)
  CostModelOptions cost;
  LinkEstimate unknown_link = default_link();  // where nothing was measured
};

struct Cluster {
  std::vector<size_t> machines;  // device indices in pipeline order
  double bottleneck_s = 0;       // per micro-batch
  double step_s = 0;
  double samples_per_s = 0;      // without averaging
};

struct LeftOut {
  size_t machine = 0;
  std::string reason;
};

struct ClusterPlan {
  std::vector<Cluster> clusters;
  std::vector<LeftOut> left_out;
  double averaging_s = 0;          // one averaging round
  LinkEstimate slowest_inter_link; // the link that sets averaging_s (clusters > 1)
  double total_samples_per_s = 0;  // with averaging
  std::string explanation;
};

// Errors: no worker, invalid options, or no grouping in which any cluster can hold
// the model (naming the machines and what they lack).
Result<ClusterPlan> form_clusters(const DeviceSet& devices, const ModelTotals& model, const ClusterOptions& options);

}  // namespace ravnest::part
