// compile_model: the whole compiler pipeline behind `ravnestc compile`:
// import -> cost model -> [devices: cluster formation, machine order] -> stage
// split (block boundaries for transformers, the DAG partitioner otherwise) ->
// stage programs (autodiff) -> schedules -> one bundle per node + a report
// (report.txt and the self-contained report.html).
//
// With a devices file (docs/devices.md) every stage is balanced to its own
// machine: per-node seconds from that machine's profile (cost model), its
// memory and the schedule's micro-batches in flight (memory model), the links
// between consecutive machines; each manifest carries its machine's address. A
// plan that cannot fit is kResourceExhausted naming the machine, the missing
// bytes and what would fit.
#pragma once

#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "codegen/report.h"
#include "common/dtype.h"
#include "runtime/bundle.h"

namespace ravnest::cg {

struct CompileOptions {
  std::string model_path;
  std::string out_dir;
  int stages = 1;
  // Data parallelism: one entry per cluster, its number of stages (clusters
  // may be cut differently). Empty: one cluster of `stages`.
  std::vector<int> cluster_stages;
  int64_t batch = 64;
  int64_t microbatches = 1;
  std::map<std::string, Shape> shapes;  // --shape overrides (per micro-batch)
  std::string schedule = "1f1b";
  std::string host = "127.0.0.1";  // every node's host (local runs)
  int base_port = 29500;           // node i listens on base_port + i (nodes numbered cluster by cluster)
  rt::TrainingConfig training;     // batch/microbatch fields are filled from above
  // The dataset (rt::DataConfig::kind, runtime/data/dataset.h), or "auto": images
  // (a float data input) train on fashion-mnist, token models on the sort task
  // (language models with [B, T, V] logits) or sort-classify ([B, C] logits).
  std::string dataset = "auto";
  // The loss appended to a model that ends in logits: "ce" or "mse" (StageOptions::loss).
  std::string loss = "ce";
  // Flexible update rule: per cluster, the local steps between averaging rounds
  // (e.g. proportional to each cluster's throughput); empty: --average-every for all.
  std::vector<int64_t> local_steps;
  // A devices file (docs/devices.md): clusters, stages and addresses come from
  // its machines; `host`, `base_port`, `stages` and `cluster_stages` are ignored.
  std::string devices_path;
  // Backup nodes (docs/faults.md), synchronous training: without a devices file, one
  // backup node for each listed (cluster, stage) (addresses after the workers'); with
  // one, every device of role "backup" shadows the least reliable stage machine of any
  // cluster not yet shadowed (lowest reliability, then slowest).
  std::vector<std::pair<int, int>> backup_stages;
  // Several clusters: nodes that join during the run (`ravnest-rt join`) may form a new
  // cluster, a copy of cluster 0's split (docs/faults.md). Every averaging round then
  // has a coordinator per ring (one extra round trip per round).
  bool joinable = false;
  // Several clusters: nodes that join during the run become backups of stages without one, in their
  // pipeline and in their averaging rings (docs/faults.md); implied by backups compiled into such a run.
  bool join_backups = false;
  int device_clusters = 0;  // with devices_path: > 0 fixes the number of clusters
  int device_stages = 0;    // with devices_path: > 0 fixes the machines (stages) per cluster
};

struct CompileSummary {
  int stages = 0;  // nodes over all clusters
  std::vector<std::string> node_dirs;
  std::string run_id;
  CompileReport report;  // what report.txt and report.html show
};

// Writes DIR/node<i>/ for every stage and DIR/report.txt; `report` also gets
// the human summary.
Result<CompileSummary> compile_model(const CompileOptions& options, std::ostream& report);

}  // namespace ravnest::cg
