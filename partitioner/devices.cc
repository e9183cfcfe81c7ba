// Strict device-profile loader and writer (see devices.h, docs/devices.md).
#include "partitioner/devices.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

namespace ravnest::part {
namespace {

// Reads the members of one JSON object, remembering which keys were read, so
// that finish() can reject every key the format does not define.
class ObjectReader {
 public:
  ObjectReader(const Json& json, std::string where) : json_(json), where_(std::move(where)) {}

  Status check_object() const {
    if (!json_.is_object()) return fail("", "expected an object, found " + json_.describe());
    return ok_status();
  }
  const std::string& where() const { return where_; }

  Result<const Json*> field(const std::string& key, bool required) {
    known_.insert(key);
    const Json* v = json_.find(key);
    if (v && v->is_null()) v = nullptr;
    if (!v && required) return fail(key, "missing; it is required (see docs/devices.md)");
    return v;
  }
  Result<std::string> string(const std::string& key) {
    RN_ASSIGN_OR_RETURN(const Json* v, field(key, true));
    if (!v->is_string()) return fail(key, "expected a string, found " + v->describe());
    if (v->as_string().empty()) return fail(key, "must not be empty");
    return v->as_string();
  }
  // A finite number >= `min` (and <= `max`); `positive` excludes `min` itself.
  Result<double> number(const std::string& key, bool required, double fallback, double min, bool positive,
                        double max = std::numeric_limits<double>::max()) {
    RN_ASSIGN_OR_RETURN(const Json* v, field(key, required));
    if (!v) return fallback;
    if (!v->is_number()) return fail(key, "expected a number, found " + v->describe());
    double x = v->as_double();
    if (!std::isfinite(x) || x < min || (positive && x == min) || x > max)
      return fail(key, str_cat(x, " is out of range: it must be ", positive ? "> " : ">= ", min,
                               max < std::numeric_limits<double>::max() ? str_cat(" and <= ", max) : ""));
    return x;
  }
  Result<int64_t> integer(const std::string& key, int64_t min) {
    RN_ASSIGN_OR_RETURN(const Json* v, field(key, true));
    if (!v->is_int()) return fail(key, "expected an integer, found " + v->describe());
    if (v->as_int() < min) return fail(key, str_cat(v->as_int(), " is out of range: it must be >= ", min));
    return v->as_int();
  }
  Result<const Json::Array*> array(const std::string& key, bool required) {
    RN_ASSIGN_OR_RETURN(const Json* v, field(key, required));
    if (!v) return static_cast<const Json::Array*>(nullptr);
    if (!v->is_array()) return fail(key, "expected an array, found " + v->describe());
    return &v->items();
  }
  Status finish() const {
    for (const auto& [key, value] : json_.members())
      if (!known_.count(key)) return fail(key, "is not a field of the format (a typo?); see docs/devices.md");
    return ok_status();
  }
  Status fail(const std::string& key, const std::string& what) const {
    return error(Code::kInvalidArgument, where_, key.empty() ? "" : ": ", key, key.empty() ? "" : " ", what);
  }

 private:
  const Json& json_;
  std::string where_;
  std::set<std::string> known_;
};

Result<LinkProfile> parse_link(const Json& json, const std::string& where) {
  ObjectReader r(json, where);
  RN_RETURN_IF_ERROR(r.check_object());
  LinkProfile link;
  RN_ASSIGN_OR_RETURN(link.peer, r.string("peer"));
  RN_ASSIGN_OR_RETURN(link.bandwidth_bps, r.number("bandwidth_bps", true, 0, 0, true));
  RN_ASSIGN_OR_RETURN(link.latency_s, r.number("latency_s", true, 0, 0, false));
  RN_RETURN_IF_ERROR(r.finish());
  return link;
}

Result<LinkEntry> parse_link_entry(const Json& json, const std::string& where) {
  ObjectReader r(json, where);
  RN_RETURN_IF_ERROR(r.check_object());
  LinkEntry link;
  RN_ASSIGN_OR_RETURN(link.a, r.string("a"));
  RN_ASSIGN_OR_RETURN(link.b, r.string("b"));
  RN_ASSIGN_OR_RETURN(link.bandwidth_bps, r.number("bandwidth_bps", true, 0, 0, true));
  RN_ASSIGN_OR_RETURN(link.latency_s, r.number("latency_s", true, 0, 0, false));
  RN_RETURN_IF_ERROR(r.finish());
  return link;
}

Json link_json(const std::string& peer, double bandwidth_bps, double latency_s) {
  Json j = Json::object();
  j.set("peer", peer);
  j.set("bandwidth_bps", bandwidth_bps);
  j.set("latency_s", latency_s);
  return j;
}

// Checks ids and link peers of a set; `where` names the document.
Status validate_set(const DeviceSet& set, const std::string& where) {
  std::set<std::string> ids;
  for (size_t i = 0; i < set.devices.size(); ++i) {
    const DeviceProfile& d = set.devices[i];
    if (!ids.insert(d.id).second)
      return error(Code::kInvalidArgument, where, ": devices[", i, "] '", d.id, "': id is used by an earlier device; ids must be unique");
  }
  for (size_t i = 0; i < set.devices.size(); ++i) {
    const DeviceProfile& d = set.devices[i];
    for (size_t l = 0; l < d.links.size(); ++l) {
      const std::string& peer = d.links[l].peer;
      if (peer == kTrackerPeer) continue;
      int p = set.find(peer);
      if (p < 0)
        return error(Code::kInvalidArgument, where, ": devices[", i, "] '", d.id, "': links[", l, "].peer '", peer,
                     "' is neither \"tracker\" nor the id or address of a device of this file; add that device or remove the link");
      if (static_cast<size_t>(p) == i)
        return error(Code::kInvalidArgument, where, ": devices[", i, "] '", d.id, "': links[", l, "].peer '", peer,
                     "' is the device itself");
    }
  }
  std::set<std::pair<std::string, std::string>> pairs;
  for (size_t l = 0; l < set.links.size(); ++l) {
    const LinkEntry& e = set.links[l];
    for (const std::string* id : {&e.a, &e.b})
      if (set.find(*id) < 0)
        return error(Code::kInvalidArgument, where, ": links[", l, "]: '", *id, "' is not a device of this file");
    if (set.find(e.a) == set.find(e.b))
      return error(Code::kInvalidArgument, where, ": links[", l, "]: a and b name the same device '", e.a, "'");
    auto key = std::minmax(set.devices[static_cast<size_t>(set.find(e.a))].id,
                           set.devices[static_cast<size_t>(set.find(e.b))].id);
    if (!pairs.insert({key.first, key.second}).second)
      return error(Code::kInvalidArgument, where, ": links[", l, "]: the link between '", key.first, "' and '",
                   key.second, "' is given twice (entries hold both directions)");
  }
  return ok_status();
}

// The measurement `from` holds of `to`, if any (by id or address).
const LinkProfile* measured_link(const DeviceProfile& from, const DeviceProfile& to) {
  for (const LinkProfile& l : from.links)
    if (l.peer == to.id || l.peer == to.address) return &l;
  return nullptr;
}

const LinkProfile* tracker_link(const DeviceProfile& d) {
  for (const LinkProfile& l : d.links)
    if (l.peer == kTrackerPeer) return &l;
  return nullptr;
}

}  // namespace

const char* device_kind_name(DeviceKind kind) { return kind == DeviceKind::kCuda ? "cuda" : "cpu"; }
const char* device_role_name(DeviceRole role) { return role == DeviceRole::kBackup ? "backup" : "worker"; }

LinkEstimate default_link() { return LinkEstimate{100e6, 0.020, "default"}; }

int DeviceSet::find(const std::string& id_or_address) const {
  for (size_t i = 0; i < devices.size(); ++i)
    if (devices[i].id == id_or_address) return static_cast<int>(i);
  for (size_t i = 0; i < devices.size(); ++i)
    if (devices[i].address == id_or_address) return static_cast<int>(i);
  return -1;
}

LinkEstimate DeviceSet::link_between(size_t a, size_t b, const LinkEstimate& fallback) const {
  const DeviceProfile& da = devices[a];
  const DeviceProfile& db = devices[b];
  for (const LinkEntry& e : links) {
    int ea = find(e.a), eb = find(e.b);
    if ((ea == static_cast<int>(a) && eb == static_cast<int>(b)) || (ea == static_cast<int>(b) && eb == static_cast<int>(a)))
      return LinkEstimate{e.bandwidth_bps, e.latency_s, "links"};
  }
  const LinkProfile* ab = measured_link(da, db);
  const LinkProfile* ba = measured_link(db, da);
  if (ab || ba) {
    LinkEstimate est{std::numeric_limits<double>::max(), 0, "measured"};
    for (const LinkProfile* l : {ab, ba}) {
      if (!l) continue;
      est.bandwidth_bps = std::min(est.bandwidth_bps, l->bandwidth_bps);
      est.latency_s = std::max(est.latency_s, l->latency_s);
    }
    return est;
  }
  const LinkProfile* ta = tracker_link(da);
  const LinkProfile* tb = tracker_link(db);
  if (ta && tb)
    return LinkEstimate{std::min(ta->bandwidth_bps, tb->bandwidth_bps), ta->latency_s + tb->latency_s, "via tracker"};
  return fallback;
}

Result<DeviceProfile> parse_device(const Json& json, const std::string& where) {
  ObjectReader r(json, where);
  RN_RETURN_IF_ERROR(r.check_object());
  DeviceProfile d;
  RN_ASSIGN_OR_RETURN(d.id, r.string("id"));
  // From here on errors name the device by its id too.
  ObjectReader named(json, where + " '" + d.id + "'");
  RN_RETURN_IF_ERROR(named.string("id").status());
  RN_ASSIGN_OR_RETURN(d.address, named.string("address"));
  RN_ASSIGN_OR_RETURN(std::string kind, named.string("kind"));
  if (kind == "cpu") {
    d.kind = DeviceKind::kCpu;
  } else if (kind == "cuda") {
    d.kind = DeviceKind::kCuda;
  } else {
    return named.fail("kind", "'" + kind + "' is not a device kind; use \"cpu\" or \"cuda\"");
  }
  RN_ASSIGN_OR_RETURN(d.cores, named.integer("cores", 1));
  RN_ASSIGN_OR_RETURN(d.gemm_gflops, named.number("gemm_gflops", true, 0, 0, true));
  RN_ASSIGN_OR_RETURN(d.conv_gflops, named.number("conv_gflops", true, 0, 0, true));
  RN_ASSIGN_OR_RETURN(d.conv_narrow_gflops, named.number("conv_narrow_gflops", false, 0.0, 0, false, 1e9));
  RN_ASSIGN_OR_RETURN(d.conv_narrow_grad_weight_gflops,
                      named.number("conv_narrow_grad_weight_gflops", false, 0.0, 0, false, 1e9));
  RN_ASSIGN_OR_RETURN(d.memory_bandwidth_gbps, named.number("memory_bandwidth_gbps", true, 0, 0, true));
  RN_ASSIGN_OR_RETURN(d.memory_bytes, named.integer("memory_bytes", 1));
  RN_ASSIGN_OR_RETURN(d.kernel_overhead_s, named.number("kernel_overhead_s", false, 0.0, 0, false, 1.0));
  RN_ASSIGN_OR_RETURN(d.program_overhead_s, named.number("program_overhead_s", false, 0.0, 0, false, 1.0));
  RN_ASSIGN_OR_RETURN(d.pass_overhead_s, named.number("pass_overhead_s", false, 0.0, 0, false, 1.0));
  RN_ASSIGN_OR_RETURN(d.reliability, named.number("reliability", false, 1.0, 0, false, 1.0));
  RN_ASSIGN_OR_RETURN(const Json* role, named.field("role", false));
  if (role) {
    if (!role->is_string()) return named.fail("role", "expected a string, found " + role->describe());
    if (role->as_string() == "worker") {
      d.role = DeviceRole::kWorker;
    } else if (role->as_string() == "backup") {
      d.role = DeviceRole::kBackup;
    } else {
      return named.fail("role", "'" + role->as_string() + "' is not a role; use \"worker\" or \"backup\"");
    }
  }
  RN_ASSIGN_OR_RETURN(const Json::Array* links, named.array("links", false));
  if (links) {
    for (size_t i = 0; i < links->size(); ++i) {
      RN_ASSIGN_OR_RETURN(LinkProfile link, parse_link((*links)[i], named.where() + ": links[" + std::to_string(i) + "]"));
      d.links.push_back(std::move(link));
    }
  }
  RN_RETURN_IF_ERROR(named.finish());
  return d;
}

Result<DeviceSet> parse_devices(const Json& json, const std::string& where) {
  ObjectReader r(json, where);
  RN_RETURN_IF_ERROR(r.check_object());
  DeviceSet set;
  RN_ASSIGN_OR_RETURN(const Json::Array* devices, r.array("devices", true));
  if (devices->empty()) return r.fail("devices", "is empty; list at least one device");
  for (size_t i = 0; i < devices->size(); ++i) {
    RN_ASSIGN_OR_RETURN(DeviceProfile d, parse_device((*devices)[i], where + ": devices[" + std::to_string(i) + "]"));
    set.devices.push_back(std::move(d));
  }
  RN_ASSIGN_OR_RETURN(const Json::Array* links, r.array("links", false));
  if (links) {
    for (size_t i = 0; i < links->size(); ++i) {
      RN_ASSIGN_OR_RETURN(LinkEntry e, parse_link_entry((*links)[i], where + ": links[" + std::to_string(i) + "]"));
      set.links.push_back(std::move(e));
    }
  }
  RN_RETURN_IF_ERROR(r.finish());
  RN_RETURN_IF_ERROR(validate_set(set, where));
  return set;
}

Json device_to_json(const DeviceProfile& d) {
  Json j = Json::object();
  j.set("id", d.id);
  j.set("address", d.address);
  j.set("kind", device_kind_name(d.kind));
  j.set("cores", d.cores);
  j.set("gemm_gflops", d.gemm_gflops);
  j.set("conv_gflops", d.conv_gflops);
  if (d.conv_narrow_gflops > 0) j.set("conv_narrow_gflops", d.conv_narrow_gflops);
  if (d.conv_narrow_grad_weight_gflops > 0) j.set("conv_narrow_grad_weight_gflops", d.conv_narrow_grad_weight_gflops);
  j.set("memory_bandwidth_gbps", d.memory_bandwidth_gbps);
  j.set("memory_bytes", d.memory_bytes);
  if (d.kernel_overhead_s > 0) j.set("kernel_overhead_s", d.kernel_overhead_s);
  if (d.program_overhead_s > 0) j.set("program_overhead_s", d.program_overhead_s);
  if (d.pass_overhead_s > 0) j.set("pass_overhead_s", d.pass_overhead_s);
  Json links = Json::array();
  for (const LinkProfile& l : d.links) links.push_back(link_json(l.peer, l.bandwidth_bps, l.latency_s));
  j.set("links", std::move(links));
  j.set("reliability", d.reliability);
  j.set("role", device_role_name(d.role));
  return j;
}

Json devices_to_json(const DeviceSet& set) {
  Json j = Json::object();
  Json devices = Json::array();
  for (const DeviceProfile& d : set.devices) devices.push_back(device_to_json(d));
  j.set("devices", std::move(devices));
  if (!set.links.empty()) {
    Json links = Json::array();
    for (const LinkEntry& e : set.links) {
      Json entry = Json::object();
      entry.set("a", e.a);
      entry.set("b", e.b);
      entry.set("bandwidth_bps", e.bandwidth_bps);
      entry.set("latency_s", e.latency_s);
      links.push_back(std::move(entry));
    }
    j.set("links", std::move(links));
  }
  return j;
}

Result<DeviceProfile> load_device_profile(const std::string& path) {
  RN_ASSIGN_OR_RETURN(Json json, read_json_file(path));
  return parse_device(json, path);
}

Result<DeviceSet> load_devices(const std::string& path) {
  RN_ASSIGN_OR_RETURN(Json json, read_json_file(path));
  return parse_devices(json, path);
}

Result<DeviceSet> combine_profiles(std::vector<DeviceProfile> profiles) {
  DeviceSet set;
  set.devices = std::move(profiles);
  if (set.devices.empty()) return error(Code::kInvalidArgument, "no device profiles given; pass at least one");
  RN_RETURN_IF_ERROR(validate_set(set, "device profiles"));
  return set;
}

}  // namespace ravnest::part
