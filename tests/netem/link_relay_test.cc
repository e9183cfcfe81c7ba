// The link emulator: through a relay at 100 Mbit/s and 20 ms one way, a small
// ping-pong never beats the 40 ms round trip and a 20 MB transfer never beats
// 100 Mbit/s (behaviour checks of the emulator: a busy host may only make them
// slower, so the lower sides are loose — 1.5x the delay, half the rate — and the
// measured numbers are printed; precise figures belong in benchmarks); rates
// apply per direction; closes and resets propagate; data
// survives emulated loss; the links file's errors name the field. Plain blocking
// sockets on 127.0.0.1 with 5 s timeouts bound every wait.
#include "runtime/netem/link_relay.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "runtime/netem/links.h"

namespace ravnest::rt {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kWaitMs = 5000;  // bound of every socket wait in these tests

void bound_waits(int fd) {
  timeval tv{kWaitMs / 1000, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// A listening socket on 127.0.0.1 (any port) that accepts one connection at a time.
class Server {
 public:
  Server() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(listen(fd_, 8), 0);
    socklen_t len = sizeof addr;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~Server() { close(fd_); }
  uint16_t port() const { return port_; }
  int accept_one() {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, kWaitMs) != 1) return -1;
    int fd = accept(fd_, nullptr, nullptr);
    if (fd >= 0) bound_waits(fd);
    return fd;
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

int dial(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  bound_waits(fd);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  return fd;
}

bool send_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool recv_all(int fd, char* data, size_t n) {
  while (n > 0) {
    ssize_t r = recv(fd, data, n, 0);
    if (r <= 0) return false;
    data += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

LinkDirection dir(double mbit, int delay_ms, double loss = 0) {
  return LinkDirection{mbit * 1e6, std::chrono::milliseconds(delay_ms), loss};
}

std::unique_ptr<LinkRelay> relay_to(const Server& server, LinkDirection forward, LinkDirection backward,
                                    std::vector<LinkChange> changes = {}) {
  LinkRelayOptions options;
  options.name = "test link";
  options.target_port = server.port();
  options.forward = forward;
  options.backward = backward;
  options.changes = std::move(changes);
  auto relay = LinkRelay::start(options);
  EXPECT_TRUE(relay.ok()) << relay.status().to_string();
  return relay.ok() ? std::move(relay).value() : nullptr;
}

// Sends `bytes` from `from` to `to` and returns the payload goodput in Mbit/s,
// timed from the first send to the last byte received.
double transfer_mbit(int from, int to, size_t bytes) {
  std::vector<char> out(bytes), in(bytes);
  for (size_t i = 0; i < bytes; ++i) out[i] = static_cast<char>(i * 131 + 7);
  std::atomic<bool> sent{false};
  auto start = Clock::now();
  std::thread sender([&] { sent = send_all(from, out.data(), out.size()); });
  bool got = recv_all(to, in.data(), in.size());
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  sender.join();
  EXPECT_TRUE(sent && got);
  EXPECT_TRUE(in == out) << "bytes changed on the way";
  return bytes * 8 / seconds / 1e6;
}

// The relay counts a write just after it returns, so a reader may see the bytes
// first: wait (at most 1 s) for the counters to reach what was received.
LinkRelayStats stats_after_writes(const LinkRelay& relay, uint64_t forward, uint64_t backward) {
  for (int i = 0; i < 100; ++i) {
    LinkRelayStats s = relay.stats();
    if (s.forward_bytes >= forward && s.backward_bytes >= backward) return s;
    std::this_thread::sleep_for(10ms);
  }
  return relay.stats();
}

// Waits (at most 1 s) until the relay has closed every connection.
bool all_closed(const LinkRelay& relay) {
  for (int i = 0; i < 100 && relay.stats().open != 0; ++i) std::this_thread::sleep_for(10ms);
  return relay.stats().connections > 0 && relay.stats().open == 0;
}

TEST(LinkRelay, SmallMessagesTakeTheRoundTripDelay) {
  Server server;
  auto relay = relay_to(server, dir(100, 20), dir(100, 20));
  ASSERT_TRUE(relay);
  int client = dial(relay->port());
  int peer = server.accept_one();
  ASSERT_GE(peer, 0);
  std::vector<double> rtts;
  char msg[64] = "ping";
  for (int i = 0; i < 15; ++i) {
    auto t0 = Clock::now();
    ASSERT_TRUE(send_all(client, msg, sizeof msg));
    ASSERT_TRUE(recv_all(peer, msg, sizeof msg));
    ASSERT_TRUE(send_all(peer, msg, sizeof msg));
    ASSERT_TRUE(recv_all(client, msg, sizeof msg));
    rtts.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(rtts.begin(), rtts.end());
  std::printf("[ measured ] round trip through 2 x 20 ms: min %.2f ms, median %.2f, max %.2f\n", rtts.front(),
              rtts[rtts.size() / 2], rtts.back());
  RecordProperty("rtt_ms", std::to_string(rtts.front()));
  // The host only adds delay (a busy CPU wakes threads late), so the smallest
  // sample is the link's: never below 40 ms; a loaded host may add some.
  EXPECT_GE(rtts.front(), 40.0);
  EXPECT_LE(rtts.front(), 60.0);
  close(client);
  close(peer);
}

TEST(LinkRelay, BulkTransferRunsAtTheRate) {
  Server server;
  auto relay = relay_to(server, dir(100, 20), dir(100, 20));
  ASSERT_TRUE(relay);
  int client = dial(relay->port());
  int peer = server.accept_one();
  ASSERT_GE(peer, 0);
  double mbit = transfer_mbit(client, peer, 20 << 20);
  std::printf("[ measured ] 20 MiB through 100 Mbit/s, 20 ms: %.1f Mbit/s goodput\n", mbit);
  RecordProperty("goodput_mbit", std::to_string(mbit));
  EXPECT_LE(mbit, 110.0);  // the cap holds (10% for timer granularity)
  EXPECT_GE(mbit, 50.0);   // and the relay is not stalling (a loaded host only slows it)
  EXPECT_EQ(stats_after_writes(*relay, uint64_t{20} << 20, 0).forward_bytes, uint64_t{20} << 20);
  close(client);
  close(peer);
}

// An outage holds the bytes that would cross it until it ends, and the
// connection survives: a message sent inside a 1.5 s outage arrives after it
// (lower bounds only: a loaded host can add delay, never remove it).
TEST(LinkRelay, OutageHoldsDataUntilTheLinkIsBack) {
  Server server;
  const auto start = Clock::now();
  auto relay = relay_to(server, dir(100, 1), dir(100, 1), {LinkChange{400ms, 1500ms, 0}});
  ASSERT_TRUE(relay);
  int client = dial(relay->port());
  int peer = server.accept_one();
  ASSERT_GE(peer, 0);
  char msg[64] = "before";
  ASSERT_TRUE(send_all(client, msg, sizeof msg));
  ASSERT_TRUE(recv_all(peer, msg, sizeof msg));
  std::this_thread::sleep_until(start + 600ms);
  std::snprintf(msg, sizeof msg, "during");
  ASSERT_TRUE(send_all(client, msg, sizeof msg));
  ASSERT_TRUE(recv_all(peer, msg, sizeof msg));
  const double arrived_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("[ measured ] sent 0.6 s into the run, inside a 0.4 s + 1.5 s outage: arrived at %.3f s\n", arrived_s);
  EXPECT_STREQ(msg, "during");
  EXPECT_GE(arrived_s, 1.9);
  // Back up: the same connection carries the reply.
  ASSERT_TRUE(send_all(peer, msg, sizeof msg));
  ASSERT_TRUE(recv_all(client, msg, sizeof msg));
  EXPECT_EQ(relay->stats().connections, 1u);
  close(client);
  close(peer);
}

// A rate change in force scales the rate: 2 MiB at 100 Mbit/s x 0.1 take at least ~1.6 s.
TEST(LinkRelay, RateChangeScalesTheRate) {
  Server server;
  auto relay = relay_to(server, dir(100, 1), dir(100, 1), {LinkChange{0ms, 0ms, 0.1}});
  ASSERT_TRUE(relay);
  int client = dial(relay->port());
  int peer = server.accept_one();
  ASSERT_GE(peer, 0);
  double mbit = transfer_mbit(client, peer, 2 << 20);
  std::printf("[ measured ] 2 MiB through 100 Mbit/s scaled by 0.1: %.1f Mbit/s goodput\n", mbit);
  EXPECT_LE(mbit, 11.0);
  close(client);
  close(peer);
  LinkRelayOptions bad;
  bad.target_port = server.port();
  bad.changes = {LinkChange{0ms, 0ms, -1}};
  auto refused = LinkRelay::start(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("rate scale"), std::string::npos) << refused.status().to_string();
}

// Without a rate or delay the relay is a plain pipe: 64 MiB arrive intact (the
// rate is printed for information, not checked: speed belongs in benchmarks).
TEST(LinkRelay, UnlimitedRelayCarries64MiBIntact) {
  Server server;
  auto relay = relay_to(server, dir(0, 0), dir(0, 0));
  ASSERT_TRUE(relay);
  int client = dial(relay->port());
  int peer = server.accept_one();
  ASSERT_GE(peer, 0);
  double mbit = transfer_mbit(client, peer, 64 << 20);
  std::printf("[ measured ] 64 MiB through an unlimited relay: %.0f Mbit/s\n", mbit);
  close(client);
  close(peer);
}

TEST(LinkRelay, RatesApplyPerDirection) {
  Server server;
  auto relay = relay_to(server, dir(100, 0), dir(25, 0));
  ASSERT_TRUE(relay);
  int client = dial(relay->port());
  int peer = server.accept_one();
  ASSERT_GE(peer, 0);
  double up = transfer_mbit(client, peer, 4 << 20);
  double down = transfer_mbit(peer, client, 2 << 20);
  std::printf("[ measured ] 100 Mbit/s forward: %.1f Mbit/s; 25 Mbit/s backward: %.1f Mbit/s\n", up, down);
  EXPECT_LE(up, 110.0);
  EXPECT_GE(up, 50.0);
  EXPECT_LE(down, 27.5);
  EXPECT_GE(down, 12.5);
  EXPECT_LT(down, up);  // each direction has its own rate
  LinkRelayStats stats = stats_after_writes(*relay, uint64_t{4} << 20, uint64_t{2} << 20);
  EXPECT_EQ(stats.forward_bytes, uint64_t{4} << 20);
  EXPECT_EQ(stats.backward_bytes, uint64_t{2} << 20);
  close(client);
  close(peer);
}

// The target sends data and closes: the client gets all of it, then EOF; the
// client's close then reaches the target as EOF too.
TEST(LinkRelay, CloseOfEitherSidePropagatesBehindTheData) {
  Server server;
  auto relay = relay_to(server, dir(1000, 5), dir(1000, 5));
  ASSERT_TRUE(relay);
  int client = dial(relay->port());
  int peer = server.accept_one();
  ASSERT_GE(peer, 0);
  std::vector<char> data(100000, 'x'), got(data.size());
  ASSERT_TRUE(send_all(peer, data.data(), data.size()));
  shutdown(peer, SHUT_WR);
  ASSERT_TRUE(recv_all(client, got.data(), got.size()));
  char c;
  EXPECT_EQ(recv(client, &c, 1, 0), 0) << "expected EOF after the data, got " << std::strerror(errno);
  close(client);
  EXPECT_EQ(recv(peer, &c, 1, 0), 0) << "expected EOF at the target, got " << std::strerror(errno);
  close(peer);
  // The relay ends the connection once both closes are through.
  EXPECT_TRUE(all_closed(*relay));
}

TEST(LinkRelay, ResetOfTheTargetResetsTheClient) {
  Server server;
  auto relay = relay_to(server, dir(100, 5), dir(100, 5));
  ASSERT_TRUE(relay);
  int client = dial(relay->port());
  int peer = server.accept_one();
  ASSERT_GE(peer, 0);
  linger lin{1, 0};
  setsockopt(peer, SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
  close(peer);  // RST
  char c;
  errno = 0;
  ssize_t n = recv(client, &c, 1, 0);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(errno, ECONNRESET) << std::strerror(errno);
  EXPECT_TRUE(all_closed(*relay));
  close(client);
}

TEST(LinkRelay, UnreachableTargetResetsTheClientAfterConnectTimeout) {
  uint16_t dead_port;
  {
    Server s;
    dead_port = s.port();
  }  // closed: connections to it are refused
  LinkRelayOptions options;
  options.target_port = dead_port;
  options.connect_timeout = 300ms;
  auto relay = LinkRelay::start(options);
  ASSERT_TRUE(relay.ok()) << relay.status().to_string();
  int client = dial((*relay)->port());
  char c;
  EXPECT_LE(recv(client, &c, 1, 0), 0);
  EXPECT_NE(errno, EAGAIN) << "timed out instead of being reset";
  close(client);
}

TEST(LinkRelay, LossDelaysButNeverCorrupts) {
  Server server;
  LinkRelayOptions options;
  options.target_port = server.port();
  options.forward = dir(1000, 1, 0.05);
  options.backward = dir(1000, 1);
  options.rto = 20ms;
  options.seed = 42;
  auto relay = LinkRelay::start(options);
  ASSERT_TRUE(relay.ok()) << relay.status().to_string();
  int client = dial((*relay)->port());
  int peer = server.accept_one();
  ASSERT_GE(peer, 0);
  transfer_mbit(client, peer, 1 << 20);  // checks every byte
  EXPECT_GT((*relay)->stats().lost_chunks, 0u);
  EXPECT_EQ((*relay)->stats().backward_bytes, 0u);
  close(client);
  close(peer);
}

TEST(LinkRelay, StopsWithOpenConnections) {
  Server server;
  auto relay = relay_to(server, dir(10, 50), dir(10, 50));
  ASSERT_TRUE(relay);
  int client = dial(relay->port());
  int peer = server.accept_one();
  ASSERT_GE(peer, 0);
  std::vector<char> data(1 << 20, 'y');
  ASSERT_TRUE(send_all(client, data.data(), 200000));  // still queued in the relay
  EXPECT_EQ(relay->stats().open, 1u);
  auto t0 = Clock::now();
  relay.reset();
  EXPECT_LT(Clock::now() - t0, 2s) << "the destructor must not wait for the queue";
  char c;
  EXPECT_LE(recv(client, &c, 1, 0), 0);
  close(client);
  close(peer);
}

TEST(LinkRelay, BadOptionsNameTheField) {
  LinkRelayOptions options;
  options.name = "link a -> b";
  options.target_port = 1;
  options.forward = dir(-5, 10);
  auto relay = LinkRelay::start(options);
  ASSERT_FALSE(relay.ok());
  EXPECT_EQ(relay.status().code(), Code::kInvalidArgument);
  EXPECT_NE(relay.status().message().find("link a -> b (forward): rate"), std::string::npos)
      << relay.status().message();
  options.forward = dir(5, 10, 1.5);
  relay = LinkRelay::start(options);
  ASSERT_FALSE(relay.ok());
  EXPECT_NE(relay.status().message().find("loss"), std::string::npos) << relay.status().message();
}

// ------------------------------------------------------------------ links file

Result<std::map<std::string, NodeLink>> parse(const std::string& text) {
  auto json = parse_json(text);
  EXPECT_TRUE(json.ok()) << json.status().to_string();
  return parse_links(*json, {"node0", "node1"}, "links.json");
}

::testing::AssertionResult fails_naming(const std::string& text, Code code, const std::string& part) {
  auto r = parse(text);
  if (r.ok()) return ::testing::AssertionFailure() << "expected an error for " << text;
  if (r.status().code() != code) return ::testing::AssertionFailure() << "wrong code: " << r.status().to_string();
  if (r.status().message().find(part) == std::string::npos)
    return ::testing::AssertionFailure() << "message lacks '" << part << "': " << r.status().message();
  return ::testing::AssertionSuccess();
}

TEST(LinksFile, NodesInheritTheDefaultFieldByField) {
  auto links = parse(R"({"default": {"up_mbit": 100, "down_mbit": 100, "delay_ms": 20, "loss": 0},
                         "nodes": {"node1": {"up_mbit": 10, "delay_ms": 5}}})");
  ASSERT_TRUE(links.ok()) << links.status().to_string();
  const NodeLink& n0 = links->at("node0");
  const NodeLink& n1 = links->at("node1");
  EXPECT_EQ(n0.up_mbit, 100);
  EXPECT_EQ(n0.delay_ms, 20);
  EXPECT_EQ(n1.up_mbit, 10);
  EXPECT_EQ(n1.down_mbit, 100);
  EXPECT_EQ(n1.delay_ms, 5);
  // a -> b: min(up_a, down_b) forward, min(up_b, down_a) backward, delays add.
  auto [forward, backward] = pipeline_link(n0, n1);
  EXPECT_EQ(forward.rate_bps, 100e6);
  EXPECT_EQ(backward.rate_bps, 10e6);
  EXPECT_EQ(forward.delay, 25ms);
  EXPECT_EQ(backward.delay, 25ms);
  EXPECT_EQ(forward.loss, 0);
}

TEST(LinksFile, ErrorsNameTheField) {
  EXPECT_TRUE(fails_naming(R"({"default": {"up_mbit": -1, "down_mbit": 1, "delay_ms": 1}})", Code::kInvalidArgument,
                           "links.json: default.up_mbit: found number -1"));
  EXPECT_TRUE(fails_naming(R"({"default": {"up_mbit": 1, "down_mbit": 1, "delay_ms": 1},
                               "nodes": {"node1": {"down_mbit": 0}}})",
                           Code::kInvalidArgument, "nodes.node1.down_mbit"));
  EXPECT_TRUE(fails_naming(R"({"default": {"up_mbit": 1, "down_mbit": 1, "delay_ms": 1},
                               "nodes": {"node7": {"up_mbit": 5}}})",
                           Code::kNotFound, "nodes.node7: unknown node; this run has node0, node1"));
  EXPECT_TRUE(fails_naming(R"({"default": {"up_mbit": 1, "down_mbit": 1, "delay": 1}})", Code::kInvalidArgument,
                           "default.delay: unknown field"));
  EXPECT_TRUE(fails_naming(R"({"nodes": {"node0": {"up_mbit": 1, "down_mbit": 1, "delay_ms": 1}}})",
                           Code::kInvalidArgument, "nodes.node1.up_mbit: not given"));
  EXPECT_TRUE(fails_naming(R"({"default": {"up_mbit": 1, "down_mbit": 1, "delay_ms": 1, "loss": 0.9}})",
                           Code::kInvalidArgument, "default.loss"));
  EXPECT_TRUE(fails_naming(R"({"defaults": {}})", Code::kInvalidArgument, "defaults: unknown key"));
  EXPECT_TRUE(fails_naming(R"({"default": {"up_mbit": 1, "down_mbit": 1, "delay_ms": 1,
                                           "changes": [{"at_s": 1, "down": true, "rate_scale": 0.5}]}})",
                           Code::kInvalidArgument, "default.changes[0]: give exactly one of"));
  EXPECT_TRUE(fails_naming(R"({"default": {"up_mbit": 1, "down_mbit": 1, "delay_ms": 1,
                                           "changes": [{"at_s": -2, "down": true}]}})",
                           Code::kInvalidArgument, "default.changes[0].at_s: found number -2"));
  EXPECT_TRUE(fails_naming(R"({"default": {"up_mbit": 1, "down_mbit": 1, "delay_ms": 1, "changes": {}}})",
                           Code::kInvalidArgument, "default.changes: expected an array"));
}

// Scheduled changes: a node's own list, else the default's; a link gets both ends' changes.
TEST(LinksFile, ChangesOfBothEndsApply) {
  auto links = parse(R"({"default": {"up_mbit": 100, "down_mbit": 100, "delay_ms": 20,
                                     "changes": [{"at_s": 2, "rate_scale": 0.5}]},
                         "nodes": {"node1": {"changes": [{"at_s": 5, "for_s": 10, "down": true}]}}})");
  ASSERT_TRUE(links.ok()) << links.status().to_string();
  ASSERT_EQ(links->at("node0").changes.size(), 1u);
  EXPECT_EQ(links->at("node0").changes[0].at, 2000ms);
  EXPECT_EQ(links->at("node0").changes[0].rate_scale, 0.5);
  ASSERT_EQ(links->at("node1").changes.size(), 1u);
  EXPECT_EQ(links->at("node1").changes[0].duration, 10000ms);
  EXPECT_EQ(links->at("node1").changes[0].rate_scale, 0);
  EXPECT_EQ(links->at("node1").changes[0].describe(), "down from 5 s for 10 s");
}

}  // namespace
}  // namespace ravnest::rt
