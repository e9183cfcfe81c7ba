// Checkpoint files (a .rvt tensor file with a fixed set of meta tensors and a
// digest), their retention, and the pipeline's agreement on a common step.
#include "runtime/checkpoint.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/sha256.h"
#include "runtime/tensor_file.h"

namespace ravnest::rt {
namespace {

namespace fs = std::filesystem;

// Tensor names inside the file. Meta tensors first, the digest last.
constexpr char kFormatName[] = "ckpt/format";      // int64 [1]
constexpr char kRunIdName[] = "ckpt/run_id";       // uint8 [n]
constexpr char kNodeIdName[] = "ckpt/node_id";     // uint8 [n]
constexpr char kPositionName[] = "ckpt/position";  // int64 [6], see kPositionFields
constexpr char kDigestName[] = "ckpt/sha256";      // uint8 [32] over every tensor before it
constexpr char kParamPrefix[] = "param/";
constexpr char kOptPrefix[] = "opt/";
constexpr int64_t kPositionFields = 6;  // step, epoch, step_in_epoch, updates, samples_since_average, rounds

constexpr uint64_t kStartStep = uint64_t{1} << 63;  // the start-up step range (docs/wire-protocol.md)
constexpr uint32_t kStepsDownId = 2;                // steps held by every stage so far, stage s to s+1
constexpr uint32_t kCommonUpId = 3;                 // the steps every stage holds, stage s+1 to s
// Several clusters (kBackupSizesId = 5 is the trainer's): one cluster's steps to the other clusters' ring
// members, then the run's steps down the pipeline and back up.
constexpr uint32_t kClustersId = 6;
constexpr uint32_t kGlobalDownId = 7;
constexpr uint32_t kGlobalUpId = 8;

Tensor bytes_tensor(const std::string& text) {
  Tensor t = Tensor::empty(DType::kU8, {static_cast<int64_t>(text.size())});
  if (!text.empty()) std::memcpy(t.raw(), text.data(), text.size());
  return t;
}

Tensor i64_tensor(const std::vector<int64_t>& values) {
  Tensor t = Tensor::empty(DType::kI64, {static_cast<int64_t>(values.size())});
  std::copy(values.begin(), values.end(), t.data<int64_t>());
  return t;
}

// SHA-256 over the names, dtypes, shapes and bytes of tensors [0, count).
std::array<uint8_t, 32> digest_of(const NamedTensors& tensors, size_t count) {
  Sha256 h;
  for (size_t i = 0; i < count; ++i) {
    const auto& [name, t] = tensors[i];
    const uint64_t name_len = name.size();
    const int32_t dtype = static_cast<int32_t>(t.dtype());
    const uint64_t rank = t.shape().size();
    h.update(&name_len, sizeof name_len);
    h.update(name);
    h.update(&dtype, sizeof dtype);
    h.update(&rank, sizeof rank);
    for (int64_t d : t.shape()) h.update(&d, sizeof d);
    if (t.bytes() > 0) h.update(t.raw(), t.bytes());
  }
  return h.finish();
}

// Adds `map` sorted by name (a file's order must not depend on hashing).
void append_sorted(NamedTensors* out, const std::string& prefix, const TensorMap& map) {
  std::vector<std::string> names;
  for (const auto& [name, t] : map) names.push_back(name);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) out->emplace_back(prefix + name, map.at(name));
}

// The step of a file named ckpt-<digits>.rvt, or nullopt.
std::optional<int64_t> step_of_file_name(const std::string& name) {
  const std::string head = "ckpt-", tail = ".rvt";
  if (name.size() <= head.size() + tail.size() || name.compare(0, head.size(), head) != 0 ||
      name.compare(name.size() - tail.size(), tail.size(), tail) != 0)
    return std::nullopt;
  const std::string digits = name.substr(head.size(), name.size() - head.size() - tail.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

// Differences between a checkpoint's tensors and the node's: the first one, or "".
std::string first_difference(const TensorMap& got, const TensorMap& want, const char* what) {
  std::vector<std::string> names;
  for (const auto& [name, t] : want) names.push_back(name);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    auto it = got.find(name);
    const Tensor& w = want.at(name);
    if (it == got.end()) return std::string("it has no ") + what + " '" + name + "'";
    if (it->second.dtype() != w.dtype() || it->second.shape() != w.shape())
      return std::string(what) + " '" + name + "' is " + dtype_name(it->second.dtype()) + " " +
             shape_str(it->second.shape()) + " in the checkpoint but " + dtype_name(w.dtype()) + " " +
             shape_str(w.shape()) + " in the bundle";
  }
  for (const auto& [name, t] : got)
    if (!want.count(name)) return std::string("it holds ") + what + " '" + name + "', which the bundle does not have";
  return "";
}

}  // namespace

std::string checkpoint_node_dir(const std::string& root, const std::string& node_id) {
  return (fs::path(root) / node_id).string();
}

std::string checkpoint_path(const std::string& node_dir, int64_t step) {
  return (fs::path(node_dir) / ("ckpt-" + std::to_string(step) + ".rvt")).string();
}

Status write_checkpoint(const std::string& node_dir, const Checkpoint& ckpt, int keep) {
  if (ckpt.step < 0) return error(Code::kInvalidArgument, "checkpoint of ", ckpt.node_id, ": negative step ", ckpt.step);
  if (keep < 1) return error(Code::kInvalidArgument, "checkpoints to keep must be at least 1, not ", keep);
  std::error_code ec;
  fs::create_directories(node_dir, ec);
  if (ec) return error(Code::kInvalidArgument, "cannot create the checkpoint folder '", node_dir, "': ", ec.message());

  NamedTensors file;
  file.emplace_back(kFormatName, i64_tensor({kCheckpointFormatVersion}));
  file.emplace_back(kRunIdName, bytes_tensor(ckpt.run_id));
  file.emplace_back(kNodeIdName, bytes_tensor(ckpt.node_id));
  file.emplace_back(kPositionName, i64_tensor({ckpt.step, ckpt.epoch, ckpt.step_in_epoch, ckpt.updates,
                                               ckpt.samples_since_average, ckpt.averaging_rounds}));
  append_sorted(&file, kParamPrefix, ckpt.params);
  append_sorted(&file, kOptPrefix, ckpt.opt_state);
  const std::array<uint8_t, 32> digest = digest_of(file, file.size());
  Tensor digest_tensor = Tensor::empty(DType::kU8, {32});
  std::memcpy(digest_tensor.raw(), digest.data(), digest.size());
  file.emplace_back(kDigestName, digest_tensor);

  const std::string path = checkpoint_path(node_dir, ckpt.step);
  // write_tensor_file writes PATH.tmp, fsyncs it, renames it over PATH and fsyncs the folder.
  RN_RETURN_IF_ERROR(write_tensor_file(path, file).with_context("writing checkpoint of " + ckpt.node_id));

  // Retention: this checkpoint and the newest `keep - 1` older ones.
  RN_ASSIGN_OR_RETURN(std::vector<int64_t> steps, list_checkpoints(node_dir));
  std::vector<int64_t> older;
  for (int64_t s : steps)
    if (s < ckpt.step) older.push_back(s);
  std::set<int64_t> kept{ckpt.step};
  for (size_t i = 0; i < older.size() && kept.size() < static_cast<size_t>(keep); ++i) kept.insert(older[older.size() - 1 - i]);
  for (int64_t s : steps)
    if (!kept.count(s)) fs::remove(checkpoint_path(node_dir, s), ec);
  for (const auto& entry : fs::directory_iterator(node_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0 && name.rfind("ckpt-", 0) == 0)
      fs::remove(entry.path(), ec);
  }
  return ok_status();
}

Result<std::vector<int64_t>> list_checkpoints(const std::string& node_dir) {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::exists(node_dir, ec)) return steps;
  if (!fs::is_directory(node_dir, ec))
    return error(Code::kInvalidArgument, "checkpoint folder '", node_dir, "' is not a folder");
  for (const auto& entry : fs::directory_iterator(node_dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    if (auto step = step_of_file_name(entry.path().filename().string())) steps.push_back(*step);
  }
  if (ec) return error(Code::kInvalidArgument, "cannot list the checkpoint folder '", node_dir, "': ", ec.message());
  std::sort(steps.begin(), steps.end());
  return steps;
}

Result<Checkpoint> read_checkpoint(const std::string& path) {
  Result<NamedTensors> read = read_tensor_file(path);
  if (!read.ok()) return read.status().with_context("checkpoint '" + path + "' cannot be used");
  const NamedTensors& file = *read;
  auto corrupt = [&](const auto&... why) {
    return error(Code::kCorrupt, "checkpoint '", path, "' is corrupt: ", why...,
                 "; remove it to resume from an older checkpoint");
  };
  if (file.size() < 5) return corrupt("it holds ", file.size(), " tensors, fewer than a checkpoint's 5 meta tensors");
  // The digest comes last and covers everything before it.
  const auto& [digest_name, digest] = file.back();
  if (digest_name != kDigestName || digest.dtype() != DType::kU8 || digest.numel() != 32)
    return corrupt("its last tensor is '", digest_name, "', not the 32-byte '", kDigestName, "'");
  const std::array<uint8_t, 32> want = digest_of(file, file.size() - 1);
  if (std::memcmp(want.data(), digest.raw(), 32) != 0) return corrupt("its SHA-256 does not match its contents");

  auto meta = [&](size_t index, const char* name, DType dtype) -> Result<const Tensor*> {
    const auto& [got, t] = file[index];
    if (got != name || t.dtype() != dtype || t.rank() != 1)
      return corrupt("tensor #", index, " is '", got, "', expected '", name, "' (", dtype_name(dtype), ", rank 1)");
    return &t;
  };
  auto text = [](const Tensor* t) { return std::string(static_cast<const char*>(t->raw()), t->bytes()); };
  RN_ASSIGN_OR_RETURN(const Tensor* format, meta(0, kFormatName, DType::kI64));
  if (format->numel() != 1 || format->data<int64_t>()[0] != kCheckpointFormatVersion)
    return error(Code::kUnsupported, "checkpoint '", path, "' has format version ",
                 format->numel() == 1 ? format->data<int64_t>()[0] : -1, "; this runtime reads version ",
                 kCheckpointFormatVersion);
  Checkpoint ckpt;
  RN_ASSIGN_OR_RETURN(const Tensor* run_id, meta(1, kRunIdName, DType::kU8));
  RN_ASSIGN_OR_RETURN(const Tensor* node_id, meta(2, kNodeIdName, DType::kU8));
  RN_ASSIGN_OR_RETURN(const Tensor* position, meta(3, kPositionName, DType::kI64));
  ckpt.run_id = run_id->bytes() ? text(run_id) : "";
  ckpt.node_id = node_id->bytes() ? text(node_id) : "";
  if (position->numel() != kPositionFields)
    return corrupt("'", kPositionName, "' has ", position->numel(), " values, expected ", kPositionFields);
  const int64_t* pos = position->data<int64_t>();
  ckpt.step = pos[0];
  ckpt.epoch = pos[1];
  ckpt.step_in_epoch = pos[2];
  ckpt.updates = pos[3];
  ckpt.samples_since_average = pos[4];
  ckpt.averaging_rounds = pos[5];
  for (int i = 0; i < kPositionFields; ++i)
    if (pos[i] < 0) return corrupt("position value #", i, " is negative (", pos[i], ")");
  for (size_t i = 4; i + 1 < file.size(); ++i) {
    const auto& [name, t] = file[i];
    const std::string param(kParamPrefix), opt(kOptPrefix);
    if (name.rfind(param, 0) == 0) ckpt.params[name.substr(param.size())] = t;
    else if (name.rfind(opt, 0) == 0) ckpt.opt_state[name.substr(opt.size())] = t;
    else return corrupt("tensor #", i, " '", name, "' is neither a parameter (param/) nor optimizer state (opt/)");
  }
  return ckpt;
}

Status check_checkpoint(const Checkpoint& ckpt, const std::string& path, const std::string& run_id,
                        const std::string& node_id, const TensorMap& params, const TensorMap& opt_state) {
  auto refuse = [&](const auto&... why) {
    return error(Code::kInvalidArgument, "checkpoint '", path, "' does not fit this node: ", why...);
  };
  if (ckpt.run_id != run_id)
    return refuse("it is of run '", ckpt.run_id, "' but the bundle is of run '", run_id,
                  "' (a different compile); use the bundles that wrote it, or another --checkpoint-dir");
  if (ckpt.node_id != node_id)
    return refuse("it is of node '", ckpt.node_id, "' but this node is '", node_id, "'");
  std::string diff = first_difference(ckpt.params, params, "parameter");
  if (diff.empty()) diff = first_difference(ckpt.opt_state, opt_state, "optimizer state");
  if (!diff.empty()) return refuse(diff);
  return ok_status();
}

Result<int64_t> agree_on_checkpoint(Transport& transport, const std::optional<PeerAddress>& prev,
                                    const std::optional<PeerAddress>& next, const std::vector<int64_t>& own,
                                    const std::vector<std::string>& other_clusters, bool several_clusters,
                                    Deadline deadline) {
  auto receive = [&](const std::string& peer, uint32_t id, const char* what) -> Result<std::vector<int64_t>> {
    auto got = transport.recv(peer, FrameMeta{FrameKind::kControl, kStartStep, 0, id}, deadline);
    if (!got.ok())
      return got.status().with_context(transport.node_id() + ": waiting for " + what + " from '" + peer +
                                       "' (start every node with --resume)");
    if (got->dtype() != DType::kI64 || got->rank() != 1 || got->numel() < 1)
      return error(Code::kCorrupt, transport.node_id(), ": malformed ", what, " from '", peer, "'");
    const int64_t* v = got->data<int64_t>();
    if (v[0] == -1 && got->numel() == 1) return std::vector<int64_t>{-1};  // "not known here"
    if (v[0] < 0 || v[0] != got->numel() - 1)
      return error(Code::kCorrupt, transport.node_id(), ": malformed ", what, " from '", peer, "'");
    return std::vector<int64_t>(v + 1, v + got->numel());
  };
  auto counted = [](const std::vector<int64_t>& steps) {
    std::vector<int64_t> out{static_cast<int64_t>(steps.size())};
    out.insert(out.end(), steps.begin(), steps.end());
    return i64_tensor(out);
  };
  auto send = [&](const std::string& peer, uint32_t id, const Tensor& t) {
    return transport.send(peer, FrameMeta{FrameKind::kControl, kStartStep, 0, id}, t);
  };
  auto intersect = [](const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    std::set<int64_t> in_b(b.begin(), b.end());
    std::vector<int64_t> out;
    for (int64_t s : a)
      if (in_b.count(s)) out.push_back(s);
    return out;
  };
  // 1. The pipeline: the steps every stage holds, down to the last stage, and that set back up to every stage.
  std::vector<int64_t> common = own;
  if (prev) {
    RN_ASSIGN_OR_RETURN(std::vector<int64_t> before, receive(prev->id, kStepsDownId, "the checkpoint steps of the previous stages"));
    common = intersect(own, before);
  }
  if (next) {
    RN_RETURN_IF_ERROR(send(next->id, kStepsDownId, counted(common)));
    RN_ASSIGN_OR_RETURN(common, receive(next->id, kCommonUpId, "the checkpoint steps every stage holds"));
  }
  if (prev) RN_RETURN_IF_ERROR(send(prev->id, kCommonUpId, counted(common)));
  // 2. Several clusters: each node with averaging rings trades its cluster's set with one node of every other
  // cluster (the other members of one of its rings), so it holds what every node of the run holds; then the
  // pipeline passes that down and back up, for stages without rings.
  if (several_clusters) {
    std::optional<std::vector<int64_t>> global;
    if (!other_clusters.empty()) {
      for (const auto& peer : other_clusters) RN_RETURN_IF_ERROR(send(peer, kClustersId, counted(common)));
      std::vector<int64_t> all = common;
      for (const auto& peer : other_clusters) {
        RN_ASSIGN_OR_RETURN(std::vector<int64_t> theirs, receive(peer, kClustersId, "the checkpoint steps of its cluster"));
        all = intersect(all, theirs);
      }
      global = all;
    }
    const Tensor unknown = i64_tensor({-1});
    if (prev) {
      RN_ASSIGN_OR_RETURN(std::vector<int64_t> got, receive(prev->id, kGlobalDownId, "the checkpoint steps of every cluster"));
      if (!global && !(got.size() == 1 && got[0] == -1)) global = got;
    }
    if (next) {
      RN_RETURN_IF_ERROR(send(next->id, kGlobalDownId, global ? counted(*global) : unknown));
      RN_ASSIGN_OR_RETURN(std::vector<int64_t> got, receive(next->id, kGlobalUpId, "the checkpoint steps of every cluster"));
      if (got.size() == 1 && got[0] == -1)
        return error(Code::kInternal, transport.node_id(), ": no stage of this cluster takes part in averaging");
      global = got;
    }
    if (!global) return error(Code::kInternal, transport.node_id(), ": no stage of this cluster takes part in averaging");
    if (prev) RN_RETURN_IF_ERROR(send(prev->id, kGlobalUpId, counted(*global)));
    common = *global;
  }
  const int64_t decision = common.empty() ? -1 : *std::max_element(common.begin(), common.end());
  if (decision >= 0 && std::find(own.begin(), own.end(), decision) == own.end())
    return error(Code::kCorrupt, transport.node_id(), ": the run chose to resume from step ", decision,
                 ", of which this node has no checkpoint");
  return decision;
}

}  // namespace ravnest::rt
