// Liveness and joining in the TCP transport: heartbeats keep idle connections alive
// past their deadline; a peer that completed its handshake and then went silent (a
// frozen process, emulated by a raw socket that stays open and never writes) fails a
// pending recv() with kNetwork naming the heartbeat deadline; a large frame trickling
// through a rate-capped relay counts as liveness; heartbeat_interval 0 disables the
// deadline. Joining: a node with an empty run id joins through a node that accepts
// joiners, adopts its run id and then accepts members of the run; a node that does not
// accept joiners refuses with a reason. Every wait is bounded; traffic only on 127.0.0.1.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/json.h"
#include "runtime/netem/link_relay.h"
#include "runtime/transport/crc32c.h"
#include "runtime/transport/frame.h"
#include "runtime/transport/transport.h"
#include "tests/runtime/raw_client.h"
#include "tests/status_assertions.h"

namespace ravnest::rt {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 5s;  // bound of every handshake and small-frame wait

// Heartbeats fast enough for a test: interval 50 ms, the deadline's floor `floor`.
TransportOptions live_options(const std::string& node, std::chrono::milliseconds floor,
                              const std::string& run = "run-1") {
  TransportOptions o;
  o.node_id = node;
  o.run_id = run;
  o.heartbeat_interval = 50ms;
  o.heartbeat_min_timeout = floor;
  return o;
}

using testing::fails_with;

Tensor numbered_bytes(size_t n, uint8_t seed) {
  Tensor t = Tensor::empty(DType::kU8, {static_cast<int64_t>(n)});
  auto* b = t.data<uint8_t>();
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i * 131 + seed + (i >> 16));
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

FrameMeta act(uint64_t step) {
  return FrameMeta{FrameKind::kActivation, step, 0, 0};
}

// Sends a small frame from `from` to `to` (known there as `from_id`) and checks it arrives intact.
::testing::AssertionResult frame_goes_through(Transport& from, Transport& to, uint64_t step) {
  Tensor t = numbered_bytes(1000, static_cast<uint8_t>(step));
  Status st = from.send(to.node_id(), act(step), t);
  if (!st.ok()) return ::testing::AssertionFailure() << "send: " << st.to_string();
  Result<Tensor> got = to.recv(from.node_id(), act(step), deadline_after(kWait));
  if (!got.ok()) return ::testing::AssertionFailure() << "recv: " << got.status().to_string();
  if (!same_bytes(*got, t)) return ::testing::AssertionFailure() << "bytes differ";
  return ::testing::AssertionSuccess();
}

// A peer that completes the HELLO handshake by hand and then never writes again while
// keeping its socket open: to the transport it looks like a frozen process whose
// kernel still ACKs.
class SilentPeer {
 public:
  SilentPeer(uint16_t port, const std::string& node, const std::string& run) : client_(port) {
    if (!client_.connected()) return;
    client_.send_hello(node, run);
    Result<Json> answer = client_.read_hello();
    accepted_ = answer.ok() && answer->get_bool("accepted").ok() && *answer->get_bool("accepted");
  }
  bool accepted() const { return accepted_; }

 private:
  RawClient client_;
  bool accepted_ = false;
};

// ------------------------------------------------------------------ heartbeats

TEST(Heartbeat, IdleConnectionsOutliveTheirDeadline) {
  Transport a(live_options("a", 300ms));
  Transport b(live_options("b", 300ms));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  ASSERT_TRUE(b.connect("a", "127.0.0.1", a.port(), deadline_after(kWait)).ok());
  ASSERT_TRUE(a.wait_for_peer("b", deadline_after(kWait)).ok());
  // Three deadlines of silence from the callers: only heartbeats cross the link.
  std::this_thread::sleep_for(900ms);
  EXPECT_EQ(a.connected_peers(), std::vector<std::string>{"b"});
  EXPECT_EQ(b.connected_peers(), std::vector<std::string>{"a"});
  EXPECT_TRUE(frame_goes_through(b, a, 1));
  EXPECT_TRUE(frame_goes_through(a, b, 2));
  // Heartbeats are not send() frames: they are in no statistics.
  EXPECT_EQ(a.sent(FrameKind::kHeartbeat).frames, 0u);
  EXPECT_TRUE(a.stats().count(TrafficKey{"b", FrameKind::kHeartbeat}) == 0);
}

TEST(Heartbeat, FrozenPeerFailsRecvWithNetworkErrorNamingTheDeadline) {
  Transport a(live_options("a", 300ms));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  SilentPeer frozen(a.port(), "frozen", "run-1");
  ASSERT_TRUE(frozen.accepted());
  ASSERT_TRUE(a.wait_for_peer("frozen", deadline_after(kWait)).ok());
  // The deadline (30 s) is far beyond the heartbeat deadline: the failure must be the silence, not a timeout.
  Result<Tensor> r = a.recv("frozen", act(0), deadline_after(30s));
  EXPECT_TRUE(fails_with(r.status(), Code::kNetwork,
                         {"peer 'frozen' (127.0.0.1:", "sent nothing for", "heartbeat deadline of 300 ms",
                          "heartbeat_min_timeout", "frozen or overloaded, or its link is down"}));
  EXPECT_TRUE(a.connected_peers().empty());
  // Later sends fail at once with the same reason.
  EXPECT_TRUE(fails_with(a.send("frozen", act(1), numbered_bytes(8, 1)), Code::kNetwork, {"heartbeat deadline"}));
}

TEST(Heartbeat, IntervalZeroDisablesTheDeadline) {
  TransportOptions o = live_options("a", 100ms);
  o.heartbeat_interval = 0ms;
  Transport a(o);
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  SilentPeer silent(a.port(), "silent", "run-1");
  ASSERT_TRUE(silent.accepted());
  ASSERT_TRUE(a.wait_for_peer("silent", deadline_after(kWait)).ok());
  // Far past the 100 ms floor, the silent peer is still connected: the wait ends by its own deadline.
  Result<Tensor> r = a.recv("silent", act(0), deadline_after(600ms));
  EXPECT_TRUE(fails_with(r.status(), Code::kTimeout, {"peer 'silent'", "the peer is connected"}));
  EXPECT_EQ(a.connected_peers(), std::vector<std::string>{"silent"});
}

TEST(Heartbeat, ALargeFrameOnASlowLinkCountsAsLiveness) {
  std::unique_ptr<LinkRelay> relay;  // outlives both transports, so that their BYEs cross it
  Transport a(live_options("a", 500ms));
  Transport b(live_options("b", 500ms));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  // b -> a at 4 MB/s: a 16 MiB frame takes about 4 s, eight deadlines, in one read.
  LinkRelayOptions link;
  link.name = "slow link";
  link.target_port = a.port();
  link.forward.rate_bps = 32e6;
  Result<std::unique_ptr<LinkRelay>> started = LinkRelay::start(link);
  ASSERT_TRUE(started.ok()) << started.status().to_string();
  relay = std::move(started).value();
  ASSERT_TRUE(b.connect("a", "127.0.0.1", relay->port(), deadline_after(kWait)).ok());
  ASSERT_TRUE(a.wait_for_peer("b", deadline_after(kWait)).ok());
  Tensor big = numbered_bytes(size_t{16} << 20, 7);
  ASSERT_TRUE(b.send("a", act(5), big).ok());
  Result<Tensor> got = a.recv("b", act(5), deadline_after(60s));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_TRUE(same_bytes(*got, big));
  EXPECT_TRUE(b.flush(deadline_after(kWait)).ok());
  EXPECT_EQ(a.connected_peers(), std::vector<std::string>{"b"});
  EXPECT_TRUE(frame_goes_through(a, b, 6));
}

// ------------------------------------------------------------------ joining

TEST(Heartbeat, JoiningNodeAdoptsTheRunAndIsReportedOnce) {
  TransportOptions host_options = live_options("a", 15s);
  host_options.accept_joiners = true;
  Transport a(host_options);
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  Transport j(live_options("j", 15s, /*run=*/""));
  ASSERT_TRUE(j.listen("127.0.0.1", 0).ok());
  EXPECT_EQ(j.run_id(), "");

  // Before it joined, the joiner accepts nobody.
  Transport c(live_options("c", 15s));
  Status early = c.connect("j", "127.0.0.1", j.port(), deadline_after(kWait));
  EXPECT_TRUE(fails_with(early, Code::kInvalidArgument, {"refused the handshake", "has not joined a run yet"}));

  ASSERT_TRUE(j.connect("a", "127.0.0.1", a.port(), deadline_after(kWait)).ok());
  ASSERT_TRUE(a.wait_for_peer("j", deadline_after(kWait)).ok());
  EXPECT_EQ(j.run_id(), "run-1");
  EXPECT_EQ(a.run_id(), "run-1");
  EXPECT_TRUE(frame_goes_through(j, a, 1));
  EXPECT_TRUE(frame_goes_through(a, j, 2));
  EXPECT_EQ(a.take_joiners(), std::vector<std::string>{"j"});
  EXPECT_TRUE(a.take_joiners().empty());

  // Joined: a member of the run connects to it like to any peer, and is no joiner.
  ASSERT_TRUE(c.connect("j", "127.0.0.1", j.port(), deadline_after(kWait)).ok());
  ASSERT_TRUE(j.wait_for_peer("c", deadline_after(kWait)).ok());
  EXPECT_TRUE(frame_goes_through(c, j, 3));
  EXPECT_TRUE(j.take_joiners().empty());
}

TEST(Heartbeat, NodeWithoutAcceptJoinersRefusesAJoiner) {
  Transport a(live_options("a", 15s));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  Transport j(live_options("j", 15s, /*run=*/""));
  // Not retried: a refusal ends connect() with the listener's reason, not with kTimeout.
  Status st = j.connect("a", "127.0.0.1", a.port(), deadline_after(kWait));
  EXPECT_TRUE(fails_with(
      st, Code::kInvalidArgument,
      {"peer 'a'", "refused the handshake", "asked to join run 'run-1'", "node 'a' does not accept joining nodes"}));
  EXPECT_EQ(j.run_id(), "");
  EXPECT_TRUE(a.connected_peers().empty());
  EXPECT_TRUE(a.take_joiners().empty());
  std::vector<Status> refused = a.refused_connections();
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_TRUE(fails_with(refused[0], Code::kInvalidArgument, {"peer 'j'", "does not accept joining nodes"}));
}

}  // namespace
}  // namespace ravnest::rt
