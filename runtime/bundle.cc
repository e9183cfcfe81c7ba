#include "runtime/bundle.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <set>

#include "common/onnx_graph.h"
#include "common/sha256.h"
#include "runtime/tensor_file.h"

namespace ravnest::rt {
namespace fs = std::filesystem;

namespace {

Json peer_to_json(const PeerAddress& p) {
  Json j = Json::object();
  j.set("id", p.id);
  j.set("host", p.host);
  j.set("port", static_cast<int64_t>(p.port));
  return j;
}

Result<PeerAddress> peer_from_json(const Json& j, const std::string& path) {
  PeerAddress p;
  RN_ASSIGN_OR_RETURN(p.id, j.get_string(path + ".id"));
  RN_ASSIGN_OR_RETURN(p.host, j.get_string(path + ".host"));
  RN_ASSIGN_OR_RETURN(int64_t port, j.get_int(path + ".port"));
  if (port < 0 || port > 65535) return error(Code::kInvalidArgument, path, ".port ", port, " is not a TCP port");
  p.port = static_cast<uint16_t>(port);
  return p;
}

Json strings_to_json(const std::vector<std::string>& list) {
  Json j = Json::array();
  for (const auto& s : list) j.push_back(s);
  return j;
}

Result<std::vector<std::string>> strings_from_json(const Json& j, const std::string& path) {
  RN_ASSIGN_OR_RETURN(const Json::Array* list, j.get_array(path));
  std::vector<std::string> out;
  for (const Json& item : *list) {
    if (!item.is_string()) return error(Code::kInvalidArgument, path, " holds ", item.describe(), ", expected strings");
    out.push_back(item.as_string());
  }
  return out;
}

Json boundary_to_json(const std::vector<BoundaryTensor>& list) {
  Json j = Json::array();
  for (const auto& t : list) {
    Json e = Json::object();
    e.set("name", t.name);
    e.set("wire_id", static_cast<int64_t>(t.wire_id));
    e.set("dtype", dtype_name(t.dtype));
    Json shape = Json::array();
    for (int64_t d : t.shape) shape.push_back(d);
    e.set("shape", std::move(shape));
    j.push_back(std::move(e));
  }
  return j;
}

Result<DType> dtype_from_name(const std::string& name) {
  for (DType d : {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kI64, DType::kI32, DType::kI8,
                  DType::kU8, DType::kBool})
    if (name == dtype_name(d)) return d;
  return error(Code::kInvalidArgument, "unknown dtype '", name, "'");
}

Result<std::vector<BoundaryTensor>> boundary_from_json(const Json& j, const std::string& path) {
  RN_ASSIGN_OR_RETURN(const Json::Array* list, j.get_array(path));
  std::vector<BoundaryTensor> out;
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& e = (*list)[i];
    std::string at = path + "[" + std::to_string(i) + "]";
    BoundaryTensor t;
    RN_ASSIGN_OR_RETURN(t.name, e.get_string("name"));
    RN_ASSIGN_OR_RETURN(int64_t id, e.get_int("wire_id"));
    if (id < 0 || id > UINT32_MAX) return error(Code::kInvalidArgument, at, ".wire_id out of range");
    t.wire_id = static_cast<uint32_t>(id);
    RN_ASSIGN_OR_RETURN(std::string dt, e.get_string("dtype"));
    RN_ASSIGN_OR_RETURN(t.dtype, dtype_from_name(dt));
    RN_ASSIGN_OR_RETURN(const Json::Array* shape, e.get_array("shape"));
    for (const Json& d : *shape) {
      if (!d.is_int() || d.as_int() < 0) return error(Code::kInvalidArgument, at, ".shape has a bad dimension");
      t.shape.push_back(d.as_int());
    }
    out.push_back(std::move(t));
  }
  return out;
}

Json rings_to_json(const std::vector<RingSpec>& rings) {
  Json list = Json::array();
  for (const RingSpec& r : rings) {
    Json e = Json::object();
    e.set("tag", static_cast<int64_t>(r.tag));
    e.set("members", strings_to_json(r.members));
    Json pieces = Json::array();
    for (const RingPiece& p : r.pieces) {
      Json piece = Json::object();
      piece.set("param", p.param);
      piece.set("offset", p.offset);
      piece.set("length", p.length);
      pieces.push_back(std::move(piece));
    }
    e.set("pieces", std::move(pieces));
    list.push_back(std::move(e));
  }
  return list;
}

Result<std::vector<RingSpec>> rings_from_json(const Json& j, const std::string& key) {
  std::vector<RingSpec> rings;
  if (!j.has(key)) return rings;
  RN_ASSIGN_OR_RETURN(const Json::Array* list, j.get_array(key));
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& e = (*list)[i];
    std::string at = key + "[" + std::to_string(i) + "]";
    RingSpec r;
    RN_ASSIGN_OR_RETURN(int64_t tag, e.get_int("tag"));
    if (tag < 0 || tag > UINT32_MAX) return error(Code::kInvalidArgument, at, ".tag out of range");
    r.tag = static_cast<uint32_t>(tag);
    RN_ASSIGN_OR_RETURN(r.members, strings_from_json(e, "members"));
    RN_ASSIGN_OR_RETURN(const Json::Array* pieces, e.get_array("pieces"));
    for (const Json& pj : *pieces) {
      RingPiece p;
      RN_ASSIGN_OR_RETURN(p.param, pj.get_string("param"));
      RN_ASSIGN_OR_RETURN(p.offset, pj.get_int("offset"));
      RN_ASSIGN_OR_RETURN(p.length, pj.get_int("length"));
      if (p.offset < 0 || p.length < 0) return error(Code::kInvalidArgument, at, " has a negative piece");
      r.pieces.push_back(std::move(p));
    }
    rings.push_back(std::move(r));
  }
  return rings;
}

}  // namespace

Status validate_optimizer(const TrainingConfig& training) {
  const OptimizerConfig& o = training.optimizer;
  auto bad = [](const char* flag, double value, const char* expected) {
    return error(Code::kInvalidArgument, flag, " is ", value, "; expected ", expected);
  };
  if (o.type != "sgd" && o.type != "adamw" && o.type != "lamb")
    return error(Code::kUnsupported, "--optimizer '", o.type, "' is not supported; use sgd, adamw or lamb");
  if (!(o.lr > 0) || !std::isfinite(o.lr)) return bad("--lr", o.lr, "a positive number");
  if (!(o.momentum >= 0 && o.momentum < 1)) return bad("--momentum", o.momentum, "a number in [0, 1)");
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay))
    return bad("--weight-decay", o.weight_decay, "a non-negative number");
  if (!(o.beta1 >= 0 && o.beta1 < 1)) return bad("--beta1", o.beta1, "a number in [0, 1)");
  if (!(o.beta2 >= 0 && o.beta2 < 1)) return bad("--beta2", o.beta2, "a number in [0, 1)");
  if (!(o.eps > 0) || !std::isfinite(o.eps)) return bad("--eps", o.eps, "a positive number");
  if (o.lr_schedule != "constant" && o.lr_schedule != "cosine" && o.lr_schedule != "step")
    return error(Code::kInvalidArgument, "--lr-schedule '", o.lr_schedule, "' is not known; use constant, cosine or step");
  if (o.warmup_steps < 0) return bad("--warmup-steps", static_cast<double>(o.warmup_steps), "a number >= 0");
  if (!(o.lr_min >= 0 && o.lr_min <= o.lr)) return bad("--lr-min", o.lr_min, "a number in [0, --lr]");
  if (o.lr_schedule == "step" && o.step_size < 1)
    return bad("--step-size", static_cast<double>(o.step_size), "a positive number of updates with --lr-schedule step");
  if (!(o.gamma > 0 && o.gamma <= 1)) return bad("--gamma", o.gamma, "a number in (0, 1]");
  if (!(o.clip_norm >= 0) || !std::isfinite(o.clip_norm)) return bad("--clip-norm", o.clip_norm, "a number >= 0 (0: off)");
  if (o.clip_norm > 0 && training.mode == "async")
    return error(Code::kUnsupported, "--clip-norm with --async is not supported: the global norm spans the stages of ",
                 "one update, and asynchronous stages update at different times; drop one of the two");
  return ok_status();
}

double scheduled_lr(const OptimizerConfig& o, int64_t update, int64_t total_updates) {
  if (update < o.warmup_steps) return o.lr * static_cast<double>(update + 1) / static_cast<double>(o.warmup_steps);
  const int64_t t = update - o.warmup_steps;
  if (o.lr_schedule == "cosine") {
    const int64_t span = std::max<int64_t>(1, total_updates - o.warmup_steps - 1);
    const double progress = std::min(1.0, static_cast<double>(t) / static_cast<double>(span));
    return o.lr_min + (o.lr - o.lr_min) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  }
  if (o.lr_schedule == "step" && o.step_size > 0)
    return std::max(o.lr_min, o.lr * std::pow(o.gamma, static_cast<double>(t / o.step_size)));
  return o.lr;
}

int64_t RingSpec::size() const {
  int64_t n = 0;
  for (const RingPiece& p : pieces) n += p.length;
  return n;
}

Json manifest_to_json(const Manifest& m) {
  Json j = Json::object();
  j.set("format", kBundleFormatName);
  j.set("version", m.version);
  j.set("run_id", m.run_id);
  j.set("model", m.model);
  j.set("node", peer_to_json(m.self));
  j.set("stage", m.stage);
  j.set("num_stages", m.num_stages);
  j.set("prev", m.prev ? peer_to_json(*m.prev) : Json());
  j.set("next", m.next ? peer_to_json(*m.next) : Json());
  j.set("cluster", m.cluster);
  j.set("num_clusters", m.num_clusters);
  j.set("rings", rings_to_json(m.rings));
  j.set("tied", rings_to_json(m.tied));
  Json ring_peers = Json::array();
  for (const auto& p : m.ring_peers) ring_peers.push_back(peer_to_json(p));
  j.set("ring_peers", std::move(ring_peers));
  if (!m.backups.empty()) {
    Json backups = Json::array();
    for (const auto& [stage, p] : m.backups) {
      Json b = peer_to_json(p);
      b.set("stage", stage);
      backups.push_back(std::move(b));
    }
    j.set("backups", std::move(backups));
  }
  if (!m.ring_backups.empty()) {
    Json backups = Json::array();
    for (const auto& [member, p] : m.ring_backups) {
      Json b = peer_to_json(p);
      b.set("of", member);
      backups.push_back(std::move(b));
    }
    j.set("ring_backups", std::move(backups));
  }
  if (m.backup_of) j.set("backup_of", peer_to_json(*m.backup_of));
  if (m.joined) j.set("joined", true);
  if (m.copy_of) j.set("copy_of", peer_to_json(*m.copy_of));
  if (!m.join_targets.empty()) {
    Json targets = Json::array();
    for (const auto& [stage, p] : m.join_targets) {
      Json t = peer_to_json(p);
      t.set("stage", stage);
      targets.push_back(std::move(t));
    }
    j.set("join_targets", std::move(targets));
  }

  const TrainingConfig& t = m.training;
  Json training = Json::object();
  training.set("batch", t.batch);
  training.set("microbatches", t.microbatches);
  training.set("microbatch_size", t.microbatch_size);
  training.set("epochs", t.epochs);
  training.set("max_steps", t.max_steps);
  training.set("seed", static_cast<int64_t>(t.seed));
  training.set("evaluate", t.evaluate);
  training.set("mode", t.mode);
  training.set("average_every", t.average_every);
  training.set("replan_every", t.replan_every);
  if (t.late_deadline_s > 0) training.set("late_deadline_s", t.late_deadline_s);
  if (t.backups_in_rings) training.set("backups_in_rings", true);
  if (t.backup_every != 1) training.set("backup_every", t.backup_every);
  training.set("local_steps_max", t.local_steps_max);
  training.set("average_optimizer_state", t.average_optimizer_state);
  Json opt = Json::object();
  opt.set("type", t.optimizer.type);
  opt.set("lr", t.optimizer.lr);
  opt.set("momentum", t.optimizer.momentum);
  opt.set("weight_decay", t.optimizer.weight_decay);
  opt.set("nesterov", t.optimizer.nesterov);
  opt.set("beta1", t.optimizer.beta1);
  opt.set("beta2", t.optimizer.beta2);
  opt.set("eps", t.optimizer.eps);
  opt.set("lr_schedule", t.optimizer.lr_schedule);
  opt.set("warmup_steps", t.optimizer.warmup_steps);
  opt.set("lr_min", t.optimizer.lr_min);
  opt.set("step_size", t.optimizer.step_size);
  opt.set("gamma", t.optimizer.gamma);
  opt.set("clip_norm", t.optimizer.clip_norm);
  training.set("optimizer", std::move(opt));
  Json data = Json::object();
  data.set("kind", t.data.kind);
  data.set("dir", t.data.dir);
  training.set("data", std::move(data));
  Json compression = Json::object();
  compression.set("activations", codec_spec_str(t.compression.activations));
  compression.set("gradients", codec_spec_str(t.compression.gradients));
  compression.set("averaging", codec_spec_str(t.compression.averaging));
  training.set("compression", std::move(compression));
  j.set("training", std::move(training));

  Json io = Json::object();
  io.set("recv", boundary_to_json(m.recv));
  io.set("send", boundary_to_json(m.send));
  io.set("data_input", m.data_input);
  io.set("labels_input", m.labels_input);
  io.set("loss_output", m.loss_output);
  io.set("logits_output", m.logits_output);
  io.set("params", strings_to_json(m.params));
  io.set("state", strings_to_json(m.state));
  io.set("loss_reduction", m.loss_reduction);
  io.set("stash", strings_to_json(m.stash));
  io.set("wstash", strings_to_json(m.wstash));
  j.set("io", std::move(io));

  Json programs = Json::object();
  for (const auto& [role, file] : m.programs) programs.set(role, file);
  j.set("programs", std::move(programs));
  j.set("weights", m.weights_file);
  j.set("schedule", m.schedule_file);
  Json digests = Json::object();
  for (const auto& [file, digest] : m.digests) digests.set(file, digest);
  j.set("sha256", std::move(digests));
  return j;
}

Result<Manifest> manifest_from_json(const Json& j) {
  Manifest m;
  RN_ASSIGN_OR_RETURN(std::string format, j.get_string("format"));
  if (format != kBundleFormatName)
    return error(Code::kCorrupt, "format is '", format, "', expected '", kBundleFormatName, "'");
  RN_ASSIGN_OR_RETURN(int64_t version, j.get_int("version"));
  if (version != kBundleFormatVersion)
    return error(Code::kCorrupt, "bundle format version ", version, " is not supported by this ravnest-rt (it reads version ",
                 kBundleFormatVersion, "); recompile the model with the ravnestc of the same release");
  m.version = static_cast<int>(version);
  RN_ASSIGN_OR_RETURN(m.run_id, j.get_string("run_id"));
  RN_ASSIGN_OR_RETURN(m.model, j.get_string_or("model", ""));
  RN_ASSIGN_OR_RETURN(m.self, peer_from_json(j, "node"));
  RN_ASSIGN_OR_RETURN(int64_t stage, j.get_int("stage"));
  RN_ASSIGN_OR_RETURN(int64_t stages, j.get_int("num_stages"));
  if (stages < 1 || stages > 4096 || stage < 0 || stage >= stages)
    return error(Code::kInvalidArgument, "stage ", stage, " of ", stages, " is out of range");
  m.stage = static_cast<int>(stage);
  m.num_stages = static_cast<int>(stages);
  if (m.stage > 0) { RN_ASSIGN_OR_RETURN(m.prev, peer_from_json(j, "prev")); }
  if (!m.last()) { RN_ASSIGN_OR_RETURN(m.next, peer_from_json(j, "next")); }
  RN_ASSIGN_OR_RETURN(int64_t cluster, j.get_int_or("cluster", 0));
  RN_ASSIGN_OR_RETURN(int64_t clusters, j.get_int_or("num_clusters", 1));
  // A cluster that joined during the run (copy_of) numbers itself after the compiled ones.
  if (clusters < 1 || clusters > 4096 || cluster < 0 || cluster >= 4096 || (cluster >= clusters && !j.has("copy_of")))
    return error(Code::kInvalidArgument, "cluster ", cluster, " of ", clusters, " is out of range");
  m.cluster = static_cast<int>(cluster);
  m.num_clusters = static_cast<int>(clusters);
  RN_ASSIGN_OR_RETURN(m.rings, rings_from_json(j, "rings"));
  RN_ASSIGN_OR_RETURN(m.tied, rings_from_json(j, "tied"));
  if (j.has("ring_peers")) {
    RN_ASSIGN_OR_RETURN(const Json::Array* peers, j.get_array("ring_peers"));
    for (size_t i = 0; i < peers->size(); ++i) {
      RN_ASSIGN_OR_RETURN(PeerAddress p, peer_from_json(j, "ring_peers[" + std::to_string(i) + "]"));
      m.ring_peers.push_back(std::move(p));
    }
  }
  if (j.has("backups")) {
    RN_ASSIGN_OR_RETURN(const Json::Array* backups, j.get_array("backups"));
    for (size_t i = 0; i < backups->size(); ++i) {
      const std::string at = "backups[" + std::to_string(i) + "]";
      RN_ASSIGN_OR_RETURN(PeerAddress p, peer_from_json(j, at));
      RN_ASSIGN_OR_RETURN(int64_t stage, j.get_int(at + ".stage"));
      if (stage < 0 || stage >= m.num_stages || m.backups.count(static_cast<int>(stage)))
        return error(Code::kInvalidArgument, at, ".stage ", stage, " is out of range or repeated (stages 0..",
                     m.num_stages - 1, ")");
      m.backups[static_cast<int>(stage)] = std::move(p);
    }
  }
  if (j.has("ring_backups")) {
    RN_ASSIGN_OR_RETURN(const Json::Array* backups, j.get_array("ring_backups"));
    for (size_t i = 0; i < backups->size(); ++i) {
      const std::string at = "ring_backups[" + std::to_string(i) + "]";
      RN_ASSIGN_OR_RETURN(PeerAddress p, peer_from_json(j, at));
      RN_ASSIGN_OR_RETURN(std::string member, j.get_string(at + ".of"));
      const bool in_ring = std::any_of(m.rings.begin(), m.rings.end(), [&](const RingSpec& r) {
        return std::find(r.members.begin(), r.members.end(), member) != r.members.end();
      });
      if (!in_ring || member == m.self.id || m.ring_backups.count(member))
        return error(Code::kInvalidArgument, at, ".of '", member, "' is not another member of this node's rings, or "
                     "is repeated");
      m.ring_backups[member] = std::move(p);
    }
  }
  if (j.has("backup_of")) { RN_ASSIGN_OR_RETURN(m.backup_of, peer_from_json(j, "backup_of")); }
  if (j.has("joined")) { RN_ASSIGN_OR_RETURN(m.joined, j.get_bool("joined")); }
  if (j.has("copy_of")) { RN_ASSIGN_OR_RETURN(m.copy_of, peer_from_json(j, "copy_of")); }
  if (j.has("join_targets")) {
    RN_ASSIGN_OR_RETURN(const Json::Array* targets, j.get_array("join_targets"));
    for (size_t i = 0; i < targets->size(); ++i) {
      const std::string at = "join_targets[" + std::to_string(i) + "]";
      RN_ASSIGN_OR_RETURN(PeerAddress p, peer_from_json(j, at));
      RN_ASSIGN_OR_RETURN(int64_t stage, j.get_int(at + ".stage"));
      if (stage < 0 || stage >= m.num_stages)
        return error(Code::kInvalidArgument, at, ".stage ", stage, " is out of range (stages 0..", m.num_stages - 1, ")");
      m.join_targets.emplace_back(static_cast<int>(stage), std::move(p));
    }
  }

  TrainingConfig& t = m.training;
  RN_ASSIGN_OR_RETURN(t.batch, j.get_int("training.batch"));
  RN_ASSIGN_OR_RETURN(t.microbatches, j.get_int("training.microbatches"));
  RN_ASSIGN_OR_RETURN(t.microbatch_size, j.get_int("training.microbatch_size"));
  if (t.batch < 1 || t.microbatches < 1 || t.microbatch_size * t.microbatches != t.batch)
    return error(Code::kInvalidArgument, "training.batch ", t.batch, " is not microbatches ", t.microbatches,
                 " x microbatch_size ", t.microbatch_size);
  RN_ASSIGN_OR_RETURN(t.epochs, j.get_int_or("training.epochs", 1));
  RN_ASSIGN_OR_RETURN(t.max_steps, j.get_int_or("training.max_steps", 0));
  RN_ASSIGN_OR_RETURN(int64_t seed, j.get_int_or("training.seed", 1));
  t.seed = static_cast<uint64_t>(seed);
  RN_ASSIGN_OR_RETURN(t.evaluate, j.get_bool_or("training.evaluate", true));
  RN_ASSIGN_OR_RETURN(t.mode, j.get_string_or("training.mode", "sync"));
  RN_ASSIGN_OR_RETURN(t.average_every, j.get_int_or("training.average_every", 0));
  RN_ASSIGN_OR_RETURN(t.replan_every, j.get_int_or("training.replan_every", 10));
  if (t.replan_every < 0) return error(Code::kInvalidArgument, "training.replan_every must be >= 0");
  RN_ASSIGN_OR_RETURN(t.late_deadline_s, j.get_double_or("training.late_deadline_s", 0));
  RN_ASSIGN_OR_RETURN(t.backups_in_rings, j.get_bool_or("training.backups_in_rings", false));
  RN_ASSIGN_OR_RETURN(t.backup_every, j.get_int_or("training.backup_every", 1));
  if (t.backup_every < 1 || t.backup_every > 1000)
    return error(Code::kInvalidArgument, "training.backup_every must be in 1..1000 steps");
  if (!(t.late_deadline_s >= 0) || t.late_deadline_s > 86400)
    return error(Code::kInvalidArgument, "training.late_deadline_s must be in [0, 86400] seconds");
  if (t.average_every < 0) return error(Code::kInvalidArgument, "training.average_every must be >= 0");
  RN_ASSIGN_OR_RETURN(t.local_steps_max, j.get_int_or("training.local_steps_max", 0));
  RN_ASSIGN_OR_RETURN(t.average_optimizer_state, j.get_bool_or("training.average_optimizer_state", false));
  if (t.local_steps_max < 0 || (t.local_steps_max > 0 && t.local_steps_max < t.average_every))
    return error(Code::kInvalidArgument, "training.local_steps_max (", t.local_steps_max,
                 ") must be 0 or at least training.average_every (", t.average_every, ")");
  if (t.mode != "sync" && t.mode != "async")
    return error(Code::kInvalidArgument, "training.mode is '", t.mode, "'; expected sync or async");
  OptimizerConfig& o = t.optimizer;
  const OptimizerConfig defaults;
  RN_ASSIGN_OR_RETURN(o.type, j.get_string("training.optimizer.type"));
  RN_ASSIGN_OR_RETURN(o.lr, j.get_double("training.optimizer.lr"));
  RN_ASSIGN_OR_RETURN(o.momentum, j.get_double_or("training.optimizer.momentum", 0.0));
  RN_ASSIGN_OR_RETURN(o.weight_decay, j.get_double_or("training.optimizer.weight_decay", 0.0));
  RN_ASSIGN_OR_RETURN(o.nesterov, j.get_bool_or("training.optimizer.nesterov", false));
  // Optional since the optimizers beyond SGD: absent means the defaults (no schedule, no clipping).
  RN_ASSIGN_OR_RETURN(o.beta1, j.get_double_or("training.optimizer.beta1", defaults.beta1));
  RN_ASSIGN_OR_RETURN(o.beta2, j.get_double_or("training.optimizer.beta2", defaults.beta2));
  RN_ASSIGN_OR_RETURN(o.eps, j.get_double_or("training.optimizer.eps", defaults.eps));
  RN_ASSIGN_OR_RETURN(o.lr_schedule, j.get_string_or("training.optimizer.lr_schedule", defaults.lr_schedule));
  RN_ASSIGN_OR_RETURN(o.warmup_steps, j.get_int_or("training.optimizer.warmup_steps", defaults.warmup_steps));
  RN_ASSIGN_OR_RETURN(o.lr_min, j.get_double_or("training.optimizer.lr_min", defaults.lr_min));
  RN_ASSIGN_OR_RETURN(o.step_size, j.get_int_or("training.optimizer.step_size", defaults.step_size));
  RN_ASSIGN_OR_RETURN(o.gamma, j.get_double_or("training.optimizer.gamma", defaults.gamma));
  RN_ASSIGN_OR_RETURN(o.clip_norm, j.get_double_or("training.optimizer.clip_norm", defaults.clip_norm));
  Status optimizer_ok = validate_optimizer(t);
  if (!optimizer_ok.ok()) return optimizer_ok.with_context("training.optimizer");
  RN_ASSIGN_OR_RETURN(t.data.kind, j.get_string("training.data.kind"));
  RN_ASSIGN_OR_RETURN(t.data.dir, j.get_string("training.data.dir"));
  for (auto [field, spec] : {std::pair{"activations", &t.compression.activations},
                             std::pair{"gradients", &t.compression.gradients},
                             std::pair{"averaging", &t.compression.averaging}}) {
    const std::string path = std::string("training.compression.") + field;
    RN_ASSIGN_OR_RETURN(std::string text, j.get_string_or(path, "none"));
    Result<CodecSpec> parsed = parse_codec_spec(text);
    if (!parsed.ok()) return parsed.status().with_context(path);
    *spec = *parsed;
  }

  RN_ASSIGN_OR_RETURN(m.recv, boundary_from_json(j, "io.recv"));
  RN_ASSIGN_OR_RETURN(m.send, boundary_from_json(j, "io.send"));
  RN_ASSIGN_OR_RETURN(m.data_input, j.get_string("io.data_input"));
  RN_ASSIGN_OR_RETURN(m.labels_input, j.get_string("io.labels_input"));
  RN_ASSIGN_OR_RETURN(m.loss_output, j.get_string("io.loss_output"));
  RN_ASSIGN_OR_RETURN(m.logits_output, j.get_string("io.logits_output"));
  RN_ASSIGN_OR_RETURN(m.params, strings_from_json(j, "io.params"));
  if (j.has("io.state")) { RN_ASSIGN_OR_RETURN(m.state, strings_from_json(j, "io.state")); }
  if (j.has("io.loss_reduction")) { RN_ASSIGN_OR_RETURN(m.loss_reduction, j.get_string("io.loss_reduction")); }
  if (m.loss_reduction != "sum" && m.loss_reduction != "mean")
    return error(Code::kCorrupt, "io.loss_reduction is '", m.loss_reduction, "'; expected sum or mean");
  RN_ASSIGN_OR_RETURN(m.stash, strings_from_json(j, "io.stash"));
  RN_ASSIGN_OR_RETURN(m.wstash, strings_from_json(j, "io.wstash"));
  if (m.first() != !m.data_input.empty() || m.last() != !m.labels_input.empty())
    return error(Code::kInvalidArgument, "io: only the first stage reads data and only the last reads labels");

  RN_ASSIGN_OR_RETURN(const Json* programs, j.get_object("programs"));
  for (const auto& [role, file] : programs->members()) {
    if (!file.is_string()) return error(Code::kInvalidArgument, "programs.", role, " is not a file name");
    m.programs[role] = file.as_string();
  }
  for (const char* role : {"forward", "backward", "weight", "optimizer"})
    if (!m.programs.count(role)) return error(Code::kInvalidArgument, "programs.", role, " is missing");
  RN_ASSIGN_OR_RETURN(m.weights_file, j.get_string("weights"));
  RN_ASSIGN_OR_RETURN(m.schedule_file, j.get_string("schedule"));
  RN_ASSIGN_OR_RETURN(const Json* digests, j.get_object("sha256"));
  for (const auto& [file, digest] : digests->members()) {
    if (!digest.is_string()) return error(Code::kInvalidArgument, "sha256.", file, " is not a string");
    m.digests[file] = digest.as_string();
  }
  return m;
}

Result<Bundle> load_bundle(const std::string& dir) {
  Bundle b;
  b.dir = dir;
  std::string manifest_path = (fs::path(dir) / "manifest.json").string();
  if (!fs::exists(manifest_path))
    return error(Code::kNotFound, "bundle '", dir, "' has no manifest.json; pass a folder written by `ravnestc compile`");
  auto json = read_json_file(manifest_path);
  if (!json.ok()) return Status(Code::kCorrupt, json.status().message());
  auto manifest = manifest_from_json(*json);
  if (!manifest.ok()) return manifest.status().with_context(manifest_path);
  b.manifest = std::move(manifest).value();
  const Manifest& m = b.manifest;

  // Every file the manifest names must be listed with its digest, and match it.
  std::set<std::string> needed{m.weights_file, m.schedule_file};
  for (const auto& [role, file] : m.programs) needed.insert(file);
  for (const std::string& file : needed) {
    if (file.find('/') != std::string::npos || file.find("..") != std::string::npos)
      return error(Code::kCorrupt, manifest_path, ": file name '", file, "' must be a plain name inside the bundle");
    auto it = m.digests.find(file);
    if (it == m.digests.end()) return error(Code::kCorrupt, manifest_path, ": no sha256 listed for '", file, "'");
    std::string path = (fs::path(dir) / file).string();
    if (!fs::exists(path))
      return error(Code::kCorrupt, "bundle file '", path, "' is missing; copy the whole bundle folder again");
    RN_ASSIGN_OR_RETURN(std::string digest, sha256_file(path));
    if (digest != it->second)
      return error(Code::kCorrupt, "bundle file '", path, "' is corrupt: its SHA-256 is ", digest, " but the manifest says ",
                   it->second, "; copy the bundle again or recompile");
  }

  auto load_program = [&](const std::string& role, Graph* out) -> Status {
    std::string path = (fs::path(dir) / m.programs.at(role)).string();
    auto proto = read_model_proto(path);
    if (!proto.ok()) return Status(Code::kCorrupt, proto.status().message());
    auto graph = graph_from_proto(*proto, "");
    if (!graph.ok()) return graph.status().with_context(path);
    *out = std::move(graph).value();
    return ok_status();
  };
  RN_RETURN_IF_ERROR(load_program("forward", &b.forward));
  RN_RETURN_IF_ERROR(load_program("backward", &b.backward));
  RN_RETURN_IF_ERROR(load_program("weight", &b.weight));
  RN_RETURN_IF_ERROR(load_program("optimizer", &b.optimizer));

  std::string weights_path = (fs::path(dir) / m.weights_file).string();
  RN_ASSIGN_OR_RETURN(b.weights, read_tensor_file(weights_path));
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : b.weights) by_name[name] = &t;
  std::vector<std::string> held = m.params;
  held.insert(held.end(), m.state.begin(), m.state.end());
  for (const std::string& p : held) {
    auto it = by_name.find(p);
    if (it == by_name.end())
      return error(Code::kCorrupt, weights_path, " has no tensor for parameter '", p, "'");
    const ValueInfo* vi = b.forward.find_value(p);
    if (vi && vi->is_static() && vi->static_shape() != it->second->shape())
      return error(Code::kCorrupt, weights_path, ": parameter '", p, "' has shape ", shape_str(it->second->shape()),
                   " but the forward program expects ", vi->shape_string());
  }

  for (const std::vector<RingSpec>* rings : {&m.rings, &m.tied})
    for (const RingSpec& ring : *rings)
    for (const RingPiece& piece : ring.pieces) {
      auto it = by_name.find(piece.param);
      if (it == by_name.end() || piece.offset + piece.length > it->second->numel())
        return error(Code::kCorrupt, manifest_path, ": ring ", ring.tag, " names ", piece.length, " elements of '",
                     piece.param, "' from ", piece.offset, ", which this node's weights do not hold");
    }

  std::string schedule_path = (fs::path(dir) / m.schedule_file).string();
  auto sj = read_json_file(schedule_path);
  if (!sj.ok()) return Status(Code::kCorrupt, sj.status().message());
  auto schedule = schedule_from_json(*sj);
  if (!schedule.ok()) return schedule.status().with_context(schedule_path);
  b.schedule = std::move(schedule).value();
  if (b.schedule.stage != m.stage || b.schedule.num_stages != m.num_stages ||
      b.schedule.microbatches != m.training.microbatches)
    return error(Code::kCorrupt, schedule_path, " is for stage ", b.schedule.stage, " of ", b.schedule.num_stages,
                 " with ", b.schedule.microbatches, " micro-batches, but the manifest says stage ", m.stage, " of ",
                 m.num_stages, " with ", m.training.microbatches);
  return b;
}

Status write_bundle_files(const std::string& dir, Manifest& manifest, const std::map<std::string, Graph>& programs,
                          const std::vector<std::pair<std::string, Tensor>>& weights, const StageSchedule& schedule) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return error(Code::kInvalidArgument, "cannot create bundle folder '", dir, "': ", ec.message());
  manifest.digests.clear();
  // Every file's digest is taken from the bytes written, not read back from disk.
  auto write_hashed = [&](const std::string& file, const std::string& bytes) -> Status {
    std::ofstream out(fs::path(dir) / file, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) return error(Code::kInvalidArgument, "cannot write ", file, " in '", dir, "'; check the disk and the folder");
    manifest.digests[file] = sha256_hex(bytes);
    return ok_status();
  };
  for (const auto& [role, graph] : programs) {
    auto it = manifest.programs.find(role);
    if (it == manifest.programs.end()) return error(Code::kInternal, "program role '", role, "' has no file name");
    std::string bytes;
    if (!graph_to_proto(graph).SerializeToString(&bytes))
      return error(Code::kInternal, "could not serialize the ", role, " program of bundle '", dir, "' (over 2 GiB?)");
    RN_RETURN_IF_ERROR(write_hashed(it->second, bytes));
  }
  // Not fsynced, like the other files: a file a crash left incomplete fails its digest when the bundle is loaded.
  RN_RETURN_IF_ERROR(write_tensor_file((fs::path(dir) / manifest.weights_file).string(), weights,
                                       &manifest.digests[manifest.weights_file], FileSync::kRenameOnly));
  return write_hashed(manifest.schedule_file, schedule_to_json(schedule).dump(1) + "\n");
}

Status write_manifest(const std::string& dir, const Manifest& manifest) {
  std::ofstream out(fs::path(dir) / "manifest.json", std::ios::trunc);
  out << manifest_to_json(manifest).dump(2) << "\n";
  if (!out) return error(Code::kInvalidArgument, "cannot write manifest.json in '", dir, "'");
  return ok_status();
}

Status write_bundle(const std::string& dir, Manifest manifest, const std::map<std::string, Graph>& programs,
                    const std::vector<std::pair<std::string, Tensor>>& weights, const StageSchedule& schedule) {
  RN_RETURN_IF_ERROR(write_bundle_files(dir, manifest, programs, weights, schedule));
  return write_manifest(dir, manifest);
}

}  // namespace ravnest::rt
