// Device profiles: what the partitioner knows of each machine, and the strict
// loader of the files that describe them (docs/devices.md).
//
// Guarantees:
//  * A profile file holds one device object; a devices file holds
//    {"devices": [...], "links": [...]} (links optional). Every key is checked:
//    an unknown key, a missing field, a wrong type, a negative or non-finite
//    number, an empty id, a duplicate id, or a link to a peer that is neither
//    "tracker" nor a device of the file (by id or address) is kInvalidArgument
//    naming the file, the device and the field ("devices[2] 'gpu-b':
//    links[0].bandwidth_bps: ...").
//  * Every field a loaded profile has was read from the file or is the
//    documented default of an optional field (reliability 1, role worker).
//  * device_to_json() / devices_to_json() write what the loader reads back to an
//    equal value (tested).
//  * link_between() is symmetric and deterministic: a "links" entry wins, then
//    the two devices' own measurements of each other (the slower of the two when
//    both measured), then a path through the tracker (the slower hop's bandwidth,
//    the sum of latencies), then the caller's default; the result says which.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace ravnest::part {

enum class DeviceKind { kCpu, kCuda };
enum class DeviceRole { kWorker, kBackup };
const char* device_kind_name(DeviceKind kind);  // "cpu", "cuda"
const char* device_role_name(DeviceRole role);  // "worker", "backup"

// The peer name of the tracker in `links`.
inline constexpr const char* kTrackerPeer = "tracker";

// A measured link from the device that holds it to `peer`.
struct LinkProfile {
  std::string peer;          // a device id, a device address (host:port), or "tracker"
  double bandwidth_bps = 0;  // bits per second (> 0)
  double latency_s = 0;      // one-way, seconds (>= 0)
  double bytes_per_s() const { return bandwidth_bps / 8; }
};

struct DeviceProfile {
  std::string id;       // unique within a devices file
  std::string address;  // host:port the node will listen on
  DeviceKind kind = DeviceKind::kCpu;
  int64_t cores = 0;                 // >= 1
  double gemm_gflops = 0;            // measured fp32 GEMM, GFLOP/s (> 0)
  double conv_gflops = 0;            // measured fp32 convolution, GFLOP/s (> 0)
  // Optional (0: not measured): a convolution with one input channel (3x3, the first layer
  // of an image model), whose reduction of Cin * kh * kw = 9 runs far below conv_gflops.
  double conv_narrow_gflops = 0;
  // Optional (0: not measured, such weight gradients are predicted at conv_gflops): the weight
  // gradient (ConvGradWeight) of that one-input-channel convolution.
  double conv_narrow_grad_weight_gflops = 0;
  double memory_bandwidth_gbps = 0;  // measured copy bandwidth, GB/s = 1e9 bytes/s (> 0)
  int64_t memory_bytes = 0;          // memory available for training, bytes (> 0)
  // Measured run-time overheads (0: not measured, the cost model's defaults apply):
  // the executor's per kernel run and per program run (F, B or W), and the
  // trainer's per pass (F, B or W) beside its program's executor run.
  double kernel_overhead_s = 0;
  double program_overhead_s = 0;
  double pass_overhead_s = 0;
  std::vector<LinkProfile> links;
  double reliability = 1;  // 0..1: the fraction of time the machine is expected to stay
  DeviceRole role = DeviceRole::kWorker;
};

// A link between two devices as the partitioner will use it.
struct LinkEstimate {
  double bandwidth_bps = 0;
  double latency_s = 0;
  std::string source;  // "links", "measured", "via tracker", "default"
  double bytes_per_s() const { return bandwidth_bps / 8; }
  // latency + bytes / bandwidth.
  double transfer_seconds(double bytes) const { return latency_s + bytes / bytes_per_s(); }
};

// An entry of a devices file's "links": a link between two devices, both directions.
struct LinkEntry {
  std::string a, b;  // device ids
  double bandwidth_bps = 0;
  double latency_s = 0;
};

struct DeviceSet {
  std::vector<DeviceProfile> devices;
  std::vector<LinkEntry> links;

  // Index of the device with this id or address, or -1.
  int find(const std::string& id_or_address) const;
  // The link between devices[a] and devices[b] (a != b); see the file comment.
  LinkEstimate link_between(size_t a, size_t b, const LinkEstimate& fallback) const;
};

// The default link when nothing was measured: a home connection, 100 Mbit/s and 20 ms.
LinkEstimate default_link();

// One device object. `where` prefixes errors ("me.json", "devices.json: devices[3]").
Result<DeviceProfile> parse_device(const Json& json, const std::string& where);
// A devices document; peers of links must resolve within it.
Result<DeviceSet> parse_devices(const Json& json, const std::string& where);

Json device_to_json(const DeviceProfile& device);
Json devices_to_json(const DeviceSet& set);

// Files: a single profile (what `ravnest-rt profile` writes) or a devices file.
Result<DeviceProfile> load_device_profile(const std::string& path);
Result<DeviceSet> load_devices(const std::string& path);
// Several single profiles as one set (ids unique, peers resolved as for a devices file).
Result<DeviceSet> combine_profiles(std::vector<DeviceProfile> profiles);

}  // namespace ravnest::part
