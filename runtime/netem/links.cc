// The links file and the pipeline relays: see links.h for what they guarantee.
#include "runtime/netem/links.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>

namespace ravnest::rt {
namespace {

constexpr double kMaxMbit = 1e6;       // 1 Tbit/s
constexpr double kMaxDelayMs = 30000;  // one side; a link sums two

// The fields of one "default" or "nodes.<id>" object; absent ones stay empty.
struct PartialLink {
  std::optional<double> up_mbit, down_mbit, delay_ms, loss;
  std::optional<std::vector<LinkChange>> changes;
};

// "changes": [{"at_s": 5, "for_s": 10, "down": true}, {"at_s": 8, "rate_scale": 0.25}].
Result<std::vector<LinkChange>> parse_changes(const Json& value, const std::string& where) {
  if (!value.is_array())
    return error(Code::kInvalidArgument, where, ": expected an array of {at_s, for_s, down | rate_scale}; found ",
                 value.describe());
  std::vector<LinkChange> out;
  for (size_t i = 0; i < value.items().size(); ++i) {
    const Json& c = value.items()[i];
    const std::string at = str_cat(where, "[", i, "]");
    if (!c.is_object()) return error(Code::kInvalidArgument, at, ": expected an object; found ", c.describe());
    LinkChange change;
    bool down = false, scaled = false;
    for (const auto& [key, v] : c.members()) {
      if (key == "down") {
        if (!v.is_bool()) return error(Code::kInvalidArgument, at, ".down: found ", v.describe(), "; give true");
        down = v.as_bool();
        continue;
      }
      const double x = v.is_number() ? v.as_double() : NAN;
      if (key == "at_s" || key == "for_s") {
        if (!std::isfinite(x) || x < 0 || x > 86400)
          return error(Code::kInvalidArgument, at, ".", key, ": found ", v.describe(), "; give seconds, 0 to 86400");
        auto ms = std::chrono::milliseconds(std::llround(x * 1000));
        (key == "at_s" ? change.at : change.duration) = ms;
      } else if (key == "rate_scale") {
        if (!std::isfinite(x) || x <= 0 || x > 1e6)
          return error(Code::kInvalidArgument, at, ".rate_scale: found ", v.describe(),
                       "; give a factor > 0 (use \"down\": true for an outage)");
        change.rate_scale = x;
        scaled = true;
      } else {
        return error(Code::kInvalidArgument, at, ".", key,
                     ": unknown field; the fields are at_s, for_s, down and rate_scale");
      }
    }
    if (down == scaled)
      return error(Code::kInvalidArgument, at, ": give exactly one of \"down\": true and \"rate_scale\"");
    if (down) change.rate_scale = 0;
    out.push_back(change);
  }
  return out;
}

struct FieldSpec {
  const char* key;
  std::optional<double> PartialLink::*member;
  double min;
  double max;
  bool min_exclusive;
  const char* hint;
};

constexpr std::array<FieldSpec, 4> kFields{{
    {"up_mbit", &PartialLink::up_mbit, 0, kMaxMbit, true, "a rate in Mbit/s, > 0"},
    {"down_mbit", &PartialLink::down_mbit, 0, kMaxMbit, true, "a rate in Mbit/s, > 0"},
    {"delay_ms", &PartialLink::delay_ms, 0, kMaxDelayMs, false, "a one-way delay in ms, 0 to 30000"},
    {"loss", &PartialLink::loss, 0, 0.5, false, "a packet loss probability, 0 to 0.5"},
}};

Result<PartialLink> parse_partial(const Json& obj, const std::string& where) {
  if (!obj.is_object()) {
    return error(Code::kInvalidArgument, where, ": expected an object with up_mbit, down_mbit, delay_ms, loss; found ",
                 obj.describe());
  }
  PartialLink out;
  for (const auto& [key, value] : obj.members()) {
    if (key == "changes") {
      RN_ASSIGN_OR_RETURN(out.changes, parse_changes(value, where + ".changes"));
      continue;
    }
    auto spec = std::find_if(kFields.begin(), kFields.end(), [&](const FieldSpec& f) { return key == f.key; });
    if (spec == kFields.end()) {
      return error(Code::kInvalidArgument, where, ".", key,
                   ": unknown field; the fields are up_mbit, down_mbit, delay_ms, loss and changes");
    }
    double v = value.is_number() ? value.as_double() : NAN;
    bool low = spec->min_exclusive ? v <= spec->min : v < spec->min;
    if (!value.is_number() || !std::isfinite(v) || low || v > spec->max) {
      return error(Code::kInvalidArgument, where, ".", key, ": found ", value.describe(), "; give ", spec->hint);
    }
    out.*(spec->member) = v;
  }
  return out;
}

}  // namespace

Result<std::map<std::string, NodeLink>> parse_links(const Json& json, const std::vector<std::string>& node_ids,
                                                    const std::string& source) {
  if (!json.is_object()) {
    return error(Code::kInvalidArgument, source, ": expected an object with \"default\" and \"nodes\"; found ",
                 json.describe());
  }
  PartialLink fallback;
  std::map<std::string, PartialLink> per_node;
  for (const auto& [key, value] : json.members()) {
    if (key == "default") {
      RN_ASSIGN_OR_RETURN(fallback, parse_partial(value, source + ": default"));
    } else if (key == "nodes") {
      if (!value.is_object()) {
        return error(Code::kInvalidArgument, source, ": nodes: expected an object of node id -> link; found ",
                     value.describe());
      }
      for (const auto& [id, link] : value.members()) {
        if (std::find(node_ids.begin(), node_ids.end(), id) == node_ids.end()) {
          std::string known;
          for (const auto& n : node_ids) known += (known.empty() ? "" : ", ") + n;
          return error(Code::kNotFound, source, ": nodes.", id, ": unknown node; this run has ", known);
        }
        RN_ASSIGN_OR_RETURN(per_node[id], parse_partial(link, source + ": nodes." + id));
      }
    } else {
      return error(Code::kInvalidArgument, source, ": ", key, ": unknown key; the keys are \"default\" and \"nodes\"");
    }
  }
  std::map<std::string, NodeLink> out;
  for (const auto& id : node_ids) {
    const PartialLink& own = per_node[id];
    NodeLink link;
    double* dst[4] = {&link.up_mbit, &link.down_mbit, &link.delay_ms, &link.loss};
    for (size_t i = 0; i < kFields.size(); ++i) {
      const auto& member = kFields[i].member;
      std::optional<double> v = (own.*member) ? own.*member : fallback.*member;
      if (!v && &kFields[i] != &kFields.back()) {  // loss may be left out: 0
        return error(Code::kInvalidArgument, source, ": nodes.", id, ".", kFields[i].key,
                     ": not given, and \"default\" has none; give it in either");
      }
      *dst[i] = v.value_or(0);
    }
    if (own.changes) link.changes = *own.changes;
    else if (fallback.changes) link.changes = *fallback.changes;
    out[id] = link;
  }
  return out;
}

Result<std::map<std::string, NodeLink>> read_links_file(const std::string& path,
                                                        const std::vector<std::string>& node_ids) {
  RN_ASSIGN_OR_RETURN(Json json, read_json_file(path));
  return parse_links(json, node_ids, path);
}

std::pair<LinkDirection, LinkDirection> pipeline_link(const NodeLink& a, const NodeLink& b) {
  auto delay = std::chrono::microseconds(std::llround((a.delay_ms + b.delay_ms) * 1000));
  double loss = 1 - (1 - a.loss) * (1 - b.loss);
  LinkDirection forward{std::min(a.up_mbit, b.down_mbit) * 1e6, delay, loss};
  LinkDirection backward{std::min(b.up_mbit, a.down_mbit) * 1e6, delay, loss};
  return {forward, backward};
}

Result<std::unique_ptr<PipelineLinks>> PipelineLinks::start(const std::string& links_path,
                                                            const std::vector<LaunchedNode>& nodes, uint64_t seed) {
  auto out = std::make_unique<PipelineLinks>();
  out->nodes_ = nodes;
  if (links_path.empty()) return out;
  std::vector<std::string> ids;
  for (const auto& n : nodes) ids.push_back(n.id);
  RN_ASSIGN_OR_RETURN(auto links, read_links_file(links_path, ids));
  for (const auto& a : nodes) {
    for (const auto& b : nodes) {
      // Pipeline links inside a cluster, and every pair across clusters (the
      // averaging rings connect whichever of the two has the smaller id).
      bool pipeline = b.cluster == a.cluster && b.stage == a.stage + 1;
      if (!pipeline && a.cluster == b.cluster) continue;
      Link link{a.id, b.id, pipeline_link(links.at(a.id), links.at(b.id)), {}, nullptr};
      LinkRelayOptions options;
      options.name = "link " + a.id + " -> " + b.id;
      options.target_port = static_cast<uint16_t>(b.port);
      options.forward = link.dirs.first;
      options.backward = link.dirs.second;
      options.seed = seed + out->links_.size();
      for (const NodeLink* end : {&links.at(a.id), &links.at(b.id)})
        options.changes.insert(options.changes.end(), end->changes.begin(), end->changes.end());
      link.changes = options.changes;
      RN_ASSIGN_OR_RETURN(link.relay, LinkRelay::start(options));
      out->links_.push_back(std::move(link));
    }
  }
  return out;
}

std::string PipelineLinks::peer_address(const std::string& from, const std::string& to) const {
  for (const auto& l : links_)
    if (l.from == from && l.to == to) return l.relay->address();
  for (const auto& n : nodes_)
    if (n.id == to) return str_cat("127.0.0.1:", n.port);
  return "";
}

std::vector<std::string> PipelineLinks::describe() const {
  std::vector<std::string> lines;
  for (const auto& l : links_) {
    std::string changes;
    for (const auto& c : l.changes) changes += "; " + c.describe();
    lines.push_back(str_cat("link ", l.from, " -> ", l.to, " via ", l.relay->address(), ": forward ",
                            l.dirs.first.describe(), "; backward ", l.dirs.second.describe(), changes));
  }
  return lines;
}

std::vector<std::string> PipelineLinks::summary() const {
  std::vector<std::string> lines;
  for (const auto& l : links_) {
    LinkRelayStats s = l.relay->stats();
    lines.push_back(str_cat("link ", l.from, " -> ", l.to, ": ", s.forward_bytes, " bytes forward, ", s.backward_bytes,
                            " bytes backward, ", s.connections, " connection(s), ", s.lost_chunks,
                            " chunk(s) delayed by loss"));
  }
  return lines;
}

}  // namespace ravnest::rt
