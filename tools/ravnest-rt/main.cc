// ravnest-rt: runs one node of a compiled training job.
//
//   ravnest-rt --bundle DIR/node1 [--listen HOST:PORT] [--peer ID=HOST:PORT ...]
//              [--steps N] [--no-eval] [--losses FILE] [--save-params FILE]
//              [--connect-timeout S] [--recv-timeout S] [--trace FILE] [--verbose]
//              [--checkpoint-dir DIR [--checkpoint-every N] [--resume]]
//   ravnest-rt profile ...   (measures this machine; see tools/ravnest-rt/profile.cc)
//
// The same command runs every role: the bundle says which stage this node is.
// Exit status: 0 on success, 1 on a training or bundle error (message on
// stderr), 2 on bad usage.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/log.h"
#include "runtime/bundle.h"
#include "runtime/trainer.h"
#include "tools/ravnest-rt/profile.h"

namespace {

int usage(const char* message) {
  if (message) std::fprintf(stderr, "ravnest-rt: %s\n", message);
  std::fprintf(stderr,
               "usage: ravnest-rt --bundle DIR [--listen HOST:PORT] [--peer ID=HOST:PORT ...] [--steps N]\n"
               "                  [--no-eval] [--losses FILE] [--save-params FILE] [--connect-timeout S]\n"
               "                  [--recv-timeout S] [--trace FILE] [--quiet] [--verbose]\n"
               "                  [--checkpoint-dir DIR [--checkpoint-every N] [--resume]]\n");
  return 2;
}

bool parse_double(const char* text, double* out) {
  char* end = nullptr;
  *out = std::strtod(text, &end);
  return end && *end == '\0' && *out > 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ravnest;
  if (argc > 1 && std::strcmp(argv[1], "profile") == 0) return tools::profile_main(argc - 1, argv + 1);
  std::string bundle_dir;
  rt::TrainerOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--bundle") {
      const char* v = value();
      if (!v) return usage("--bundle needs a folder");
      bundle_dir = v;
    } else if (arg == "--listen") {
      const char* v = value();
      if (!v) return usage("--listen needs HOST:PORT");
      options.listen = v;
    } else if (arg == "--peer") {
      const char* v = value();
      const char* eq = v ? std::strchr(v, '=') : nullptr;
      if (!eq) return usage("--peer needs ID=HOST:PORT");
      options.peers[std::string(v, eq)] = eq + 1;
    } else if (arg == "--steps") {
      const char* v = value();
      if (!v) return usage("--steps needs a number");
      options.max_steps = std::atoll(v);
      if (options.max_steps <= 0) return usage("--steps must be positive");
    } else if (arg == "--no-eval") {
      options.evaluate = false;
    } else if (arg == "--losses") {
      const char* v = value();
      if (!v) return usage("--losses needs a file");
      options.losses_path = v;
    } else if (arg == "--save-params") {
      const char* v = value();
      if (!v) return usage("--save-params needs a file");
      options.save_params_path = v;
    } else if (arg == "--trace") {
      const char* v = value();
      if (!v) return usage("--trace needs a file");
      options.trace_path = v;
    } else if (arg == "--connect-timeout" || arg == "--recv-timeout") {
      const char* v = value();
      double seconds = 0;
      if (!v || !parse_double(v, &seconds)) return usage("timeouts need a positive number of seconds");
      (arg == "--connect-timeout" ? options.connect_timeout_s : options.recv_timeout_s) = seconds;
    } else if (arg == "--checkpoint-dir") {
      const char* v = value();
      if (!v) return usage("--checkpoint-dir needs a folder");
      options.checkpoint_dir = v;
    } else if (arg == "--checkpoint-every") {
      const char* v = value();
      char* end = nullptr;
      options.checkpoint_every = v ? std::strtoll(v, &end, 10) : 0;
      if (!v || *end != '\0' || options.checkpoint_every <= 0) return usage("--checkpoint-every needs a positive number of steps");
    } else if (arg == "--resume") {
      options.resume = true;
    } else if (arg == "--quiet") {
      options.progress_json = false;
    } else if (arg == "--verbose") {
      set_verbose(true);
    } else if (arg == "-h" || arg == "--help") {
      usage(nullptr);
      return 0;
    } else {
      return usage(("unknown argument '" + arg + "'").c_str());
    }
  }
  if (bundle_dir.empty()) return usage("--bundle is required");
  if ((options.resume || options.checkpoint_every > 0) && options.checkpoint_dir.empty())
    return usage("--resume and --checkpoint-every need --checkpoint-dir DIR");

  auto bundle = rt::load_bundle(bundle_dir);
  if (!bundle.ok()) {
    std::fprintf(stderr, "ravnest-rt: error: %s\n", bundle.status().message().c_str());
    return 1;
  }
  set_log_prefix(bundle->manifest.self.id);
  auto trainer = rt::Trainer::create(std::move(bundle).value(), options);
  if (!trainer.ok()) {
    std::fprintf(stderr, "ravnest-rt: error: %s\n", trainer.status().message().c_str());
    return 1;
  }
  Status status = (*trainer)->run();
  if (!status.ok()) {
    std::fprintf(stderr, "ravnest-rt: error: %s\n", status.message().c_str());
    return 1;
  }
  return 0;
}
