// Trainer: runs one node's bundle: data, the static schedule, the optimizer,
// evaluation, and progress reporting.
//
// Semantics (synchronous mode): a step of m micro-batches applies the update of
// one process training on the whole batch, up to float reassociation: each
// micro-batch's loss is a sum, its gradient seed is 1/batch, parameter
// gradients are accumulated over micro-batches, then one optimizer step runs.
// Every wait on a peer has a deadline; a dead peer is an error naming it.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "runtime/bundle.h"

namespace ravnest::rt {

struct TrainerOptions {
  // Local runs (ravnest-launch) remap addresses: "host:port" to listen on, and
  // per peer id the address to reach it at.
  std::string listen;
  std::map<std::string, std::string> peers;
  double connect_timeout_s = 60;  // waiting for neighbours to come up
  double recv_timeout_s = 120;    // waiting for one activation or gradient
  // Floor of the heartbeat deadline (runtime/transport/transport.h): a peer silent
  // for longer than max(this, 4x its slowest observed gap) is declared failed. Link
  // cuts shorter than this are survived.
  double heartbeat_timeout_s = 15;
  int64_t max_steps = -1;         // overrides the bundle's when >= 0
  bool evaluate = true;
  std::string losses_path;        // last stage: one line per step "step loss"
  std::string save_params_path;   // final parameters as a .rvt file
  bool progress_json = true;      // JSON lines on stdout for ravnest-launch
  std::string trace_path;         // Chrome trace-event JSON of every instruction (runtime/trace.h)
  // Checkpoints (runtime/checkpoint.h, docs/checkpoints.md; synchronous mode):
  // written to checkpoint_dir/<node id>/ every checkpoint_every steps (0: only
  // at the end of the run); with resume, training continues from the newest
  // step every stage holds a checkpoint of.
  std::string checkpoint_dir;
  int64_t checkpoint_every = 0;
  bool resume = false;
};

class Trainer {
 public:
  static Result<std::unique_ptr<Trainer>> create(Bundle bundle, TrainerOptions options);
  virtual ~Trainer() = default;
  virtual Status run() = 0;
};

}  // namespace ravnest::rt
