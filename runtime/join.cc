// The joining side of runtime/join.h: ask, follow the run's suggestions, receive the bundle.
#include "runtime/join.h"

#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>

#include "common/log.h"
#include "runtime/transport/transport.h"

namespace ravnest::rt {
namespace {

Deadline deadline_in(double seconds) {
  return deadline_after(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
}

// A received file name must stay inside the bundle folder.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos;
}

Status write_file(const std::string& path, const Tensor& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return error(Code::kInvalidArgument, "cannot write '", path, "'");
  out.write(static_cast<const char*>(bytes.raw()), static_cast<std::streamsize>(bytes.bytes()));
  out.close();
  if (!out) return error(Code::kInvalidArgument, "cannot write '", path, "' (disk full?)");
  return ok_status();
}

}  // namespace

Tensor json_frame(const Json& json) {
  const std::string text = json.dump(0);
  Tensor t = Tensor::empty(DType::kU8, {static_cast<int64_t>(text.size())});
  if (!text.empty()) std::memcpy(t.raw(), text.data(), text.size());
  return t;
}

Result<Json> frame_json(const Tensor& frame, const std::string& what) {
  if (frame.dtype() != DType::kU8) return error(Code::kCorrupt, what, " is not a byte frame");
  Result<Json> j = parse_json(std::string(static_cast<const char*>(frame.raw()), frame.bytes()));
  if (!j.ok()) return j.status().with_context(what);
  return j;
}

Json join_peer_json(const PeerAddress& peer, int stage) {
  Json j = Json::object();
  j.set("id", peer.id);
  j.set("host", peer.host);
  j.set("port", static_cast<int64_t>(peer.port));
  j.set("stage", static_cast<int64_t>(stage));
  return j;
}

Result<PeerAddress> join_peer_of(const Json& json, const std::string& what) {
  PeerAddress p;
  RN_ASSIGN_OR_RETURN(p.id, json.get_string("id"));
  RN_ASSIGN_OR_RETURN(p.host, json.get_string("host"));
  RN_ASSIGN_OR_RETURN(int64_t port, json.get_int("port"));
  if (p.id.empty() || p.host.empty() || port < 1 || port > 65535)
    return error(Code::kInvalidArgument, what, ": needs a node id, a host and a port in 1..65535");
  p.port = static_cast<uint16_t>(port);
  return p;
}

Result<std::string> fetch_join_bundle(const JoinOptions& options) {
  TransportOptions to;
  // The asking side has an id of its own: its trainer, under options.self.id, connects later.
  to.node_id = options.self.id + "~join";
  to.run_id = "";  // joining: the run's id comes with the answer to the handshake
  to.heartbeat_min_timeout = std::chrono::milliseconds(static_cast<int64_t>(options.answer_timeout_s * 1000));
  // The request: this node's address, and once the run assigned it a place in a new cluster, that assignment.
  Json request = join_peer_json(options.self, -1);
  std::deque<PeerAddress> ask{options.via};
  std::set<std::string> asked;
  std::vector<std::string> refusals;
  while (!ask.empty()) {
    const PeerAddress node = ask.front();
    ask.pop_front();
    if (!asked.insert(node.id).second) continue;
    const std::string who = "node " + node.str();
    // A fresh transport per node asked: each handshake is a joining one, which the node reports to its trainer.
    Transport transport(to);
    Status st = transport.connect(node.id, node.host, node.port, deadline_in(options.connect_timeout_s));
    if (!st.ok()) {
      RN_LOG_WARN("join: cannot reach ", who, ": ", st.message());
      refusals.push_back(who + ": unreachable");
      continue;
    }
    RN_RETURN_IF_ERROR(
        transport.send(node.id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinRequest, 0}, json_frame(request)));
    auto frame = transport.recv(node.id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinAnswer, 0},
                                deadline_in(options.answer_timeout_s));
    if (!frame.ok()) {
      refusals.push_back(who + ": " + frame.status().message());
      continue;
    }
    RN_ASSIGN_OR_RETURN(Json answer, frame_json(*frame, "the answer of " + who));
    RN_ASSIGN_OR_RETURN(bool accepted, answer.get_bool("accept"));
    if (!accepted) {
      const std::string reason = answer.get_string_or("reason", "no reason given").value();
      RN_LOG_INFO("join: ", who, " sends us on: ", reason);
      refusals.push_back(who + ": " + reason);
      if (answer.has("assign")) {
        RN_ASSIGN_OR_RETURN(const Json* assign, answer.get_object("assign"));
        request.set("assign", *assign);
        asked.clear();  // the assignment may send it back to a node it asked before
      }
      if (auto targets = answer.get_array("targets"); targets.ok())
        for (const Json& t : **targets) {
          RN_ASSIGN_OR_RETURN(PeerAddress target, join_peer_of(t, "a target in the answer of " + who));
          ask.push_back(target);
        }
      continue;
    }
    RN_ASSIGN_OR_RETURN(const Json::Array* files, answer.get_array("files"));
    RN_ASSIGN_OR_RETURN(int64_t stage, answer.get_int("stage"));
    std::error_code ec;
    std::filesystem::create_directories(options.dir, ec);
    if (ec) return error(Code::kInvalidArgument, "cannot create the bundle folder '", options.dir, "': ", ec.message());
    for (size_t i = 0; i < files->size(); ++i) {
      const std::string name = (*files)[i].is_string() ? (*files)[i].as_string() : "";
      if (!plain_file_name(name))
        return error(Code::kCorrupt, who, " sent a bundle file named '", name, "'; expected a plain file name");
      auto bytes = transport.recv(node.id, FrameMeta{FrameKind::kControl, kJoinStep, kJoinFile, static_cast<uint32_t>(i)},
                                  deadline_in(options.answer_timeout_s));
      if (!bytes.ok()) return bytes.status().with_context("join: receiving bundle file '" + name + "' from " + who);
      if (bytes->dtype() != DType::kU8) return error(Code::kCorrupt, who, " sent bundle file '", name, "' as non-bytes");
      RN_RETURN_IF_ERROR(write_file((std::filesystem::path(options.dir) / name).string(), *bytes));
    }
    RN_RETURN_IF_ERROR(load_bundle(options.dir).status().with_context("join: the bundle received from " + who));
    const int64_t cluster = answer.get_int_or("cluster", -1).value();
    if (cluster >= 0)
      RN_LOG_INFO("join: ", who, " accepted; this node is stage ", stage, " of new cluster ", cluster, " (bundle in ",
                  options.dir, ")");
    else
      RN_LOG_INFO("join: ", who, " accepted; this node backs up stage ", stage, " (bundle in ", options.dir, ")");
    return options.dir;
  }
  std::string why;
  for (const auto& r : refusals) why += "\n  " + r;
  return error(Code::kNotFound, "no stage of the run accepts ", options.self.id,
               " as a backup or in a new cluster; the nodes asked answered:", why,
               "\n(a stage takes one backup; runs of several clusters take new clusters when compiled with --joinable; "
               "asynchronous runs and tied weights take none)");
}

}  // namespace ravnest::rt
