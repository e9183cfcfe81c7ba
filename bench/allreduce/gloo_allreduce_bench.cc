// ravnest-allreduce-gloo: the Gloo peer of ravnest-allreduce-bench. N forked processes on
// 127.0.0.1, Gloo's TCP transport, rendezvous through a FileStore in a fresh temp dir.
//
// Guarantees: --algorithm picks the collective, each a sum of float32 in place:
//   ring          gloo::AllreduceRing: passes the whole buffer around the ring N-1 times
//                 (not bandwidth-optimal: (N-1) S bytes sent per rank);
//   ring_chunked  gloo::AllreduceRingChunked: reduce-scatter + all-gather in chunks;
//   allreduce     gloo::allreduce() with the ring algorithm (AllreduceOptions::RING,
//                 1 MiB segments), the API PyTorch's Gloo backend uses.
// One context per process run, sizes in the order given (the driver passes them ascending,
// so the largest message so far sizes Gloo's SO_SNDBUF, see ../shared/FACTS.md). Per size:
// warm-up (first sum checked), gloo::barrier, timed loop; RESULT lines as bench_common.h.
#include <gloo/allreduce.h>
#include <gloo/allreduce_ring.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/barrier.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/transport/tcp/device.h>
#include <sys/socket.h>

#include <exception>
#include <filesystem>
#include <memory>

#include "bench/allreduce/bench_common.h"

namespace ravnest::bench {
namespace {

int run_rank(const BenchArgs& args, const std::string& store_dir, int rank, int out_fd) {
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    attr.ai_family = AF_INET;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore store(store_dir);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, args.ranks);
    context->setTimeout(std::chrono::seconds(600));
    context->connectFullMesh(store, device);

    uint32_t tag = 1;
    auto barrier = [&] {
      gloo::BarrierOptions opts(context);
      opts.setTag(tag++);
      gloo::barrier(opts);
    };
    for (size_t mib : args.mib) {
      std::vector<float> data(floats_of_mib(mib));
      fill_input(data, rank);
      const int count = static_cast<int>(data.size());
      std::function<void()> once;
      std::unique_ptr<gloo::Algorithm> algorithm;
      if (args.algorithm == "ring") {
        algorithm = std::make_unique<gloo::AllreduceRing<float>>(context, std::vector<float*>{data.data()}, count);
      } else if (args.algorithm == "ring_chunked") {
        algorithm =
            std::make_unique<gloo::AllreduceRingChunked<float>>(context, std::vector<float*>{data.data()}, count);
      } else if (args.algorithm != "allreduce") {
        die("--algorithm: '" + args.algorithm + "' is not one of ring, ring_chunked, allreduce");
      }
      if (algorithm) {
        once = [&] { algorithm->run(); };
      } else {
        once = [&] {
          gloo::AllreduceOptions opts(context);
          opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
          opts.setOutput(data.data(), data.size());
          opts.setReduceFunction(
              static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
          opts.setTag(tag++);
          gloo::allreduce(opts);
        };
      }
      for (int w = 0; w < args.warmup; ++w) {
        once();
        if (w == 0 && !check_first_sum(data, args.ranks)) return 1;
      }
      barrier();
      send_doubles(out_fd, time_loop(args.iters, once));
    }
    barrier();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gloo rank %d: %s\n", rank, e.what());
    return 1;
  }
}

int main_impl(int argc, char** argv) {
  BenchArgs args = parse_args(argc, argv, "");
  if (args.algorithm.empty()) args.algorithm = "allreduce";
  if (args.label.empty()) args.label = "gloo-" + args.algorithm;
  char tmpl[] = "/tmp/ravnest-gloo-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) die(std::string("mkdtemp: ") + std::strerror(errno));
  const std::string store_dir = tmpl;
  std::vector<RankProcess> ranks = fork_ranks(
      args.ranks, [&](int rank, int /*in_fd*/, int out_fd) { return run_rank(args, store_dir, rank, out_fd); });
  collect_results(ranks, args);
  const bool ok = wait_ranks(ranks);
  std::error_code ignored;
  std::filesystem::remove_all(store_dir, ignored);
  if (!ok) die("a Gloo rank failed");
  return 0;
}

}  // namespace
}  // namespace ravnest::bench

int main(int argc, char** argv) { return ravnest::bench::main_impl(argc, argv); }
