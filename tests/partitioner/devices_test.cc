// The device-profile loader is strict (unknown keys, missing fields, negative
// numbers, unknown peers are errors naming the device and field) and round-trips.
#include <gtest/gtest.h>

#include "partitioner/devices.h"

namespace ravnest::part {
namespace {

Json device(const std::string& id, const std::string& address) {
  Json d = Json::object();
  d.set("id", id);
  d.set("address", address);
  d.set("kind", "cpu");
  d.set("cores", 8);
  d.set("gemm_gflops", 120.5);
  d.set("conv_gflops", 80.0);
  d.set("memory_bandwidth_gbps", 12.0);
  d.set("memory_bytes", int64_t{16} << 30);
  return d;
}

Json link(const std::string& peer, double bps, double latency) {
  Json l = Json::object();
  l.set("peer", peer);
  l.set("bandwidth_bps", bps);
  l.set("latency_s", latency);
  return l;
}

Json two_devices() {
  Json a = device("a", "10.0.0.1:29500");
  Json links = Json::array();
  links.push_back(link("b", 1e9, 1e-4));
  links.push_back(link("tracker", 1e8, 0.01));
  a.set("links", links);
  Json b = device("b", "10.0.0.2:29500");
  b.set("reliability", 0.9);
  b.set("role", "backup");
  Json doc = Json::object();
  Json devices = Json::array();
  devices.push_back(a);
  devices.push_back(b);
  doc.set("devices", devices);
  return doc;
}

std::string error_of(const Json& doc) {
  auto r = parse_devices(doc, "devices.json");
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : r.status().message();
}

TEST(Devices, ParsesEveryField) {
  auto set = parse_devices(two_devices(), "devices.json");
  ASSERT_TRUE(set.ok()) << set.status().message();
  ASSERT_EQ(set->devices.size(), 2u);
  const DeviceProfile& a = set->devices[0];
  EXPECT_EQ(a.id, "a");
  EXPECT_EQ(a.address, "10.0.0.1:29500");
  EXPECT_EQ(a.kind, DeviceKind::kCpu);
  EXPECT_EQ(a.cores, 8);
  EXPECT_DOUBLE_EQ(a.gemm_gflops, 120.5);
  EXPECT_DOUBLE_EQ(a.conv_gflops, 80.0);
  EXPECT_DOUBLE_EQ(a.memory_bandwidth_gbps, 12.0);
  EXPECT_EQ(a.memory_bytes, int64_t{16} << 30);
  ASSERT_EQ(a.links.size(), 2u);
  EXPECT_EQ(a.links[1].peer, "tracker");
  EXPECT_DOUBLE_EQ(a.reliability, 1.0);
  EXPECT_EQ(a.role, DeviceRole::kWorker);
  EXPECT_DOUBLE_EQ(set->devices[1].reliability, 0.9);
  EXPECT_EQ(set->devices[1].role, DeviceRole::kBackup);
}

TEST(Devices, RoundTrips) {
  auto set = parse_devices(two_devices(), "devices.json");
  ASSERT_TRUE(set.ok());
  Json again = devices_to_json(*set);
  auto reparsed = parse_devices(again, "again");
  ASSERT_TRUE(reparsed.ok()) << reparsed.status().message();
  EXPECT_EQ(devices_to_json(*reparsed), again);
  auto one = parse_device(device_to_json(set->devices[0]), "me.json");
  ASSERT_TRUE(one.ok()) << one.status().message();
  EXPECT_EQ(device_to_json(*one), device_to_json(set->devices[0]));
}

TEST(Devices, RejectsUnknownKeyNamingDeviceAndField) {
  Json doc = two_devices();
  Json b = device("b", "x:1");
  b.set("gemm_gflop", 3.0);  // typo
  Json devices = Json::array();
  devices.push_back(device("a", "y:1"));
  devices.push_back(b);
  doc.set("devices", devices);
  std::string msg = error_of(doc);
  EXPECT_NE(msg.find("devices[1] 'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gemm_gflop "), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a field"), std::string::npos) << msg;
}

TEST(Devices, RejectsMissingAndNegativeFields) {
  {
    Json d = device("a", "x:1");
    Json stripped = Json::object();
    for (const auto& [k, v] : d.members())
      if (k != "memory_bytes") stripped.set(k, v);
    auto r = parse_device(stripped, "me.json");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("'a': memory_bytes missing"), std::string::npos) << r.status().message();
  }
  {
    Json d = device("a", "x:1");
    d.set("conv_gflops", -1.0);
    auto r = parse_device(d, "me.json");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("conv_gflops"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("out of range"), std::string::npos) << r.status().message();
  }
  {
    Json d = device("a", "x:1");
    Json links = Json::array();
    links.push_back(link("tracker", 1e6, -0.5));
    d.set("links", links);
    auto r = parse_device(d, "me.json");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("links[0]: latency_s"), std::string::npos) << r.status().message();
  }
  {
    Json d = device("a", "x:1");
    d.set("reliability", 1.5);
    EXPECT_FALSE(parse_device(d, "me.json").ok());
    d.set("reliability", 0.5);
    d.set("kind", "tpu");
    EXPECT_FALSE(parse_device(d, "me.json").ok());
    d.set("kind", "cuda");
    d.set("cores", 2.5);
    EXPECT_FALSE(parse_device(d, "me.json").ok());
  }
}

TEST(Devices, RejectsDuplicateIdsAndUnknownPeers) {
  Json doc = Json::object();
  Json devices = Json::array();
  devices.push_back(device("a", "x:1"));
  devices.push_back(device("a", "x:2"));
  doc.set("devices", devices);
  EXPECT_NE(error_of(doc).find("unique"), std::string::npos);

  Json a = device("a", "x:1");
  Json links = Json::array();
  links.push_back(link("ghost", 1e9, 0));
  a.set("links", links);
  devices = Json::array();
  devices.push_back(a);
  doc.set("devices", devices);
  std::string msg = error_of(doc);
  EXPECT_NE(msg.find("links[0].peer 'ghost'"), std::string::npos) << msg;
}

TEST(Devices, LinkBetweenPrefersEntriesThenMeasurementsThenTracker) {
  auto set = parse_devices(two_devices(), "devices.json");
  ASSERT_TRUE(set.ok());
  LinkEstimate m = set->link_between(0, 1, default_link());
  EXPECT_EQ(m.source, "measured");
  EXPECT_DOUBLE_EQ(m.bandwidth_bps, 1e9);
  EXPECT_EQ(set->link_between(1, 0, default_link()).bandwidth_bps, m.bandwidth_bps);  // symmetric

  set->links.push_back({"a", "b", 5e6, 0.03});
  LinkEstimate e = set->link_between(1, 0, default_link());
  EXPECT_EQ(e.source, "links");
  EXPECT_DOUBLE_EQ(e.bandwidth_bps, 5e6);
  EXPECT_DOUBLE_EQ(e.transfer_seconds(5e6 / 8), 1.03);

  DeviceSet lone;
  lone.devices = set->devices;
  lone.devices[0].links = {{"tracker", 1e8, 0.01}};
  lone.devices[1].links = {{"tracker", 4e7, 0.02}};
  LinkEstimate t = lone.link_between(0, 1, default_link());
  EXPECT_EQ(t.source, "via tracker");
  EXPECT_DOUBLE_EQ(t.bandwidth_bps, 4e7);
  EXPECT_DOUBLE_EQ(t.latency_s, 0.03);
  lone.devices[1].links.clear();
  EXPECT_EQ(lone.link_between(0, 1, default_link()).source, "default");
}

TEST(Devices, CombineProfilesResolvesPeersByAddress) {
  DeviceProfile a, b;
  a.id = "a";
  a.address = "h1:1";
  b.id = "b";
  b.address = "h2:1";
  a.links = {{"h2:1", 2e9, 1e-4}};
  auto set = combine_profiles({a, b});
  ASSERT_TRUE(set.ok()) << set.status().message();
  EXPECT_EQ(set->link_between(0, 1, default_link()).source, "measured");
  a.links = {{"h3:1", 2e9, 1e-4}};
  EXPECT_FALSE(combine_profiles({a, b}).ok());
}

}  // namespace
}  // namespace ravnest::part
