// compile_model: the whole compiler pipeline behind `ravnestc compile`:
// import -> cost model -> contiguous stage split -> stage programs (autodiff)
// -> schedules -> one bundle per node + a text report.
#pragma once

#include <map>
#include <ostream>
#include <string>
#include <vector>

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
};

struct CompileSummary {
  int stages = 0;  // nodes over all clusters
  std::vector<std::string> node_dirs;
  std::string run_id;
};

// Writes DIR/node<i>/ for every stage and DIR/report.txt; `report` also gets
// the human summary.
Result<CompileSummary> compile_model(const CompileOptions& options, std::ostream& report);

}  // namespace ravnest::cg
