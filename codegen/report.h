// The compile report: what `ravnestc compile` decided and predicts, per cluster
// and per stage, as text (report.txt) and as a self-contained HTML page
// (report.html: inline CSS and an inline SVG bar chart, no external assets).
//
// Guarantees:
//  * Both renderings hold the same facts: the clusters (machines and why), per
//    stage its node and machine, ops, parameters, FLOPs, memory (parameters,
//    gradients, optimizer state, activations in flight) against the machine's
//    capacity, predicted F/B/W seconds, and the tensors it sends with their bytes
//    and predicted transfer time.
//  * The HTML escapes every text it takes from the model or the devices file, so
//    names with <, >, & or quotes cannot break the page.
//  * Pure functions of the report: the same report gives the same bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ravnest::cg {

struct CrossingReport {
  std::string name;   // the value sent to the next stage
  std::string shape;  // "8x64x7x7 f32"
  double bytes = 0;   // per micro-batch, one direction
  double seconds = 0; // predicted transfer time over the link to the next stage (0: not predicted)
};

struct StageReport {
  int stage = 0;
  std::string node_id;     // bundle folder name
  std::string machine;     // device id, or "unit machine" without a devices file
  std::string address;     // host:port the node listens on
  int64_t ops = 0;
  int64_t parameters = 0;  // elements
  double flops_f = 0, flops_b = 0, flops_w = 0;  // per micro-batch
  // Memory model (bytes): what the stage holds on its machine.
  double mem_params = 0, mem_grads = 0, mem_optimizer = 0, mem_activations = 0;
  int64_t in_flight = 0;   // micro-batches whose activations it holds at once
  double capacity = 0;     // the machine's memory; 0: unknown
  double f_s = 0, b_s = 0, w_s = 0;  // predicted seconds per micro-batch on its machine
  double transfer_s = 0;   // predicted link time per micro-batch (in + out, both directions)
  std::vector<CrossingReport> sends;
  std::string nodes;       // forward node names, comma-separated
  std::vector<std::string> notes;  // further lines (stash, schedule, rings)
  double mem_total() const { return mem_params + mem_grads + mem_optimizer + mem_activations; }
  double compute_s() const { return f_s + b_s + w_s; }
};

struct ClusterReport {
  int index = 0;
  std::string method;  // how it was split
  std::string order;   // why the machines run in this order (empty: given order)
  std::vector<StageReport> stages;
};

struct CompileReport {
  std::string title = "Ravnest compile report";
  std::string header;       // free text lines: model, run id, batch, optimizer ...
  std::string devices;      // the devices file, or empty
  std::string cluster_why;  // the cluster plan's explanation (devices only)
  std::vector<ClusterReport> clusters;
};

// "1.50 MB", "12.3 GFLOP"...: value with an SI prefix and `unit`.
std::string human_units(double value, const char* unit);

std::string render_report_text(const CompileReport& report);
std::string render_report_html(const CompileReport& report);

}  // namespace ravnest::cg
