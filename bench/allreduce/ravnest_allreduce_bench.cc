// ravnest-allreduce-bench: times Ravnest's RingAllreduce (sum, float32) across N forked
// processes on 127.0.0.1, optionally with every ring hop through an emulated link.
//
// Guarantees: each rank is its own process with its own Transport, connected into a
// ring by connect_ring(); with --link-mbit/--delay-ms the parent starts one LinkRelay
// per ring hop (rank r dials its right neighbour through the relay of hop r; both
// directions get the rate and the delay; with N = 2 the one connection carries both
// hops). Per size: warm-up runs (the first one's sum is checked), a barrier (a one-float
// all-reduce on its own tag), then the timed loop: back to back (nccl-tests' way), or with
// --isolated 1 one iteration at a time from a start instant shared by all ranks. Prints the RESULT lines of
// bench_common.h; exits non-zero when any rank fails.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/allreduce/bench_common.h"
#include "runtime/collectives/ring_allreduce.h"
#include "runtime/collectives/ring_connect.h"
#include "runtime/netem/link_relay.h"

namespace ravnest::bench {
namespace {

using rt::Deadline;

constexpr auto kTimeout = std::chrono::seconds(600);
constexpr uint32_t kBarrierTag = 0xB0000000u;

std::string member_id(int r) { return "rank" + std::to_string(r); }

int fail(int rank, const Status& st) {
  std::fprintf(stderr, "rank %d: %s\n", rank, st.to_string().c_str());
  return 1;
}

// One rank: listen, report the port, learn the right neighbour's address, join the ring, run.
int run_rank(const BenchArgs& args, int rank, int in_fd, int out_fd) {
  rt::TransportOptions topt;
  topt.node_id = member_id(rank);
  topt.run_id = "allreduce-bench";
  topt.close_timeout = std::chrono::milliseconds(10000);
  rt::Transport transport(std::move(topt));
  if (Status st = transport.listen("127.0.0.1", 0); !st.ok()) return fail(rank, st);
  send_value<uint16_t>(out_fd, transport.port());
  const uint16_t right_port = recv_value<uint16_t>(in_fd);
  // steady_clock is the machine's CLOCK_MONOTONIC, the same in every rank: the parent's base.
  const SteadyClock::time_point base{SteadyClock::duration(recv_value<int64_t>(in_fd))};

  const int n = args.ranks;
  std::vector<rt::RingMember> members;
  std::vector<std::string> ids;
  for (int r = 0; r < n; ++r) {
    // Only the right neighbour's address is dialled; the others are never used here.
    members.push_back(rt::RingMember{member_id(r), "127.0.0.1", r == (rank + 1) % n ? right_port : uint16_t{0}});
    ids.push_back(member_id(r));
  }
  const Deadline connect_deadline = rt::deadline_after(std::chrono::milliseconds(60000));
  if (Status st = rt::connect_ring(transport, members, static_cast<size_t>(rank), connect_deadline); !st.ok()) {
    return fail(rank, st);
  }

  auto barrier_ring = rt::RingAllreduce::create(transport, rt::RingOptions{ids, static_cast<size_t>(rank), kBarrierTag});
  if (!barrier_ring.ok()) return fail(rank, barrier_ring.status());
  float token = 0;
  auto barrier = [&]() -> Status {
    return barrier_ring->run(std::span<float>(&token, 1), rt::ReduceOp::kSum, 1.0, rt::deadline_after(
        std::chrono::duration_cast<std::chrono::milliseconds>(kTimeout)));
  };

  for (size_t index = 0; index < args.mib.size(); ++index) {
    rt::RingOptions opt{ids, static_cast<size_t>(rank), static_cast<uint32_t>(index)};
    if (args.chunk_kib != 0) opt.chunk_bytes = args.chunk_kib << 10;
    auto ring = rt::RingAllreduce::create(transport, opt);
    if (!ring.ok()) return fail(rank, ring.status());
    std::vector<float> data(floats_of_mib(args.mib[index]));
    fill_input(data, rank);
    Status status;
    auto once = [&] {
      if (!status.ok()) return;
      status = ring->run(data, rt::ReduceOp::kSum, 1.0,
                         rt::deadline_after(std::chrono::duration_cast<std::chrono::milliseconds>(kTimeout)));
    };
    for (int w = 0; w < args.warmup; ++w) {
      once();
      if (w == 0 && status.ok() && !check_first_sum(data, n)) return 1;
    }
    if (status.ok()) status = barrier();
    if (!status.ok()) return fail(rank, status);
    std::vector<double> times;
    if (args.isolated) {
      // Rank 0 names a start instant far enough ahead for the barrier to reach every rank
      // (2(N-1) hops), everyone sleeps until it, and each iteration is timed from it.
      const double margin_s = 0.02 + 2.0 * (n - 1) * args.delay_ms / 1e3;
      for (int i = 0; i < args.iters && status.ok(); ++i) {
        token = rank == 0 ? static_cast<float>(std::chrono::duration<double>(SteadyClock::now() - base).count() +
                                               margin_s)
                          : 0.0f;
        status = barrier();
        const auto start = base + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(token));
        std::this_thread::sleep_until(start);
        once();
        times.push_back(std::chrono::duration<double>(SteadyClock::now() - start).count());
      }
    } else {
      times = time_loop(args.iters, once);
    }
    if (!status.ok()) return fail(rank, status);
    send_doubles(out_fd, times);
  }
  // Leave together, so no rank's BYE races a neighbour's last frames.
  if (Status st = barrier(); !st.ok()) return fail(rank, st);
  return 0;
}

int main_impl(int argc, char** argv) {
  const BenchArgs args = parse_args(argc, argv, "ravnest");
  const int n = args.ranks;
  std::vector<RankProcess> ranks =
      fork_ranks(n, [&](int rank, int in_fd, int out_fd) { return run_rank(args, rank, in_fd, out_fd); });

  std::vector<uint16_t> ports;
  for (RankProcess& p : ranks) ports.push_back(recv_value<uint16_t>(p.from_child));

  // Hop r: rank r -> rank r+1. With N = 2 rank 1 does not dial (rank 0's connection serves both hops).
  std::vector<std::unique_ptr<rt::LinkRelay>> relays;
  std::vector<uint16_t> dial(static_cast<size_t>(n), 0);
  const bool emulate = args.link_mbit > 0 || args.delay_ms > 0;
  for (int r = 0; r < n; ++r) {
    const uint16_t target = ports[static_cast<size_t>((r + 1) % n)];
    if (!emulate || (n == 2 && r == 1)) {
      dial[static_cast<size_t>(r)] = target;
      continue;
    }
    rt::LinkRelayOptions ro;
    ro.name = "hop " + std::to_string(r) + "->" + std::to_string((r + 1) % n);
    ro.target_port = target;
    ro.forward.rate_bps = args.link_mbit * 1e6;
    ro.forward.delay = std::chrono::microseconds(static_cast<int64_t>(args.delay_ms * 1000));
    ro.backward = ro.forward;
    auto relay = rt::LinkRelay::start(ro);
    if (!relay.ok()) die(relay.status().to_string());
    dial[static_cast<size_t>(r)] = (*relay)->port();
    relays.push_back(std::move(*relay));
  }
  const int64_t base = SteadyClock::now().time_since_epoch().count();
  for (int r = 0; r < n; ++r) {
    send_value<uint16_t>(ranks[static_cast<size_t>(r)].to_child, dial[static_cast<size_t>(r)]);
    send_value<int64_t>(ranks[static_cast<size_t>(r)].to_child, base);
  }

  collect_results(ranks, args, args.isolated);
  const bool ok = wait_ranks(ranks);
  relays.clear();
  if (!ok) die("a rank failed");
  return 0;
}

}  // namespace
}  // namespace ravnest::bench

int main(int argc, char** argv) { return ravnest::bench::main_impl(argc, argv); }
