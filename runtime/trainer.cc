#include "runtime/trainer.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <iomanip>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include "common/json.h"
#include "common/log.h"
#include "runtime/checkpoint.h"
#include "runtime/collectives/compressed_average.h"
#include "runtime/collectives/link_probe.h"
#include "runtime/collectives/ring_order.h"
#include "runtime/collectives/ring_allreduce.h"
#include "runtime/data/dataset.h"
#include "runtime/data/mnist_idx.h"
#include "runtime/executor.h"
#include "runtime/join.h"
#include "runtime/tensor_file.h"
#include "runtime/trace.h"
#include "runtime/transport/transport.h"

namespace ravnest::rt {
namespace {

using Clock = std::chrono::steady_clock;

// Evaluation frames use step numbers far above any training step; the
// start-up frame (dataset sizes) uses one above those.
constexpr uint64_t kEvalStepBase = uint64_t{1} << 62;
constexpr uint64_t kStartStep = uint64_t{1} << 63;
// Evaluation keeps at most this many micro-batches in flight per link.
constexpr int kEvalWindow = 8;
// Gradient clipping's pipeline sum: CONTROL frames at the training step's number
// (no other CONTROL frame uses training steps), micro-batch 0, these tensor ids.
constexpr uint32_t kNormSumId = 0;    // running sum of squares, stage s to s+1
constexpr uint32_t kNormTotalId = 1;  // the total, stage s+1 to s
// Survivors of a failed averaging ring agree on who is left: CONTROL frames at
// step kAliveStepBase + round, micro-batch = the ring's tag, tensor id
// kAliveId + attempt.
constexpr uint64_t kAliveStepBase = uint64_t{1} << 60;
constexpr uint32_t kAliveId = 4;
// Backup nodes (docs/faults.md): the worker's n-th state (after an update; a
// replayed step sends its state again) goes to its backup as CONTROL frames at
// step kStateStepBase + n, micro-batch 0, tensor id = position in
// state_tensors(), then the step it follows as one more int64 tensor; the backup
// acks with micro-batch 1 and the worker ends with micro-batch 2 (done). Start-up sizes to the backup: kStartStep,
// tensor id kBackupSizesId. Recovery: kRecoveryStep, tensor id kTakeoverId (the
// backup to the failed node's neighbours: the last step it holds) and kRestartId
// (a survivor to the neighbour away from the failure: the step to replay).
constexpr uint64_t kStateStepBase = uint64_t{1} << 58;
constexpr uint64_t kRecoveryStep = uint64_t{1} << 59;
constexpr uint32_t kTakeoverId = 0;
constexpr uint32_t kRestartId = 1;
// Finishing together (with backups): FIN frames at kRecoveryStep, forward (every stage up to the sender is done)
// and back (every stage is done); the payload is the sender's count of recoveries, so a FIN sent before a replay
// is told from one sent after it.
constexpr uint32_t kFinForwardId = 2;
constexpr uint32_t kFinBackId = 3;
constexpr uint32_t kBackupSizesId = 5;
// Joining nodes: runtime/join.h.
// Rounds with a coordinator (late clusters, new clusters; gather_round): per averaging
// round and ring, CONTROL frames at step kRoundStepBase + round, micro-batch = the
// ring's tag: ARRIVED (tensor id kArrivedId + 2 x attempt; JSON: the new-cluster nodes
// the sender vouches for) from each member to the round's coordinator, and its
// decision (kDecisionId + 2 x attempt; JSON: the round's members in ring order, the
// nodes joining) to every member.
constexpr uint64_t kRoundStepBase = uint64_t{1} << 56;
constexpr uint32_t kArrivedId = 0;
constexpr uint32_t kDecisionId = 1;
// A backup that took over a ring member's stage rejoins the rings (several clusters, docs/faults.md): CONTROL
// frames at step kRejoinStep, micro-batch = the ring's manifest tag: ASK (backup to each member; JSON: the round it
// is at), REPLY (member to backup; JSON: whether it holds that round's result, waits in it, or waits in the round
// before; the ring's order and replacements so far), RESULT (a round's averaged slice, f32, either way) and
// DECISION (backup to a waiting member; JSON: the result follows, or the round runs again).
constexpr uint64_t kRejoinStep = uint64_t{1} << 55;
constexpr uint32_t kRejoinAsk = 0;
constexpr uint32_t kRejoinReply = 1;
constexpr uint32_t kRejoinResult = 2;
constexpr uint32_t kRejoinDecision = 3;
constexpr uint32_t kRejoinFin = 4;  // micro-batch 0: this node of the ring is done (finishing together)
// A ring with replaced members runs on tags ring.tag + ((kReplacedTagBase + replacements) << 20).
constexpr uint32_t kReplacedTagBase = 4000;

Deadline deadline_in(double seconds) {
  return deadline_after(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
}

Result<PeerAddress> apply_override(PeerAddress p, const std::map<std::string, std::string>& overrides) {
  auto it = overrides.find(p.id);
  if (it == overrides.end()) return p;
  size_t colon = it->second.rfind(':');
  if (colon == std::string::npos)
    return error(Code::kInvalidArgument, "--peer ", p.id, "=", it->second, ": expected HOST:PORT");
  p.host = it->second.substr(0, colon);
  int port = std::atoi(it->second.substr(colon + 1).c_str());
  if (port <= 0 || port > 65535) return error(Code::kInvalidArgument, "--peer ", p.id, "=", it->second, ": bad port");
  p.port = static_cast<uint16_t>(port);
  return p;
}

// The configured codec for a tensor sent by the trainer (docs/compression.md):
// codecs encode float32 only, so other dtypes go raw.
WireCodec wire_codec(const CodecSpec& spec, const Tensor& tensor, bool error_feedback) {
  if (tensor.dtype() != DType::kF32) return {};
  return WireCodec{spec, error_feedback};
}

// How an instruction shows in the trace: time blocked on receives and time
// enqueueing sends on the comm lane, work on the compute lane.
struct InstrSpanKind {
  TraceLane lane;
  const char* category;
};
InstrSpanKind instr_span_kind(InstrOp op) {
  switch (op) {
    case InstrOp::kRecvAct:
    case InstrOp::kRecvGrad: return {TraceLane::kComm, "wait"};
    case InstrOp::kSendAct:
    case InstrOp::kSendGrad: return {TraceLane::kComm, "send"};
    case InstrOp::kAllReduce: return {TraceLane::kComm, "allreduce"};
    case InstrOp::kF:
    case InstrOp::kB:
    case InstrOp::kW:
    case InstrOp::kStep: return {TraceLane::kCompute, "compute"};
  }
  return {TraceLane::kCompute, "compute"};
}
constexpr size_t kInstrOps = static_cast<size_t>(InstrOp::kStep) + 1;

int64_t wire_bytes(const BoundaryTensor& t) { return numel(t.shape) * static_cast<int64_t>(dtype_size(t.dtype)); }

void add_into(Tensor& acc, const Tensor& x) {
  float* a = acc.data<float>();
  const float* b = x.data<float>();
  for (int64_t i = 0, n = acc.numel(); i < n; ++i) a[i] += b[i];
}

class TrainerImpl : public Trainer {
 public:
  TrainerImpl(Bundle bundle, TrainerOptions options) : b_(std::move(bundle)), opt_(std::move(options)) {}

  Status init();
  Status run() override;

 private:
  Status train();
  Status write_trace();
  void trace_wire(const FrameWritten& written);
  const Manifest& m() const { return b_.manifest; }
  Status connect();
  // Dials the next stage and waits for the previous one to dial this node; errors start with `doing`.
  Status connect_pipeline(Deadline deadline, const std::string& doing);
  // Adaptive routing: the ring's members in the order that avoids its slowest
  // links, from links measured now (rings of 3 or more; a ring of 2 has one order).
  Result<std::vector<std::string>> order_ring(size_t index, const std::string& host, uint16_t port,
                                              Clock::time_point deadline);
  // Every replan_every rounds: re-probe rings of 3+ and re-order the ones
  // whose current order has a hop that got 2x slower.
  Status maybe_replan(int64_t step);
  Status load_data();
  Status agree_on_sizes();
  // The run's training steps (from the training set's size, known after agree_on_sizes or a backup's first
  // state); sets steps_per_epoch_.
  Result<int64_t> count_steps();
  Status train_step(int64_t step);
  // Backups (docs/faults.md). The state a backup mirrors: parameters, running
  // state, optimizer state, in this order (the same on worker and backup).
  std::vector<std::pair<std::string, Tensor*>> state_tensors();
  // Worker: after step `step`'s update, the state to the backup, then its ack.
  Status send_state(int64_t step, bool now = false);
  // Backup: mirrors the worker's state until the worker is gone (returns the last
  // step whose state it holds, -1 for none) or done (returns -2).
  Result<int64_t> shadow();
  // Backup: joins the failed worker's neighbours as stage S after `committed`.
  Status take_over(int64_t committed, Clock::time_point lost_at);
  // Survivor: a failed neighbour with a backup is replaced by it, or a neighbour
  // asked for a replay; rolls back to the start of the step to replay and returns it.
  Result<int64_t> recover(const Status& cause);
  // Joining nodes (docs/faults.md), at the end of every synchronous step: answers
  // joiners' requests, moves a joiner that is becoming this stage's backup along,
  // and passes offers of backups along the pipeline.
  Status serve_joins(int64_t step);
  Status answer_join(const std::string& joiner, const Tensor& request);
  // The accepting answer and this stage's bundle files, with `manifest` as the joiner's manifest.
  Status send_bundle(const std::string& joiner, const Manifest& manifest);
  // Whether stages replay failed steps: some stage has a backup.
  bool protected_run() const { return !backups_.empty(); }
  // Whether each averaging round has a coordinator per ring (late clusters, or new clusters may join).
  bool gathering() const {
    return m().training.late_deadline_s > 0 ||
           (m().num_clusters > 1 && !join_targets_.empty() && !m().training.backups_in_rings);
  }
  // Several clusters (--joinable): a request from a node that wants to be part of a new cluster.
  Status answer_cluster_join(const std::string& joiner, const Json& request, const PeerAddress& node);
  // A node of a new cluster: READY to the node it copies, then averaging rounds without training (weight 0)
  // until every node of the new cluster took part in one round in all its rings; returns the step to start at.
  Result<int64_t> enter_as_new_cluster();
  // A pipeline receive that also notices a neighbour's RESTART (with backups).
  Result<Tensor> recv_watching(const std::string& peer, const FrameMeta& meta, Deadline deadline);
  // Asynchronous mode: streams micro-batches [first, end) through the stage
  // without a flush, updating the weights after each micro-batch's W.
  Status train_async(int64_t first_step, int64_t end_step, int64_t total, Clock::time_point start);
  Status run_traced(const Instr& in, int64_t step);
  Status run_instr(const Instr& in, int64_t step);
  Status update_async(int64_t g);
  // One optimizer update, number `update` (0-based), with `grads` (by parameter)
  // of training step `step`: the scheduled learning rate, clipping by the global
  // norm when configured, then the optimizer program on params_ and opt_state_.
  Status apply_update(TensorMap& grads, int64_t update, int64_t step);
  // Scales `grads` by min(1, clip_norm / (norm + 1e-6)), norm over every stage's gradients.
  Status clip_gradients(TensorMap& grads, int64_t step);
  // The sum of every stage's `local` (running sum forward, total back), on every stage.
  Result<double> pipeline_sum(int64_t step, double local);
  // Data parallelism: averages this node's parameters with the other clusters
  // over its rings (ascending tags), weighted by the samples trained since the
  // last round.
  Status average(int64_t step);
  // One ring's share of an averaging round; after a lost peer, the round again
  // among the clusters left (whole-cluster failure, docs/faults.md).
  Status average_ring(size_t index, int64_t step, double weight, std::vector<float>* buffer);
  // Late clusters: which of ring `index`'s live members take part in this round (the
  // coordinator waits up to the deadline, or the receive timeout in the last round),
  // and the ring rebuilt over them. Returns whether this node takes part.
  Result<bool> gather_round(size_t index, bool last_round);
  // The members of ring `index` still in the run exchange ALIVE frames; those
  // that cannot be reached, or do not answer within twice the receive timeout,
  // are lost with their whole cluster. Returns whether a cluster was lost.
  Result<bool> agree_on_survivors(size_t index, int64_t step, const Status& cause);
  // Ring `index` rebuilt over the members whose cluster is still in the run.
  Status rebuild_ring(size_t index);
  // Several clusters with backups: a member of ring `index` that is gone and has a backup is replaced by it in
  // every ring of this node; this node answers the backup's ASK per ring and takes its decision (a round's result
  // or a new run). Returns false when no gone member has a backup (or its backup cannot be reached).
  Result<bool> replace_lost_member(size_t index, const Status& cause);
  // A backup that took over a ring member's stage, at its first round: asks every member of its rings where they
  // are, takes the round's result from one that holds it or runs the round again with them.
  Status rejoin_rings(int64_t step);
  // After the last step, with backups: no node leaves while a pipeline neighbour or a ring member could still
  // need it to replay steps or a round (its backup taking over before its final state was committed). Returns
  // the error of a wait that a recovery should follow (a neighbour gone, or a RESTART).
  Status finish_together(int64_t total);
  // The part of it for the members of this node's rings (several clusters with backups).
  Status finish_rings_together();
  // The state at the start of `step`, kept for a replay (with backups).
  void take_snapshot(int64_t step);
  // Whether this node keeps its last round's result per ring (a replay or a backup may need that round again).
  bool keeps_round_results() const { return m().training.backups_in_rings; }
  // A receive whose error starts with `doing`.
  Result<Tensor> recv_for(const std::string& peer, const FrameMeta& meta, Deadline deadline, const std::string& doing) {
    Result<Tensor> got = transport_->recv(peer, meta, deadline);
    if (!got.ok()) return got.status().with_context(doing);
    return got;
  }
  // The other members of this node's rings (several clusters), each once.
  std::vector<std::string> ring_members() const {
    std::set<std::string> ids;
    for (const RingSpec& ring : m().rings)
      for (const auto& id : ring.members)
        if (id != m().self.id) ids.insert(id);
    return {ids.begin(), ids.end()};
  }
  // Ring `index`'s members in the order it runs them.
  std::vector<std::string> ring_order(size_t index) const;
  // Ring `index` now runs over `ordered` (a new order or membership) with fresh frame tags.
  Status install_ring(size_t index, const std::vector<std::string>& ordered, std::optional<uint32_t> tag = std::nullopt);
  // Which of ring `index`'s members (manifest order: member c is cluster c's) are left.
  std::vector<std::string> live_members(size_t index) const;
  // Sums the gradients of tied weights over the stages that hold them (manifest.tied).
  Status sum_tied_gradients(int64_t step);
  Status average_optimizer_state(int64_t step);
  // This node's slice of a ring, gathered from / scattered to params_.
  void pack_ring(const RingSpec& ring, std::vector<float>* buffer) const;
  void unpack_ring(const RingSpec& ring, const std::vector<float>& buffer);
  // Gives params_ storage no in-flight micro-batch holds (async weight stashing).
  void own_params();
  void report_step(int64_t step, int64_t total, Clock::time_point start);
  // After a step's last update: progress, and averaging when it is due.
  Status finish_step(int64_t step, int64_t total, Clock::time_point start);
  // The sample indices of a training step (same on every stage).
  const std::vector<int64_t>& batch_of(int64_t step);
  Status evaluate(int64_t epoch);
  // Checkpoints (runtime/checkpoint.h, docs/checkpoints.md): the options' consistency; the step to start at (0
  // unless --resume finds a checkpoint every stage holds, which is then loaded); writing this node's state after
  // `committed` steps.
  Status check_checkpoint_options() const;
  Result<int64_t> resume_point(int64_t total);
  Status save_checkpoint(int64_t committed);
  std::string checkpoint_dir() const { return checkpoint_node_dir(opt_.checkpoint_dir, m().self.id); }
  void progress(const std::string& json_line);
  std::string where() const { return m().self.id + " (stage " + std::to_string(m().stage) + ")"; }

  Bundle b_;
  TrainerOptions opt_;
  std::unique_ptr<Executor> fwd_, bwd_, wgt_, optim_;
  // Declared before transport_, whose I/O thread records into it until the transport is destroyed.
  TraceRecorder trace_;
  std::unique_ptr<Transport> transport_;
  std::optional<PeerAddress> prev_, next_;
  TensorMap params_, grads_;
  // Optimizer state by the optimizer program's input name ("velocity/P", or
  // "exp_avg/P", "exp_avg_sq/P", "step/P"): one set per parameter, kept across steps.
  TensorMap opt_state_;
  int64_t total_updates_ = 1;  // optimizer updates of the whole run (for the lr schedule)
  Tensor lr_, loss_seed_;
  // Gradients this stage sends back / expects from the next stage.
  std::vector<const BoundaryTensor*> grads_out_, grads_in_;

  std::unique_ptr<Dataset> train_, test_;
  int64_t train_count_ = 0, test_count_ = 0;  // known on every stage after agree_on_sizes()
  // State of each micro-batch in flight, by global id step * m + microbatch.
  struct Micro {
    TensorMap acts_in, stash, grads_recv, wstash, outputs;
    TensorMap weights;  // async mode: the weights its F used (weight stashing)
    TensorMap grads;    // async mode: its parameter gradients, from W
  };
  std::map<int64_t, Micro> micro_;
  Micro& micro(int64_t step, int mb) { return micro_[step * m().training.microbatches + mb]; }
  const TensorMap& weights_of(const Micro& u) const { return u.weights.empty() ? params_ : u.weights; }
  std::vector<RingAllreduce> rings_;  // parallel to manifest.rings
  std::vector<RingAllreduce> tied_rings_;  // parallel to manifest.tied
  std::vector<CompressedAverage> compressed_rings_;  // instead, when averaging is compressed
  struct RingRoute {
    HopTimes planned;             // the hop times the current order was chosen from
    std::vector<size_t> order;    // indices into the manifest's member list
    uint32_t generation = 0;      // re-orders so far (part of the ring's tag)
  };
  std::vector<RingRoute> routes_;  // parallel to manifest.rings
  // Whole-cluster failure: clusters still in the run, by index; per ring, how
  // many clusters its current build counts and the agreements it has had.
  std::vector<bool> cluster_alive_;
  std::vector<size_t> ring_built_for_;
  std::vector<uint32_t> ring_attempts_;
  // Several clusters with backups (docs/faults.md): the backups of the other members of this node's rings, by
  // member id; per ring, the last round this node completed and its result (a replay, or a backup taking a
  // member's place, may need that round again) and the members replaced so far (part of the ring's frame tag);
  // a backup that took over rejoins the rings at its first round; the step of the last averaging round.
  std::map<std::string, PeerAddress> ring_backups_;
  std::vector<int64_t> done_round_;
  std::vector<std::vector<float>> done_result_;
  std::vector<uint32_t> ring_replacements_;
  bool rejoin_rings_ = false;
  int64_t averaged_after_ = -1;
  // Recoveries this stage went through (every stage of a cluster counts each failure once; a backup continues
  // its worker's count): tells FIN frames sent before a replay from those after it.
  int64_t recoveries_ = 0;
  bool finished_alone_ = false;  // a backup that holds its worker's final state and found no neighbour left
  // Whether this stage's cluster had backups at any step: then its stages finish together (a takeover empties
  // the survivors' backup lists unevenly, so it is not read from them).
  bool finishes_together_ = false;
  // Backups: this worker's backup (until it fails), the state at the start of the
  // last two steps (what a replay rolls back to), a replay asked for by a neighbour.
  std::optional<PeerAddress> backup_;
  struct Snapshot {
    int64_t step = -1;
    std::vector<Tensor> tensors;  // parallel to state_tensors()
    int64_t rounds = 0, samples_since_average = 0;  // the averaging counters (several clusters)
    std::vector<int64_t> ring_samples;
  };
  std::deque<Snapshot> snapshots_;
  uint64_t states_sent_ = 0;  // worker: states sent to the backup so far
  // Backups of this cluster's stages (compiled or joined), addresses as reachable from here.
  std::map<int, PeerAddress> backups_;
  // Joining nodes: where they may become backups (manifest join_targets, reachable
  // addresses), this node's own listening address, joiners whose request is
  // awaited, the joiner becoming this stage's backup, and offers of other stages'
  // backups passed on and awaiting the accept from beyond (by stage: the side it
  // came from, the first step this node keeps).
  std::vector<std::pair<int, PeerAddress>> join_targets_;
  PeerAddress listen_at_;
  std::vector<std::string> join_requests_;
  struct Joining {
    PeerAddress node;
    Clock::time_point since;
    bool offered = false;
    std::map<std::string, int64_t> accepts;  // neighbour id -> first step it keeps
    bool ring_offered = false;               // several clusters: offered to the members of this node's rings
    std::set<std::string> ring_accepts;
  };
  std::optional<Joining> joining_;
  Clock::time_point joined_since_;  // when the backup that joined last asked
  struct Relayed {
    std::string from, to;
    int64_t keeps_from = 0;
  };
  std::map<int, Relayed> relayed_offers_;
  // New clusters (several clusters, --joinable; docs/faults.md). Cluster 0's first stage
  // holds the newcomers asking for a place until a whole cluster's worth is there (the
  // transport peer each asked through, and its address), and counts the clusters it
  // gave out. A node of cluster 0 vouches for the newcomers copying its stage (id ->
  // cluster) in its rings' rounds until they are in; newcomers it served that have not
  // said READY yet; their addresses, for later newcomers to dial.
  std::vector<std::pair<std::string, PeerAddress>> held_newcomers_;
  int next_cluster_ = 0;
  std::map<std::string, int64_t> vouching_;
  std::map<std::string, int64_t> copies_served_;
  std::vector<PeerAddress> joined_peers_;
  int64_t restart_step_ = -1;
  std::string restart_from_;
  int64_t rounds_ = 0;             // averaging rounds done
  uint64_t bytes_avg_ = 0, bytes_avg_dense_ = 0;     // sent / what dense ring all-reduces send
  int64_t samples_since_average_ = 0;
  // Per ring: samples trained since this node last took part in its round (with late clusters a member may miss
  // rounds; its next contribution weighs all of them), and whether it takes part in the current round.
  std::vector<int64_t> ring_samples_;
  std::vector<bool> in_round_;
  bool last_round_ = false;
  std::optional<Sampler> sampler_;
  int64_t perm_epoch_ = -1, steps_per_epoch_ = 1;
  std::vector<int64_t> perm_, batch_;
  double step_loss_ = 0;
  int64_t step_correct_ = 0, step_counted_ = 0;  // predictions right / made (ignored positions excluded)
  std::ofstream losses_;
  // Per instruction kind (indexed by InstrOp): time spent, and bytes one instruction moves.
  std::array<SpanTotals, kInstrOps> totals_;
  std::array<int64_t, kInstrOps> instr_bytes_{};
};

Status TrainerImpl::init() {
  const Manifest& mf = m();
  if (!mf.tied.empty() && mf.training.mode == "async")
    return error(Code::kUnsupported, where(), ": parameter '", mf.tied[0].pieces[0].param,
                 "' is shared with another stage (a tied weight), which needs synchronous training; compile without "
                 "--async");
  auto make = [&](Graph& g, const char* role, std::unique_ptr<Executor>* out) -> Status {
    auto ex = Executor::create(g, KernelRegistry::global());
    if (!ex.ok()) return ex.status().with_context("bundle " + b_.dir + ", " + role + " program");
    *out = std::move(ex).value();
    return ok_status();
  };
  RN_RETURN_IF_ERROR(make(b_.forward, "forward", &fwd_));
  RN_RETURN_IF_ERROR(make(b_.backward, "backward", &bwd_));
  RN_RETURN_IF_ERROR(make(b_.weight, "weight", &wgt_));
  RN_RETURN_IF_ERROR(make(b_.optimizer, "optimizer", &optim_));
  RN_VERBOSE(where(), ": memory plan of the forward program: ", fwd_->arena_bytes(), " bytes (", fwd_->unplanned_bytes(),
             " without reuse)");

  for (auto& [name, t] : b_.weights) params_[name] = t;
  for (const auto& p : mf.params) {
    const Tensor& t = params_.at(p);
    grads_[p] = Tensor::zeros(t.dtype(), t.shape());
  }
  // Every optimizer input other than lr, a parameter or its gradient is state, zero at the start.
  for (const auto& name : b_.optimizer.inputs) {
    if (name == "lr" || params_.count(name) || name.rfind("grad/", 0) == 0) continue;
    const ValueInfo* vi = b_.optimizer.find_value(name);
    if (!vi || !vi->is_static())
      return error(Code::kCorrupt, "bundle ", b_.dir, ": optimizer state '", name, "' has no static type");
    opt_state_[name] = Tensor::zeros(vi->dtype, vi->static_shape());
  }
  lr_ = Tensor::empty(DType::kF32, {});
  *lr_.data<float>() = static_cast<float>(mf.training.optimizer.lr);
  loss_seed_ = Tensor::empty(DType::kF32, {});
  // Synchronous: one update per batch of the mean loss. Asynchronous: one
  // update per micro-batch of its mean loss.
  // The gradient of the update's mean loss: a summed loss is divided by the
  // samples per update, a mean loss by the micro-batches per update.
  const bool mean = mf.loss_reduction == "mean";
  const int64_t per_update = mf.training.mode == "async" ? (mean ? 1 : mf.training.microbatch_size)
                                                          : (mean ? mf.training.microbatches : mf.training.batch);
  *loss_seed_.data<float>() = 1.0f / static_cast<float>(per_update);

  std::set<std::string> b_inputs(b_.backward.inputs.begin(), b_.backward.inputs.end());
  std::set<std::string> b_outputs(b_.backward.outputs.begin(), b_.backward.outputs.end());
  std::set<std::string> w_reads(mf.wstash.begin(), mf.wstash.end());
  for (const auto& t : mf.recv)
    if (b_outputs.count("grad/" + t.name)) grads_out_.push_back(&t);
  for (const auto& t : mf.send)
    if (b_inputs.count("seed/" + t.name) || w_reads.count("seed/" + t.name)) grads_in_.push_back(&t);

  for (const auto& t : mf.recv) instr_bytes_[static_cast<size_t>(InstrOp::kRecvAct)] += wire_bytes(t);
  for (const auto& t : mf.send) instr_bytes_[static_cast<size_t>(InstrOp::kSendAct)] += wire_bytes(t);
  for (const BoundaryTensor* t : grads_in_) instr_bytes_[static_cast<size_t>(InstrOp::kRecvGrad)] += wire_bytes(*t);
  for (const BoundaryTensor* t : grads_out_) instr_bytes_[static_cast<size_t>(InstrOp::kSendGrad)] += wire_bytes(*t);
  if (!opt_.trace_path.empty()) trace_.enable(mf.stage, where());

  if (mf.prev) { RN_ASSIGN_OR_RETURN(prev_, apply_override(*mf.prev, opt_.peers)); }
  if (mf.next) { RN_ASSIGN_OR_RETURN(next_, apply_override(*mf.next, opt_.peers)); }
  for (const auto& [stage, p] : mf.backups) { RN_ASSIGN_OR_RETURN(backups_[stage], apply_override(p, opt_.peers)); }
  for (const auto& [member, p] : mf.ring_backups) {
    RN_ASSIGN_OR_RETURN(ring_backups_[member], apply_override(p, opt_.peers));
  }
  done_round_.assign(mf.rings.size(), -1);
  done_result_.assign(mf.rings.size(), {});
  ring_replacements_.assign(mf.rings.size(), 0);
  listen_at_ = mf.self;
  if (!opt_.listen.empty()) {
    RN_ASSIGN_OR_RETURN(PeerAddress l, apply_override(PeerAddress{mf.self.id, "", 0}, {{mf.self.id, opt_.listen}}));
    listen_at_ = l;
  }
  for (const auto& [stage, p] : mf.join_targets) {
    RN_ASSIGN_OR_RETURN(PeerAddress at, p.id == mf.self.id ? listen_at_ : apply_override(p, opt_.peers));
    join_targets_.emplace_back(stage, std::move(at));
  }
  if (!opt_.losses_path.empty() && mf.last() && mf.cluster == 0) {
    losses_.open(opt_.losses_path, std::ios::trunc);
    if (!losses_) return error(Code::kInvalidArgument, "cannot write losses to '", opt_.losses_path, "'");
  }
  return check_checkpoint_options();
}

Status TrainerImpl::connect() {
  const Manifest& mf = m();
  TransportOptions to;
  to.node_id = mf.self.id;
  to.run_id = mf.run_id;
  to.heartbeat_min_timeout = std::chrono::milliseconds(static_cast<int64_t>(opt_.heartbeat_timeout_s * 1000));
  to.accept_joiners = !join_targets_.empty();
  if (trace_.enabled()) to.on_frame_written = [this](const FrameWritten& w) { trace_wire(w); };
  transport_ = std::make_unique<Transport>(to);
  const std::string host = listen_at_.host;
  const uint16_t port = listen_at_.port;
  // A backup listens: the neighbours come at a takeover. Its worker dials it, or, when
  // it joined during the run, it dials its worker.
  if (mf.backup_of) {
    RN_RETURN_IF_ERROR(transport_->listen(host, port));
    if (!mf.joined) return ok_status();
    return transport_->connect(mf.backup_of->id, mf.backup_of->host, mf.backup_of->port,
                               deadline_in(opt_.connect_timeout_s))
        .with_context(where() + ": connecting to the worker it joined as a backup, " + mf.backup_of->str());
  }
  if (mf.copy_of) {
    // A node of a new cluster: its pipeline as any, and it dials every member of its rings (they all accept);
    // its rings are built round by round from the coordinators' decisions (gather_round).
    RN_RETURN_IF_ERROR(transport_->listen(host, port));
    const Deadline deadline = deadline_in(opt_.connect_timeout_s);
    RN_RETURN_IF_ERROR(connect_pipeline(deadline, ""));
    for (const PeerAddress& p : mf.ring_peers) {
      Status st = transport_->connect(p.id, p.host, p.port, deadline);
      if (!st.ok()) return st.with_context(where() + ": connecting to ring member " + p.str());
    }
    routes_.assign(mf.rings.size(), RingRoute{});
    ring_samples_.assign(mf.rings.size(), 0);
    ring_built_for_.assign(mf.rings.size(), 0);
    ring_attempts_.assign(mf.rings.size(), 0);
    cluster_alive_.assign(static_cast<size_t>(mf.num_clusters), true);
    for (const RingSpec& ring : mf.rings) {  // placeholders until the first decision installs the real ring
      RingOptions ro;
      ro.members = ring.members;
      ro.members.push_back(mf.self.id);
      ro.rank = ro.members.size() - 1;
      ro.tag = ring.tag;
      RN_ASSIGN_OR_RETURN(RingAllreduce r, RingAllreduce::create(*transport_, ro));
      rings_.push_back(std::move(r));
    }
    return ok_status();
  }
  // Ring neighbours (other clusters): of each pair, the node with the smaller
  // id connects and the other accepts.
  std::set<std::string> ring_neighbours;
  for (const std::vector<RingSpec>* rings : {&mf.rings, &mf.tied})
  for (const RingSpec& ring : *rings) {
    const size_t n = ring.members.size();
    if (n < 2) continue;
    size_t rank = std::find(ring.members.begin(), ring.members.end(), mf.self.id) - ring.members.begin();
    ring_neighbours.insert(ring.members[(rank + 1) % n]);
    ring_neighbours.insert(ring.members[(rank + n - 1) % n]);
  }
  // A tied-weight ring member that is also a pipeline neighbour is already connected.
  if (prev_) ring_neighbours.erase(prev_->id);
  if (next_) ring_neighbours.erase(next_->id);
  // Rings of 3 or more are ordered by measured links, which needs every pair
  // of their members connected: such nodes accept too.
  bool accepts = prev_.has_value() || !join_targets_.empty();
  for (const auto& id : ring_neighbours) accepts |= id < mf.self.id;
  for (const RingSpec& ring : mf.rings) accepts |= ring.members.size() > 2;
  // Every stage but the first accepts its previous stage; every stage but the
  // last connects to its next one.
  if (accepts) RN_RETURN_IF_ERROR(transport_->listen(host, port));
  auto deadline = deadline_in(opt_.connect_timeout_s);
  if (auto b = backups_.find(mf.stage); b != backups_.end()) {
    backup_ = b->second;
    Status st = transport_->connect(backup_->id, backup_->host, backup_->port, deadline);
    if (!st.ok()) return st.with_context(where() + ": connecting to this stage's backup " + backup_->str());
  }
  for (const auto& id : ring_neighbours) {
    if (id < mf.self.id) continue;
    auto it = std::find_if(mf.ring_peers.begin(), mf.ring_peers.end(), [&](const PeerAddress& p) { return p.id == id; });
    if (it == mf.ring_peers.end())
      return error(Code::kCorrupt, where(), ": the manifest has no address for ring member '", id, "'");
    RN_ASSIGN_OR_RETURN(PeerAddress peer, apply_override(*it, opt_.peers));
    Status st = transport_->connect(peer.id, peer.host, peer.port, deadline);
    if (!st.ok()) return st.with_context(where() + ": connecting to ring member " + peer.str());
  }
  RN_RETURN_IF_ERROR(connect_pipeline(deadline, ""));
  for (const auto& id : ring_neighbours) {
    if (id > mf.self.id) continue;
    Status st = transport_->wait_for_peer(id, deadline);
    if (!st.ok()) return st.with_context(where() + ": waiting for ring member '" + id + "' to connect");
  }
  for (const RingSpec& ring : mf.tied) {
    RingOptions ro;
    ro.members = ring.members;
    ro.rank = std::find(ro.members.begin(), ro.members.end(), mf.self.id) - ro.members.begin();
    ro.tag = ring.tag;
    auto r = RingAllreduce::create(*transport_, ro);
    if (!r.ok()) return r.status().with_context(where() + ": tied-weight ring " + std::to_string(ring.tag));
    tied_rings_.push_back(std::move(r).value());
  }
  routes_.assign(mf.rings.size(), RingRoute{});
  ring_samples_.assign(mf.rings.size(), 0);
  cluster_alive_.assign(static_cast<size_t>(std::max(1, mf.num_clusters)), true);
  ring_built_for_.assign(mf.rings.size(), 0);
  ring_attempts_.assign(mf.rings.size(), 0);
  for (size_t i = 0; i < mf.rings.size(); ++i) ring_built_for_[i] = mf.rings[i].members.size();
  for (size_t index = 0; index < mf.rings.size(); ++index) {
    const RingSpec& ring = mf.rings[index];
    RingOptions ro;
    RN_ASSIGN_OR_RETURN(ro.members, order_ring(index, host, port, deadline));
    ro.rank = std::find(ro.members.begin(), ro.members.end(), mf.self.id) - ro.members.begin();
    ro.tag = ring.tag;
    ro.watch_members = keeps_round_results();
    if (mf.training.compression.averaging.codec != Codec::kRaw) {
      std::vector<float> anchor;
      pack_ring(ring, &anchor);
      auto c = CompressedAverage::create(*transport_, ro.members, ro.rank, ring.tag, mf.training.compression.averaging,
                                         std::move(anchor));
      if (!c.ok()) return c.status().with_context(where() + ": ring " + std::to_string(ring.tag));
      compressed_rings_.push_back(std::move(c).value());
      continue;
    }
    auto r = RingAllreduce::create(*transport_, ro);
    if (!r.ok()) return r.status().with_context(where() + ": ring " + std::to_string(ring.tag));
    rings_.push_back(std::move(r).value());
  }
  return ok_status();
}

Status TrainerImpl::connect_pipeline(Deadline deadline, const std::string& doing) {
  if (next_) {
    Status st = transport_->connect(next_->id, next_->host, next_->port, deadline);
    if (!st.ok()) return st.with_context(where() + ": " + doing + "connecting to the next stage " + next_->str());
  }
  if (prev_) {
    Status st = transport_->wait_for_peer(prev_->id, deadline);
    if (!st.ok())
      return st.with_context(where() + ": " + doing + "waiting for the previous stage " + prev_->str() + " to connect");
  }
  return ok_status();
}

Result<std::vector<std::string>> TrainerImpl::order_ring(size_t index, const std::string& host, uint16_t port,
                                                         Clock::time_point deadline) {
  const Manifest& mf = m();
  const RingSpec& ring = mf.rings[index];
  if (ring.members.size() < 3) return ring.members;
  const size_t rank = std::find(ring.members.begin(), ring.members.end(), mf.self.id) - ring.members.begin();
  std::vector<RingMember> mesh;
  for (const auto& id : ring.members) {
    if (id == mf.self.id) {
      mesh.push_back({id, host, port});
      continue;
    }
    auto it = std::find_if(mf.ring_peers.begin(), mf.ring_peers.end(), [&](const PeerAddress& p) { return p.id == id; });
    if (it == mf.ring_peers.end())
      return error(Code::kCorrupt, where(), ": the manifest has no address for ring member '", id, "'");
    RN_ASSIGN_OR_RETURN(PeerAddress peer, apply_override(*it, opt_.peers));
    mesh.push_back({peer.id, peer.host, peer.port});
  }
  RN_RETURN_IF_ERROR(connect_mesh(*transport_, mesh, rank, deadline).with_context(where()));
  ProbeOptions probe;
  probe.epoch = ring.tag;
  probe.transfer_budget = std::chrono::milliseconds(200);
  RN_ASSIGN_OR_RETURN(LinkMatrix links, probe_links(*transport_, ring.members, rank, probe, deadline));
  routes_[index].planned = links.hop_times(RingOptions{}.chunk_bytes);
  RN_ASSIGN_OR_RETURN(RingPlan plan, plan_ring_order(routes_[index].planned));
  routes_[index].order = plan.order;
  std::vector<std::string> ordered = ordered_members(ring.members, plan.order);
  std::string order_text;
  for (const auto& id : ordered) order_text += (order_text.empty() ? "" : " -> ") + id;
  RN_LOG_INFO("ring ", ring.tag, " ordered by measured links: ", order_text, " (slowest hop ",
              plan.bottleneck_s * 1e3, " ms per chunk)");
  return ordered;
}

Status TrainerImpl::load_data() {
  const Manifest& mf = m();
  if (mf.first() || mf.last()) {
    RN_ASSIGN_OR_RETURN(train_, open_dataset(mf.training.data, true));
    if (opt_.evaluate && mf.training.evaluate) { RN_ASSIGN_OR_RETURN(test_, open_dataset(mf.training.data, false)); }
  }
  return ok_status();
}

// The first stage reads the data; the stages after it learn the dataset sizes
// from a start-up frame passed down the pipeline, so every stage runs the same
// number of steps and evaluation micro-batches.
Status TrainerImpl::agree_on_sizes() {
  const Manifest& mf = m();
  if (mf.first()) {
    train_count_ = train_->count();
    test_count_ = test_ ? test_->count() : 0;
  } else {
    auto got = transport_->recv(prev_->id, FrameMeta{FrameKind::kControl, kStartStep, 0, 0}, deadline_in(opt_.connect_timeout_s));
    if (!got.ok()) return got.status().with_context(where() + ": waiting for the dataset sizes from the first stage");
    if (got->dtype() != DType::kI64 || got->numel() != 2)
      return error(Code::kCorrupt, where(), ": malformed start-up frame from ", prev_->str());
    train_count_ = got->data<int64_t>()[0];
    test_count_ = got->data<int64_t>()[1];
    if (mf.last() && (train_count_ != train_->count() || (test_ && test_count_ != test_->count())))
      return error(Code::kInvalidArgument, where(), ": the first stage's dataset has ", train_count_, "/", test_count_,
                   " train/test samples but this node's has ", train_->count(), "/", test_ ? test_->count() : 0,
                   "; give every node the same dataset");
  }
  if (next_) {
    Tensor sizes = Tensor::empty(DType::kI64, {2});
    sizes.data<int64_t>()[0] = train_count_;
    sizes.data<int64_t>()[1] = test_count_;
    RN_RETURN_IF_ERROR(transport_->send(next_->id, FrameMeta{FrameKind::kControl, kStartStep, 0, 0}, sizes));
  }
  if (backup_) {
    Tensor sizes = Tensor::empty(DType::kI64, {2});
    sizes.data<int64_t>()[0] = train_count_;
    sizes.data<int64_t>()[1] = test_count_;
    RN_RETURN_IF_ERROR(transport_->send(backup_->id, FrameMeta{FrameKind::kControl, kStartStep, 0, kBackupSizesId}, sizes));
  }
  if (train_count_ < m().training.batch)
    return error(Code::kInvalidArgument, "the training set has ", train_count_, " samples, fewer than one batch of ",
                 m().training.batch);
  return ok_status();
}

// On the transport's I/O thread: a frame of ours went onto the socket.
void TrainerImpl::trace_wire(const FrameWritten& w) {
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  TraceEvent ev;
  ev.name = w.header.kind == FrameKind::kActivation ? "ACT" : w.header.kind == FrameKind::kGradient ? "GRAD" : "CONTROL";
  ev.category = "wire";
  ev.lane = TraceLane::kWire;
  ev.start_us = duration_cast<microseconds>(w.begin.time_since_epoch()).count();
  ev.dur_us = std::max<int64_t>(0, duration_cast<microseconds>(w.end.time_since_epoch()).count() - ev.start_us);
  // Evaluation and start-up frames use step numbers far above training steps.
  ev.step = w.header.step < kEvalStepBase ? static_cast<int64_t>(w.header.step) : -1;
  ev.microbatch = ev.step >= 0 ? static_cast<int32_t>(w.header.microbatch) : -1;
  ev.bytes = static_cast<int64_t>(w.header.payload_bytes);
  trace_.record(ev);
}

void TrainerImpl::progress(const std::string& json_line) {
  if (!opt_.progress_json) return;
  std::fprintf(stdout, "%s\n", json_line.c_str());
  std::fflush(stdout);
}

const std::vector<int64_t>& TrainerImpl::batch_of(int64_t step) {
  const int64_t batch = m().training.batch;
  const int64_t epoch = step / steps_per_epoch_;
  if (epoch != perm_epoch_) {
    // A joined cluster shuffles the epoch its own way (another seed), so it does not repeat a cluster's batches.
    perm_ = m().cluster < m().num_clusters
                ? sampler_->permutation(static_cast<uint64_t>(epoch))
                : sampler_->permutation(static_cast<uint64_t>(epoch) + (static_cast<uint64_t>(m().cluster) << 32));
    perm_epoch_ = epoch;
  }
  // Cluster c trains on the c-th of num_clusters contiguous shards of the epoch; a cluster that joined during
  // the run (numbered after them) on the start of its own order of the epoch.
  const int64_t shard = static_cast<int64_t>(perm_.size()) / m().num_clusters;
  const int64_t first = m().cluster < m().num_clusters ? m().cluster * shard + (step % steps_per_epoch_) * batch
                                                       : (step % steps_per_epoch_) * batch;
  batch_.assign(perm_.begin() + first, perm_.begin() + first + batch);
  return batch_;
}

Status TrainerImpl::run_instr(const Instr& in, int64_t step) {
  const Manifest& mf = m();
  const int mb = in.microbatch;
  const int64_t mbs = mf.training.microbatch_size;
  const bool async = mf.training.mode == "async";
  auto recv_deadline = [&] { return deadline_in(opt_.recv_timeout_s); };
  auto meta = [&](FrameKind kind, uint32_t id) {
    return FrameMeta{kind, static_cast<uint64_t>(step), static_cast<uint32_t>(mb), id};
  };
  if (in.op == InstrOp::kStep) {
    RN_RETURN_IF_ERROR(sum_tied_gradients(step));
    RN_RETURN_IF_ERROR(apply_update(grads_, step, step).with_context(where() + ": optimizer step"));
    for (auto& [p, g] : grads_) g.fill_zero();
    return ok_status();
  }
  if (in.op == InstrOp::kAllReduce) return error(Code::kUnsupported, "ALLREDUCE is not supported by this runtime yet");
  Micro& u = micro(step, mb);
  switch (in.op) {
    case InstrOp::kRecvAct:
      for (const auto& t : mf.recv) {
        auto got = recv_watching(prev_->id, meta(FrameKind::kActivation, t.wire_id), recv_deadline());
        if (!got.ok()) return got.status().with_context(where() + ": receiving activation '" + t.name + "'");
        if (got->shape() != t.shape || got->dtype() != t.dtype)
          return error(Code::kCorrupt, where(), ": activation '", t.name, "' from ", prev_->str(), " has shape ",
                       shape_str(got->shape()), ", expected ", shape_str(t.shape));
        u.acts_in[t.name] = std::move(got).value();
      }
      return ok_status();
    case InstrOp::kF: {
      TensorMap data;
      if (mf.first() || mf.last()) {
        // Building the batch is not a kernel: its own span (inside F) keeps it apart in traces.
        TraceSpan data_span(trace_, TraceLane::kCompute, "data", "DATA", step, mb);
        const std::vector<int64_t>& batch = batch_of(step);
        std::vector<int64_t> idx(batch.begin() + mb * mbs, batch.begin() + (mb + 1) * mbs);
        if (mf.first()) {
          Tensor inputs = Tensor::empty(b_.forward.find_value(mf.data_input)->dtype,
                                        b_.forward.find_value(mf.data_input)->static_shape());
          RN_RETURN_IF_ERROR(train_->fill_inputs(idx, &inputs).with_context(where()));
          data[mf.data_input] = inputs;
        }
        if (mf.last()) {
          Tensor labels = Tensor::empty(DType::kI64, b_.forward.find_value(mf.labels_input)->static_shape());
          RN_RETURN_IF_ERROR(train_->fill_labels(idx, &labels).with_context(where()));
          data[mf.labels_input] = labels;
        }
      }
      // Weight stashing: B and W of this micro-batch use the weights F used.
      if (async) u.weights = params_;
      RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(b_.forward, {&data, &u.acts_in, &params_}));
      TensorMap out;
      RunContext context{m().training.seed, step, mb, true};
      RN_RETURN_IF_ERROR(
          fwd_->run(feeds, &out, context).with_context(where() + ": forward of micro-batch " + std::to_string(mb)));
      for (const auto& name : mf.stash) {
        auto it = out.find(name);
        u.stash[name] = it != out.end() ? it->second : feeds.at(name);
      }
      if (mf.last()) {
        TraceSpan tally_span(trace_, TraceLane::kCompute, "data", "TALLY", step, mb);
        step_loss_ += static_cast<double>(*out.at(mf.loss_output).data<float>());
        Tally tally = tally_predictions(out.at(mf.logits_output), feeds.at(mf.labels_input), mbs);
        step_correct_ += tally.correct;
        step_counted_ += tally.counted;
      }
      u.outputs = std::move(out);
      u.acts_in.clear();
      return ok_status();
    }
    case InstrOp::kSendAct:
      for (const auto& t : mf.send)
        RN_RETURN_IF_ERROR(transport_->send(next_->id, meta(FrameKind::kActivation, t.wire_id), u.outputs.at(t.name),
                                            wire_codec(mf.training.compression.activations, u.outputs.at(t.name), true)));
      u.outputs.clear();
      return ok_status();
    case InstrOp::kRecvGrad:
      for (const BoundaryTensor* t : grads_in_) {
        auto got = recv_watching(next_->id, meta(FrameKind::kGradient, t->wire_id), recv_deadline());
        if (!got.ok()) return got.status().with_context(where() + ": receiving the gradient of '" + t->name + "'");
        if (got->shape() != t->shape)
          return error(Code::kCorrupt, where(), ": gradient of '", t->name, "' has shape ", shape_str(got->shape()),
                       ", expected ", shape_str(t->shape));
        u.grads_recv["seed/" + t->name] = std::move(got).value();
      }
      return ok_status();
    case InstrOp::kB: {
      TensorMap seed;
      if (mf.last()) seed["seed/" + mf.loss_output] = loss_seed_;
      RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(b_.backward, {&u.stash, &u.grads_recv, &seed, &weights_of(u)}));
      TensorMap out;
      RN_RETURN_IF_ERROR(bwd_->run(feeds, &out).with_context(where() + ": backward (B) of micro-batch " + std::to_string(mb)));
      for (const auto& name : mf.wstash) {
        auto it = out.find(name);
        u.wstash[name] = it != out.end() ? it->second : u.grads_recv.at(name);
      }
      u.outputs = std::move(out);
      u.grads_recv.clear();
      return ok_status();
    }
    case InstrOp::kSendGrad:
      for (const BoundaryTensor* t : grads_out_) {
        const Tensor& grad = u.outputs.at("grad/" + t->name);
        RN_RETURN_IF_ERROR(transport_->send(prev_->id, meta(FrameKind::kGradient, t->wire_id), grad,
                                            wire_codec(mf.training.compression.gradients, grad, true)));
      }
      return ok_status();
    case InstrOp::kW: {
      RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(b_.weight, {&u.stash, &u.wstash, &weights_of(u)}));
      TensorMap out;
      RN_RETURN_IF_ERROR(wgt_->run(feeds, &out).with_context(where() + ": backward (W) of micro-batch " + std::to_string(mb)));
      if (async) {
        for (const auto& p : mf.params) u.grads[p] = out.at("grad/" + p);
      } else {
        for (const auto& p : mf.params) add_into(grads_.at(p), out.at("grad/" + p));
      }
      // W is the last user of this micro-batch's stash: release it.
      u.stash.clear();
      u.wstash.clear();
      return ok_status();
    }
    default:
      return ok_status();
  }
}

Status TrainerImpl::run_traced(const Instr& in, int64_t step) {
  const size_t op = static_cast<size_t>(in.op);
  const InstrSpanKind kind = instr_span_kind(in.op);
  TraceSpan span(trace_, kind.lane, kind.category, instr_op_name(in.op), step, in.microbatch, &totals_[op]);
  span.add_bytes(instr_bytes_[op]);
  Status st = run_instr(in, step);
  if (!st.ok()) return st.with_context("step " + std::to_string(step) + ", " + instr_str(in));
  return ok_status();
}

Status TrainerImpl::sum_tied_gradients(int64_t step) {
  const Manifest& mf = m();
  for (size_t i = 0; i < mf.tied.size(); ++i) {
    const RingSpec& ring = mf.tied[i];
    std::vector<float> buffer;
    for (const RingPiece& piece : ring.pieces) {
      const float* g = grads_.at(piece.param).data<float>() + piece.offset;
      buffer.insert(buffer.end(), g, g + piece.length);
    }
    Status st = tied_rings_[i].run(buffer, ReduceOp::kSum, 1.0, deadline_in(opt_.recv_timeout_s));
    if (!st.ok()) return st.with_context(where() + ": summing tied-weight gradients of step " + std::to_string(step));
    size_t at = 0;
    for (const RingPiece& piece : ring.pieces) {
      std::copy(buffer.begin() + static_cast<long>(at), buffer.begin() + static_cast<long>(at + piece.length),
                grads_.at(piece.param).data<float>() + piece.offset);
      at += static_cast<size_t>(piece.length);
    }
  }
  return ok_status();
}

void TrainerImpl::take_snapshot(int64_t step) {
  finishes_together_ |= protected_run();
  if (!protected_run() || (!snapshots_.empty() && snapshots_.back().step == step)) return;
  // The state this step starts from, for a replay after a failure.
  Snapshot snap;
  snap.step = step;
  for (auto& [name, t] : state_tensors()) snap.tensors.push_back(t->clone());
  snap.rounds = rounds_;
  snap.samples_since_average = samples_since_average_;
  snap.ring_samples = ring_samples_;
  snapshots_.push_back(std::move(snap));
  // A backup's state may be backup_every steps old: a replay goes back that far.
  while (static_cast<int64_t>(snapshots_.size()) > m().training.backup_every + 1) snapshots_.pop_front();
}

Status TrainerImpl::train_step(int64_t step) {
  take_snapshot(step);
  micro_.clear();
  step_loss_ = 0;
  step_correct_ = step_counted_ = 0;
  for (const Instr& in : b_.schedule.instrs) RN_RETURN_IF_ERROR(run_traced(in, step));
  micro_.clear();
  return ok_status();
}

std::vector<std::pair<std::string, Tensor*>> TrainerImpl::state_tensors() {
  const Manifest& mf = m();
  std::vector<std::pair<std::string, Tensor*>> out;
  for (const auto& p : mf.params) out.emplace_back(p, &params_.at(p));
  for (const auto& s : mf.state) out.emplace_back(s, &params_.at(s));
  std::vector<std::string> opt(opt_state_.size());
  std::transform(opt_state_.begin(), opt_state_.end(), opt.begin(), [](const auto& e) { return e.first; });
  std::sort(opt.begin(), opt.end());
  for (const auto& o : opt) out.emplace_back(o, &opt_state_.at(o));
  return out;
}

Status TrainerImpl::send_state(int64_t step, bool now) {
  if (!backup_) return ok_status();
  if (!now && (step + 1) % m().training.backup_every != 0) return ok_status();
  const uint64_t at = kStateStepBase + states_sent_++;
  auto state = state_tensors();
  Status st;
  for (size_t i = 0; i < state.size() && st.ok(); ++i)
    st = transport_->send(backup_->id, FrameMeta{FrameKind::kControl, at, 0, static_cast<uint32_t>(i)},
                          state[i].second->clone());
  // The step it follows, the averaging counters, whether the step ended with a round, the recoveries so far,
  // samples per ring.
  Tensor after = Tensor::zeros(DType::kI64, {5 + static_cast<int64_t>(ring_samples_.size())});
  int64_t* a = after.data<int64_t>();
  a[0] = step;
  a[1] = rounds_;
  a[2] = samples_since_average_;
  a[3] = averaged_after_ == step ? 1 : 0;
  a[4] = recoveries_;
  std::copy(ring_samples_.begin(), ring_samples_.end(), a + 5);
  if (st.ok())
    st = transport_->send(backup_->id, FrameMeta{FrameKind::kControl, at, 0, static_cast<uint32_t>(state.size())}, after);
  if (st.ok()) st = transport_->recv(backup_->id, FrameMeta{FrameKind::kControl, at, 1, 0}, deadline_in(opt_.recv_timeout_s))
                        .status();
  if (!st.ok()) {
    // Training goes on; only the protection is gone.
    RN_LOG_WARN(where(), ": backup ", backup_->str(), " is gone (", st.message(), "); this stage has no backup now");
    backup_.reset();
  }
  return ok_status();
}

Result<int64_t> TrainerImpl::shadow() {
  const Manifest& mf = m();
  const PeerAddress worker = *mf.backup_of;
  RN_RETURN_IF_ERROR(transport_->wait_for_peer(worker.id, deadline_in(opt_.connect_timeout_s))
                         .with_context(where() + ": waiting for the stage's worker " + worker.str() + " to connect"));
  // A joined backup's sizes come once the stages keep what a replay from its first state needs (a step or two).
  auto sizes = transport_->recv(worker.id, FrameMeta{FrameKind::kControl, kStartStep, 0, kBackupSizesId},
                                deadline_in(mf.joined ? opt_.connect_timeout_s + opt_.recv_timeout_s
                                                      : opt_.connect_timeout_s));
  if (!sizes.ok() && sizes.status().code() == Code::kNetwork && mf.joined)
    return sizes.status().with_context(where() + ": the worker " + worker.str() +
                                       " failed before this joined backup received its state; it cannot take the "
                                       "stage over");
  if (!sizes.ok() && sizes.status().code() == Code::kNetwork) {
    // The worker failed during start-up: take over from the bundle's state (the
    // neighbours send the dataset sizes at the takeover).
    RN_LOG_WARN(where(), ": the worker ", worker.str(), " is gone before training (", sizes.status().message(), ")");
    return int64_t{-1};
  }
  if (!sizes.ok()) return sizes.status().with_context(where() + ": waiting for the dataset sizes from the worker");
  if (sizes->dtype() != DType::kI64 || sizes->numel() != 2)
    return error(Code::kCorrupt, where(), ": malformed sizes frame from ", worker.str());
  train_count_ = sizes->data<int64_t>()[0];
  test_count_ = sizes->data<int64_t>()[1];
  RN_LOG_INFO(where(), ": backup of ", worker.str(), ", mirroring its state every step");
  auto state = state_tensors();
  int64_t committed = -1;
  for (uint64_t n = 0;; ++n) {
    const uint64_t at = kStateStepBase + n;
    std::vector<Tensor> got;
    for (size_t i = 0; i <= state.size(); ++i) {  // the state, then the step it follows
      Result<Tensor> t = error(Code::kTimeout, "");
      // Waits as long as the worker trains; it ends with a done frame, or fails.
      for (;;) {
        t = transport_->recv(worker.id, FrameMeta{FrameKind::kControl, at, 0, static_cast<uint32_t>(i)},
                             Clock::now() + std::chrono::milliseconds(100));
        if (t.ok() || t.status().code() != Code::kTimeout) break;
        if (transport_->recv(worker.id, FrameMeta{FrameKind::kControl, kStateStepBase, 2, 0}, Clock::now()).ok())
          return int64_t{-2};
      }
      if (!t.ok()) {
        if (t.status().code() != Code::kNetwork) return t.status().with_context(where() + ": mirroring the worker");
        // A worker that finished said so before it closed; one that did not has failed.
        if (transport_->recv(worker.id, FrameMeta{FrameKind::kControl, kStateStepBase, 2, 0}, Clock::now()).ok())
          return int64_t{-2};
        RN_LOG_WARN(where(), ": the worker ", worker.str(), " is gone (", t.status().message(), ")");
        if (committed < 0 && mf.joined)
          return t.status().with_context(where() + ": the worker failed before this joined backup received its "
                                                   "first state; it cannot take the stage over");
        return committed;
      }
      const bool step_frame = i == state.size();
      const DType want_dtype = step_frame ? DType::kI64 : state[i].second->dtype();
      const Shape want_shape = step_frame ? Shape{5 + static_cast<int64_t>(mf.rings.size())} : state[i].second->shape();
      if (t->dtype() != want_dtype || t->shape() != want_shape)
        return error(Code::kCorrupt, where(), ": state '", step_frame ? "step" : state[i].first, "' from the worker has ",
                     dtype_name(t->dtype()), "[", shape_str(t->shape()), "], expected ", dtype_name(want_dtype), "[",
                     shape_str(want_shape), "]");
      got.push_back(std::move(t).value());
    }
    for (size_t i = 0; i < state.size(); ++i) std::memcpy(state[i].second->raw(), got[i].raw(), got[i].bytes());
    const int64_t* a = got.back().data<int64_t>();
    committed = a[0];
    rounds_ = a[1];
    samples_since_average_ = a[2];
    averaged_after_ = a[3] ? committed : -1;
    recoveries_ = a[4];
    ring_samples_.assign(a + 5, a + 5 + mf.rings.size());
    RN_RETURN_IF_ERROR(transport_->send(worker.id, FrameMeta{FrameKind::kControl, at, 1, 0}, got.back()));
  }
}

Status TrainerImpl::take_over(int64_t committed, Clock::time_point lost_at) {
  const Manifest& mf = m();
  // An acknowledgement sent to the worker as it died is lost with it; the run's end must not report it.
  transport_->forget_lost(mf.backup_of->id);
  const Deadline deadline = deadline_in(opt_.connect_timeout_s);
  RN_RETURN_IF_ERROR(connect_pipeline(deadline, "taking over, "));
  Tensor j = Tensor::zeros(DType::kI64, {1});
  j.data<int64_t>()[0] = committed;
  for (const auto* n : {&prev_, &next_})
    if (*n) RN_RETURN_IF_ERROR(transport_->send((*n)->id, FrameMeta{FrameKind::kControl, kRecoveryStep, 0, kTakeoverId}, j));
  if (train_count_ == 0) {  // the worker failed before it passed the dataset sizes on
    const PeerAddress& n = prev_ ? *prev_ : *next_;
    auto sizes = transport_->recv(n.id, FrameMeta{FrameKind::kControl, kStartStep, 0, kBackupSizesId}, deadline);
    if (!sizes.ok()) return sizes.status().with_context(where() + ": taking over, waiting for the dataset sizes");
    if (sizes->dtype() != DType::kI64 || sizes->numel() != 2)
      return error(Code::kCorrupt, where(), ": malformed sizes frame from ", n.str());
    train_count_ = sizes->data<int64_t>()[0];
    test_count_ = sizes->data<int64_t>()[1];
  }
  // This node is the stage's worker now: without a backup, and where joining nodes go.
  backups_.erase(mf.stage);
  if (!mf.rings.empty()) {
    // Several clusters: it takes the worker's place in its rings, and rejoins them at its first round (their
    // members learn of the loss when their rounds with the worker fail, and dial this node).
    const size_t n = mf.rings.size();
    routes_.assign(n, RingRoute{});
    ring_samples_.resize(n, 0);
    cluster_alive_.assign(static_cast<size_t>(mf.num_clusters), true);
    ring_attempts_.assign(n, 0);
    ring_built_for_.assign(n, 0);
    std::vector<float> held;
    for (size_t k = 0; k < n; ++k) {
      RingSpec& ring = b_.manifest.rings[k];
      std::replace(ring.members.begin(), ring.members.end(), mf.backup_of->id, mf.self.id);
      ring_built_for_[k] = ring.members.size();
      RingOptions ro;
      ro.members = ring.members;
      ro.rank = std::find(ro.members.begin(), ro.members.end(), mf.self.id) - ro.members.begin();
      ro.tag = ring.tag;
      ro.watch_members = true;
      RN_ASSIGN_OR_RETURN(RingAllreduce r, RingAllreduce::create(*transport_, ro));
      rings_.push_back(std::move(r));
      // The state taken over followed a round: its parameters are that round's result, which a member still
      // waiting in that round may need.
      if (averaged_after_ == committed && committed >= 0) {
        pack_ring(ring, &held);
        done_round_[k] = rounds_ - 1;
        done_result_[k] = held;
      }
    }
    rejoin_rings_ = true;
  }
  for (auto& [stage, at] : join_targets_)
    if (stage == mf.stage) at = listen_at_;
  ++recoveries_;  // as every survivor of the cluster counts this failure
  finishes_together_ = true;
  const double seconds = std::chrono::duration<double>(Clock::now() - lost_at).count();
  RN_LOG_WARN(where(), ": took over stage ", mf.stage, " from ", mf.backup_of->str(), " in ", seconds,
              " s; training goes on from step ", committed + 1);
  char line[256];
  std::snprintf(line, sizeof line, R"({"event":"takeover","node":"%s","stage":%d,"from":"%s","step":%lld,"seconds":%.3f})",
                mf.self.id.c_str(), mf.stage, mf.backup_of->id.c_str(), static_cast<long long>(committed + 1), seconds);
  progress(line);
  return ok_status();
}

Result<Tensor> TrainerImpl::recv_watching(const std::string& peer, const FrameMeta& meta, Deadline deadline) {
  if (!protected_run()) return transport_->recv(peer, meta, deadline);
  for (;;) {
    auto got = transport_->recv(peer, meta, std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
    if (got.ok()) {
      // A neighbour sends RESTART before the frames of its replay, on the same link: a frame taken while a
      // RESTART from its sender waits may belong to the replay, so it goes back for the replayed step to read.
      auto restart = transport_->recv(peer, FrameMeta{FrameKind::kControl, kRecoveryStep, 0, kRestartId}, Clock::now());
      if (!restart.ok()) return got;
      transport_->unrecv(peer, meta, std::move(got).value());
      restart_step_ = restart->data<int64_t>()[0];
      restart_from_ = peer;
      return error(Code::kNetwork, where(), ": ", peer, " asks to replay from step ", restart_step_);
    }
    if (got.status().code() != Code::kTimeout || Clock::now() >= deadline) return got;
    for (const auto* n : {&prev_, &next_}) {
      if (!*n) continue;
      auto restart = transport_->recv((*n)->id, FrameMeta{FrameKind::kControl, kRecoveryStep, 0, kRestartId}, Clock::now());
      if (!restart.ok()) continue;
      restart_step_ = restart->data<int64_t>()[0];
      restart_from_ = (*n)->id;
      return error(Code::kNetwork, where(), ": ", (*n)->str(), " asks to replay from step ", restart_step_);
    }
  }
}

Result<int64_t> TrainerImpl::recover(const Status& cause) {
  const Manifest& mf = m();
  const auto t0 = Clock::now();
  int64_t k = restart_step_;
  std::string from = restart_from_;
  restart_step_ = -1;
  restart_from_.clear();
  if (k < 0) {
    if (cause.code() != Code::kNetwork) return cause;
    // A neighbour that is gone and has a backup: the backup takes its place.
    const std::vector<std::string> live = transport_->connected_peers();
    std::optional<PeerAddress>* failed = nullptr;
    int failed_stage = -1;
    for (auto [slot, stage] : {std::pair{&prev_, mf.stage - 1}, std::pair{&next_, mf.stage + 1}}) {
      if (*slot && std::find(live.begin(), live.end(), (*slot)->id) == live.end() && backups_.count(stage)) {
        failed = slot;
        failed_stage = stage;
        break;
      }
    }
    if (!failed) return cause;
    // The backup is now the stage's worker, without a backup of its own; joining nodes go to it.
    const PeerAddress backup = backups_.at(failed_stage);
    backups_.erase(failed_stage);
    for (auto& [stage, at] : join_targets_)
      if (stage == failed_stage) at = backup;
    RN_LOG_WARN(where(), ": ", (*failed)->str(), " (stage ", failed_stage, ") is gone (", cause.message(),
                "); its backup ", backup.str(), " takes over");
    transport_->forget_lost((*failed)->id);  // what was queued for it is replayed to the backup
    *failed = backup;
    const Deadline deadline = deadline_in(opt_.connect_timeout_s);
    Status st = failed == &next_ ? transport_->connect(backup.id, backup.host, backup.port, deadline)
                                 : transport_->wait_for_peer(backup.id, deadline);
    if (!st.ok()) return st.with_context(where() + ": reaching the backup of stage " + std::to_string(failed_stage));
    Tensor sizes = Tensor::empty(DType::kI64, {2});
    sizes.data<int64_t>()[0] = train_count_;
    sizes.data<int64_t>()[1] = test_count_;
    RN_RETURN_IF_ERROR(transport_->send(backup.id, FrameMeta{FrameKind::kControl, kStartStep, 0, kBackupSizesId}, sizes));
    auto j = transport_->recv(backup.id, FrameMeta{FrameKind::kControl, kRecoveryStep, 0, kTakeoverId}, deadline);
    if (!j.ok()) return j.status().with_context(where() + ": waiting for the backup of stage " +
                                                std::to_string(failed_stage) + " to take over");
    k = j->data<int64_t>()[0] + 1;
    from = backup.id;
  }
  // The neighbour on the other side replays too, and passes it on.
  Tensor restart = Tensor::zeros(DType::kI64, {1});
  restart.data<int64_t>()[0] = k;
  for (const auto* n : {&prev_, &next_})
    if (*n && (*n)->id != from)
      RN_RETURN_IF_ERROR(transport_->send((*n)->id, FrameMeta{FrameKind::kControl, kRecoveryStep, 0, kRestartId}, restart));
  // Back to the state this stage had at the start of step k.
  auto snap = std::find_if(snapshots_.begin(), snapshots_.end(), [&](const Snapshot& s) { return s.step == k; });
  if (snap == snapshots_.end())
    return error(Code::kInternal, where(), ": cannot replay step ", k, ": this stage holds the state of steps ",
                 snapshots_.empty() ? -1 : snapshots_.front().step, "..", snapshots_.empty() ? -1 : snapshots_.back().step);
  auto state = state_tensors();
  for (size_t i = 0; i < state.size(); ++i)
    std::memcpy(state[i].second->raw(), snap->tensors[i].raw(), snap->tensors[i].bytes());
  ++recoveries_;
  rounds_ = snap->rounds;
  samples_since_average_ = snap->samples_since_average;
  ring_samples_ = snap->ring_samples;
  snapshots_.erase(std::next(snap), snapshots_.end());
  micro_.clear();
  for (auto& [p, g] : grads_) g.fill_zero();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  RN_LOG_WARN(where(), ": replaying from step ", k, " (recovered in ", seconds, " s)");
  char line[200];
  std::snprintf(line, sizeof line, R"({"event":"recovered","node":"%s","stage":%d,"step":%lld,"seconds":%.3f})",
                mf.self.id.c_str(), mf.stage, static_cast<long long>(k), seconds);
  progress(line);
  return k;
}

Result<Tensor> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return error(Code::kNotFound, "cannot read '", path, "'");
  const std::streamsize size = in.tellg();
  in.seekg(0);
  Tensor t = Tensor::empty(DType::kU8, {static_cast<int64_t>(size)});
  if (size > 0 && !in.read(static_cast<char*>(t.raw()), size))
    return error(Code::kInvalidArgument, "cannot read all of '", path, "' (", size, " bytes)");
  return t;
}

Status TrainerImpl::serve_joins(int64_t step) {
  const Manifest& mf = m();
  if (join_targets_.empty()) return ok_status();
  // Requests from joining nodes; a join that fails never stops training.
  for (std::string& id : transport_->take_joiners()) join_requests_.push_back(std::move(id));
  for (auto it = join_requests_.begin(); it != join_requests_.end();) {
    auto request = transport_->recv(*it, FrameMeta{FrameKind::kControl, kJoinStep, kJoinRequest, 0}, Clock::now());
    if (!request.ok() && request.status().code() == Code::kTimeout) {  // not here yet
      ++it;
      continue;
    }
    Status st = request.ok() ? answer_join(*it, *request) : request.status();
    if (!st.ok()) RN_LOG_WARN(where(), ": joining node '", *it, "': ", st.message());
    it = join_requests_.erase(it);
  }
  // Newcomers copying this stage for a new cluster that are connected: this node vouches for them from the
  // next round on, until they are in all its rings.
  for (auto it = copies_served_.begin(); it != copies_served_.end();) {
    auto ready = transport_->recv(it->first, FrameMeta{FrameKind::kControl, kJoinStep, kJoinReady, 0}, Clock::now());
    if (!ready.ok()) {
      ++it;
      continue;
    }
    Json alive = Json::array();
    for (bool a : cluster_alive_) alive.push_back(a);
    Json ack = Json::object();
    ack.set("round", rounds_);
    ack.set("alive", std::move(alive));
    RN_RETURN_IF_ERROR(transport_->send(it->first, FrameMeta{FrameKind::kControl, kJoinStep, kJoinReadyAck, 0},
                                        json_frame(ack)));
    if (!mf.rings.empty()) vouching_[it->first] = it->second;
    RN_LOG_INFO(where(), ": vouching for ", it->first, " (cluster ", it->second, ") from round ", rounds_);
    it = copies_served_.erase(it);
  }
  std::vector<std::pair<int, const std::optional<PeerAddress>*>> sides;
  if (prev_) sides.emplace_back(mf.stage - 1, &prev_);
  if (next_) sides.emplace_back(mf.stage + 1, &next_);
  // Offers of another stage's new backup: this node keeps the state of every step from the next on (a replay
  // needs it), passes the offer on away from its sender, and accepts once the stages beyond have.
  auto send_accept = [&](const std::string& to, int stage, int64_t keeps_from) {
    Tensor a = Tensor::empty(DType::kI64, {1});
    a.data<int64_t>()[0] = keeps_from;
    return transport_->send(to, FrameMeta{FrameKind::kControl, kJoinStep, kJoinAccept, static_cast<uint32_t>(stage)}, a);
  };
  for (const auto& [side_stage, side] : sides) {
    const std::string from = (**side).id;
    for (int stage = 0; stage < mf.num_stages; ++stage) {
      if (stage == mf.stage) continue;
      auto offer = transport_->recv(from, FrameMeta{FrameKind::kControl, kJoinStep, kJoinOffer, static_cast<uint32_t>(stage)},
                                    Clock::now());
      if (!offer.ok()) continue;
      RN_ASSIGN_OR_RETURN(Json j, frame_json(*offer, where() + ": offer of a backup from " + from));
      RN_ASSIGN_OR_RETURN(PeerAddress backup, join_peer_of(j, where() + ": offer of a backup from " + from));
      backups_[stage] = backup;
      RN_LOG_INFO(where(), ": stage ", stage, " has a backup now: ", backup.str());
      const std::optional<PeerAddress>& beyond = side_stage < mf.stage ? next_ : prev_;
      if (!beyond) {
        RN_RETURN_IF_ERROR(send_accept(from, stage, step + 1));
        continue;
      }
      RN_RETURN_IF_ERROR(transport_->send(beyond->id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinOffer,
                                                                 static_cast<uint32_t>(stage)}, *offer));
      relayed_offers_[stage] = Relayed{from, beyond->id, step + 1};
    }
  }
  for (auto it = relayed_offers_.begin(); it != relayed_offers_.end();) {
    auto accept = transport_->recv(it->second.to, FrameMeta{FrameKind::kControl, kJoinStep, kJoinAccept,
                                                            static_cast<uint32_t>(it->first)}, Clock::now());
    if (!accept.ok()) {
      ++it;
      continue;
    }
    RN_RETURN_IF_ERROR(send_accept(it->second.from, it->first, std::max(it->second.keeps_from, accept->data<int64_t>()[0])));
    it = relayed_offers_.erase(it);
  }
  // Several clusters: a ring member's new backup, which takes its place in the rings if it fails.
  for (const auto& id : ring_members()) {
    auto offer = transport_->recv(id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinRingOffer, 0}, Clock::now());
    if (!offer.ok()) continue;
    RN_ASSIGN_OR_RETURN(Json j, frame_json(*offer, where() + ": ring offer of a backup from " + id));
    RN_ASSIGN_OR_RETURN(PeerAddress backup, join_peer_of(j, where() + ": ring offer of a backup from " + id));
    ring_backups_[id] = backup;
    RN_LOG_INFO(where(), ": ring member ", id, " has a backup now: ", backup.str());
    RN_RETURN_IF_ERROR(transport_->send(id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinRingAccept, 0},
                                        Tensor::zeros(DType::kI64, {1})));
  }
  // The joiner becoming this stage's backup: once it is connected, every other stage is offered it; once all
  // keep the state of the step after this one, it gets the dataset sizes and, after this step, its first state.
  if (!joining_) return ok_status();
  Joining& j = *joining_;
  const auto live = transport_->connected_peers();
  if (std::find(live.begin(), live.end(), j.node.id) == live.end()) {
    if (j.offered || Clock::now() - j.since > std::chrono::milliseconds(static_cast<int64_t>(opt_.connect_timeout_s * 1000))) {
      RN_LOG_WARN(where(), ": the joining node ", j.node.str(), " did not ", j.offered ? "stay" : "get", " connected; ",
                  "this stage has no backup");
      joining_.reset();
    }
    return ok_status();
  }
  if (!j.offered) {
    const Tensor offer = json_frame(join_peer_json(j.node, mf.stage));
    for (const auto& [side_stage, side] : sides)
      RN_RETURN_IF_ERROR(transport_->send((**side).id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinOffer,
                                                                  static_cast<uint32_t>(mf.stage)}, offer));
    j.offered = true;
  }
  int64_t keeps_from = 0;
  for (const auto& [side_stage, side] : sides) {
    const std::string& id = (**side).id;
    if (!j.accepts.count(id)) {
      auto accept = transport_->recv(id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinAccept,
                                                   static_cast<uint32_t>(mf.stage)}, Clock::now());
      if (!accept.ok()) return ok_status();
      j.accepts[id] = accept->data<int64_t>()[0];
    }
    keeps_from = std::max(keeps_from, j.accepts[id]);
  }
  if (step + 1 < keeps_from) return ok_status();
  // Several clusters: the members of this node's rings learn of it too (a takeover replaces this node there).
  if (!j.ring_offered) {
    const Tensor offer = json_frame(join_peer_json(j.node, mf.stage));
    for (const auto& id : ring_members())
      if (!transport_->send(id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinRingOffer, 0}, offer).ok())
        j.ring_accepts.insert(id);  // gone: nothing to wait for
    j.ring_offered = true;
  }
  for (const auto& id : ring_members()) {
    if (j.ring_accepts.count(id)) continue;
    if (!transport_->recv(id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinRingAccept, 0}, Clock::now()).ok())
      return ok_status();
    j.ring_accepts.insert(id);
  }
  backup_ = j.node;
  states_sent_ = 0;
  Tensor sizes = Tensor::empty(DType::kI64, {2});
  sizes.data<int64_t>()[0] = train_count_;
  sizes.data<int64_t>()[1] = test_count_;
  RN_RETURN_IF_ERROR(transport_->send(backup_->id, FrameMeta{FrameKind::kControl, kStartStep, 0, kBackupSizesId}, sizes));
  joined_since_ = j.since;  // announced once its first state is acknowledged (train loop)
  joining_.reset();
  return ok_status();
}

Status TrainerImpl::answer_join(const std::string& joiner, const Tensor& request) {
  const Manifest& mf = m();
  RN_ASSIGN_OR_RETURN(Json req, frame_json(request, "its request"));
  RN_ASSIGN_OR_RETURN(PeerAddress node, join_peer_of(req, "its request"));
  // Several clusters: a new cluster's node (--joinable), or a backup (with backups in the rings).
  if (mf.num_clusters > 1 && !mf.training.backups_in_rings) return answer_cluster_join(joiner, req, node);
  Json answer = Json::object();
  std::string refusal;
  // The stage a joiner should back up: the first in the run's order of preference without a backup.
  auto preferred = std::find_if(join_targets_.begin(), join_targets_.end(), [&](const auto& t) {
    return t.first == mf.stage ? !backup_ && !joining_ : !backups_.count(t.first);
  });
  if (preferred == join_targets_.end())
    refusal = "every stage has a backup" + std::string(joining_ ? " or is being joined" : "");
  else if (preferred->first != mf.stage)
    refusal = "stage " + std::to_string(preferred->first) + " comes first (least reliable or slowest machine)" +
              (backup_ ? "; stage " + std::to_string(mf.stage) + " has a backup (" + backup_->id + ")" : "");
  const auto live = transport_->connected_peers();
  if (refusal.empty() && (node.id == mf.self.id || std::find(live.begin(), live.end(), node.id) != live.end()))
    refusal = "node id '" + node.id + "' is taken; join with another --id";
  if (!refusal.empty()) {
    // Where else to go: the other stages, in order of preference.
    Json targets = Json::array();
    for (auto t = preferred; t != join_targets_.end(); ++t)
      if (t->first != mf.stage) targets.push_back(join_peer_json(t->second, t->first));
    answer.set("accept", false);
    answer.set("reason", refusal);
    answer.set("targets", std::move(targets));
    RN_LOG_INFO(where(), ": joining node ", node.str(), " sent on: ", refusal);
    return transport_->send(joiner, FrameMeta{FrameKind::kControl, kJoinStep, kJoinAnswer, 0}, json_frame(answer));
  }
  // The joiner's bundle: this stage's files, and a manifest of a backup of this node whose addresses are
  // the ones this node reaches its peers at (the joiner has no --peer overrides).
  Manifest jm = mf;
  jm.self = node;
  jm.backup_of = PeerAddress{mf.self.id, listen_at_.host, listen_at_.port};
  jm.joined = true;
  jm.prev = prev_;
  jm.next = next_;
  jm.backups = backups_;
  jm.backups[mf.stage] = node;
  jm.ring_backups = ring_backups_;
  jm.join_targets = join_targets_;
  RN_RETURN_IF_ERROR(send_bundle(joiner, jm));
  RN_LOG_INFO(where(), ": ", node.str(), " joins as this stage's backup; its bundle is on the way");
  joining_.emplace();
  joining_->node = node;
  joining_->since = Clock::now();
  return ok_status();
}

Status TrainerImpl::send_bundle(const std::string& joiner, const Manifest& manifest) {
  const Manifest& mf = m();
  std::vector<std::string> files{mf.weights_file, mf.schedule_file};
  for (const auto& [role, file] : mf.programs) files.push_back(file);
  Json names = Json::array();
  names.push_back(std::string("manifest.json"));
  for (const auto& f : files) names.push_back(f);
  Json answer = Json::object();
  answer.set("accept", true);
  answer.set("stage", static_cast<int64_t>(mf.stage));
  if (manifest.copy_of) answer.set("cluster", static_cast<int64_t>(manifest.cluster));
  answer.set("files", std::move(names));
  RN_RETURN_IF_ERROR(transport_->send(joiner, FrameMeta{FrameKind::kControl, kJoinStep, kJoinAnswer, 0}, json_frame(answer)));
  RN_RETURN_IF_ERROR(transport_->send(joiner, FrameMeta{FrameKind::kControl, kJoinStep, kJoinFile, 0},
                                      json_frame(manifest_to_json(manifest))));
  for (size_t i = 0; i < files.size(); ++i) {
    RN_ASSIGN_OR_RETURN(Tensor bytes, read_file_bytes((std::filesystem::path(b_.dir) / files[i]).string()));
    RN_RETURN_IF_ERROR(transport_->send(joiner, FrameMeta{FrameKind::kControl, kJoinStep, kJoinFile,
                                                          static_cast<uint32_t>(i + 1)}, bytes));
  }
  return ok_status();
}

Status TrainerImpl::answer_cluster_join(const std::string& joiner, const Json& req, const PeerAddress& node) {
  const Manifest& mf = m();
  const size_t k = join_targets_.size();
  auto answer = [&](const std::string& peer, const Json& body) {
    return transport_->send(peer, FrameMeta{FrameKind::kControl, kJoinStep, kJoinAnswer, 0}, json_frame(body));
  };
  auto refuse = [&](const std::string& reason, Json targets) {
    Json body = Json::object();
    body.set("accept", false);
    body.set("reason", reason);
    body.set("targets", std::move(targets));
    RN_LOG_INFO(where(), ": joining node ", node.str(), " sent on: ", reason);
    return answer(joiner, body);
  };
  if (join_targets_.empty()) return refuse("this run takes no new clusters (compile it with --joinable)", Json::array());
  if (req.has("assign")) {
    // Sent here by cluster 0's first stage: a copy of this stage for the new cluster it assigned.
    RN_ASSIGN_OR_RETURN(int64_t stage, req.get_int("assign.stage"));
    RN_ASSIGN_OR_RETURN(int64_t cluster, req.get_int("assign.cluster"));
    RN_ASSIGN_OR_RETURN(const Json::Array* pipeline, req.get_array("assign.pipeline"));
    if (mf.cluster != 0 || stage != mf.stage || pipeline->size() != k || cluster < mf.num_clusters)
      return refuse("assignment to stage " + std::to_string(stage) + " of cluster " + std::to_string(cluster) +
                        " does not fit this node (cluster " + std::to_string(mf.cluster) + ", stage " +
                        std::to_string(mf.stage) + ")",
                    Json::array());
    std::vector<PeerAddress> nodes;
    for (size_t s = 0; s < pipeline->size(); ++s) {
      RN_ASSIGN_OR_RETURN(PeerAddress p, join_peer_of((*pipeline)[s], "the new cluster's pipeline"));
      nodes.push_back(std::move(p));
    }
    Manifest jm = mf;
    jm.self = node;
    jm.cluster = static_cast<int>(cluster);
    jm.joined = true;
    jm.copy_of = PeerAddress{mf.self.id, listen_at_.host, listen_at_.port};
    jm.backup_of.reset();
    jm.backups.clear();
    jm.prev.reset();
    jm.next.reset();
    if (stage > 0) jm.prev = nodes[static_cast<size_t>(stage) - 1];
    if (static_cast<size_t>(stage) + 1 < nodes.size()) jm.next = nodes[static_cast<size_t>(stage) + 1];
    // The rings as they are now (it enters them when a round's decision says so); every member's address.
    for (size_t r = 0; r < jm.rings.size(); ++r) jm.rings[r].members = mf.rings[r].members;
    jm.ring_peers.clear();
    for (const auto& p : mf.ring_peers) { RN_ASSIGN_OR_RETURN(PeerAddress at, apply_override(p, opt_.peers)); jm.ring_peers.push_back(at); }
    jm.ring_peers.push_back(*jm.copy_of);
    for (const auto& p : joined_peers_) jm.ring_peers.push_back(p);
    jm.join_targets = join_targets_;
    RN_RETURN_IF_ERROR(send_bundle(joiner, jm));
    if (!mf.rings.empty()) joined_peers_.push_back(node);
    copies_served_[node.id] = cluster;
    RN_LOG_INFO(where(), ": ", node.str(), " copies this stage for new cluster ", cluster, "; its bundle is on the way");
    return ok_status();
  }
  const PeerAddress& gatherer = join_targets_.front().second;
  if (mf.cluster != 0 || mf.stage != join_targets_.front().first) {
    Json targets = Json::array();
    targets.push_back(join_peer_json(gatherer, join_targets_.front().first));
    return refuse("cluster 0's first stage gathers newcomers into new clusters", std::move(targets));
  }
  // Held until a whole cluster's worth asked; then each copies one stage of cluster 0.
  held_newcomers_.emplace_back(joiner, node);
  RN_LOG_INFO(where(), ": ", node.str(), " waits for a new cluster (", held_newcomers_.size(), " of ", k, ")");
  if (held_newcomers_.size() < k) return ok_status();
  size_t clusters = std::max<size_t>(cluster_alive_.size(), static_cast<size_t>(mf.num_clusters));
  for (const RingSpec& ring : mf.rings) clusters = std::max(clusters, ring.members.size());
  const int64_t cluster = std::max<int64_t>(next_cluster_, static_cast<int64_t>(clusters));
  next_cluster_ = static_cast<int>(cluster) + 1;
  Json pipeline = Json::array();
  for (size_t s = 0; s < k; ++s) pipeline.push_back(join_peer_json(held_newcomers_[s].second, static_cast<int>(s)));
  for (size_t s = 0; s < k; ++s) {
    Json assign = Json::object();
    assign.set("cluster", cluster);
    assign.set("stage", static_cast<int64_t>(s));
    assign.set("pipeline", pipeline);
    Json targets = Json::array();
    targets.push_back(join_peer_json(join_targets_[s].second, join_targets_[s].first));
    Json body = Json::object();
    body.set("accept", false);
    body.set("reason", "new cluster " + std::to_string(cluster) + ", stage " + std::to_string(s));
    body.set("assign", std::move(assign));
    body.set("targets", std::move(targets));
    RN_RETURN_IF_ERROR(answer(held_newcomers_[s].first, body));
  }
  RN_LOG_INFO(where(), ": newcomers form cluster ", cluster);
  held_newcomers_.clear();
  return ok_status();
}

Result<int64_t> TrainerImpl::enter_as_new_cluster() {
  const Manifest& mf = m();
  const PeerAddress& copied = *mf.copy_of;
  const auto t0 = Clock::now();
  RN_RETURN_IF_ERROR(
      transport_->send(copied.id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinReady, 0}, Tensor::zeros(DType::kI64, {1})));
  auto ack = transport_->recv(copied.id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinReadyAck, 0},
                              deadline_in(opt_.connect_timeout_s + opt_.recv_timeout_s));
  if (!ack.ok()) return ack.status().with_context(where() + ": waiting for " + copied.str() + " to take it in");
  RN_ASSIGN_OR_RETURN(Json body, frame_json(*ack, where() + ": answer to READY from " + copied.str()));
  RN_ASSIGN_OR_RETURN(rounds_, body.get_int("round"));
  RN_ASSIGN_OR_RETURN(const Json::Array* alive, body.get_array("alive"));
  cluster_alive_.clear();
  for (const Json& a : *alive) cluster_alive_.push_back(a.is_bool() && a.as_bool());
  // Rounds without training (weight 0: it receives the others' average) until every node of the new cluster
  // took part in one round of all its rings; the new cluster's stages agree on that after every round.
  for (int64_t attempt = 0;; ++attempt) {
    if (attempt > 1000) return error(Code::kTimeout, where(), ": the new cluster did not get into the rounds");
    const int64_t after = (rounds_ + 1) * mf.training.average_every - 1;
    RN_RETURN_IF_ERROR(average(after));
    bool in = std::all_of(in_round_.begin(), in_round_.end(), [](bool b) { return b; });
    const FrameMeta down{FrameKind::kControl, kJoinStep, kJoinStart, static_cast<uint32_t>(rounds_)};
    const FrameMeta up{FrameKind::kControl, kJoinStep, kJoinStart + 1, static_cast<uint32_t>(rounds_)};
    auto flag = [](bool b) {
      Tensor t = Tensor::empty(DType::kI64, {1});
      t.data<int64_t>()[0] = b ? 1 : 0;
      return t;
    };
    if (prev_) {
      RN_ASSIGN_OR_RETURN(Tensor t, transport_->recv(prev_->id, down, deadline_in(opt_.recv_timeout_s)));
      in = in && t.data<int64_t>()[0] != 0;
    }
    if (next_) {
      RN_RETURN_IF_ERROR(transport_->send(next_->id, down, flag(in)));
      RN_ASSIGN_OR_RETURN(Tensor t, transport_->recv(next_->id, up, deadline_in(opt_.recv_timeout_s)));
      in = t.data<int64_t>()[0] != 0;
    }
    if (prev_) RN_RETURN_IF_ERROR(transport_->send(prev_->id, up, flag(in)));
    if (!in) continue;
    const int64_t start = rounds_ * mf.training.average_every;
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    RN_LOG_INFO(where(), ": cluster ", mf.cluster, " is in every ring after round ", rounds_ - 1, " (", seconds,
                " s); training from step ", start);
    char line[256];
    std::snprintf(line, sizeof line, R"({"event":"cluster_joined","node":"%s","cluster":%d,"stage":%d,"step":%lld,"seconds":%.3f})",
                  mf.self.id.c_str(), mf.cluster, mf.stage, static_cast<long long>(start), seconds);
    progress(line);
    return start;
  }
}

// One optimizer update with micro-batch g's own gradients. Micro-batches still
// in flight hold the current weights (their F used them): those tensors are
// left to them and the update goes to fresh copies.
Status TrainerImpl::update_async(int64_t g) {
  const Manifest& mf = m();
  auto it = micro_.find(g);
  RN_ENFORCE(it != micro_.end(), "update of unknown micro-batch ", g);
  TensorMap grads = std::move(it->second.grads);
  micro_.erase(it);
  own_params();
  TraceSpan span(trace_, TraceLane::kCompute, "compute", "STEP", g / mf.training.microbatches,
                 static_cast<int>(g % mf.training.microbatches), &totals_[static_cast<size_t>(InstrOp::kStep)]);
  return apply_update(grads, g, g / mf.training.microbatches)
      .with_context(where() + ": optimizer update after micro-batch " + std::to_string(g));
}

Status TrainerImpl::apply_update(TensorMap& grads, int64_t update, int64_t step) {
  const Manifest& mf = m();
  const OptimizerConfig& config = mf.training.optimizer;
  *lr_.data<float>() = static_cast<float>(scheduled_lr(config, update, total_updates_));
  if (config.clip_norm > 0) RN_RETURN_IF_ERROR(clip_gradients(grads, step));
  TensorMap feeds{{"lr", lr_}};
  for (const auto& p : mf.params) {
    feeds[p] = params_.at(p);
    feeds["grad/" + p] = grads.at(p);
  }
  for (const auto& [name, state] : opt_state_) feeds[name] = state;  // exactly the optimizer program's inputs
  TensorMap out;
  return optim_->run(feeds, &out);
}

Status TrainerImpl::clip_gradients(TensorMap& grads, int64_t step) {
  const Manifest& mf = m();
  double local = 0;
  for (const auto& p : mf.params) {
    const Tensor& g = grads.at(p);
    const float* x = g.data<float>();
    for (int64_t i = 0, n = g.numel(); i < n; ++i) local += static_cast<double>(x[i]) * x[i];
  }
  RN_ASSIGN_OR_RETURN(double total, pipeline_sum(step, local));
  // torch.nn.utils.clip_grad_norm_'s rule; a non-finite norm leaves the gradients as they are.
  const double scale = std::min(1.0, mf.training.optimizer.clip_norm / (std::sqrt(total) + 1e-6));
  if (!(scale < 1.0)) return ok_status();
  const float factor = static_cast<float>(scale);
  for (const auto& p : mf.params) {
    Tensor& g = grads.at(p);
    float* x = g.data<float>();
    for (int64_t i = 0, n = g.numel(); i < n; ++i) x[i] *= factor;
  }
  return ok_status();
}

// Protocol: stage 0 sends its sum to stage 1; each later stage waits for the
// running sum from its predecessor, adds its own and passes it on; the last
// stage holds the total and sends it back, and each stage forwards it toward
// stage 0. Every wait has the receive deadline.
Result<double> TrainerImpl::pipeline_sum(int64_t step, double local) {
  auto meta = [&](uint32_t id) { return FrameMeta{FrameKind::kControl, static_cast<uint64_t>(step), 0, id}; };
  auto scalar = [](double v) {
    Tensor t = Tensor::empty(DType::kF64, {});
    *t.data<double>() = v;
    return t;
  };
  auto receive = [&](const PeerAddress& peer, uint32_t id, const char* what) -> Result<double> {
    auto got = recv_watching(peer.id, meta(id), deadline_in(opt_.recv_timeout_s));
    if (!got.ok())
      return got.status().with_context(where() + ": receiving " + what + " for clipping, step " + std::to_string(step));
    if (got->dtype() != DType::kF64 || got->numel() != 1)
      return error(Code::kCorrupt, where(), ": ", what, " from ", peer.str(), " is not a float64 scalar (",
                   dtype_name(got->dtype()), " ", shape_str(got->shape()), ")");
    return *got->data<double>();
  };
  double sum = local;
  if (prev_) {  // wait for the running sum of the stages before this one
    RN_ASSIGN_OR_RETURN(double before, receive(*prev_, kNormSumId, "the gradients' running sum of squares"));
    sum = before + local;
  }
  if (next_) {  // pass it on, then wait for the pipeline's total
    RN_RETURN_IF_ERROR(transport_->send(next_->id, meta(kNormSumId), scalar(sum)));
    RN_ASSIGN_OR_RETURN(sum, receive(*next_, kNormTotalId, "the gradients' total sum of squares"));
  }
  if (prev_) RN_RETURN_IF_ERROR(transport_->send(prev_->id, meta(kNormTotalId), scalar(sum)));  // total toward stage 0
  return sum;
}

void TrainerImpl::own_params() {
  // A weight version is identified by its tensors' storage.
  auto holds_current = [&](const Micro& u) {
    return !u.weights.empty() && u.weights.begin()->second.raw() == params_.at(u.weights.begin()->first).raw();
  };
  if (std::any_of(micro_.begin(), micro_.end(), [&](const auto& entry) { return holds_current(entry.second); }))
    for (auto& [name, t] : params_) t = t.clone();
}

void TrainerImpl::pack_ring(const RingSpec& ring, std::vector<float>* buffer) const {
  buffer->resize(static_cast<size_t>(ring.size()));
  auto at = buffer->begin();
  for (const RingPiece& piece : ring.pieces) {
    const float* src = params_.at(piece.param).data<float>() + piece.offset;
    at = std::copy(src, src + piece.length, at);
  }
}

void TrainerImpl::unpack_ring(const RingSpec& ring, const std::vector<float>& buffer) {
  auto at = buffer.begin();
  for (const RingPiece& piece : ring.pieces) {
    std::copy(at, at + piece.length, params_.at(piece.param).data<float>() + piece.offset);
    at += piece.length;
  }
}

Status TrainerImpl::maybe_replan(int64_t step) {
  const Manifest& mf = m();
  const int64_t every = mf.training.replan_every;
  if (every <= 0 || rounds_ == 0 || rounds_ % every != 0) return ok_status();
  for (size_t i = 0; i < mf.rings.size(); ++i) {
    const RingSpec& ring = mf.rings[i];
    if (ring.members.size() < 3) continue;
    RingRoute& route = routes_[i];
    const size_t rank = std::find(ring.members.begin(), ring.members.end(), mf.self.id) - ring.members.begin();
    ProbeOptions probe;
    probe.epoch = ring.tag + 65536u * static_cast<uint32_t>(rounds_ / every);
    probe.transfer_budget = std::chrono::milliseconds(200);
    auto links = probe_links(*transport_, ring.members, rank, probe, deadline_in(opt_.recv_timeout_s));
    if (!links.ok()) return links.status().with_context(where() + ": re-probing ring " + std::to_string(ring.tag));
    HopTimes now = links->hop_times(RingOptions{}.chunk_bytes);
    // Every member holds the same matrix, so every member decides the same.
    if (!should_replan(route.planned, now, route.order)) {
      RN_VERBOSE("ring ", ring.tag, " re-probed after step ", step, ": no hop of its order got 2x slower");
      continue;
    }
    RN_ASSIGN_OR_RETURN(RingPlan plan, plan_ring_order(now));
    route.planned = now;
    route.order = plan.order;
    std::vector<std::string> ordered = ordered_members(ring.members, plan.order);
    RN_RETURN_IF_ERROR(install_ring(i, ordered));
    std::string order_text;
    for (const auto& id : ordered) order_text += (order_text.empty() ? "" : " -> ") + id;
    RN_LOG_INFO("ring ", ring.tag, " re-planned after step ", step, " (a hop got 2x slower): ", order_text);
  }
  return ok_status();
}

Status TrainerImpl::average(int64_t step) {
  const Manifest& mf = m();
  // Re-planning probes every member; after a cluster was lost the plan stays as it is, and with late clusters
  // (whose members are not all there at once) the order of the start stays.
  if (!gathering() && std::all_of(cluster_alive_.begin(), cluster_alive_.end(), [](bool a) { return a; }))
    RN_RETURN_IF_ERROR(maybe_replan(step));
  own_params();
  if (rejoin_rings_) {
    RN_RETURN_IF_ERROR(rejoin_rings(step));
    rejoin_rings_ = false;
  }
  std::vector<float> buffer;
  in_round_.assign(mf.rings.size(), true);
  for (size_t i = 0; i < mf.rings.size(); ++i)
    RN_RETURN_IF_ERROR(average_ring(i, step, static_cast<double>(ring_samples_[i]), &buffer));
  // (Compressed averaging has no dense rings: the compiler refuses the combination.)
  if (mf.training.average_optimizer_state && compressed_rings_.empty())
    RN_RETURN_IF_ERROR(average_optimizer_state(step));
  for (size_t i = 0; i < mf.rings.size(); ++i)
    if (in_round_[i]) ring_samples_[i] = 0;
  samples_since_average_ = 0;
  ++rounds_;
  averaged_after_ = step;
  return ok_status();
}

Status TrainerImpl::average_ring(size_t i, int64_t step, double weight, std::vector<float>* buffer) {
  const Manifest& mf = m();
  const RingSpec& ring = mf.rings[i];
  const bool compressed = !compressed_rings_.empty();
  const bool deadline = gathering();
  for (;;) {
    if (done_round_[i] == rounds_) {
      // This round of the ring is done already: a replay after a takeover in this cluster, or the result a
      // backup that took a member's place passed on. Every member's result is the same, bit for bit.
      *buffer = done_result_[i];
      unpack_ring(ring, *buffer);
      return ok_status();
    }
    if (deadline) {
      Result<bool> here = gather_round(i, last_round_);
      if (here.ok() && !*here) {
        in_round_[i] = false;  // late: this ring's samples count at a later round
        return ok_status();
      }
      if (!here.ok() && here.status().code() != Code::kNetwork && here.status().code() != Code::kTimeout)
        return here.status();
      if (!here.ok()) {  // the coordinator is gone: agree on who is left, then gather again
        RN_ASSIGN_OR_RETURN(bool lost, agree_on_survivors(i, step, here.status()));
        if (!lost) return here.status();
        continue;
      }
    } else if (live_members(i).size() != ring_built_for_[i]) {
      // A cluster lost on another ring since this one was built: agree again before using it,
      // as its other members may not know yet.
      RN_RETURN_IF_ERROR(agree_on_survivors(i, step, ok_status()).status());
      RN_RETURN_IF_ERROR(rebuild_ring(i));
    }
    TraceSpan span(trace_, TraceLane::kComm, "allreduce", "ALLREDUCE", step, static_cast<int>(ring.tag),
                   &totals_[static_cast<size_t>(InstrOp::kAllReduce)]);
    // Gather this ring's slice of the parameters, average it, scatter it back.
    pack_ring(ring, buffer);
    Status st = compressed ? compressed_rings_[i].run(*buffer, weight, deadline_in(opt_.recv_timeout_s))
                           : rings_[i].run(*buffer, ReduceOp::kWeightedMean, weight, deadline_in(opt_.recv_timeout_s));
    if (st.ok()) {
      unpack_ring(ring, *buffer);
      if (keeps_round_results()) {
        done_round_[i] = rounds_;
        done_result_[i] = *buffer;
      }
      const uint64_t n = ring_built_for_[i], floats = buffer->size();
      bytes_avg_ += compressed ? compressed_rings_[i].bytes_sent() : rings_[i].bytes_sent();
      bytes_avg_dense_ += 2 * (n - 1) * floats * sizeof(float) / std::max<uint64_t>(n, 1);
      return ok_status();
    }
    st = st.with_context(where() + ": averaging ring " + std::to_string(ring.tag) + " after step " +
                         std::to_string(step));
    // A peer that went away (or went silent past the deadline) may have a backup that takes its place, or may
    // have taken its cluster with it.
    if (st.code() != Code::kNetwork && st.code() != Code::kTimeout) return st;
    RN_ASSIGN_OR_RETURN(bool replaced, replace_lost_member(i, st));
    if (replaced) continue;
    RN_ASSIGN_OR_RETURN(bool lost, agree_on_survivors(i, step, st));
    if (!lost) return st;
    RN_RETURN_IF_ERROR(rebuild_ring(i));
  }
}

Result<bool> TrainerImpl::gather_round(size_t i, bool last_round) {
  const Manifest& mf = m();
  const RingSpec& ring = mf.rings[i];
  const std::vector<std::string> live = live_members(i);
  // A node of a cluster that is joining is not a member yet: it waits for the decision that lets it in.
  const bool member = std::find(ring.members.begin(), ring.members.end(), mf.self.id) != ring.members.end();
  if (member && live.size() < 2 && vouching_.empty()) return true;
  // The coordinator rotates with the round, so a late cluster delays at most the rounds it coordinates.
  const std::string& coordinator = live[static_cast<size_t>(rounds_) % live.size()];
  const uint32_t attempt = ring_attempts_[i];
  const FrameMeta arrived{FrameKind::kControl, kRoundStepBase + static_cast<uint64_t>(rounds_), ring.tag,
                          kArrivedId + 2 * attempt};
  const FrameMeta decided{FrameKind::kControl, kRoundStepBase + static_cast<uint64_t>(rounds_), ring.tag,
                          kDecisionId + 2 * attempt};
  // Nodes of a new cluster this node vouches for (it is the node of cluster 0 they copy) that are not in yet.
  auto vouches = [&] {
    Json list = Json::array();
    for (const auto& [id, cluster] : vouching_)
      if (std::find(ring.members.begin(), ring.members.end(), id) == ring.members.end()) {
        Json v = Json::object();
        v.set("id", id);
        v.set("cluster", cluster);
        list.push_back(std::move(v));
      }
    return list;
  };
  Json decision = Json::object();
  // How long the coordinator waits for the others: up to the deadline (the last round, or without a deadline:
  // everyone, up to the receive timeout).
  const double wait_s =
      last_round || mf.training.late_deadline_s <= 0 ? opt_.recv_timeout_s : mf.training.late_deadline_s;
  if (member && coordinator == mf.self.id) {
    // The members that came, in the ring's order, then the nodes of new clusters vouched for.
    const Deadline deadline = deadline_in(wait_s);
    std::set<std::string> in{mf.self.id};
    std::vector<std::string> late;
    Json joined = vouches();
    for (const auto& id : live) {
      if (id == mf.self.id) continue;
      auto got = transport_->recv(id, arrived, deadline);
      if (!got.ok()) {
        late.push_back(id);
        continue;
      }
      in.insert(id);
      auto body = frame_json(*got, "ARRIVED from " + id);
      if (!body.ok()) return body.status();
      if (auto list = body->get_array("vouch"); list.ok())
        for (const Json& v : **list) joined.push_back(v);
    }
    const std::vector<std::string> routed =
        routes_[i].order.empty() ? ring.members : ordered_members(ring.members, routes_[i].order);
    Json order = Json::array();
    for (const auto& id : routed)
      if (in.count(id)) order.push_back(id);
    std::vector<std::string> joiners;
    for (const Json& v : joined.items()) {
      joiners.push_back(v.get_string_or("id", "").value());
      order.push_back(joiners.back());
    }
    decision.set("order", std::move(order));
    decision.set("joined", std::move(joined));
    const Tensor frame = json_frame(decision);
    for (const auto& id : live)  // late members read it when they arrive; one that is gone cannot
      if (id != mf.self.id) (void)transport_->send(id, decided, frame);
    for (const auto& id : joiners) (void)transport_->send(id, decided, frame);
    for (const auto& id : late) {
      RN_LOG_INFO(where(), ": ", id, " is late for round ", rounds_, " of ring ", ring.tag, "; it is averaged in later");
      char line[200];
      std::snprintf(line, sizeof line, R"({"event":"late","node":"%s","ring":%u,"round":%lld,"late":"%s"})",
                    mf.self.id.c_str(), ring.tag, static_cast<long long>(rounds_), id.c_str());
      progress(line);
    }
  } else {
    if (member) {
      Json body = Json::object();
      body.set("vouch", vouches());
      RN_RETURN_IF_ERROR(transport_->send(coordinator, arrived, json_frame(body)));
    }
    // The coordinator may start its wait up to a receive timeout after this node arrived and then wait wait_s for
    // a member that does not come: a shorter wait here would give up on a decision that is on its way.
    RN_ASSIGN_OR_RETURN(Tensor frame,
                        transport_->recv(coordinator, decided, deadline_in(opt_.recv_timeout_s + wait_s)));
    RN_ASSIGN_OR_RETURN(decision, frame_json(frame, where() + ": round decision from " + coordinator));
  }
  // Nodes of new clusters take their cluster's place in the ring, from this round on.
  RN_ASSIGN_OR_RETURN(const Json::Array* joined, decision.get_array("joined"));
  for (const Json& v : *joined) {
    RN_ASSIGN_OR_RETURN(std::string id, v.get_string("id"));
    RN_ASSIGN_OR_RETURN(int64_t cluster, v.get_int("cluster"));
    if (std::find(ring.members.begin(), ring.members.end(), id) != ring.members.end()) continue;
    std::vector<std::string>& members = b_.manifest.rings[i].members;
    if (cluster != static_cast<int64_t>(members.size()))
      return error(Code::kCorrupt, where(), ": round decision adds '", id, "' as cluster ", cluster, " to ring ",
                   ring.tag, ", which has ", members.size(), " members");
    members.push_back(id);
    if (!routes_[i].order.empty()) routes_[i].order.push_back(members.size() - 1);
    if (cluster_alive_.size() <= static_cast<size_t>(cluster)) cluster_alive_.resize(static_cast<size_t>(cluster) + 1, true);
    ring_built_for_[i] = members.size();
    RN_LOG_INFO(where(), ": ", id, " joins ring ", ring.tag, " as cluster ", cluster, " from round ", rounds_);
    const bool in_all = std::all_of(mf.rings.begin(), mf.rings.end(), [&](const RingSpec& r) {
      return std::find(r.members.begin(), r.members.end(), id) != r.members.end();
    });
    if (in_all) vouching_.erase(id);
  }
  RN_ASSIGN_OR_RETURN(const Json::Array* order_json, decision.get_array("order"));
  std::vector<std::string> ordered;
  for (const Json& id : *order_json)
    if (id.is_string()) ordered.push_back(id.as_string());
  if (std::find(ordered.begin(), ordered.end(), mf.self.id) == ordered.end()) {
    RN_LOG_INFO(where(), ": not in round ", rounds_, " of ring ", ring.tag, "; its samples count at a later round");
    return false;
  }
  // The members of this round in the coordinator's order, on frames of their own (the tag follows the round, so
  // every member derives it, whichever rounds it missed).
  const uint32_t fresh = static_cast<uint32_t>(rounds_ % 255) * 16 + attempt % 16 + 1;  // < 4096: the tag's top 12 bits
  RN_RETURN_IF_ERROR(install_ring(i, ordered, ring.tag + (fresh << 20)));
  return true;
}

std::vector<std::string> TrainerImpl::live_members(size_t index) const {
  std::vector<std::string> out;
  const RingSpec& ring = m().rings[index];
  for (size_t c = 0; c < ring.members.size(); ++c)
    if (c >= cluster_alive_.size() || cluster_alive_[c]) out.push_back(ring.members[c]);
  return out;
}

Result<bool> TrainerImpl::agree_on_survivors(size_t index, int64_t step, const Status& cause) {
  const Manifest& mf = m();
  const RingSpec& ring = mf.rings[index];
  const uint32_t attempt = ring_attempts_[index]++;
  const FrameMeta alive{FrameKind::kControl, kAliveStepBase + static_cast<uint64_t>(rounds_), ring.tag,
                        kAliveId + attempt};
  Tensor token = Tensor::zeros(DType::kF32, {1});
  std::vector<size_t> lost;
  // Send to every member believed alive; a send that fails marks its member lost.
  std::vector<size_t> asked;
  for (size_t c = 0; c < ring.members.size(); ++c) {
    if (ring.members[c] == mf.self.id || (c < cluster_alive_.size() && !cluster_alive_[c])) continue;
    Status sent = transport_->send(ring.members[c], alive, token);
    if (sent.ok()) {
      asked.push_back(c);
    } else {
      lost.push_back(c);
    }
  }
  // Survivors enter this after their own run failed, at most a receive timeout apart.
  const Deadline deadline = deadline_in(2 * opt_.recv_timeout_s);
  for (size_t c : asked) {
    auto got = transport_->recv(ring.members[c], alive, deadline);
    if (!got.ok()) lost.push_back(c);
  }
  std::sort(lost.begin(), lost.end());
  for (size_t c : lost) {
    if (c < cluster_alive_.size()) cluster_alive_[c] = false;
    // What was queued for the cluster's ring members went nowhere, and every survivor knows it.
    for (const RingSpec& r : mf.rings)
      if (c < r.members.size() && r.members[c] != mf.self.id) transport_->forget_lost(r.members[c]);
    std::string left;
    for (size_t k = 0; k < cluster_alive_.size(); ++k)
      if (cluster_alive_[k]) left += (left.empty() ? "" : ", ") + std::to_string(k);
    RN_LOG_WARN(where(), ": cluster ", c, " is lost (its ring member '", ring.members[c], "' on ring ", ring.tag,
                " is gone", cause.ok() ? "" : ": " + cause.message(), "); its work since the last averaging round (",
                rounds_, " done) is dropped; training goes on with cluster(s) ", left);
    char line[200];
    std::snprintf(line, sizeof line, R"({"event":"cluster_lost","node":"%s","cluster":%zu,"after_step":%lld,)"
                  R"("rounds_done":%lld})",
                  mf.self.id.c_str(), c, static_cast<long long>(step), static_cast<long long>(rounds_));
    progress(line);
  }
  return !lost.empty();
}

Status TrainerImpl::rebuild_ring(size_t index) {
  const Manifest& mf = m();
  const RingSpec& ring = mf.rings[index];
  std::vector<std::string> members = live_members(index);
  // Keep the routed order of the members left.
  const std::vector<std::string> routed = routes_[index].order.empty()
                                              ? ring.members
                                              : ordered_members(ring.members, routes_[index].order);
  std::vector<std::string> ordered;
  for (const auto& id : routed)
    if (std::find(members.begin(), members.end(), id) != members.end()) ordered.push_back(id);
  return install_ring(index, ordered);
}

Status TrainerImpl::install_ring(size_t index, const std::vector<std::string>& ordered, std::optional<uint32_t> fixed) {
  const size_t rank = std::find(ordered.begin(), ordered.end(), m().self.id) - ordered.begin();
  RingRoute& route = routes_[index];
  ++route.generation;
  // Fresh frames for the new ring; a given tag when the members agreed on it otherwise.
  const uint32_t tag = fixed ? *fixed : m().rings[index].tag + (route.generation << 20);
  if (!compressed_rings_.empty()) {
    RN_RETURN_IF_ERROR(compressed_rings_[index].reorder(ordered, rank, tag).with_context(where()));
  } else {
    RingOptions ro;
    ro.members = ordered;
    ro.rank = rank;
    ro.tag = tag;
    ro.watch_members = keeps_round_results();
    RN_ASSIGN_OR_RETURN(rings_[index], RingAllreduce::create(*transport_, ro));
  }
  ring_built_for_[index] = ordered.size();
  return ok_status();
}

std::vector<std::string> TrainerImpl::ring_order(size_t index) const {
  const RingSpec& ring = m().rings[index];
  return routes_[index].order.empty() ? ring.members : ordered_members(ring.members, routes_[index].order);
}

Result<bool> TrainerImpl::replace_lost_member(size_t index, const Status& cause) {
  const Manifest& mf = m();
  const std::vector<std::string> live = transport_->connected_peers();
  std::string lost;
  for (const auto& id : mf.rings[index].members)
    if (id != mf.self.id && ring_backups_.count(id) && std::find(live.begin(), live.end(), id) == live.end()) lost = id;
  if (lost.empty()) return false;
  const PeerAddress backup = ring_backups_.at(lost);
  ring_backups_.erase(lost);
  transport_->forget_lost(lost);
  const auto t0 = Clock::now();
  RN_LOG_WARN(where(), ": ring member ", lost, " is gone (", cause.message(), "); its backup ", backup.str(),
              " takes its place");
  Status reached = transport_->connect(backup.id, backup.host, backup.port, deadline_in(opt_.connect_timeout_s));
  if (!reached.ok()) {
    RN_LOG_WARN(where(), ": the backup of ", lost, " cannot be reached (", reached.message(), ")");
    return false;
  }
  // The backup replays up to --backup-every steps before its first round, and a slower cluster's member may be a
  // round behind.
  const Deadline deadline = deadline_in(opt_.connect_timeout_s + 2 * opt_.recv_timeout_s);
  // The backup takes the lost member's place in every ring of this node at once.
  std::vector<size_t> shared;
  for (size_t k = 0; k < mf.rings.size(); ++k) {
    RingSpec& ring = b_.manifest.rings[k];
    auto slot = std::find(ring.members.begin(), ring.members.end(), lost);
    if (slot == ring.members.end()) continue;
    *slot = backup.id;
    ++ring_replacements_[k];
    shared.push_back(k);
  }
  for (size_t k : shared) {
    const RingSpec& ring = mf.rings[k];
    const uint32_t replaced = ring_replacements_[k];
    const std::string doing = where() + ": ring " + std::to_string(ring.tag) + ", replacing " + lost + " by " + backup.id;
    // Its ASK; or its FIN, when it took over after the worker's last round (it has no round to run).
    Result<Tensor> asked = error(Code::kTimeout, "");
    for (;;) {
      asked = transport_->recv(backup.id, FrameMeta{FrameKind::kControl, kRejoinStep, ring.tag, kRejoinAsk},
                               std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
      if (asked.ok() || asked.status().code() != Code::kTimeout || Clock::now() >= deadline) break;
      const FrameMeta fin{FrameKind::kControl, kRejoinStep, 0, kRejoinFin};
      if (auto done = transport_->recv(backup.id, fin, Clock::now()); done.ok()) {
        transport_->unrecv(backup.id, fin, std::move(done).value());
        return true;
      }
    }
    if (!asked.ok()) return asked.status().with_context(doing);
    const Tensor ask_frame = std::move(asked).value();
    RN_ASSIGN_OR_RETURN(Json ask, frame_json(ask_frame, doing));
    RN_ASSIGN_OR_RETURN(int64_t round, ask.get_int("round"));
    // Where this node is, for the backup's round: holds its result, is in it, or is still in the round before.
    std::string state = "behind";
    if (done_round_[k] == round) state = "have";
    else if (rounds_ == round) state = "waiting";
    else if (rounds_ + 1 == round && done_round_[k] < rounds_) state = "needs_previous";
    Json reply = Json::object();
    reply.set("state", state);
    reply.set("round", rounds_);
    reply.set("replacements", static_cast<int64_t>(replaced));
    Json order = Json::array();
    for (const auto& id : ring_order(k)) order.push_back(id);
    reply.set("order", std::move(order));
    const FrameMeta reply_meta{FrameKind::kControl, kRejoinStep, ring.tag, kRejoinReply};
    const FrameMeta result_meta{FrameKind::kControl, kRejoinStep, ring.tag, kRejoinResult};
    RN_RETURN_IF_ERROR(transport_->send(backup.id, reply_meta, json_frame(reply)).with_context(doing));
    if (state == "behind")
      return error(Code::kInternal, doing, ": the backup is at round ", round, ", this node at round ", rounds_,
                   " (ring done to round ", done_round_[k], "); the rounds cannot be matched");
    if (state == "have") {
      Tensor result = Tensor::empty(DType::kF32, {static_cast<int64_t>(done_result_[k].size())});
      std::copy(done_result_[k].begin(), done_result_[k].end(), result.data<float>());
      RN_RETURN_IF_ERROR(transport_->send(backup.id, result_meta, result).with_context(doing));
    }
    RN_RETURN_IF_ERROR(install_ring(k, ring_order(k), ring.tag + ((kReplacedTagBase + replaced) << 20)));
    if (state == "have") continue;
    // Waiting in a round the backup's decision settles: its result follows, or the round runs again.
    RN_ASSIGN_OR_RETURN(Tensor decision_frame,
                        recv_for(backup.id, FrameMeta{FrameKind::kControl, kRejoinStep, ring.tag,
                                                              kRejoinDecision}, deadline, doing));
    RN_ASSIGN_OR_RETURN(Json decision, frame_json(decision_frame, doing));
    RN_ASSIGN_OR_RETURN(std::string what, decision.get_string("decision"));
    if (what == "result") {
      RN_ASSIGN_OR_RETURN(Tensor result, recv_for(backup.id, result_meta, deadline, doing));
      if (result.dtype() != DType::kF32 || result.numel() != ring.size())
        return error(Code::kCorrupt, doing, ": the round's result has ", dtype_name(result.dtype()), "[",
                     shape_str(result.shape()), "], expected f32[", ring.size(), "]");
      done_round_[k] = rounds_;
      done_result_[k].assign(result.data<float>(), result.data<float>() + result.numel());
    } else if (what != "again") {
      return error(Code::kCorrupt, doing, ": unknown decision '", what, "'");
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  RN_LOG_WARN(where(), ": ", backup.id, " took the place of ", lost, " in this node's rings (", seconds, " s)");
  char line[256];
  std::snprintf(line, sizeof line, R"({"event":"ring_member_replaced","node":"%s","lost":"%s","backup":"%s",)"
                R"("round":%lld,"seconds":%.3f})",
                mf.self.id.c_str(), lost.c_str(), backup.id.c_str(), static_cast<long long>(rounds_), seconds);
  progress(line);
  return true;
}

Status TrainerImpl::rejoin_rings(int64_t step) {
  const Manifest& mf = m();
  const auto t0 = Clock::now();
  const Deadline deadline = deadline_in(opt_.connect_timeout_s + 2 * opt_.recv_timeout_s);
  Json ask = Json::object();
  ask.set("round", rounds_);
  const Tensor ask_frame = json_frame(ask);
  for (const RingSpec& ring : mf.rings)
    for (const auto& id : ring.members) {
      if (id == mf.self.id) continue;
      const std::string doing = where() + ": rejoining ring " + std::to_string(ring.tag) + " after step " +
                                std::to_string(step) + ", member " + id;
      RN_RETURN_IF_ERROR(transport_->wait_for_peer(id, deadline).with_context(doing));
      RN_RETURN_IF_ERROR(transport_->send(id, FrameMeta{FrameKind::kControl, kRejoinStep, ring.tag, kRejoinAsk},
                                          ask_frame).with_context(doing));
    }
  for (size_t k = 0; k < mf.rings.size(); ++k) {
    const RingSpec& ring = mf.rings[k];
    const FrameMeta result_meta{FrameKind::kControl, kRejoinStep, ring.tag, kRejoinResult};
    std::optional<Tensor> result;  // this round's, from a member that holds it
    std::vector<std::string> waiting, behind;
    std::vector<std::string> order;
    int64_t replacements = -1;
    for (const auto& id : ring.members) {
      if (id == mf.self.id) continue;
      const std::string doing = where() + ": rejoining ring " + std::to_string(ring.tag) + ", member " + id;
      RN_ASSIGN_OR_RETURN(Tensor frame,
                          recv_for(id, FrameMeta{FrameKind::kControl, kRejoinStep, ring.tag, kRejoinReply},
                                           deadline, doing));
      RN_ASSIGN_OR_RETURN(Json reply, frame_json(frame, doing));
      RN_ASSIGN_OR_RETURN(std::string state, reply.get_string("state"));
      RN_ASSIGN_OR_RETURN(int64_t at, reply.get_int("round"));
      RN_ASSIGN_OR_RETURN(int64_t n, reply.get_int("replacements"));
      RN_ASSIGN_OR_RETURN(const Json::Array* ids, reply.get_array("order"));
      std::vector<std::string> theirs;
      for (const Json& v : *ids)
        if (v.is_string()) theirs.push_back(v.as_string());
      if (order.empty()) {
        order = theirs;
        replacements = n;
      } else if (order != theirs || replacements != n) {
        return error(Code::kInternal, doing, ": the members disagree on the ring's order or replacements");
      }
      if (state == "have") {
        RN_ASSIGN_OR_RETURN(Tensor got, recv_for(id, result_meta, deadline, doing));
        if (got.dtype() != DType::kF32 || got.numel() != ring.size())
          return error(Code::kCorrupt, doing, ": the round's result has ", dtype_name(got.dtype()), "[",
                       shape_str(got.shape()), "], expected f32[", ring.size(), "]");
        if (!result) result = std::move(got);
      } else if (state == "waiting") {
        waiting.push_back(id);
      } else if (state == "needs_previous") {
        behind.push_back(id);
      } else {
        return error(Code::kInternal, doing, ": the member is at round ", at, ", this node at round ", rounds_,
                     "; the rounds cannot be matched");
      }
    }
    if (order.size() != ring.members.size() ||
        !std::is_permutation(order.begin(), order.end(), ring.members.begin(), ring.members.end()))
      return error(Code::kCorrupt, where(), ": ring ", ring.tag, "'s members sent an order of other members");
    std::vector<size_t> positions;
    for (const auto& id : order)
      positions.push_back(std::find(ring.members.begin(), ring.members.end(), id) - ring.members.begin());
    routes_[k].order = positions;
    ring_replacements_[k] = static_cast<uint32_t>(replacements);
    RN_RETURN_IF_ERROR(install_ring(k, order, ring.tag + ((kReplacedTagBase + static_cast<uint32_t>(replacements)) << 20)));
    // Members still in the round before this one get its result: the state taken over followed it.
    for (const auto& id : behind) {
      if (done_round_[k] != rounds_ - 1)
        return error(Code::kInternal, where(), ": ring ", ring.tag, "'s member ", id, " still waits in round ",
                     rounds_ - 1, ", whose result was lost with the worker this node replaced (its last state came "
                     "after a later step)");
      Json decision = Json::object();
      decision.set("decision", "result");
      Tensor previous = Tensor::empty(DType::kF32, {static_cast<int64_t>(done_result_[k].size())});
      std::copy(done_result_[k].begin(), done_result_[k].end(), previous.data<float>());
      RN_RETURN_IF_ERROR(transport_->send(id, FrameMeta{FrameKind::kControl, kRejoinStep, ring.tag, kRejoinDecision},
                                          json_frame(decision)));
      RN_RETURN_IF_ERROR(transport_->send(id, result_meta, previous));
    }
    // Members in this round: its result if a member holds it (every member's is the same), else the round again.
    Json decision = Json::object();
    decision.set("decision", result ? "result" : "again");
    for (const auto& id : waiting) {
      RN_RETURN_IF_ERROR(transport_->send(id, FrameMeta{FrameKind::kControl, kRejoinStep, ring.tag, kRejoinDecision},
                                          json_frame(decision)));
      if (result) RN_RETURN_IF_ERROR(transport_->send(id, result_meta, *result));
    }
    if (result) {
      done_round_[k] = rounds_;
      done_result_[k].assign(result->data<float>(), result->data<float>() + result->numel());
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  RN_LOG_WARN(where(), ": rejoined its rings at round ", rounds_, " (", seconds, " s)");
  char line[200];
  std::snprintf(line, sizeof line, R"({"event":"rings_rejoined","node":"%s","round":%lld,"seconds":%.3f})",
                mf.self.id.c_str(), static_cast<long long>(rounds_), seconds);
  progress(line);
  return ok_status();
}

// Optimizer-state averaging (--average-optimizer-state): after the parameters,
// each ring averages the float optimizer state of its pieces (velocity/P,
// exp_avg/P, exp_avg_sq/P; running state has none), slot by slot, with the same
// weights. Every member runs the same optimizer, so every member packs the same
// slots in the same order. Integer state (Adam's step counts) stays local: it is
// the same on every cluster that ran the same number of steps.
Status TrainerImpl::average_optimizer_state(int64_t step) {
  const Manifest& mf = m();
  std::vector<float> buffer;
  for (size_t i = 0; i < mf.rings.size(); ++i) {
    if (!in_round_[i]) continue;  // late for this ring's round
    const double weight = static_cast<double>(ring_samples_[i]);
    const RingSpec& ring = mf.rings[i];
    for (const char* slot : {"velocity/", "exp_avg/", "exp_avg_sq/"}) {
      buffer.clear();
      std::vector<std::pair<Tensor*, const RingPiece*>> held;
      for (const RingPiece& piece : ring.pieces) {
        auto it = opt_state_.find(slot + piece.param);
        if (it == opt_state_.end() || it->second.dtype() != DType::kF32) continue;
        held.emplace_back(&it->second, &piece);
        const float* src = it->second.data<float>() + piece.offset;
        buffer.insert(buffer.end(), src, src + piece.length);
      }
      if (held.empty()) continue;
      Status st = rings_[i].run(buffer, ReduceOp::kWeightedMean, weight, deadline_in(opt_.recv_timeout_s));
      if (!st.ok())
        return st.with_context(where() + ": averaging optimizer state '" + slot + "' on ring " +
                               std::to_string(ring.tag) + " after step " + std::to_string(step));
      auto at = buffer.begin();
      for (auto& [tensor, piece] : held) {
        std::copy(at, at + piece->length, tensor->data<float>() + piece->offset);
        at += piece->length;
      }
      bytes_avg_ += rings_[i].bytes_sent();
    }
  }
  return ok_status();
}

// The stream of stage s of p: min(p-s-1, n) warm-up forwards, then one forward
// and one backward (B, W, update) alternating, then the remaining backwards.
// Stage s therefore holds at most p-s micro-batches and its weights are at
// most p-s-1 updates newer than the ones a micro-batch's F used — the
// staleness bound; weight stashing keeps each micro-batch's B and W on its
// F's weights.
Status TrainerImpl::train_async(int64_t first_step, int64_t end_step, int64_t total, Clock::time_point start) {
  const Manifest& mf = m();
  const int64_t mcount = mf.training.microbatches;
  const int64_t g0 = first_step * mcount, g_end = end_step * mcount;
  const int64_t warmup = std::min<int64_t>(mf.num_stages - mf.stage - 1, g_end - g0);
  auto forward = [&](int64_t g) -> Status {
    int64_t step = g / mcount;
    int mb = static_cast<int>(g % mcount);
    if (mb == 0 && mf.last()) {
      step_loss_ = 0;
      step_correct_ = step_counted_ = 0;
    }
    if (prev_) RN_RETURN_IF_ERROR(run_traced({InstrOp::kRecvAct, mb}, step));
    RN_RETURN_IF_ERROR(run_traced({InstrOp::kF, mb}, step));
    if (next_) RN_RETURN_IF_ERROR(run_traced({InstrOp::kSendAct, mb}, step));
    return ok_status();
  };
  auto backward = [&](int64_t g) -> Status {
    int64_t step = g / mcount;
    int mb = static_cast<int>(g % mcount);
    if (next_) RN_RETURN_IF_ERROR(run_traced({InstrOp::kRecvGrad, mb}, step));
    RN_RETURN_IF_ERROR(run_traced({InstrOp::kB, mb}, step));
    if (prev_) RN_RETURN_IF_ERROR(run_traced({InstrOp::kSendGrad, mb}, step));
    RN_RETURN_IF_ERROR(run_traced({InstrOp::kW, mb}, step));
    RN_RETURN_IF_ERROR(update_async(g));
    if (mb == mcount - 1) RN_RETURN_IF_ERROR(finish_step(step, total, start));
    return ok_status();
  };
  int64_t f = g0, b = g0;
  for (; f < g0 + warmup; ++f) RN_RETURN_IF_ERROR(forward(f));
  while (f < g_end) {
    RN_RETURN_IF_ERROR(forward(f++));
    RN_RETURN_IF_ERROR(backward(b++));
  }
  while (b < g_end) RN_RETURN_IF_ERROR(backward(b++));
  return ok_status();
}

Status TrainerImpl::finish_step(int64_t step, int64_t total, Clock::time_point start) {
  report_step(step, total, start);
  const Manifest& mf = m();
  if (mf.num_clusters < 2) return ok_status();
  samples_since_average_ += mf.training.batch;
  for (int64_t& n : ring_samples_) n += mf.training.batch;
  last_round_ = step + 1 == total;
  // Every average_every steps, and after the last step so that every cluster
  // ends with the same parameters.
  if ((step + 1) % mf.training.average_every == 0 || step + 1 == total) return average(step);
  return ok_status();
}

void TrainerImpl::report_step(int64_t step, int64_t total, Clock::time_point start) {
  const Manifest& mf = m();
  const int64_t batch = mf.training.batch;
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  char line[384];
  if (mf.last()) {
    double loss = step_loss_ / static_cast<double>(mf.loss_reduction == "mean" ? mf.training.microbatches : batch);
    if (losses_.is_open()) losses_ << step << " " << std::setprecision(9) << loss << "\n";
    std::snprintf(line, sizeof line,
                  R"({"event":"step","node":"%s","stage":%d,"step":%lld,"steps":%lld,"loss":%.6f,"train_accuracy":%.4f,"elapsed":%.3f})",
                  mf.self.id.c_str(), mf.stage, static_cast<long long>(step + 1), static_cast<long long>(total), loss,
                  step_counted_ ? static_cast<double>(step_correct_) / static_cast<double>(step_counted_) : 0.0, elapsed);
  } else {
    std::snprintf(line, sizeof line, R"({"event":"step","node":"%s","stage":%d,"step":%lld,"steps":%lld,"elapsed":%.3f})",
                  mf.self.id.c_str(), mf.stage, static_cast<long long>(step + 1), static_cast<long long>(total), elapsed);
  }
  progress(line);
}

Status TrainerImpl::evaluate(int64_t epoch) {
  const Manifest& mf = m();
  const int64_t mbs = mf.training.microbatch_size;
  const int64_t count = test_count_;
  if ((mf.first() || mf.last()) && !test_)
    return error(Code::kInternal, where(), ": evaluation without the test set loaded");
  const uint64_t step = kEvalStepBase + static_cast<uint64_t>(epoch);
  const int64_t batches = (count + mbs - 1) / mbs;
  Tally total;
  const ValueInfo* input_info = mf.first() ? b_.forward.find_value(mf.data_input) : nullptr;
  for (int64_t i = 0; i < batches; ++i) {
    TensorMap inputs;
    std::vector<int64_t> idx;
    for (int64_t j = i * mbs; j < std::min(count, (i + 1) * mbs); ++j) idx.push_back(j);
    const int64_t real = static_cast<int64_t>(idx.size());
    while (static_cast<int64_t>(idx.size()) < mbs) idx.push_back(0);  // padding rows, not counted
    if (mf.first()) {
      Tensor data = Tensor::empty(input_info->dtype, input_info->static_shape());
      RN_RETURN_IF_ERROR(test_->fill_inputs(idx, &data).with_context(where()));
      inputs[mf.data_input] = data;
    } else {
      for (const auto& t : mf.recv) {
        auto got = transport_->recv(prev_->id, FrameMeta{FrameKind::kActivation, step, static_cast<uint32_t>(i), t.wire_id}, deadline_in(opt_.recv_timeout_s));
        if (!got.ok()) return got.status().with_context(where() + ": evaluation activation '" + t.name + "'");
        inputs[t.name] = std::move(got).value();
      }
      // Tell the previous stage this micro-batch is taken (bounds its sends).
      Tensor ack = Tensor::zeros(DType::kI64, {});
      RN_RETURN_IF_ERROR(transport_->send(prev_->id, FrameMeta{FrameKind::kControl, step, static_cast<uint32_t>(i), 1}, ack));
    }
    if (mf.last()) {
      Tensor labels = Tensor::empty(DType::kI64, b_.forward.find_value(mf.labels_input)->static_shape());
      RN_RETURN_IF_ERROR(test_->fill_labels(idx, &labels).with_context(where()));
      inputs[mf.labels_input] = labels;
    }
    RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(b_.forward, {&inputs, &params_}));
    TensorMap out;
    RunContext context{m().training.seed, 0, 0, false};
    RN_RETURN_IF_ERROR(fwd_->run(feeds, &out, context).with_context(where() + ": evaluation forward"));
    if (mf.last()) {
      Tally tally = tally_predictions(out.at(mf.logits_output), feeds.at(mf.labels_input), real);
      total.correct += tally.correct;
      total.counted += tally.counted;
    }
    if (next_) {
      for (const auto& t : mf.send)
        // Evaluation activations use the training codec without error feedback (it would carry into training's stream).
        RN_RETURN_IF_ERROR(transport_->send(next_->id, FrameMeta{FrameKind::kActivation, step, static_cast<uint32_t>(i), t.wire_id}, out.at(t.name),
                                            wire_codec(mf.training.compression.activations, out.at(t.name), false)));
      if (i >= kEvalWindow) {
        auto ack = transport_->recv(next_->id, FrameMeta{FrameKind::kControl, step, static_cast<uint32_t>(i - kEvalWindow), 1}, deadline_in(opt_.recv_timeout_s));
        if (!ack.ok()) return ack.status().with_context(where() + ": evaluation acknowledgement");
      }
    }
  }
  if (next_)
    for (int64_t i = std::max<int64_t>(0, batches - kEvalWindow); i < batches; ++i) {
      auto ack = transport_->recv(next_->id, FrameMeta{FrameKind::kControl, step, static_cast<uint32_t>(i), 1}, deadline_in(opt_.recv_timeout_s));
      if (!ack.ok()) return ack.status().with_context(where() + ": evaluation acknowledgement");
    }
  if (mf.last()) {
    double accuracy = total.counted ? static_cast<double>(total.correct) / static_cast<double>(total.counted) : 0.0;
    char line[256];
    std::snprintf(line, sizeof line, R"({"event":"eval","node":"%s","epoch":%lld,"accuracy":%.6f,"correct":%lld,"total":%lld})",
                  mf.self.id.c_str(), static_cast<long long>(epoch), accuracy, static_cast<long long>(total.correct),
                  static_cast<long long>(total.counted));
    progress(line);
  }
  return ok_status();
}

// Trains, then writes the trace (also after a failure: it shows where the run stopped).
Status TrainerImpl::run() {
  Status trained = train();
  if (!trace_.enabled()) return trained;
  Status written = write_trace();
  if (!trained.ok()) return trained;
  return written;
}

Status TrainerImpl::write_trace() {
  const Manifest& mf = m();
  Json means = Json::object();
  for (size_t op = 0; op < kInstrOps; ++op)
    if (totals_[op].count) means.set(instr_op_name(static_cast<InstrOp>(op)), totals_[op].mean_s());
  Json other = Json::object();
  other.set("node", mf.self.id);
  other.set("stage", mf.stage);
  other.set("num_stages", b_.schedule.num_stages);
  other.set("schedule", b_.schedule.kind);
  other.set("microbatches", b_.schedule.microbatches);
  other.set("mean_s", std::move(means));
  trace_.set_other_data(std::move(other));
  return trace_.write(opt_.trace_path).with_context(where() + ": writing the trace");
}

Status TrainerImpl::finish_together(int64_t total) {
  if (finished_alone_) return ok_status();
  if (finishes_together_) {
    // Forward, FIN says every stage up to its sender is done; back, that every stage is. A stage leaves after the
    // FIN back: a stage that fails after that has its final state at its backup, which needs no neighbour.
    take_snapshot(total);  // what a recovery that replays nothing rolls back to
    Tensor token = Tensor::zeros(DType::kI64, {1});
    token.data<int64_t>()[0] = recoveries_;
    const Deadline deadline = deadline_in(opt_.recv_timeout_s);
    auto wait_fin = [&](const PeerAddress& n, uint32_t id) -> Status {
      for (;;) {
        RN_ASSIGN_OR_RETURN(Tensor got, recv_watching(n.id, FrameMeta{FrameKind::kControl, kRecoveryStep, 0, id}, deadline));
        if (got.dtype() != DType::kI64 || got.numel() != 1)
          return error(Code::kCorrupt, where(), ": malformed FIN frame from ", n.str());
        const int64_t theirs = got.data<int64_t>()[0];
        if (theirs == recoveries_) return ok_status();
        // A FIN sent before a replay this node went through too (one sent after a replay this node has not seen
        // cannot come: the RESTART or TAKEOVER comes first on the same link).
        if (theirs > recoveries_)
          return error(Code::kInternal, where(), ": ", n.str(), " is done after ", theirs, " recoveries, this node has ",
                       "seen ", recoveries_);
      }
    };
    if (prev_) RN_RETURN_IF_ERROR(wait_fin(*prev_, kFinForwardId));
    if (next_) {
      RN_RETURN_IF_ERROR(transport_->send(next_->id, FrameMeta{FrameKind::kControl, kRecoveryStep, 0, kFinForwardId}, token));
      RN_RETURN_IF_ERROR(wait_fin(*next_, kFinBackId));
    }
    if (prev_) (void)transport_->send(prev_->id, FrameMeta{FrameKind::kControl, kRecoveryStep, 0, kFinBackId}, token);
  }
  return finish_rings_together();
}

Status TrainerImpl::finish_rings_together() {
  const Manifest& mf = m();
  if (!keeps_round_results() || mf.rings.empty()) return ok_status();
  const FrameMeta fin{FrameKind::kControl, kRejoinStep, 0, kRejoinFin};
  const Tensor token = Tensor::zeros(DType::kI64, {1});
  std::set<std::string> told, heard;
  if (rejoin_rings_) {
    // A backup that took over after its worker's last round: the members still here dial it (those that left
    // had the worker's FIN, so they needed nothing more).
    for (const auto& id : ring_members())
      if (!transport_->wait_for_peer(id, deadline_in(opt_.connect_timeout_s)).ok()) {
        RN_LOG_INFO(where(), ": ring member ", id, " has left");
        heard.insert(id);
      }
  }
  const Deadline deadline = deadline_in(opt_.connect_timeout_s + 2 * opt_.recv_timeout_s);
  for (;;) {
    const std::vector<std::string> ids = ring_members();  // changes as backups replace members
    for (const auto& id : ids)
      if (!told.count(id) && !heard.count(id) && transport_->send(id, fin, token).ok()) told.insert(id);
    bool all = true;
    for (const auto& id : ids) {
      if (heard.count(id)) continue;
      auto got = transport_->recv(id, fin, std::min(deadline, Clock::now() + std::chrono::milliseconds(20)));
      if (got.ok()) {
        heard.insert(id);
        continue;
      }
      all = false;
      if (got.status().code() == Code::kTimeout) {
        if (Clock::now() >= deadline)
          return got.status().with_context(where() + ": waiting for ring member " + id + " to be done");
        continue;
      }
      // Gone before it was done: its backup takes its place, and may replay the last round with this node.
      const auto ring = std::find_if(mf.rings.begin(), mf.rings.end(), [&](const RingSpec& r) {
        return std::find(r.members.begin(), r.members.end(), id) != r.members.end();
      });
      RN_ASSIGN_OR_RETURN(bool replaced, replace_lost_member(static_cast<size_t>(ring - mf.rings.begin()), got.status()));
      if (!replaced) {
        RN_LOG_WARN(where(), ": ring member ", id, " is gone before the end (", got.status().message(),
                    "); its cluster's last steps are not in the average");
        heard.insert(id);
      }
      break;  // the members changed
    }
    if (all) return ok_status();
  }
}

Result<int64_t> TrainerImpl::count_steps() {
  const Manifest& mf = m();
  // Every stage derives the same sample order from (seed, epoch); only the
  // first and last stage read the data, but all count the same steps.
  const int64_t count = train_count_;
  const int64_t batch = mf.training.batch;
  const int64_t steps_per_epoch = count / mf.num_clusters / batch;
  if (steps_per_epoch < 1)
    return error(Code::kInvalidArgument, "the training set's shard of ", count / mf.num_clusters,
                 " samples is smaller than one batch of ", batch);
  int64_t max_steps = opt_.max_steps >= 0 ? opt_.max_steps : mf.training.max_steps;
  int64_t total = mf.training.epochs * steps_per_epoch;
  if (max_steps > 0) total = std::min(total, max_steps);
  if (mf.num_clusters > 1 && mf.training.local_steps_max > 0) {
    // Flexible update rule: the same number of rounds as a cluster averaging
    // every local_steps_max steps, each of this cluster's average_every steps.
    const int64_t rounds = (total + mf.training.local_steps_max - 1) / mf.training.local_steps_max;
    total = rounds * mf.training.average_every;
  }
  steps_per_epoch_ = steps_per_epoch;
  return total;
}

Status TrainerImpl::train() {
  const Manifest& mf = m();
  RN_RETURN_IF_ERROR(load_data());
  RN_RETURN_IF_ERROR(connect());
  int64_t taken_over_after = -1;  // a backup: the last step whose state it took over
  if (mf.backup_of) {
    RN_ASSIGN_OR_RETURN(taken_over_after, shadow());
    if (taken_over_after == -2) {  // the worker finished
      RN_LOG_INFO(where(), ": the worker ", mf.backup_of->str(), " finished; nothing to take over");
      return ok_status();
    }
    RN_ASSIGN_OR_RETURN(const int64_t total, taken_over_after >= 0 ? count_steps() : Result<int64_t>(int64_t{0}));
    Status took = take_over(taken_over_after, Clock::now());
    if (!took.ok() && taken_over_after >= 0 && taken_over_after + 1 >= total) {
      // The worker failed after its state of the last step reached this node, and its neighbours, done too, have
      // left: nothing is left to train; the final state is this node's to write.
      RN_LOG_WARN(where(), ": the worker ", mf.backup_of->str(), " failed after its last step and its neighbours have "
                  "left (", took.message(), "); its final state is written here");
      finished_alone_ = true;
    } else {
      RN_RETURN_IF_ERROR(took);
    }
  } else {
    RN_RETURN_IF_ERROR(agree_on_sizes());
  }
  RN_ASSIGN_OR_RETURN(const int64_t total, count_steps());
  const int64_t count = train_count_;
  const int64_t steps_per_epoch = steps_per_epoch_;
  total_updates_ = mf.training.mode == "async" ? total * mf.training.microbatches : total;
  sampler_.emplace(count, mf.training.seed);
  auto start = Clock::now();
  int64_t step = 0;
  if (mf.backup_of) {
    step = taken_over_after + 1;
  } else if (mf.copy_of) {
    RN_ASSIGN_OR_RETURN(step, enter_as_new_cluster());
  } else {
    RN_ASSIGN_OR_RETURN(step, resume_point(total));
  }
  for (;;) {
    for (int64_t epoch = step / steps_per_epoch; step < total; ++epoch) {
      const int64_t end = std::min(total, (epoch + 1) * steps_per_epoch);
      if (mf.training.mode == "async") {
        // The stream drains at epoch ends, where evaluation needs every stage.
        RN_RETURN_IF_ERROR(train_async(step, end, total, start));
        step = end;
      } else {
        for (; step < end; ++step) {
          Status st = train_step(step);
          if (!st.ok() && protected_run()) {
            // A neighbour failed and its backup took over, or a neighbour asks for a replay.
            RN_ASSIGN_OR_RETURN(int64_t replay, recover(st));
            step = replay - 1;
            continue;
          }
          RN_RETURN_IF_ERROR(st);
          RN_RETURN_IF_ERROR(finish_step(step, total, start));
          const bool had_backup = backup_.has_value();
          RN_RETURN_IF_ERROR(serve_joins(step));
          // A backup that joined at this step gets its first state now; once it holds it, it protects the stage.
          const bool joined = !had_backup && backup_.has_value();
          // The state of the last step always goes to the backup: a worker failing after it leaves no replay.
          RN_RETURN_IF_ERROR(send_state(step, joined || step + 1 == total));
          if (joined && backup_) {
            const double seconds = std::chrono::duration<double>(Clock::now() - joined_since_).count();
            RN_LOG_INFO(where(), ": ", backup_->str(), " joined as this stage's backup after step ", step, " (",
                        seconds, " s)");
            char line[256];
            std::snprintf(line, sizeof line,
                          R"({"event":"backup_joined","node":"%s","stage":%d,"backup":"%s","step":%lld,)"
                          R"("seconds":%.3f})",
                          mf.self.id.c_str(), mf.stage, backup_->id.c_str(), static_cast<long long>(step), seconds);
            progress(line);
          }
          if (opt_.checkpoint_every > 0 && (step + 1) % opt_.checkpoint_every == 0 && step + 1 < total)
            RN_RETURN_IF_ERROR(save_checkpoint(step + 1));
        }
      }
      // After the final average every cluster holds the same model: cluster 0 evaluates it.
      if (opt_.evaluate && mf.training.evaluate && test_count_ > 0 && mf.cluster == 0) {
        TraceSpan span(trace_, TraceLane::kCompute, "eval", "EVAL", step, -1);
        RN_RETURN_IF_ERROR(evaluate(epoch));
      }
    }
    if (mf.training.mode == "async") break;
    Status together = finish_together(total);
    if (together.ok()) break;
    if (!protected_run()) return together;
    // A neighbour failed before it was done, and its backup replays from its last state (or a neighbour asks for it).
    RN_ASSIGN_OR_RETURN(step, recover(together));
  }
  if (losses_.is_open()) losses_.flush();
  if (!opt_.checkpoint_dir.empty()) RN_RETURN_IF_ERROR(save_checkpoint(step));
  if (!opt_.save_params_path.empty()) {
    std::vector<std::pair<std::string, Tensor>> list;
    for (const auto& p : mf.params) list.emplace_back(p, params_.at(p));
    for (const auto& s : mf.state) list.emplace_back(s, params_.at(s));
    RN_RETURN_IF_ERROR(write_tensor_file(opt_.save_params_path, list));
  }
  // The backup has nothing to take over any more: said once the final state is written (a worker that fails
  // before this leaves its final state, which the backup holds, to the backup to write).
  if (backup_)
    (void)transport_->send(backup_->id, FrameMeta{FrameKind::kControl, kStateStepBase, 2, 0}, Tensor::zeros(DType::kI64, {1}));
  RN_RETURN_IF_ERROR(transport_->flush(deadline_in(opt_.recv_timeout_s)).with_context(where() + ": flushing sends"));
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  // Mean F, B and W times of this stage: what a schedule simulator is fed.
  auto mean_s = [&](InstrOp op) { return totals_[static_cast<size_t>(op)].mean_s(); };
  // Bytes this node wrote in activation and gradient frames, as sent and as they would be raw.
  const TrafficStats act = transport_->sent(FrameKind::kActivation), grad = transport_->sent(FrameKind::kGradient);
  char line[512];
  std::snprintf(line, sizeof line,
                R"({"event":"done","node":"%s","stage":%d,"steps":%lld,"elapsed":%.3f,"f_s":%.9f,"b_s":%.9f,"w_s":%.9f,)"
                R"("bytes_act":%llu,"bytes_act_raw":%llu,"bytes_grad":%llu,"bytes_grad_raw":%llu,)"
                R"("bytes_avg":%llu,"bytes_avg_dense":%llu})",
                mf.self.id.c_str(), mf.stage, static_cast<long long>(step), elapsed, mean_s(InstrOp::kF),
                mean_s(InstrOp::kB), mean_s(InstrOp::kW), static_cast<unsigned long long>(act.bytes),
                static_cast<unsigned long long>(act.raw_bytes), static_cast<unsigned long long>(grad.bytes),
                static_cast<unsigned long long>(grad.raw_bytes), static_cast<unsigned long long>(bytes_avg_),
                static_cast<unsigned long long>(bytes_avg_dense_));
  progress(line);
  return ok_status();
}

Status TrainerImpl::check_checkpoint_options() const {
  const Manifest& mf = m();
  const bool checkpoints = !opt_.checkpoint_dir.empty();
  if (!checkpoints && (opt_.resume || opt_.checkpoint_every > 0))
    return error(Code::kInvalidArgument, where(), ": ", opt_.resume ? "--resume" : "--checkpoint-every",
                 " needs --checkpoint-dir DIR");
  if (opt_.checkpoint_every < 0)
    return error(Code::kInvalidArgument, "--checkpoint-every must be positive, not ", opt_.checkpoint_every);
  if (!checkpoints) return ok_status();
  if (mf.training.mode == "async")
    return error(Code::kUnsupported, where(), ": checkpoints need synchronous training (an asynchronous stage has "
                 "micro-batches of several steps in flight at any moment, so no state is a committed step); compile "
                 "without --async or run without --checkpoint-dir");
  if (opt_.resume && mf.num_clusters > 1 && mf.training.local_steps_max > 0)
    return error(Code::kUnsupported, where(), ": --resume of a compile with --local-steps is not supported yet (its ",
                 "clusters count their steps differently, so no step number is common to their checkpoints); resume "
                 "runs whose clusters average every --average-every steps");
  if (opt_.resume && mf.num_clusters > 1 && mf.training.late_deadline_s > 0)
    return error(Code::kUnsupported, where(), ": --resume with --late-deadline is not supported yet (a late cluster's ",
                 "samples not yet averaged differ per ring, and checkpoints keep one count); resume runs without it");
  if (opt_.resume && mf.num_clusters > 1 && mf.training.compression.averaging.codec != Codec::kRaw)
    return error(Code::kUnsupported, where(), ": --resume with compressed averaging is not supported yet (the ",
                 "averaging's error feedback and reference copy are not in the checkpoints); resume runs with dense "
                 "averaging");
  if (opt_.resume) return ok_status();
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> held, list_checkpoints(checkpoint_dir()));
  if (!held.empty())
    return error(Code::kInvalidArgument, where(), ": '", checkpoint_dir(), "' already holds checkpoints (newest: ",
                 checkpoint_path(checkpoint_dir(), held.back()), "); pass --resume to continue that run, or remove "
                 "them or choose another --checkpoint-dir to start over");
  return ok_status();
}

Result<int64_t> TrainerImpl::resume_point(int64_t total) {
  if (!opt_.resume) return int64_t{0};
  const Manifest& mf = m();
  const std::string dir = checkpoint_dir();
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> own, list_checkpoints(dir));
  // With several clusters, the other members of one ring are one node of every other cluster (connected to this one).
  std::vector<std::string> other_clusters;
  if (!mf.rings.empty())
    for (const auto& id : mf.rings[0].members)
      if (id != mf.self.id) other_clusters.push_back(id);
  RN_ASSIGN_OR_RETURN(int64_t step, agree_on_checkpoint(*transport_, prev_, next_, own, other_clusters,
                                                        mf.num_clusters > 1, deadline_in(opt_.connect_timeout_s)));
  if (step < 0) {
    RN_LOG_WARN(where(), ": --resume: the stages hold no common checkpoint in '", opt_.checkpoint_dir,
                "'; training from step 0");
    return int64_t{0};
  }
  const std::string path = checkpoint_path(dir, step);
  RN_ASSIGN_OR_RETURN(Checkpoint ckpt, read_checkpoint(path));
  TensorMap state;  // what the checkpoint must hold: parameters and running state
  for (const auto& p : mf.params) state[p] = params_.at(p);
  for (const auto& s : mf.state) state[s] = params_.at(s);
  RN_RETURN_IF_ERROR(check_checkpoint(ckpt, path, mf.run_id, mf.self.id, state, opt_state_));
  if (ckpt.step != step)
    return error(Code::kCorrupt, "checkpoint '", path, "' holds step ", ckpt.step, ", not the step of its name");
  if (step > total)
    return error(Code::kInvalidArgument, "checkpoint '", path, "' is at step ", step, ", past the end of this run's ",
                 total, " steps; give --steps of at least ", step);
  if (ckpt.updates != step || ckpt.epoch != step / steps_per_epoch_ || ckpt.step_in_epoch != step % steps_per_epoch_)
    return error(Code::kInvalidArgument, "checkpoint '", path, "' is at epoch ", ckpt.epoch, ", step ",
                 ckpt.step_in_epoch, " of it, after ", ckpt.updates, " updates, but this run has ", steps_per_epoch_,
                 " steps per epoch; resume with the dataset and bundles that wrote it");
  // Copy into the existing storage: every holder of params_ and opt_state_ sees the restored values.
  for (const auto& [name, t] : ckpt.params) std::memcpy(params_.at(name).raw(), t.raw(), t.bytes());
  for (const auto& [name, t] : ckpt.opt_state) std::memcpy(opt_state_.at(name).raw(), t.raw(), t.bytes());
  samples_since_average_ = ckpt.samples_since_average;
  ring_samples_.assign(mf.rings.size(), samples_since_average_);
  rounds_ = ckpt.averaging_rounds;
  RN_LOG_INFO(where(), ": resuming from step ", step, " of ", total, " (", path, ")");
  return step;
}

Status TrainerImpl::save_checkpoint(int64_t committed) {
  const Manifest& mf = m();
  Checkpoint ckpt;
  ckpt.run_id = mf.run_id;
  ckpt.node_id = mf.self.id;
  ckpt.step = committed;
  ckpt.epoch = committed / steps_per_epoch_;
  ckpt.step_in_epoch = committed % steps_per_epoch_;
  ckpt.updates = committed;  // synchronous: one update per step
  ckpt.samples_since_average = samples_since_average_;
  ckpt.averaging_rounds = rounds_;
  for (const auto& p : mf.params) ckpt.params[p] = params_.at(p);
  for (const auto& s : mf.state) ckpt.params[s] = params_.at(s);
  ckpt.opt_state = opt_state_;
  TraceSpan span(trace_, TraceLane::kCompute, "checkpoint", "CHECKPOINT", committed - 1, -1);
  return write_checkpoint(checkpoint_dir(), ckpt).with_context(where() + ": checkpoint after step " +
                                                                std::to_string(committed));
}

}  // namespace

Result<std::unique_ptr<Trainer>> Trainer::create(Bundle bundle, TrainerOptions options) {
  auto t = std::make_unique<TrainerImpl>(std::move(bundle), std::move(options));
  RN_RETURN_IF_ERROR(t->init());
  return std::unique_ptr<Trainer>(std::move(t));
}

}  // namespace ravnest::rt
