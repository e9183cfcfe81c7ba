// Ring all-reduce over the real Transport on 127.0.0.1: members as threads for
// N = 1..8 and ragged sizes (sum and weighted mean against the exact result in
// double, bytes sent against 2(N-1)/N of the buffer, bit-identical results on every
// member), two rings with different tags at once on the same Transports, a member
// that goes away mid-round, and members as separate processes. Every wait is bounded.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/collectives/ring_allreduce.h"
#include "runtime/collectives/ring_connect.h"

namespace ravnest::rt {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 5s;  // bound of every wait in these tests

using Buffers = std::vector<std::vector<float>>;

std::vector<std::string> member_ids(size_t n) {
  std::vector<std::string> ids;
  for (size_t i = 0; i < n; ++i) ids.push_back("m" + std::to_string(i));
  return ids;
}

// Member i's input: values in [-1, 1) from a seed that depends on i, the size and `salt`.
Buffers inputs(size_t n, size_t size, uint32_t salt) {
  Buffers out(n, std::vector<float>(size));
  for (size_t i = 0; i < n; ++i) {
    std::mt19937 gen(static_cast<uint32_t>(1000003 * salt + 7919 * size + i));
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (float& v : out[i]) v = dist(gen);
  }
  return out;
}

std::vector<double> weights_for(size_t n) {
  std::vector<double> w;
  for (size_t i = 0; i < n; ++i) w.push_back(static_cast<double>(1 + 37 * i % 11));  // e.g. samples per cluster
  return w;
}

// Checks `got` against sum_i w_i x_i / sum_i w_i computed in double (w_i = 1 and no
// division for kSum), relative to the magnitude of the terms: |err| <= 1e-6 * sum_i |w_i x_i| / W.
::testing::AssertionResult matches_exact(const std::vector<float>& got, const Buffers& in, ReduceOp op,
                                         const std::vector<double>& weights) {
  double total = 0;
  for (size_t i = 0; i < in.size(); ++i) total += op == ReduceOp::kSum ? 1.0 : weights[i];
  const double divisor = op == ReduceOp::kSum ? 1.0 : total;
  for (size_t e = 0; e < got.size(); ++e) {
    double exact = 0, magnitude = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      const double term = (op == ReduceOp::kSum ? 1.0 : weights[i]) * in[i][e];
      exact += term;
      magnitude += std::fabs(term);
    }
    exact /= divisor;
    magnitude /= divisor;
    if (std::fabs(got[e] - exact) > 1e-6 * magnitude + 1e-30) {
      return ::testing::AssertionFailure()
             << "element " << e << " of " << got.size() << ": got " << got[e] << ", exact " << exact << " ("
             << in.size() << " members, " << reduce_op_name(op) << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// Runs fn(rank) on one thread per member and waits for all.
void on_every_member(size_t n, const std::function<void(size_t)>& fn) {
  std::vector<std::thread> threads;
  for (size_t rank = 0; rank < n; ++rank) threads.emplace_back(fn, rank);
  for (std::thread& t : threads) t.join();
}

std::vector<RingAllreduce> make_rings(const std::vector<std::unique_ptr<Transport>>& transports, uint32_t tag,
                                      size_t chunk_bytes) {
  std::vector<RingAllreduce> rings;
  for (size_t rank = 0; rank < transports.size(); ++rank) {
    RingOptions o;
    o.members = member_ids(transports.size());
    o.rank = rank;
    o.tag = tag;
    o.chunk_bytes = chunk_bytes;
    Result<RingAllreduce> ring = RingAllreduce::create(*transports[rank], o);
    EXPECT_TRUE(ring.ok()) << ring.status().to_string();
    if (ring.ok()) rings.push_back(std::move(ring).value());
  }
  return rings;
}

// Reduces `buffers` in place, one thread per member; returns each member's Status.
std::vector<Status> run_all(std::vector<RingAllreduce>& rings, Buffers& buffers, ReduceOp op,
                            const std::vector<double>& weights) {
  std::vector<Status> results(rings.size());
  const Deadline deadline = deadline_after(kWait);
  on_every_member(rings.size(),
                  [&](size_t rank) { results[rank] = rings[rank].run(buffers[rank], op, weights[rank], deadline); });
  return results;
}

// Floats member `rank` sends: every segment but (r + 1) in reduce-scatter, every one but (r + 2) in all-gather.
uint64_t expected_bytes(size_t size, size_t n, size_t rank, ReduceOp op) {
  if (n == 1) return 0;
  const size_t floats =
      2 * size - ring_segment(size, n, (rank + 1) % n).size() - ring_segment(size, n, (rank + 2) % n).size();
  return floats * sizeof(float) + (op == ReduceOp::kWeightedMean ? (n - 1) * sizeof(double) : 0);
}

// ------------------------------------------------------------------ segments

TEST(RingSegment, RaggedSplitCoversTheBufferWithSizesDifferingByAtMostOne) {
  for (size_t size : {0, 1, 2, 5, 7, 8, 9, 100003}) {
    for (size_t parts = 1; parts <= 8; ++parts) {
      size_t next = 0, smallest = size, largest = 0;
      for (size_t s = 0; s < parts; ++s) {
        SegmentRange range = ring_segment(size, parts, s);
        EXPECT_EQ(range.begin, next) << size << " in " << parts << " parts, segment " << s;
        next = range.end;
        smallest = std::min(smallest, range.size());
        largest = std::max(largest, range.size());
      }
      EXPECT_EQ(next, size);
      EXPECT_LE(largest - smallest, 1u) << size << " in " << parts << " parts";
    }
  }
}

// ------------------------------------------------------------------ threads over loopback

TEST(RingAllreduce, SumAndWeightedMeanMatchTheExactResultForOneToEightMembers) {
  for (size_t n = 1; n <= 8; ++n) {
    SCOPED_TRACE("members " + std::to_string(n));
    auto transports = make_loopback_ring(member_ids(n), "allreduce", deadline_after(kWait));
    ASSERT_TRUE(transports.ok()) << transports.status().to_string();
    // Tiny chunks (16 floats) so segments span many pipelined frames; the same ring
    // objects serve every size, so rounds advance too.
    std::vector<RingAllreduce> rings = make_rings(*transports, /*tag=*/1, /*chunk_bytes=*/64);
    std::vector<RingAllreduce> big_chunks = make_rings(*transports, /*tag=*/2, /*chunk_bytes=*/size_t{256} << 10);
    ASSERT_EQ(rings.size(), n);
    ASSERT_EQ(big_chunks.size(), n);
    const std::vector<double> weights = weights_for(n);
    for (size_t size : {size_t{0}, size_t{1}, n - 1, n + 1, 7 * n + 3, size_t{1000}, size_t{100003}}) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kWeightedMean}) {
        SCOPED_TRACE("size " + std::to_string(size) + ", " + reduce_op_name(op));
        std::vector<RingAllreduce>& ring = size > 1000 ? big_chunks : rings;
        const Buffers in = inputs(n, size, static_cast<uint32_t>(op));
        Buffers out = in;
        std::vector<Status> results = run_all(ring, out, op, weights);
        for (size_t rank = 0; rank < n; ++rank) {
          ASSERT_TRUE(results[rank].ok()) << "rank " << rank << ": " << results[rank].to_string();
          EXPECT_EQ(out[rank], out[0]) << "rank " << rank << " differs from rank 0";
          EXPECT_EQ(ring[rank].bytes_sent(), expected_bytes(size, n, rank, op)) << "rank " << rank;
          // 2(N-1)/N of the buffer, up to one float per phase from the ragged split.
          const double data_bytes =
              static_cast<double>(ring[rank].bytes_sent()) - (op == ReduceOp::kWeightedMean ? 8.0 * (n - 1) : 0.0);
          EXPECT_LE(std::fabs(data_bytes - 2.0 * (n - 1) / n * size * 4), 8.0) << "rank " << rank;
        }
        EXPECT_TRUE(matches_exact(out[0], in, op, weights));
      }
    }
  }
}

// kSum adds in float, one rounding per ring step, in ring order: segment s starts as member
// s's values and members s+1, s+2, ... add theirs. Values spread over 2^-20..2^20 make the
// result depend on that order and on the precision, so any other summation shows up.
TEST(RingAllreduce, SumIsTheFloatSumInRingOrderBitForBit) {
  for (size_t n : {size_t{2}, size_t{3}, size_t{5}}) {
    SCOPED_TRACE("members " + std::to_string(n));
    constexpr size_t kSize = 4099;
    auto transports = make_loopback_ring(member_ids(n), "allreduce", deadline_after(kWait));
    ASSERT_TRUE(transports.ok()) << transports.status().to_string();
    std::vector<RingAllreduce> rings = make_rings(*transports, /*tag=*/3, /*chunk_bytes=*/1024);
    ASSERT_EQ(rings.size(), n);
    Buffers in = inputs(n, kSize, 11);
    std::mt19937 gen(5);
    std::uniform_int_distribution<int> exponent(-20, 20);
    for (std::vector<float>& member : in) {
      for (float& v : member) v = std::ldexp(v, exponent(gen));
    }
    Buffers out = in;
    for (const Status& st : run_all(rings, out, ReduceOp::kSum, std::vector<double>(n, 1.0))) {
      ASSERT_TRUE(st.ok()) << st.to_string();
    }
    size_t differs_from_double_sum = 0;
    for (size_t s = 0; s < n; ++s) {
      const SegmentRange range = ring_segment(kSize, n, s);
      for (size_t e = range.begin; e < range.end; ++e) {
        float expected = in[s][e];
        double exact = in[s][e];
        for (size_t k = 1; k < n; ++k) {
          expected += in[(s + k) % n][e];
          exact += in[(s + k) % n][e];
        }
        differs_from_double_sum += expected != static_cast<float>(exact) ? 1 : 0;
        for (size_t rank = 0; rank < n; ++rank) {
          ASSERT_EQ(std::memcmp(&out[rank][e], &expected, sizeof(float)), 0)
              << "element " << e << " (segment " << s << ") on rank " << rank << ": got " << out[rank][e]
              << ", float sum in ring order " << expected;
        }
      }
    }
    // The data does tell the orders apart (for three or more members).
    if (n > 2) {
      EXPECT_GT(differs_from_double_sum, 0u);
    }
  }
}

TEST(RingAllreduce, LargeBufferWithManyPipelinedChunksOnFourMembers) {
  constexpr size_t kMembers = 4, kSize = 100003;
  auto transports = make_loopback_ring(member_ids(kMembers), "allreduce", deadline_after(kWait));
  ASSERT_TRUE(transports.ok()) << transports.status().to_string();
  std::vector<RingAllreduce> rings = make_rings(*transports, /*tag=*/0, /*chunk_bytes=*/4096);
  ASSERT_EQ(rings.size(), kMembers);
  const std::vector<double> weights = weights_for(kMembers);
  const Buffers in = inputs(kMembers, kSize, 9);
  Buffers out = in;
  for (const Status& st : run_all(rings, out, ReduceOp::kWeightedMean, weights)) ASSERT_TRUE(st.ok()) << st.to_string();
  for (size_t rank = 0; rank < kMembers; ++rank) EXPECT_EQ(out[rank], out[0]);
  EXPECT_TRUE(matches_exact(out[0], in, ReduceOp::kWeightedMean, weights));
  uint64_t total = 0;
  for (const RingAllreduce& ring : rings) total += ring.bytes_sent();
  // Each segment crosses N-1 links in each phase; plus one weight per member and reduce-scatter step.
  EXPECT_EQ(total, 2 * (kMembers - 1) * kSize * 4 + kMembers * (kMembers - 1) * 8);
}

TEST(RingAllreduce, TwoRingsWithDifferentTagsRunAtOnceOnTheSameTransports) {
  constexpr size_t kMembers = 4;
  auto transports = make_loopback_ring(member_ids(kMembers), "allreduce", deadline_after(kWait));
  ASSERT_TRUE(transports.ok()) << transports.status().to_string();
  // Same chunking and sizes, so only the tag tells their frames apart.
  std::vector<RingAllreduce> first = make_rings(*transports, /*tag=*/10, /*chunk_bytes=*/256);
  std::vector<RingAllreduce> second = make_rings(*transports, /*tag=*/11, /*chunk_bytes=*/256);
  ASSERT_EQ(first.size(), kMembers);
  ASSERT_EQ(second.size(), kMembers);
  const std::vector<double> weights = weights_for(kMembers);
  const Buffers in_a = inputs(kMembers, 5003, 21), in_b = inputs(kMembers, 5003, 22);
  Buffers a = in_a, b = in_b;
  std::vector<Status> results_a(kMembers), results_b(kMembers);
  const Deadline deadline = deadline_after(kWait);
  on_every_member(2 * kMembers, [&](size_t i) {
    const size_t rank = i % kMembers;
    if (i < kMembers) {
      results_a[rank] = first[rank].run(a[rank], ReduceOp::kSum, 1.0, deadline);
    } else {
      results_b[rank] = second[rank].run(b[rank], ReduceOp::kWeightedMean, weights[rank], deadline);
    }
  });
  for (size_t rank = 0; rank < kMembers; ++rank) {
    ASSERT_TRUE(results_a[rank].ok()) << results_a[rank].to_string();
    ASSERT_TRUE(results_b[rank].ok()) << results_b[rank].to_string();
    EXPECT_EQ(a[rank], a[0]);
    EXPECT_EQ(b[rank], b[0]);
  }
  EXPECT_TRUE(matches_exact(a[0], in_a, ReduceOp::kSum, weights));
  EXPECT_TRUE(matches_exact(b[0], in_b, ReduceOp::kWeightedMean, weights));
}

TEST(RingAllreduce, MemberThatGoesAwayMidRoundFailsTheOthersWithinTheDeadline) {
  constexpr size_t kMembers = 4, kGone = 2;
  auto made = make_loopback_ring(member_ids(kMembers), "allreduce", deadline_after(kWait));
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  std::vector<std::unique_ptr<Transport>>& transports = *made;
  std::vector<RingAllreduce> rings = make_rings(transports, /*tag=*/3, /*chunk_bytes=*/1024);
  ASSERT_EQ(rings.size(), kMembers);
  const std::vector<double> weights(kMembers, 1.0);
  Buffers buffers = inputs(kMembers, 20000, 5);
  // Round 0 completes; in round 1 member 2 sends its first reduce-scatter frame and is gone.
  for (const Status& st : run_all(rings, buffers, ReduceOp::kSum, weights)) ASSERT_TRUE(st.ok()) << st.to_string();
  std::vector<Status> results(kMembers);
  const Deadline deadline = deadline_after(2s);
  on_every_member(kMembers, [&](size_t rank) {
    if (rank != kGone) {
      results[rank] = rings[rank].run(buffers[rank], ReduceOp::kSum, 1.0, deadline);
      return;
    }
    Tensor first = Tensor::zeros(DType::kF32, {256});
    FrameMeta meta{FrameKind::kCollective, (uint64_t{3} << 32) | 1, 0, 0};
    EXPECT_TRUE(transports[kGone]->send("m3", meta, first).ok());
    transports[kGone].reset();  // closes its sockets: BYE to its neighbours
  });
  for (size_t rank = 0; rank < kMembers; ++rank) {
    if (rank == kGone) continue;
    const Status& st = results[rank];
    SCOPED_TRACE("rank " + std::to_string(rank) + ": " + st.to_string());
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(st.code() == Code::kNetwork || st.code() == Code::kTimeout);
    EXPECT_NE(st.message().find("ring all-reduce tag 3 round 1"), std::string::npos);
    EXPECT_NE(st.message().find(" neighbour 'm"), std::string::npos);
  }
  // Its right neighbour learns of it from the transport and names it. Member 0 times
  // out waiting for its left neighbour (member 3, which stopped) and names that one.
  // Member 1 fails sending to member 2 or waiting for member 0, whichever comes first.
  EXPECT_EQ(results[3].code(), Code::kNetwork);
  EXPECT_NE(results[3].message().find("left neighbour 'm2'"), std::string::npos);
  EXPECT_EQ(results[0].code(), Code::kTimeout);
  EXPECT_NE(results[0].message().find("left neighbour 'm3'"), std::string::npos);
}

TEST(RingAllreduce, RejectsBadOptionsAndWeights) {
  auto transports = make_loopback_ring(member_ids(2), "allreduce", deadline_after(kWait));
  ASSERT_TRUE(transports.ok()) << transports.status().to_string();
  Transport& t0 = *(*transports)[0];
  EXPECT_EQ(RingAllreduce::create(t0, RingOptions{{}, 0, 0, 1024}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(RingAllreduce::create(t0, RingOptions{{"m0", "m1"}, 1, 0, 1024}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(RingAllreduce::create(t0, RingOptions{{"m0", "m0"}, 0, 0, 1024}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(RingAllreduce::create(t0, RingOptions{{"m0", "m1"}, 2, 0, 1024}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(RingAllreduce::create(t0, RingOptions{{"m0", "m1"}, 0, 0, 3}).status().code(), Code::kInvalidArgument);
  // Every member checks the total of the weights, so all fail alike instead of hanging.
  std::vector<RingAllreduce> rings = make_rings(*transports, 0, 1024);
  ASSERT_EQ(rings.size(), 2u);
  Buffers buffers = inputs(2, 10, 1);
  for (const Status& st : run_all(rings, buffers, ReduceOp::kWeightedMean, {0.0, 0.0})) {
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.to_string();
  }
  std::vector<float> one(3, 1.0f);
  EXPECT_EQ(rings[0].run(one, ReduceOp::kWeightedMean, -1.0, deadline_after(kWait)).code(), Code::kInvalidArgument);
}

// ------------------------------------------------------------------ separate processes

// Reads exactly `bytes` from `fd`, giving up after `timeout`.
bool read_exact(int fd, void* out, size_t bytes, std::chrono::milliseconds timeout) {
  const Deadline deadline = deadline_after(timeout);
  auto* p = static_cast<uint8_t*>(out);
  while (bytes > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd pfd{fd, POLLIN, 0};
    if (left <= 0 || poll(&pfd, 1, static_cast<int>(left)) <= 0) return false;
    const ssize_t got = read(fd, p, bytes);
    if (got <= 0) return false;
    p += got;
    bytes -= static_cast<size_t>(got);
  }
  return true;
}

bool write_all(int fd, const void* data, size_t bytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (bytes > 0) {
    const ssize_t put = write(fd, p, bytes);
    if (put <= 0) return false;
    p += put;
    bytes -= static_cast<size_t>(put);
  }
  return true;
}

// Child process `rank`: listen, report the port, learn the others', join the ring,
// reduce, send the result back. Never returns.
[[noreturn]] void ring_child(size_t rank, size_t n, int up, int down, std::vector<float> data, double weight) {
  TransportOptions options;
  options.node_id = member_ids(n)[rank];
  options.run_id = "allreduce-processes";
  int code = 1;
  {
    Transport transport(options);
    std::vector<uint16_t> ports(n);
    Status st = transport.listen("127.0.0.1", 0);
    const uint16_t port = transport.port();
    if (st.ok() && write_all(up, &port, sizeof(port)) && read_exact(down, ports.data(), n * sizeof(uint16_t), kWait)) {
      std::vector<RingMember> members;
      for (size_t i = 0; i < n; ++i) members.push_back(RingMember{member_ids(n)[i], "127.0.0.1", ports[i]});
      const Deadline deadline = deadline_after(kWait);
      st = connect_ring(transport, members, rank, deadline);
      Result<RingAllreduce> ring = RingAllreduce::create(transport, RingOptions{member_ids(n), rank, 0, 4096});
      if (st.ok()) st = ring.status();
      if (st.ok()) st = ring->run(data, ReduceOp::kWeightedMean, weight, deadline);
      if (st.ok() && write_all(up, data.data(), data.size() * sizeof(float))) code = 0;
      if (!st.ok()) fprintf(stderr, "ring child %zu: %s\n", rank, st.to_string().c_str());
    }
  }  // the Transport closes before exit, so queued frames reach the neighbours
  _exit(code);
}

TEST(RingAllreduce, SeparateProcessesGiveTheSameResultAsThreads) {
  constexpr size_t kMembers = 3, kSize = 10007;
  const Buffers in = inputs(kMembers, kSize, 77);
  const std::vector<double> weights = weights_for(kMembers);
  // The reference: the same inputs and chunking reduced by threads in this process.
  Buffers threads = in;
  {
    auto transports = make_loopback_ring(member_ids(kMembers), "allreduce", deadline_after(kWait));
    ASSERT_TRUE(transports.ok()) << transports.status().to_string();
    std::vector<RingAllreduce> rings = make_rings(*transports, 0, 4096);
    ASSERT_EQ(rings.size(), kMembers);
    for (const Status& st : run_all(rings, threads, ReduceOp::kWeightedMean, weights)) {
      ASSERT_TRUE(st.ok()) << st.to_string();
    }
  }
  std::vector<pid_t> pids;
  std::vector<int> ups, downs;
  for (size_t rank = 0; rank < kMembers; ++rank) {
    int up[2], down[2];
    ASSERT_EQ(pipe(up), 0);
    ASSERT_EQ(pipe(down), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(up[0]);
      close(down[1]);
      ring_child(rank, kMembers, up[1], down[0], in[rank], weights[rank]);
    }
    close(up[1]);
    close(down[0]);
    pids.push_back(pid);
    ups.push_back(up[0]);
    downs.push_back(down[1]);
  }
  std::vector<uint16_t> ports(kMembers);
  bool have_ports = true;
  for (size_t rank = 0; rank < kMembers; ++rank) {
    have_ports = have_ports && read_exact(ups[rank], &ports[rank], sizeof(uint16_t), kWait);
  }
  EXPECT_TRUE(have_ports) << "a child did not report its port";
  Buffers results(kMembers, std::vector<float>(kSize));
  for (size_t rank = 0; rank < kMembers; ++rank) {
    if (have_ports) {
      EXPECT_TRUE(write_all(downs[rank], ports.data(), kMembers * sizeof(uint16_t)));
    }
    close(downs[rank]);
  }
  for (size_t rank = 0; rank < kMembers; ++rank) {
    if (have_ports) {
      EXPECT_TRUE(read_exact(ups[rank], results[rank].data(), kSize * sizeof(float), 2 * kWait))
          << "child " << rank << " sent no result";
    }
    close(ups[rank]);
  }
  for (size_t rank = 0; rank < kMembers; ++rank) {
    int status = 0;
    ASSERT_EQ(waitpid(pids[rank], &status, 0), pids[rank]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << rank << " status " << status;
    EXPECT_EQ(results[rank], threads[0]) << "process " << rank << " differs from the threads' result";
  }
  EXPECT_TRUE(matches_exact(results[0], in, ReduceOp::kWeightedMean, weights));
}

}  // namespace
}  // namespace ravnest::rt
