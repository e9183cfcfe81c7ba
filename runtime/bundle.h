// The bundle: everything one machine needs to run its part of a training job.
// Format: docs/bundle-format.md. The compiler writes bundles with write_bundle();
// the runtime reads them with load_bundle().
//
// Guarantees of load_bundle(): the manifest parses and has this format version;
// every file it lists exists and matches its SHA-256; the stage programs parse;
// the weights cover every parameter the programs read, with matching shapes;
// the schedule validates. Any failure names the file and what is wrong.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/graph.h"
#include "common/json.h"
#include "runtime/compress/codec.h"
#include "runtime/schedule.h"
#include "runtime/tensor.h"

namespace ravnest::rt {

inline constexpr int kBundleFormatVersion = 1;
inline constexpr const char* kBundleFormatName = "ravnest-bundle";

struct PeerAddress {
  std::string id;
  std::string host;
  uint16_t port = 0;
  std::string str() const { return id + " at " + host + ":" + std::to_string(port); }
};

// A tensor crossing a stage boundary. `wire_id` is the tensor id in frames.
struct BoundaryTensor {
  std::string name;
  uint32_t wire_id = 0;
  DType dtype = DType::kF32;
  Shape shape;  // per micro-batch
};

// One ring of the parameter-averaging plan: a slice of the parameter space
// held by exactly one node of every cluster. `pieces` lists the slice as
// (parameter, element offset, element count) in order; every member has the
// same pieces. Rings run in ascending tag order on every node (no deadlock).
struct RingPiece {
  std::string param;
  int64_t offset = 0;
  int64_t length = 0;
};
struct RingSpec {
  uint32_t tag = 0;
  std::vector<std::string> members;  // node ids, in ring order
  std::vector<RingPiece> pieces;
  int64_t size() const;
};

// The optimizer, its learning-rate schedule and gradient clipping
// (docs/training.md, "Optimizers"). Manifest: training.optimizer.*; fields
// added after the first release are optional there, with these defaults.
struct OptimizerConfig {
  std::string type = "sgd";  // sgd, adamw, lamb
  double lr = 0.01;          // peak learning rate (after warm-up)
  double momentum = 0.9;     // sgd
  double weight_decay = 0.0;  // sgd: L2 added to the gradient; adamw, lamb: decoupled
  bool nesterov = false;      // sgd
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adamw, lamb
  // Learning rate of optimizer update t (0-based): linear warm-up over
  // `warmup_steps` updates, then "constant", "cosine" (to lr_min at the last
  // update) or "step" (times gamma every step_size updates, not below lr_min).
  std::string lr_schedule = "constant";
  int64_t warmup_steps = 0;
  double lr_min = 0.0;
  int64_t step_size = 0;
  double gamma = 0.1;
  // Gradient clipping by the global norm over all stages of a pipeline; 0: off.
  double clip_norm = 0.0;
};


struct DataConfig {
  std::string kind = "fashion-mnist";
  std::string dir = "/usr/share/datasets/fashion-mnist";
};

// Codecs for pipeline traffic (docs/compression.md); lossy ones run with error feedback.
struct CompressionConfig {
  CodecSpec activations;  // SEND_ACT frames
  CodecSpec gradients;    // SEND_GRAD frames
  CodecSpec averaging;    // parameter averaging across clusters (lossy: compressed deltas)
};

struct TrainingConfig {
  int64_t batch = 64;
  int64_t microbatches = 1;
  int64_t microbatch_size = 64;
  int64_t epochs = 1;
  int64_t max_steps = 0;  // 0: run whole epochs
  uint64_t seed = 1;
  bool evaluate = true;   // test accuracy after each epoch
  // "sync": one update per batch, exactly as one process (default).
  // "async": an update after every micro-batch's W, no flush (weight stashing,
  // staleness at most p-s-1 updates on stage s); see docs/training.md.
  std::string mode = "sync";
  // Data parallelism: this node's cluster trains on shard `cluster` of
  // `num_clusters` of every epoch and averages parameters with the other
  // clusters every `average_every` steps (and after the last step).
  int64_t average_every = 0;
  // Flexible update rule: clusters may average after different numbers of local
  // steps (average_every is this cluster's); local_steps_max is the largest
  // over all clusters (0: every cluster uses the same). Every cluster runs the
  // same number of averaging rounds, R = ceil(steps of a cluster with
  // local_steps_max / local_steps_max), so a slower cluster trains fewer steps
  // and its contribution is weighted by the samples it processed.
  int64_t local_steps_max = 0;
  // Average the optimizer's float state (momentum, Adam moments) with the
  // parameters at every round (not with compressed averaging).
  bool average_optimizer_state = false;
  // Rings of 3 or more members re-probe their links every this many averaging
  // rounds and re-order when a hop got 2x slower (0: only at start-up).
  int64_t replan_every = 10;
  // Late clusters (docs/training.md): with a deadline > 0, each averaging round of a
  // ring waits this many seconds for its members after the first of them (the
  // round's coordinator) arrives; a member not there by then is averaged in at a
  // later round, with the samples of every round it missed, instead of stalling the
  // others. The last round waits for everyone. 0: every round waits for every cluster.
  double late_deadline_s = 0;
  // Several clusters with backup nodes (docs/faults.md): every node keeps its last round's result per ring, and
  // no ring member leaves before all are done (a backup may still replay the last round with them).
  bool backups_in_rings = false;
  // Backups (docs/faults.md): a worker sends its state to its backup after every
  // this many steps; every stage then keeps the state of the last backup_every + 1
  // step starts, so a takeover replays up to backup_every steps.
  int64_t backup_every = 1;
  OptimizerConfig optimizer;
  DataConfig data;
  CompressionConfig compression;
};

// OK if training.optimizer's fields are in range and supported with the
// training mode; else an error naming the field (by its ravnestc flag) and
// what to do. Both ravnestc and the bundle loader check this.
Status validate_optimizer(const TrainingConfig& training);

// The learning rate of optimizer update `update` (0-based) of `total_updates`.
double scheduled_lr(const OptimizerConfig& config, int64_t update, int64_t total_updates);

struct Manifest {
  int version = kBundleFormatVersion;
  std::string run_id;  // same in every bundle of one compile
  std::string model;   // name of the source model
  PeerAddress self;
  int stage = 0;
  int num_stages = 1;
  std::optional<PeerAddress> prev;
  std::optional<PeerAddress> next;
  int cluster = 0;
  int num_clusters = 1;
  std::vector<RingSpec> rings;           // the rings this node is a member of
  std::vector<PeerAddress> ring_peers;   // addresses of the other members of those rings (and of `tied`)
  // Backup nodes of this cluster (docs/faults.md): backups[s], when set, is the
  // node that shadows stage s and takes it over if its node fails.
  std::map<int, PeerAddress> backups;
  // Backup nodes of the other members of this node's averaging rings (several clusters): ring_backups[id] takes
  // member `id`'s place in every ring it is in if that node fails.
  std::map<std::string, PeerAddress> ring_backups;
  // Set in a backup's own bundle: the node it shadows (its stage's worker); the
  // rest of the manifest is that stage's.
  std::optional<PeerAddress> backup_of;
  // A backup that joined a running job (`ravnest-rt join`, docs/faults.md): it dials
  // its worker, and its first state may follow any step.
  bool joined = false;
  // A node that joined a running job as part of a new cluster: the node of cluster 0
  // whose stage it copies (it vouches for it in the averaging rounds until it is in).
  std::optional<PeerAddress> copy_of;
  // Where a node joining the run during training becomes a backup (`ravnest-rt
  // join`): this cluster's workers by stage, in order of preference (least reliable
  // machine first, then slowest). Empty: this cluster takes no joining nodes (several
  // clusters, asynchronous training or tied weights).
  std::vector<std::pair<int, PeerAddress>> join_targets;
  // Parameters this node shares with other stages of its own cluster (a tied
  // embedding read by the first and the last stage): every synchronous step the
  // members sum their gradients of the pieces over this ring before the
  // optimizer, so every copy receives the same update and stays identical.
  std::vector<RingSpec> tied;
  TrainingConfig training;

  std::vector<BoundaryTensor> recv;  // activations from prev (their gradients go back)
  std::vector<BoundaryTensor> send;  // activations to next (their gradients come back)
  std::string data_input;            // first stage: the graph input fed with images
  std::string labels_input;          // last stage: the graph input fed with labels
  std::string loss_output;           // last stage
  std::string logits_output;         // last stage
  // How the last stage's loss reduces a micro-batch: "sum" (the loss Ravnest
  // appends; the trainer scales by 1/batch) or "mean" (a loss inside the model;
  // the trainer scales by 1/micro-batches).
  std::string loss_reduction = "sum";
  std::vector<std::string> params;   // in weights-file order
  // Running state the forward updates in place (BatchNorm statistics; fe Graph::state),
  // stored in the weights file after the parameters; never given to the optimizer.
  std::vector<std::string> state;
  std::vector<std::string> stash;    // F values B or W read
  std::vector<std::string> wstash;   // B values W reads

  // program role -> file name: forward, backward, weight, optimizer
  std::map<std::string, std::string> programs;
  std::string weights_file = "weights.rvt";
  std::string schedule_file = "schedule.json";
  std::map<std::string, std::string> digests;  // file name -> sha256 hex

  bool first() const { return stage == 0; }
  bool last() const { return stage + 1 == num_stages; }
};

Json manifest_to_json(const Manifest& manifest);
Result<Manifest> manifest_from_json(const Json& json);

struct Bundle {
  std::string dir;
  Manifest manifest;
  Graph forward, backward, weight, optimizer;
  std::vector<std::pair<std::string, Tensor>> weights;
  StageSchedule schedule;
};

Result<Bundle> load_bundle(const std::string& dir);

// Writes the files of a bundle into `dir` (created if needed), fills
// manifest.digests, and writes manifest.json last.
Status write_bundle(const std::string& dir, Manifest manifest, const std::map<std::string, Graph>& programs,
                    const std::vector<std::pair<std::string, Tensor>>& weights, const StageSchedule& schedule);
// write_bundle in two steps, for a writer that needs the digests of every bundle before it writes the
// manifests (the compiler's run id): write_bundle_files writes every file but manifest.json into `dir`
// (created if needed) and fills manifest.digests; write_manifest then writes manifest.json. No file of a
// bundle is fsynced: load_bundle's digest check refuses one a crash left incomplete.
Status write_bundle_files(const std::string& dir, Manifest& manifest, const std::map<std::string, Graph>& programs,
                          const std::vector<std::pair<std::string, Tensor>>& weights, const StageSchedule& schedule);
Status write_manifest(const std::string& dir, const Manifest& manifest);

}  // namespace ravnest::rt
