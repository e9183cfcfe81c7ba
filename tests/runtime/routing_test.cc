// Adaptive ring routing: ring orders on synthetic hop-time matrices (a slow link is
// avoided, the exact search equals brute force over every permutation, the heuristic
// finds a hidden fast ring, the same matrix gives the same order), re-planning on a 2x
// slowdown, and the link probe on 127.0.0.1 (every member gets the same matrix; through
// emulated links the slow direction ranks slowest and the chosen order avoids it; a
// member that never probes fails the others at the deadline). Every wait is bounded.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/collectives/link_probe.h"
#include "runtime/collectives/ring_connect.h"
#include "runtime/collectives/ring_order.h"
#include "runtime/netem/link_relay.h"

namespace ravnest::rt {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 10s;  // bound of every network wait in these tests

HopTimes uniform(size_t n, double seconds) {
  return HopTimes{n, std::vector<double>(n * n, seconds)};
}

void set(HopTimes& t, size_t from, size_t to, double seconds) {
  t.seconds[from * t.n + to] = seconds;
}

bool is_permutation_from_zero(const std::vector<size_t>& order, size_t n) {
  std::vector<size_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  std::vector<size_t> expected(n);
  std::iota(expected.begin(), expected.end(), size_t{0});
  return sorted == expected && (n == 0 || order[0] == 0);
}

bool uses_hop(const std::vector<size_t>& order, size_t from, size_t to) {
  for (size_t k = 0; k < order.size(); ++k)
    if (order[k] == from && order[(k + 1) % order.size()] == to) return true;
  return false;
}

RingPlan plan(const HopTimes& times, RingPlanOptions options = {}) {
  auto got = plan_ring_order(times, options);
  EXPECT_TRUE(got.ok()) << got.status().to_string();
  return got.ok() ? std::move(got).value() : RingPlan{};
}

TEST(RingOrder, AvoidsASlowPairWhenAnotherRingExists) {
  HopTimes t = uniform(5, 1.0);
  set(t, 1, 2, 50.0);
  set(t, 2, 1, 50.0);
  RingPlan p = plan(t);
  ASSERT_TRUE(is_permutation_from_zero(p.order, 5));
  EXPECT_TRUE(p.exact);
  EXPECT_EQ(p.bottleneck_s, 1.0);
  EXPECT_EQ(p.total_s, 5.0);
  EXPECT_FALSE(uses_hop(p.order, 1, 2));
  EXPECT_FALSE(uses_hop(p.order, 2, 1));
  // The naive order 0,1,2,3,4 would have taken the slow hop.
  std::vector<size_t> naive{0, 1, 2, 3, 4};
  EXPECT_EQ(ring_bottleneck(t, naive), 50.0);
}

TEST(RingOrder, DirectionMattersWithThreeMembers) {
  // Every 3-ring uses each pair once, in one direction: take 1 -> 0 rather than 0 -> 1.
  HopTimes t = uniform(3, 1.0);
  set(t, 0, 1, 20.0);
  RingPlan p = plan(t);
  EXPECT_EQ(p.order, (std::vector<size_t>{0, 2, 1}));
  EXPECT_EQ(p.bottleneck_s, 1.0);
  // The ring order for RingOptions::members.
  EXPECT_EQ(ordered_members({"a", "b", "c"}, p.order), (std::vector<std::string>{"a", "c", "b"}));
}

TEST(RingOrder, TiesAreBrokenByTotalTime) {
  // Both rings have bottleneck 4; 0 -> 1 -> 2 totals 4 + 1 + 1, the other 4 + 3 + 3.
  HopTimes t = uniform(3, 0);
  set(t, 0, 1, 1);
  set(t, 1, 2, 1);
  set(t, 2, 0, 4);
  set(t, 0, 2, 4);
  set(t, 2, 1, 3);
  set(t, 1, 0, 3);
  RingPlan p = plan(t);
  EXPECT_EQ(p.order, (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(p.total_s, 6.0);
}

// Brute force over all n! permutations (member 0 not fixed), in the test's own code.
std::pair<double, double> brute_force_best(const HopTimes& t) {
  std::vector<size_t> order(t.n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::pair<double, double> best{std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity()};
  do {
    double worst = 0, total = 0;
    for (size_t k = 0; t.n > 1 && k < t.n; ++k) {
      double hop = t.at(order[k], order[(k + 1) % t.n]);
      worst = std::max(worst, hop);
      total += hop;
    }
    best = std::min(best, std::make_pair(worst, total));
  } while (std::next_permutation(order.begin(), order.end()));
  return best;
}

TEST(RingOrder, ExactSearchEqualsBruteForceOnRandomMatrices) {
  std::mt19937 gen(7);
  // Small integers give many ties (and exact sums); reals give none.
  std::uniform_int_distribution<int> small(1, 4);
  std::uniform_real_distribution<double> real(0.001, 1.0);
  for (size_t n = 1; n <= 7; ++n) {
    for (int trial = 0; trial < 12; ++trial) {
      HopTimes t = uniform(n, 0);
      for (double& v : t.seconds) v = trial % 2 ? small(gen) : real(gen);
      RingPlan p = plan(t);
      ASSERT_TRUE(is_permutation_from_zero(p.order, n)) << "n=" << n;
      EXPECT_TRUE(p.exact);
      auto [worst, total] = brute_force_best(t);
      EXPECT_EQ(p.bottleneck_s, worst) << "n=" << n << " trial " << trial;
      EXPECT_NEAR(p.total_s, total, 1e-12 * total) << "n=" << n << " trial " << trial;
      EXPECT_EQ(p.bottleneck_s, ring_bottleneck(t, p.order));
      EXPECT_EQ(p.total_s, ring_total(t, p.order));
    }
  }
}

TEST(RingOrder, HeuristicFindsAHiddenFastRingAndIsDeterministic) {
  std::mt19937 gen(11);
  for (size_t n : {10, 17, 40}) {
    // A random ring of 1 s hops hidden among 5..10 s links.
    std::vector<size_t> hidden(n);
    std::iota(hidden.begin(), hidden.end(), size_t{0});
    std::shuffle(hidden.begin(), hidden.end(), gen);
    HopTimes t = uniform(n, 0);
    std::uniform_real_distribution<double> slow(5.0, 10.0);
    for (double& v : t.seconds) v = slow(gen);
    for (size_t k = 0; k < n; ++k) set(t, hidden[k], hidden[(k + 1) % n], 1.0);
    RingPlan p = plan(t);
    ASSERT_TRUE(is_permutation_from_zero(p.order, n)) << "n=" << n;
    EXPECT_FALSE(p.exact);
    EXPECT_EQ(p.bottleneck_s, 1.0) << "n=" << n;
    // The same matrix, copied, gives the same order.
    HopTimes copy = t;
    EXPECT_EQ(plan(copy).order, p.order);
  }
}

TEST(RingOrder, HeuristicNeverBeatsTheExactSearch) {
  std::mt19937 gen(3);
  std::uniform_real_distribution<double> real(0.001, 1.0);
  for (int trial = 0; trial < 10; ++trial) {
    HopTimes t = uniform(8, 0);
    for (double& v : t.seconds) v = real(gen);
    RingPlan exact = plan(t);
    RingPlan heuristic = plan(t, RingPlanOptions{.exact_limit = 2});
    ASSERT_TRUE(is_permutation_from_zero(heuristic.order, 8));
    EXPECT_FALSE(heuristic.exact);
    EXPECT_GE(heuristic.bottleneck_s, exact.bottleneck_s);
  }
  // Avoiding a slow pair is easy enough for the heuristic too.
  HopTimes slow_pair = uniform(12, 1.0);
  set(slow_pair, 3, 7, 9.0);
  set(slow_pair, 7, 3, 9.0);
  EXPECT_EQ(plan(slow_pair).bottleneck_s, 1.0);
}

TEST(RingOrder, RejectsBadMatrices) {
  EXPECT_EQ(plan_ring_order(HopTimes{}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(plan_ring_order(HopTimes{3, std::vector<double>(8, 1.0)}).status().code(), Code::kInvalidArgument);
  HopTimes t = uniform(3, 1.0);
  set(t, 2, 1, -1.0);
  Status st = plan_ring_order(t).status();
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.to_string().find("member 2 to member 1"), std::string::npos) << st.to_string();
  set(t, 2, 1, std::nan(""));
  EXPECT_EQ(plan_ring_order(t).status().code(), Code::kInvalidArgument);
  // A diagonal is ignored; +infinity is a link to avoid.
  set(t, 2, 1, std::numeric_limits<double>::infinity());
  set(t, 1, 1, std::nan(""));
  EXPECT_EQ(plan(t).order, (std::vector<size_t>{0, 1, 2}));
}

TEST(RingOrder, ReplansOnlyWhenAHopOfTheRingIsTwiceAsSlow) {
  HopTimes planned = uniform(4, 0.1);
  set(planned, 2, 3, 0.3);
  std::vector<size_t> order{0, 1, 2, 3};
  auto scaled = [&](size_t from, size_t to, double factor) {
    HopTimes now = planned;
    set(now, from, to, planned.at(from, to) * factor);
    return now;
  };
  EXPECT_FALSE(should_replan(planned, planned, order));
  EXPECT_FALSE(should_replan(planned, scaled(2, 3, 1.2), order));
  EXPECT_FALSE(should_replan(planned, scaled(1, 2, 1.99), order));
  EXPECT_TRUE(should_replan(planned, scaled(2, 3, 2.0), order));
  EXPECT_TRUE(should_replan(planned, scaled(3, 0, 5.0), order));
  // A link the ring does not use may get as slow as it likes.
  EXPECT_FALSE(should_replan(planned, scaled(0, 2, 10.0), order));
  EXPECT_FALSE(should_replan(planned, scaled(1, 0, 10.0), order));
  // A faster link is no reason either; the factor is the caller's.
  EXPECT_FALSE(should_replan(planned, scaled(2, 3, 0.1), order));
  EXPECT_TRUE(should_replan(planned, scaled(2, 3, 1.6), order, 1.5));
}

// --- The probe over real Transports -------------------------------------------------

std::vector<std::string> ids(size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back("m" + std::to_string(i));
  return out;
}

ProbeOptions quick_probe(uint32_t epoch) {
  ProbeOptions options;
  options.epoch = epoch;
  options.pings = 3;
  options.bulk_bytes = 256 << 10;
  options.warmup_bytes = 32 << 10;
  options.transfer_budget = 100ms;
  return options;
}

// Runs probe_links on every member at once, as separate machines would.
std::vector<Result<LinkMatrix>> probe_all(const std::vector<std::unique_ptr<Transport>>& transports,
                                          const ProbeOptions& options, Deadline deadline) {
  const std::vector<std::string> members = ids(transports.size());
  std::vector<Result<LinkMatrix>> results(transports.size(), Result<LinkMatrix>(error(Code::kInternal, "not run")));
  std::vector<std::thread> threads;
  for (size_t r = 0; r < transports.size(); ++r) {
    threads.emplace_back([&, r] { results[r] = probe_links(*transports[r], members, r, options, deadline); });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

void expect_same_valid_matrix(const std::vector<Result<LinkMatrix>>& results) {
  ASSERT_FALSE(results.empty());
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << r.status().to_string();
  const LinkMatrix& first = results[0].value();
  for (size_t i = 0; i < first.n; ++i) {
    for (size_t j = 0; j < first.n; ++j) {
      if (i == j) continue;
      EXPECT_GT(first.latency(i, j), 0.0) << i << " -> " << j;
      EXPECT_GT(first.bandwidth(i, j), 0.0) << i << " -> " << j;
      EXPECT_TRUE(std::isfinite(first.bandwidth(i, j)));
    }
  }
  for (const auto& r : results) {
    EXPECT_EQ(r.value().latency_s, first.latency_s);
    EXPECT_EQ(r.value().bandwidth_Bps, first.bandwidth_Bps);
  }
}

TEST(LinkProbe, EveryMemberOfAMeshGetsTheSameMatrixTwice) {
  auto ring = make_loopback_ring(ids(4), "probe", deadline_after(kWait));
  ASSERT_TRUE(ring.ok()) << ring.status().to_string();
  auto& transports = ring.value();
  // The ring connects neighbours only; the probe needs every pair.
  std::vector<RingMember> members;
  for (size_t r = 0; r < 4; ++r) members.push_back(RingMember{ids(4)[r], "127.0.0.1", transports[r]->port()});
  std::vector<Status> connected(4);
  std::vector<std::thread> threads;
  for (size_t r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] { connected[r] = connect_mesh(*transports[r], members, r, deadline_after(kWait)); });
  }
  for (std::thread& t : threads) t.join();
  for (const Status& st : connected) ASSERT_TRUE(st.ok()) << st.to_string();
  // Two probes with different epochs on the same Transports.
  expect_same_valid_matrix(probe_all(transports, quick_probe(1), deadline_after(kWait)));
  expect_same_valid_matrix(probe_all(transports, quick_probe(2), deadline_after(kWait)));
}

TEST(LinkProbe, ThroughEmulatedLinksTheSlowDirectionRanksSlowestAndIsAvoided) {
  // Three members; every pair is joined through a relay. m0 -> m1 is a 10 Mbit/s upload,
  // every other direction 200 Mbit/s; 1 ms one way everywhere.
  constexpr size_t n = 3;
  std::vector<std::unique_ptr<LinkRelay>> relays;  // outlives the transports, so their BYEs get through
  std::vector<std::unique_ptr<Transport>> transports;
  for (const std::string& id : ids(n)) {
    TransportOptions options;
    options.node_id = id;
    options.run_id = "probe-links";
    transports.push_back(std::make_unique<Transport>(std::move(options)));
    ASSERT_TRUE(transports.back()->listen("127.0.0.1", 0).ok());
  }
  auto direction = [](double mbit) { return LinkDirection{mbit * 1e6, 1ms, 0}; };
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = i + 1; j < n; ++j) {
      LinkRelayOptions options;
      options.name = "m" + std::to_string(i) + " -> m" + std::to_string(j);
      options.target_port = transports[j]->port();
      options.forward = direction(i == 0 && j == 1 ? 10 : 200);
      options.backward = direction(200);
      auto relay = LinkRelay::start(options);
      ASSERT_TRUE(relay.ok()) << relay.status().to_string();
      Status st = transports[i]->connect(ids(n)[j], "127.0.0.1", relay.value()->port(), deadline_after(kWait));
      ASSERT_TRUE(st.ok()) << st.to_string();
      relays.push_back(std::move(relay).value());
    }
  }
  auto results = probe_all(transports, quick_probe(0), deadline_after(kWait));
  expect_same_valid_matrix(results);
  const LinkMatrix& m = results[0].value();
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (i == j || (i == 0 && j == 1)) continue;
      EXPECT_LT(m.bandwidth(0, 1), m.bandwidth(i, j)) << "m0 -> m1 should be the slowest, not " << i << " -> " << j;
    }
  }
  HopTimes times = m.hop_times(256 << 10);
  auto slowest = std::max_element(times.seconds.begin(), times.seconds.end()) - times.seconds.begin();
  EXPECT_EQ(slowest, 1) << "hop m0 -> m1 (index 1) should take longest";
  RingPlan p = plan(times);
  EXPECT_EQ(p.order, (std::vector<size_t>{0, 2, 1}));
  EXPECT_LT(p.bottleneck_s, ring_bottleneck(times, std::vector<size_t>{0, 1, 2}));
  // Every byte went through the relays.
  for (const auto& relay : relays) EXPECT_GT(relay->stats().forward_bytes, uint64_t{32} << 10);
}

TEST(LinkProbe, AMemberThatNeverProbesFailsTheOtherAtTheDeadline) {
  auto ring = make_loopback_ring(ids(2), "probe-timeout", deadline_after(kWait));
  ASSERT_TRUE(ring.ok()) << ring.status().to_string();
  auto start = Clock::now();
  auto got = probe_links(*ring.value()[0], ids(2), 0, quick_probe(0), deadline_after(300ms));
  EXPECT_LT(Clock::now() - start, kWait);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kTimeout) << got.status().to_string();
  EXPECT_NE(got.status().to_string().find("link probe epoch 0 (member 'm0'"), std::string::npos)
      << got.status().to_string();
  EXPECT_NE(got.status().to_string().find("'m1'"), std::string::npos) << got.status().to_string();
}

TEST(LinkProbe, RejectsBadArguments) {
  auto ring = make_loopback_ring(ids(2), "probe-args", deadline_after(kWait));
  ASSERT_TRUE(ring.ok()) << ring.status().to_string();
  Transport& t = *ring.value()[0];
  auto bad = [&](ProbeOptions options, size_t rank, std::vector<std::string> members) {
    return probe_links(t, members, rank, options, deadline_after(1s)).status().code();
  };
  EXPECT_EQ(bad(quick_probe(0), 1, ids(2)), Code::kInvalidArgument);  // rank 1 is m1, not this node
  EXPECT_EQ(bad(quick_probe(0), 0, {"m0", "m0"}), Code::kInvalidArgument);
  ProbeOptions no_pings = quick_probe(0);
  no_pings.pings = 0;
  EXPECT_EQ(bad(no_pings, 0, ids(2)), Code::kInvalidArgument);
  ProbeOptions tiny = quick_probe(0);
  tiny.bulk_bytes = 10;
  EXPECT_EQ(bad(tiny, 0, ids(2)), Code::kInvalidArgument);
  // One member alone measures nothing and gets a 1 x 1 matrix.
  TransportOptions options;
  options.node_id = "solo";
  Transport solo(options);
  auto alone = probe_links(solo, {"solo"}, 0, quick_probe(0), deadline_after(1s));
  ASSERT_TRUE(alone.ok()) << alone.status().to_string();
  EXPECT_EQ(alone.value().n, 1u);
}

}  // namespace
}  // namespace ravnest::rt
