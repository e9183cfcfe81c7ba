#include "runtime/trainer.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <iomanip>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <set>

#include "common/log.h"
#include "runtime/data/mnist_idx.h"
#include "runtime/executor.h"
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

Clock::time_point deadline_in(double seconds) {
  return Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
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

// The feeds of `program`: each graph input looked up in `sources`, in order.
Result<TensorMap> gather_feeds(const Graph& program, std::initializer_list<const TensorMap*> sources) {
  TensorMap feeds;
  for (const std::string& name : program.inputs) {
    const Tensor* found = nullptr;
    for (const TensorMap* src : sources) {
      auto it = src->find(name);
      if (it != src->end()) {
        found = &it->second;
        break;
      }
    }
    if (!found) return error(Code::kInternal, "program '", program.name, "' needs '", name, "', which this node does not hold");
    feeds[name] = *found;
  }
  return feeds;
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
  Status load_data();
  Status agree_on_sizes();
  Status train_step(int64_t step, const std::vector<int64_t>& batch_indices);
  Status run_instr(const Instr& in, int64_t step, const std::vector<int64_t>& batch_indices);
  Status evaluate(int64_t epoch);
  void progress(const std::string& json_line);
  std::string where() const { return m().self.id + " (stage " + std::to_string(m().stage) + ")"; }

  Bundle b_;
  TrainerOptions opt_;
  std::unique_ptr<Executor> fwd_, bwd_, wgt_, optim_;
  // Declared before transport_, whose I/O thread records into it until the transport is destroyed.
  TraceRecorder trace_;
  std::unique_ptr<Transport> transport_;
  std::optional<PeerAddress> prev_, next_;
  TensorMap params_, grads_, velocity_;
  Tensor lr_, loss_seed_;
  // Gradients this stage sends back / expects from the next stage.
  std::vector<const BoundaryTensor*> grads_out_, grads_in_;

  std::optional<ImageDataset> train_, test_;
  int64_t train_count_ = 0, test_count_ = 0;  // known on every stage after agree_on_sizes()
  // Per micro-batch state of the step in flight.
  std::vector<TensorMap> acts_in_, stash_, grads_recv_, wstash_, outputs_;
  double step_loss_ = 0;
  int64_t step_correct_ = 0;
  std::ofstream losses_;
  // Per instruction kind (indexed by InstrOp): time spent, and bytes one instruction moves.
  std::array<SpanTotals, kInstrOps> totals_;
  std::array<int64_t, kInstrOps> instr_bytes_{};
};

Status TrainerImpl::init() {
  const Manifest& mf = m();
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
    velocity_[p] = Tensor::zeros(t.dtype(), t.shape());
  }
  lr_ = Tensor::empty(DType::kF32, {});
  *lr_.data<float>() = static_cast<float>(mf.training.optimizer.lr);
  loss_seed_ = Tensor::empty(DType::kF32, {});
  *loss_seed_.data<float>() = 1.0f / static_cast<float>(mf.training.batch);

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
  if (!opt_.losses_path.empty() && mf.last()) {
    losses_.open(opt_.losses_path, std::ios::trunc);
    if (!losses_) return error(Code::kInvalidArgument, "cannot write losses to '", opt_.losses_path, "'");
  }
  return ok_status();
}

Status TrainerImpl::connect() {
  const Manifest& mf = m();
  TransportOptions to;
  to.node_id = mf.self.id;
  to.run_id = mf.run_id;
  if (trace_.enabled()) to.on_frame_written = [this](const FrameWritten& w) { trace_wire(w); };
  transport_ = std::make_unique<Transport>(to);
  std::string host = mf.self.host;
  uint16_t port = mf.self.port;
  if (!opt_.listen.empty()) {
    RN_ASSIGN_OR_RETURN(PeerAddress l, apply_override(PeerAddress{mf.self.id, "", 0}, {{mf.self.id, opt_.listen}}));
    host = l.host;
    port = l.port;
  }
  // Every stage but the first accepts its previous stage; every stage but the
  // last connects to its next one.
  if (prev_) RN_RETURN_IF_ERROR(transport_->listen(host, port));
  auto deadline = deadline_in(opt_.connect_timeout_s);
  if (next_) {
    Status st = transport_->connect(next_->id, next_->host, next_->port, deadline);
    if (!st.ok()) return st.with_context(where() + ": connecting to the next stage " + next_->str());
  }
  if (prev_) {
    Status st = transport_->wait_for_peer(prev_->id, deadline);
    if (!st.ok()) return st.with_context(where() + ": waiting for the previous stage " + prev_->str() + " to connect");
  }
  return ok_status();
}

Status TrainerImpl::load_data() {
  const Manifest& mf = m();
  if (mf.training.data.kind != "fashion-mnist")
    return error(Code::kUnsupported, "data kind '", mf.training.data.kind, "' is not supported (fashion-mnist is)");
  if (mf.first() || mf.last()) {
    RN_ASSIGN_OR_RETURN(train_, load_fashion_mnist(mf.training.data.dir, true));
    if (opt_.evaluate && mf.training.evaluate) { RN_ASSIGN_OR_RETURN(test_, load_fashion_mnist(mf.training.data.dir, false)); }
  }
  return ok_status();
}

// The first stage reads the data; the stages after it learn the dataset sizes
// from a start-up frame passed down the pipeline, so every stage runs the same
// number of steps and evaluation micro-batches.
Status TrainerImpl::agree_on_sizes() {
  const Manifest& mf = m();
  if (mf.first()) {
    train_count_ = train_->count;
    test_count_ = test_ ? test_->count : 0;
  } else {
    auto got = transport_->recv(prev_->id, FrameMeta{FrameKind::kControl, kStartStep, 0, 0}, deadline_in(opt_.connect_timeout_s));
    if (!got.ok()) return got.status().with_context(where() + ": waiting for the dataset sizes from the first stage");
    if (got->dtype() != DType::kI64 || got->numel() != 2)
      return error(Code::kCorrupt, where(), ": malformed start-up frame from ", prev_->str());
    train_count_ = got->data<int64_t>()[0];
    test_count_ = got->data<int64_t>()[1];
    if (mf.last() && (train_count_ != train_->count || (test_ && test_count_ != test_->count)))
      return error(Code::kInvalidArgument, where(), ": the first stage's dataset has ", train_count_, "/", test_count_,
                   " train/test samples but this node's has ", train_->count, "/", test_ ? test_->count : 0,
                   "; give every node the same dataset");
  }
  if (next_) {
    Tensor sizes = Tensor::empty(DType::kI64, {2});
    sizes.data<int64_t>()[0] = train_count_;
    sizes.data<int64_t>()[1] = test_count_;
    RN_RETURN_IF_ERROR(transport_->send(next_->id, FrameMeta{FrameKind::kControl, kStartStep, 0, 0}, sizes));
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

Status TrainerImpl::run_instr(const Instr& in, int64_t step, const std::vector<int64_t>& batch) {
  const Manifest& mf = m();
  const int mb = in.microbatch;
  const int64_t mbs = mf.training.microbatch_size;
  auto recv_deadline = [&] { return deadline_in(opt_.recv_timeout_s); };
  switch (in.op) {
    case InstrOp::kRecvAct:
      for (const auto& t : mf.recv) {
        auto got = transport_->recv(prev_->id, FrameMeta{FrameKind::kActivation, static_cast<uint64_t>(step), static_cast<uint32_t>(mb), t.wire_id}, recv_deadline());
        if (!got.ok()) return got.status().with_context(where() + ": receiving activation '" + t.name + "'");
        if (got->shape() != t.shape || got->dtype() != t.dtype)
          return error(Code::kCorrupt, where(), ": activation '", t.name, "' from ", prev_->str(), " has shape ",
                       shape_str(got->shape()), ", expected ", shape_str(t.shape));
        acts_in_[mb][t.name] = std::move(got).value();
      }
      return ok_status();
    case InstrOp::kF: {
      TensorMap data;
      if (mf.first()) {
        std::vector<int64_t> idx(batch.begin() + mb * mbs, batch.begin() + (mb + 1) * mbs);
        Tensor images = Tensor::empty(DType::kF32, b_.forward.find_value(mf.data_input)->static_shape());
        Tensor labels = Tensor::empty(DType::kI64, {mbs});
        fill_batch(*train_, idx, &images, &labels);
        data[mf.data_input] = images;
        if (mf.last()) data[mf.labels_input] = labels;
      } else if (mf.last()) {
        std::vector<int64_t> idx(batch.begin() + mb * mbs, batch.begin() + (mb + 1) * mbs);
        Tensor labels = Tensor::empty(DType::kI64, {mbs});
        for (int64_t i = 0; i < mbs; ++i) labels.data<int64_t>()[i] = train_->labels[static_cast<size_t>(idx[i])];
        data[mf.labels_input] = labels;
      }
      RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(b_.forward, {&data, &acts_in_[mb], &params_}));
      TensorMap out;
      RN_RETURN_IF_ERROR(fwd_->run(feeds, &out).with_context(where() + ": forward of micro-batch " + std::to_string(mb)));
      for (const auto& name : mf.stash) {
        auto it = out.find(name);
        stash_[mb][name] = it != out.end() ? it->second : feeds.at(name);
      }
      if (mf.last()) {
        step_loss_ += static_cast<double>(*out.at(mf.loss_output).data<float>());
        const Tensor& logits = out.at(mf.logits_output);
        const Tensor& labels = feeds.at(mf.labels_input);
        int64_t classes = logits.dim(1);
        for (int64_t i = 0; i < mbs; ++i) {
          const float* row = logits.data<float>() + i * classes;
          int64_t best = std::max_element(row, row + classes) - row;
          step_correct_ += best == labels.data<int64_t>()[i];
        }
      }
      outputs_[mb] = std::move(out);
      acts_in_[mb].clear();
      return ok_status();
    }
    case InstrOp::kSendAct:
      for (const auto& t : mf.send)
        RN_RETURN_IF_ERROR(transport_->send(next_->id, FrameMeta{FrameKind::kActivation, static_cast<uint64_t>(step), static_cast<uint32_t>(mb), t.wire_id}, outputs_[mb].at(t.name)));
      outputs_[mb].clear();
      return ok_status();
    case InstrOp::kRecvGrad:
      for (const BoundaryTensor* t : grads_in_) {
        auto got = transport_->recv(next_->id, FrameMeta{FrameKind::kGradient, static_cast<uint64_t>(step), static_cast<uint32_t>(mb), t->wire_id}, recv_deadline());
        if (!got.ok()) return got.status().with_context(where() + ": receiving the gradient of '" + t->name + "'");
        if (got->shape() != t->shape)
          return error(Code::kCorrupt, where(), ": gradient of '", t->name, "' has shape ", shape_str(got->shape()),
                       ", expected ", shape_str(t->shape));
        grads_recv_[mb]["seed/" + t->name] = std::move(got).value();
      }
      return ok_status();
    case InstrOp::kB: {
      TensorMap seed;
      if (mf.last()) seed["seed/" + mf.loss_output] = loss_seed_;
      RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(b_.backward, {&stash_[mb], &grads_recv_[mb], &seed, &params_}));
      TensorMap out;
      RN_RETURN_IF_ERROR(bwd_->run(feeds, &out).with_context(where() + ": backward (B) of micro-batch " + std::to_string(mb)));
      for (const auto& name : mf.wstash) {
        auto it = out.find(name);
        wstash_[mb][name] = it != out.end() ? it->second : grads_recv_[mb].at(name);
      }
      outputs_[mb] = std::move(out);
      grads_recv_[mb].clear();
      return ok_status();
    }
    case InstrOp::kSendGrad:
      for (const BoundaryTensor* t : grads_out_)
        RN_RETURN_IF_ERROR(transport_->send(prev_->id, FrameMeta{FrameKind::kGradient, static_cast<uint64_t>(step), static_cast<uint32_t>(mb), t->wire_id}, outputs_[mb].at("grad/" + t->name)));
      return ok_status();
    case InstrOp::kW: {
      RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(b_.weight, {&stash_[mb], &wstash_[mb], &params_}));
      TensorMap out;
      RN_RETURN_IF_ERROR(wgt_->run(feeds, &out).with_context(where() + ": backward (W) of micro-batch " + std::to_string(mb)));
      for (const auto& p : mf.params) add_into(grads_.at(p), out.at("grad/" + p));
      // W is the last user of this micro-batch's stash: release it.
      stash_[mb].clear();
      wstash_[mb].clear();
      return ok_status();
    }
    case InstrOp::kStep: {
      TensorMap feeds{{"lr", lr_}};
      for (const auto& p : mf.params) {
        feeds[p] = params_.at(p);
        feeds["grad/" + p] = grads_.at(p);
        feeds["velocity/" + p] = velocity_.at(p);
      }  // exactly the optimizer program's inputs
      TensorMap out;
      RN_RETURN_IF_ERROR(optim_->run(feeds, &out).with_context(where() + ": optimizer step"));
      for (auto& [p, g] : grads_) g.fill_zero();
      return ok_status();
    }
    case InstrOp::kAllReduce:
      return error(Code::kUnsupported, "ALLREDUCE is not supported by this runtime yet");
  }
  return ok_status();
}

Status TrainerImpl::train_step(int64_t step, const std::vector<int64_t>& batch) {
  const size_t m_count = static_cast<size_t>(m().training.microbatches);
  for (auto* v : {&acts_in_, &stash_, &grads_recv_, &wstash_, &outputs_}) v->assign(m_count, TensorMap{});
  step_loss_ = 0;
  step_correct_ = 0;
  for (const Instr& in : b_.schedule.instrs) {
    const size_t op = static_cast<size_t>(in.op);
    const InstrSpanKind kind = instr_span_kind(in.op);
    TraceSpan span(trace_, kind.lane, kind.category, instr_op_name(in.op), step, in.microbatch, &totals_[op]);
    span.add_bytes(instr_bytes_[op]);
    Status st = run_instr(in, step, batch);
    if (!st.ok()) return st.with_context("step " + std::to_string(step) + ", " + instr_str(in));
  }
  return ok_status();
}

Status TrainerImpl::evaluate(int64_t epoch) {
  const Manifest& mf = m();
  const int64_t mbs = mf.training.microbatch_size;
  const int64_t count = test_count_;
  if ((mf.first() || mf.last()) && !test_)
    return error(Code::kInternal, where(), ": evaluation without the test set loaded");
  const uint64_t step = kEvalStepBase + static_cast<uint64_t>(epoch);
  const int64_t batches = (count + mbs - 1) / mbs;
  int64_t correct = 0;
  const Shape image_shape = mf.first() ? b_.forward.find_value(mf.data_input)->static_shape() : Shape{};
  for (int64_t i = 0; i < batches; ++i) {
    TensorMap inputs;
    std::vector<int64_t> idx;
    for (int64_t j = i * mbs; j < std::min(count, (i + 1) * mbs); ++j) idx.push_back(j);
    const int64_t real = static_cast<int64_t>(idx.size());
    while (static_cast<int64_t>(idx.size()) < mbs) idx.push_back(0);  // padding rows, not counted
    if (mf.first()) {
      Tensor images = Tensor::empty(DType::kF32, image_shape);
      Tensor labels = Tensor::empty(DType::kI64, {mbs});
      fill_batch(*test_, idx, &images, &labels);
      inputs[mf.data_input] = images;
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
      Tensor labels = Tensor::empty(DType::kI64, {mbs});
      for (int64_t j = 0; j < mbs; ++j) labels.data<int64_t>()[j] = test_->labels[static_cast<size_t>(idx[j])];
      inputs[mf.labels_input] = labels;
    }
    RN_ASSIGN_OR_RETURN(TensorMap feeds, gather_feeds(b_.forward, {&inputs, &params_}));
    TensorMap out;
    RN_RETURN_IF_ERROR(fwd_->run(feeds, &out).with_context(where() + ": evaluation forward"));
    if (mf.last()) {
      const Tensor& logits = out.at(mf.logits_output);
      int64_t classes = logits.dim(1);
      for (int64_t j = 0; j < real; ++j) {
        const float* row = logits.data<float>() + j * classes;
        correct += (std::max_element(row, row + classes) - row) == feeds.at(mf.labels_input).data<int64_t>()[j];
      }
    }
    if (next_) {
      for (const auto& t : mf.send)
        RN_RETURN_IF_ERROR(transport_->send(next_->id, FrameMeta{FrameKind::kActivation, step, static_cast<uint32_t>(i), t.wire_id}, out.at(t.name)));
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
    double accuracy = count ? static_cast<double>(correct) / static_cast<double>(count) : 0.0;
    char line[256];
    std::snprintf(line, sizeof line, R"({"event":"eval","node":"%s","epoch":%lld,"accuracy":%.6f,"correct":%lld,"total":%lld})",
                  mf.self.id.c_str(), static_cast<long long>(epoch), accuracy, static_cast<long long>(correct),
                  static_cast<long long>(count));
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

Status TrainerImpl::train() {
  const Manifest& mf = m();
  RN_RETURN_IF_ERROR(load_data());
  RN_RETURN_IF_ERROR(connect());
  RN_RETURN_IF_ERROR(agree_on_sizes());
  // Every stage derives the same sample order from (seed, epoch); only the
  // first and last stage read the data, but all count the same steps.
  const int64_t count = train_count_;
  const int64_t batch = mf.training.batch;
  const int64_t steps_per_epoch = count / batch;
  int64_t max_steps = opt_.max_steps >= 0 ? opt_.max_steps : mf.training.max_steps;
  int64_t total = mf.training.epochs * steps_per_epoch;
  if (max_steps > 0) total = std::min(total, max_steps);
  Sampler sampler(count, mf.training.seed);
  auto start = Clock::now();
  int64_t step = 0;
  for (int64_t epoch = 0; step < total; ++epoch) {
    std::vector<int64_t> perm = sampler.permutation(static_cast<uint64_t>(epoch));
    for (int64_t i = 0; i < steps_per_epoch && step < total; ++i, ++step) {
      std::vector<int64_t> indices(perm.begin() + i * batch, perm.begin() + (i + 1) * batch);
      RN_RETURN_IF_ERROR(train_step(step, indices));
      double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      char line[384];
      if (mf.last()) {
        double loss = step_loss_ / static_cast<double>(batch);
        if (losses_.is_open()) losses_ << step << " " << std::setprecision(9) << loss << "\n";
        std::snprintf(line, sizeof line,
                      R"({"event":"step","node":"%s","stage":%d,"step":%lld,"steps":%lld,"loss":%.6f,"train_accuracy":%.4f,"elapsed":%.3f})",
                      mf.self.id.c_str(), mf.stage, static_cast<long long>(step + 1), static_cast<long long>(total), loss,
                      static_cast<double>(step_correct_) / static_cast<double>(batch), elapsed);
      } else {
        std::snprintf(line, sizeof line, R"({"event":"step","node":"%s","stage":%d,"step":%lld,"steps":%lld,"elapsed":%.3f})",
                      mf.self.id.c_str(), mf.stage, static_cast<long long>(step + 1), static_cast<long long>(total), elapsed);
      }
      progress(line);
    }
    bool epoch_done = step % steps_per_epoch == 0 || step == total;
    if (epoch_done && opt_.evaluate && mf.training.evaluate && test_count_ > 0) {
      TraceSpan span(trace_, TraceLane::kCompute, "eval", "EVAL", step, -1);
      RN_RETURN_IF_ERROR(evaluate(epoch));
    }
  }
  if (losses_.is_open()) losses_.flush();
  if (!opt_.save_params_path.empty()) {
    std::vector<std::pair<std::string, Tensor>> list;
    for (const auto& p : mf.params) list.emplace_back(p, params_.at(p));
    RN_RETURN_IF_ERROR(write_tensor_file(opt_.save_params_path, list));
  }
  RN_RETURN_IF_ERROR(transport_->flush(deadline_in(opt_.recv_timeout_s)).with_context(where() + ": flushing sends"));
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  // Mean F, B and W times of this stage: what a schedule simulator is fed.
  auto mean_s = [&](InstrOp op) { return totals_[static_cast<size_t>(op)].mean_s(); };
  char line[320];
  std::snprintf(line, sizeof line,
                R"({"event":"done","node":"%s","stage":%d,"steps":%lld,"elapsed":%.3f,"f_s":%.9f,"b_s":%.9f,"w_s":%.9f})",
                mf.self.id.c_str(), mf.stage, static_cast<long long>(step), elapsed, mean_s(InstrOp::kF),
                mean_s(InstrOp::kB), mean_s(InstrOp::kW));
  progress(line);
  return ok_status();
}

}  // namespace

Result<std::unique_ptr<Trainer>> Trainer::create(Bundle bundle, TrainerOptions options) {
  auto t = std::make_unique<TrainerImpl>(std::move(bundle), std::move(options));
  RN_RETURN_IF_ERROR(t->init());
  return std::unique_ptr<Trainer>(std::move(t));
}

}  // namespace ravnest::rt
