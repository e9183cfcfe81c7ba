// Stage partitioning of a weighted DAG onto a pipeline of heterogeneous machines.
//
// Guarantees of every DagPartition returned here (checked by evaluate_partition):
//  * every node has exactly one stage in [0, K); every stage holds at least one node;
//  * every edge (a tensor's producer to each of its consumers) goes from stage s to a
//    stage >= s, so the stages form a pipeline order (no stage waits on a later one);
//  * every machine's memory (fixed bytes + activation bytes x its micro-batches in
//    flight) fits its capacity;
//  * stage_time / bottleneck are the cost model below, evaluated on the returned split.
//
// Cost model. Stage s on machine s: compute_s / speed_s + in_s / bw_{s-1} + out_s / bw_s,
// where link l (between stages l and l+1) carries every tensor whose producer is in a
// stage <= l and one of whose consumers is in a stage > l (a tensor skipping stages is
// relayed by the stages between, so it loads each link it spans, once per tensor).
// The bottleneck is the largest stage time; a pipeline's step time is proportional to it.
//
// partition_dag() returns the best of: the exact contiguous split of a topological order
// (chain DP), METIS k-way (target weights proportional to speed, memory as a second
// constraint) made acyclic and refined, and the exact split of a topological order that
// keeps METIS's parts together, refined. `method` names the winner; when METIS cannot be
// used (too few nodes, K == 1, METIS error) it says so and the DP result is returned.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace ravnest::part {

// A value produced by one node and read by others (an activation crossing an edge).
struct DagTensor {
  int producer = -1;
  std::vector<int> consumers;
  double bytes = 0;  // bytes moved per micro-batch if a cut separates producer and a consumer
};

struct WeightedDag {
  std::vector<double> compute;     // per node: work on a unit-speed machine (seconds or FLOPs)
  std::vector<double> memory;      // per node: bytes held once (parameters, gradients, optimizer state)
  std::vector<double> activation;  // per node: bytes held per micro-batch in flight (empty: none)
  std::vector<DagTensor> tensors;
  std::vector<std::string> names;  // optional, for messages

  size_t size() const { return compute.size(); }
};

struct Machine {
  std::string id;
  double speed = 1;               // relative throughput (work units per time unit)
  double memory_bytes = 0;        // capacity; <= 0 means unlimited
  double in_flight = 1;           // micro-batches whose activations this stage holds at once
};

struct Pipeline {
  std::vector<Machine> machines;      // stage s runs on machines[s], in pipeline order
  std::vector<double> link_bandwidth; // K-1 entries, bytes per time unit; empty = infinitely fast links
};

struct PartitionOptions {
  bool use_metis = true;
  int refine_passes = 20;  // bound on FM-style refinement passes
  int seed = 1;            // METIS seed: the result is deterministic for a given seed
};

struct DagPartition {
  std::vector<int> stage_of_node;
  std::vector<double> stage_compute;   // compute / speed per stage
  std::vector<double> stage_transfer;  // in + out link time per stage
  std::vector<double> stage_time;      // compute + transfer
  std::vector<double> stage_memory;    // bytes per stage (fixed + activation x in_flight)
  std::vector<double> link_bytes;      // K-1 entries
  double bottleneck = 0;
  std::string method;
};

// Checks `stage_of_node` against the guarantees above and fills the costs; an error names
// the offending node / edge / machine.
Result<DagPartition> evaluate_partition(const WeightedDag& dag, const Pipeline& pipeline,
                                        std::vector<int> stage_of_node, std::string method = "given");

// The partitioner (see the file comment).
Result<DagPartition> partition_dag(const WeightedDag& dag, const Pipeline& pipeline,
                                   const PartitionOptions& options = {});

// Exact best contiguous split of `order` (a topological order of the nodes; empty = the
// node order) under the full cost model (compute, transfers at the two cuts, memory).
// Bisection on the bottleneck with an O(K n) feasibility sweep per probe.
Result<DagPartition> partition_chain_dp(const WeightedDag& dag, const Pipeline& pipeline,
                                        const std::vector<int>& order = {});

// Exhaustive search over every acyclic assignment (n <= 14, K^n <= 5e6): the reference
// optimum for tests.
Result<DagPartition> partition_brute_force(const WeightedDag& dag, const Pipeline& pipeline);

// Pipeline order of machines: the permutation whose best split is fastest, so the
// fastest links carry the largest crossing tensors. `bandwidth[i][j]`: bytes per time
// unit between machines i and j (symmetric use; <= 0 means no usable link). Each order
// is scored by the chain DP; every distinct arrangement when their number (K! over the
// factorials of the counts of interchangeable machines: same speed, memory, in-flight
// count and links) is at most 8! and times n at most 2e7, otherwise swaps of two
// positions from the given order while the score improves. The winner is
// partitioned by partition_dag(). `order[s]` is the machine index of stage s.
struct MachineOrder {
  std::vector<int> order;
  DagPartition partition;
};
Result<MachineOrder> choose_machine_order(const WeightedDag& dag, const std::vector<Machine>& machines,
                                          const std::vector<std::vector<double>>& bandwidth,
                                          const PartitionOptions& options = {});

// A topological order of the DAG (ties by node index); an error names a node on a cycle.
Result<std::vector<int>> topological_order(const WeightedDag& dag);

}  // namespace ravnest::part
