// ravnest-rt profile: measures this machine (runtime kernels, memory, links) and
// writes its device profile; `--serve` answers other machines' link probes.
//
//   ravnest-rt profile [--peers HOST:PORT,...] [--seconds N] [--id ID] [--address HOST:PORT] -o FILE
//   ravnest-rt profile --serve --listen [HOST:]PORT [--clients N]
//
// The profile is written atomically (temporary file, then rename). Every wait is
// bounded: measuring takes about --seconds (default 10, at most 25) plus link
// connection time; --serve runs until killed or N clients were served.
#include "tools/ravnest-rt/profile.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/profile/profile.h"

namespace ravnest::tools {
namespace {

int usage(const char* message) {
  if (message) std::fprintf(stderr, "ravnest-rt profile: %s\n", message);
  std::fprintf(stderr,
               "usage: ravnest-rt profile [--peers HOST:PORT,...] [--seconds N] [--id ID] [--address HOST:PORT] -o FILE\n"
               "       ravnest-rt profile --serve --listen [HOST:]PORT [--clients N]\n");
  return 2;
}

int fail(const Status& st) {
  std::fprintf(stderr, "ravnest-rt profile: error: %s\n", st.message().c_str());
  return 1;
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    if (comma > start) out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

std::string hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

Status write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return error(Code::kInvalidArgument, "cannot write ", tmp, "; check the folder of -o exists");
    out << text;
    if (!out.flush()) return error(Code::kInvalidArgument, "writing ", tmp, " failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return error(Code::kInvalidArgument, "renaming ", tmp, " to ", path, ": ", ec.message());
  return ok_status();
}

}  // namespace

int profile_main(int argc, char** argv) {
  rt::MeasureOptions options;
  std::string out_path, id = hostname(), address, listen;
  bool serve = false;
  int clients = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--peers") {
      const char* v = value();
      if (!v) return usage("--peers needs HOST:PORT,...");
      for (std::string& p : split_commas(v)) options.peers.push_back(std::move(p));
    } else if (arg == "--seconds") {
      const char* v = value();
      char* end = nullptr;
      options.seconds = v ? std::strtod(v, &end) : 0;
      if (!v || *end != '\0' || !(options.seconds > 0) || options.seconds > 25)
        return usage("--seconds needs a number in (0, 25]");
    } else if (arg == "-o" || arg == "--out") {
      const char* v = value();
      if (!v) return usage("-o needs a file");
      out_path = v;
    } else if (arg == "--id") {
      const char* v = value();
      if (!v || !*v) return usage("--id needs a name");
      id = v;
    } else if (arg == "--address") {
      const char* v = value();
      if (!v || !*v) return usage("--address needs HOST:PORT");
      address = v;
    } else if (arg == "--serve") {
      serve = true;
    } else if (arg == "--listen") {
      const char* v = value();
      if (!v) return usage("--listen needs [HOST:]PORT");
      listen = v;
    } else if (arg == "--clients") {
      const char* v = value();
      clients = v ? std::atoi(v) : 0;
      if (clients < 1) return usage("--clients needs a positive number");
    } else if (arg == "-h" || arg == "--help") {
      usage(nullptr);
      return 0;
    } else {
      return usage(("unknown argument '" + arg + "'").c_str());
    }
  }
  if (serve) {
    if (listen.empty()) return usage("--serve needs --listen [HOST:]PORT");
    size_t colon = listen.rfind(':');
    std::string host = colon == std::string::npos ? "0.0.0.0" : listen.substr(0, colon);
    int port = std::atoi(colon == std::string::npos ? listen.c_str() : listen.c_str() + colon + 1);
    if (port < 0 || port > 65535) return usage("--listen: the port must be 0..65535");
    std::atomic<bool> stop{false};
    std::atomic<int> bound{0};
    std::atomic<bool> done{false};
    Status st;
    std::thread server([&]() {
      st = rt::serve_profile_probes(host, static_cast<uint16_t>(port), stop, clients, &bound);
      done.store(true);
    });
    // Say where we listen once bound (scripts and tests wait for this line).
    while (bound.load() == 0 && !done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (bound.load() != 0) {
      std::printf("listening %s:%d\n", host.c_str(), bound.load());
      std::fflush(stdout);
    }
    server.join();
    return st.ok() ? 0 : fail(st);
  }
  if (out_path.empty()) return usage("-o FILE is required");
  if (address.empty()) address = id + ":29500";
  auto measured = rt::measure_machine(options);
  if (!measured.ok()) return fail(measured.status());
  Status st = write_atomically(out_path, rt::profile_json(*measured, id, address).dump(2) + "\n");
  if (!st.ok()) return fail(st);
  std::fprintf(stderr,
               "ravnest-rt profile: wrote %s (gemm %.1f GFLOP/s, conv %.1f GFLOP/s (one input channel: %.1f, "
               "its weight gradient: %.1f), "
               "memory %.1f GB/s, %lld MiB free; overheads: kernel %.2f us, program %.2f us, trainer pass %.2f us)\n",
               out_path.c_str(), measured->gemm_gflops, measured->conv_gflops, measured->conv_narrow_gflops,
               measured->conv_narrow_grad_weight_gflops, measured->memory_bandwidth_gbps,
               static_cast<long long>(measured->memory_available_bytes >> 20), measured->kernel_overhead_s * 1e6,
               measured->program_overhead_s * 1e6, measured->pass_overhead_s * 1e6);
  return 0;
}

}  // namespace ravnest::tools
