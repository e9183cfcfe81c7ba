// ravnest-rt: runs one node of a compiled training job.
//
//   ravnest-rt --bundle DIR/node1 [--listen HOST:PORT] [--peer ID=HOST:PORT ...]
//              [--steps N] [--no-eval] [--losses FILE] [--save-params FILE]
//              [--connect-timeout S] [--recv-timeout S] [--heartbeat-timeout S] [--trace FILE] [--verbose]
//              [--checkpoint-dir DIR [--checkpoint-every N] [--resume]]
//   ravnest-rt join --via ID=HOST:PORT --listen HOST:PORT [--id NAME] [--dir DIR] [the flags above but --bundle]
//   ravnest-rt profile ...   (measures this machine; see tools/ravnest-rt/profile.cc)
//
// The same command runs every role: the bundle says which stage this node is.
// `join` asks a running job (any of its nodes) for a place, receives the bundle of
// the stage it will back up, and runs as that stage's backup (docs/faults.md).
// Exit status: 0 on success, 1 on a training or bundle error (message on
// stderr), 2 on bad usage.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "common/log.h"
#include "runtime/bundle.h"
#include "runtime/join.h"
#include "runtime/trainer.h"
#include "tools/ravnest-rt/profile.h"

namespace {

using namespace ravnest;

const char* const kTrainerFlags =
    "[--listen HOST:PORT] [--peer ID=HOST:PORT ...] [--steps N]\n"
    "         [--no-eval] [--losses FILE] [--save-params FILE] [--connect-timeout S]\n"
    "         [--recv-timeout S] [--heartbeat-timeout S] [--trace FILE] [--quiet] [--verbose]\n"
    "         [--checkpoint-dir DIR [--checkpoint-every N] [--resume]]\n";

int usage(const char* message) {
  if (message) std::fprintf(stderr, "ravnest-rt: %s\n", message);
  std::fprintf(stderr, "usage: ravnest-rt --bundle DIR %s", kTrainerFlags);
  std::fprintf(stderr, "       ravnest-rt join --via ID=HOST:PORT --listen HOST:PORT [--id NAME] [--dir DIR]\n"
                       "         [the flags above but --bundle]\n");
  std::fprintf(stderr, "       ravnest-rt profile [-o FILE] ...\n");
  return 2;
}

bool parse_double(const char* text, double* out) {
  char* end = nullptr;
  *out = std::strtod(text, &end);
  return end && *end == '\0' && *out > 0;
}

// "ID=HOST:PORT" into its parts; false when malformed.
bool parse_peer(const char* text, rt::PeerAddress* out) {
  const char* eq = text ? std::strchr(text, '=') : nullptr;
  const char* colon = eq ? std::strrchr(eq, ':') : nullptr;
  if (!eq || !colon || eq == text || colon == eq + 1) return false;
  const int port = std::atoi(colon + 1);
  if (port <= 0 || port > 65535) return false;
  *out = rt::PeerAddress{std::string(text, eq), std::string(eq + 1, colon), static_cast<uint16_t>(port)};
  return true;
}

// One trainer flag at argv[*i] (its value consumed too). Returns 1 when it was one,
// 0 when it is not a trainer flag, -1 after printing usage for a bad value (*status set).
int parse_trainer_flag(int argc, char** argv, int* i, rt::TrainerOptions* options, int* status) {
  const std::string arg = argv[*i];
  auto value = [&]() -> const char* { return *i + 1 < argc ? argv[++*i] : nullptr; };
  auto bad = [&](const char* message) {
    *status = usage(message);
    return -1;
  };
  if (arg == "--listen") {
    const char* v = value();
    if (!v) return bad("--listen needs HOST:PORT");
    options->listen = v;
  } else if (arg == "--peer") {
    const char* v = value();
    const char* eq = v ? std::strchr(v, '=') : nullptr;
    if (!eq) return bad("--peer needs ID=HOST:PORT");
    options->peers[std::string(v, eq)] = eq + 1;
  } else if (arg == "--steps") {
    const char* v = value();
    if (!v) return bad("--steps needs a number");
    options->max_steps = std::atoll(v);
    if (options->max_steps <= 0) return bad("--steps must be positive");
  } else if (arg == "--no-eval") {
    options->evaluate = false;
  } else if (arg == "--losses") {
    const char* v = value();
    if (!v) return bad("--losses needs a file");
    options->losses_path = v;
  } else if (arg == "--save-params") {
    const char* v = value();
    if (!v) return bad("--save-params needs a file");
    options->save_params_path = v;
  } else if (arg == "--trace") {
    const char* v = value();
    if (!v) return bad("--trace needs a file");
    options->trace_path = v;
  } else if (arg == "--connect-timeout" || arg == "--recv-timeout" || arg == "--heartbeat-timeout") {
    const char* v = value();
    double seconds = 0;
    if (!v || !parse_double(v, &seconds)) return bad("timeouts need a positive number of seconds");
    (arg == "--connect-timeout" ? options->connect_timeout_s
     : arg == "--recv-timeout"  ? options->recv_timeout_s
                                : options->heartbeat_timeout_s) = seconds;
  } else if (arg == "--checkpoint-dir") {
    const char* v = value();
    if (!v) return bad("--checkpoint-dir needs a folder");
    options->checkpoint_dir = v;
  } else if (arg == "--checkpoint-every") {
    const char* v = value();
    char* end = nullptr;
    options->checkpoint_every = v ? std::strtoll(v, &end, 10) : 0;
    if (!v || *end != '\0' || options->checkpoint_every <= 0)
      return bad("--checkpoint-every needs a positive number of steps");
  } else if (arg == "--resume") {
    options->resume = true;
  } else if (arg == "--quiet") {
    options->progress_json = false;
  } else if (arg == "--verbose") {
    set_verbose(true);
  } else {
    return 0;
  }
  return 1;
}

// Parses argv[1..]: the trainer flags, and every other argument through `other`, which
// consumes it (advancing *i past a value) and returns -1, or returns an exit status.
// Returns -1 once all are parsed, else the exit status to end with.
int parse_args(int argc, char** argv, rt::TrainerOptions* options,
               const std::function<int(const std::string& arg, int* i)>& other) {
  for (int i = 1; i < argc; ++i) {
    int status = 0;
    const int parsed = parse_trainer_flag(argc, argv, &i, options, &status);
    if (parsed < 0) return status;
    if (parsed > 0) continue;
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(nullptr);
      return 0;
    }
    if (const int st = other(arg, &i); st >= 0) return st;
  }
  return -1;
}

int train(rt::Bundle bundle, const rt::TrainerOptions& options) {
  set_log_prefix(bundle.manifest.self.id);
  auto trainer = rt::Trainer::create(std::move(bundle), options);
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

int join_main(int argc, char** argv) {
  rt::TrainerOptions options;
  rt::JoinOptions join;
  const int parsed = parse_args(argc, argv, &options, [&](const std::string& arg, int* i) {
    const char* v = *i + 1 < argc ? argv[*i + 1] : nullptr;
    if (arg == "--via") {
      if (!parse_peer(v, &join.via)) return usage("--via needs ID=HOST:PORT of a node of the run");
    } else if (arg == "--id") {
      if (!v || !*v) return usage("--id needs a node id");
      join.self.id = v;
    } else if (arg == "--dir") {
      if (!v) return usage("--dir needs a folder");
      join.dir = v;
    } else {
      return usage(("unknown argument '" + arg + "'").c_str());
    }
    ++*i;
    return -1;
  });
  if (parsed >= 0) return parsed;
  if (join.via.id.empty()) return usage("join needs --via ID=HOST:PORT (any node of the run)");
  rt::PeerAddress listen;
  if (options.listen.empty() || !parse_peer(("x=" + options.listen).c_str(), &listen))
    return usage("join needs --listen HOST:PORT: the address the run's nodes reach this node at");
  if (join.self.id.empty()) join.self.id = "joiner-" + std::to_string(getpid());
  join.self.host = listen.host;
  join.self.port = listen.port;
  if (join.dir.empty()) join.dir = "ravnest-join-" + join.self.id;
  join.connect_timeout_s = options.connect_timeout_s;
  join.answer_timeout_s = options.connect_timeout_s + options.recv_timeout_s;
  set_log_prefix(join.self.id);
  auto dir = rt::fetch_join_bundle(join);
  if (!dir.ok()) {
    std::fprintf(stderr, "ravnest-rt: error: %s\n", dir.status().message().c_str());
    return 1;
  }
  auto bundle = rt::load_bundle(*dir);
  if (!bundle.ok()) {
    std::fprintf(stderr, "ravnest-rt: error: %s\n", bundle.status().message().c_str());
    return 1;
  }
  return train(std::move(bundle).value(), options);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "profile") == 0) return tools::profile_main(argc - 1, argv + 1);
  if (argc > 1 && std::strcmp(argv[1], "join") == 0) return join_main(argc - 1, argv + 1);
  std::string bundle_dir;
  rt::TrainerOptions options;
  const int parsed = parse_args(argc, argv, &options, [&](const std::string& arg, int* i) {
    if (arg != "--bundle") return usage(("unknown argument '" + arg + "'").c_str());
    if (*i + 1 >= argc) return usage("--bundle needs a folder");
    bundle_dir = argv[++*i];
    return -1;
  });
  if (parsed >= 0) return parsed;
  if (bundle_dir.empty()) return usage("--bundle is required");
  if ((options.resume || options.checkpoint_every > 0) && options.checkpoint_dir.empty())
    return usage("--resume and --checkpoint-every need --checkpoint-dir DIR");
  auto bundle = rt::load_bundle(bundle_dir);
  if (!bundle.ok()) {
    std::fprintf(stderr, "ravnest-rt: error: %s\n", bundle.status().message().c_str());
    return 1;
  }
  return train(std::move(bundle).value(), options);
}
