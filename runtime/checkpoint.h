// Checkpoints of one node's training state (docs/checkpoints.md).
//
// Guarantees: a checkpoint is written atomically — DIR/ckpt-<step>.rvt.tmp is
// written, fsynced, renamed over DIR/ckpt-<step>.rvt and the folder fsynced —
// so a crash at any moment leaves either the previous set of checkpoints or the
// new one, never a partial file under a checkpoint's name; a leftover .tmp is
// never read. After a write only the new checkpoint and the newest older one
// remain. Every checkpoint carries a SHA-256 of its contents: the reader
// refuses a truncated or altered file with an error naming it, and
// check_checkpoint refuses one of another run, another node, or with tensors
// whose names, dtypes or shapes differ from the node's, again naming the file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "runtime/bundle.h"
#include "runtime/executor.h"
#include "runtime/transport/transport.h"

namespace ravnest::rt {

inline constexpr int kCheckpointsKept = 2;
inline constexpr int64_t kCheckpointFormatVersion = 1;

// The state of one node after `step` committed training steps (synchronous
// mode): enough to continue as if the run had never stopped. Random numbers
// (dropout) derive from (seed, step, micro-batch) and the sample order from
// (seed, epoch), so the step is their whole state.
struct Checkpoint {
  std::string run_id;
  std::string node_id;
  int64_t step = 0;           // committed steps: training resumes with step index `step`
  int64_t epoch = 0;          // data position of step `step`: its epoch ...
  int64_t step_in_epoch = 0;  // ... and its index within the epoch
  int64_t updates = 0;        // optimizer updates applied: the learning-rate schedule's position
  int64_t samples_since_average = 0;  // data parallelism: samples trained since the last averaging round
  int64_t averaging_rounds = 0;
  TensorMap params;     // parameters and running state (BatchNorm statistics), by name
  TensorMap opt_state;  // optimizer state by the optimizer program's input name (velocity/P, exp_avg/P, ...)
};

// DIR/<node id>: where a node keeps its checkpoints.
std::string checkpoint_node_dir(const std::string& root, const std::string& node_id);
// NODE_DIR/ckpt-<step>.rvt
std::string checkpoint_path(const std::string& node_dir, int64_t step);

// Writes `ckpt` as NODE_DIR/ckpt-<ckpt.step>.rvt atomically (the folder is
// created if needed), then removes every other checkpoint of the folder but
// the newest `keep - 1` older than it (newer ones belong to a timeline that a
// resume abandoned) and any leftover .tmp file.
Status write_checkpoint(const std::string& node_dir, const Checkpoint& ckpt, int keep = kCheckpointsKept);

// The steps of the checkpoints in NODE_DIR (files named ckpt-<step>.rvt),
// ascending; other files (a leftover .tmp) are ignored; a missing folder has none.
Result<std::vector<int64_t>> list_checkpoints(const std::string& node_dir);

// Reads and verifies a checkpoint file: structure, digest, counters. Errors
// (kCorrupt, kNotFound) name the file.
Result<Checkpoint> read_checkpoint(const std::string& path);

// OK if `ckpt` (read from `path`) belongs to run `run_id` and node `node_id`
// and holds exactly the tensors of `params` and `opt_state` with their dtypes
// and shapes; else kInvalidArgument naming the file and the first difference.
Status check_checkpoint(const Checkpoint& ckpt, const std::string& path, const std::string& run_id,
                        const std::string& node_id, const TensorMap& params, const TensorMap& opt_state);

// The newest step that every node of the run holds a checkpoint of, the same on
// every node, or -1 when they share none. `own` is this node's list.
// Protocol (CONTROL frames at the start-up step 2^63, int64 [count, steps...]):
// stage 0 sends its steps to stage 1 (tensor_id 2); each stage keeps the ones it
// holds too and passes them on; the last stage sends the common set back (tensor_id
// 3), each stage forwarding it toward stage 0. With several clusters
// (`several_clusters`), each node sends its cluster's set to `other_clusters` (the
// other members of one of its averaging rings: one node of every other cluster;
// tensor_id 6) and keeps what all hold; that set goes down the pipeline (tensor_id
// 7, [-1] from a stage without rings) and back up (tensor_id 8), so every node of
// every cluster ends with the same set. Every wait ends at `deadline`.
Result<int64_t> agree_on_checkpoint(Transport& transport, const std::optional<PeerAddress>& prev,
                                    const std::optional<PeerAddress>& next, const std::vector<int64_t>& own,
                                    const std::vector<std::string>& other_clusters, bool several_clusters,
                                    Deadline deadline);

}  // namespace ravnest::rt
