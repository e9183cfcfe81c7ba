// `ravnestc compile`: ONNX model -> one bundle per node.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "codegen/compile.h"
#include "tools/ravnestc/commands.h"

namespace {

int compile_usage(const char* message) {
  if (message) std::fprintf(stderr, "ravnestc compile: %s\n", message);
  std::fprintf(stderr,
               "usage: ravnestc compile MODEL.onnx -o DIR [--devices FILE] [--stages K|K1,K2,...] [--clusters C]\n"
               "         [--average-every S] [--local-steps K1,K2,...] [--average-optimizer-state]"
               "         [--batch B] [--microbatches M]"
               " [--schedule gpipe|1f1b|zb-h1|zb-h2|auto] [--shape NAME=AxBx...] [--lr X] [--momentum X]\n"
               "         [--weight-decay X]"
               " [--nesterov] [--epochs N] [--steps N] [--seed N] [--dataset KIND] [--data DIR] [--no-eval] [--async]\n"
               "         [--host HOST] [--base-port PORT] [--compress-activations C] [--compress-gradients C]\n"
               "         [--compress-averaging C] [--replan-every R] [--late-deadline S]\n"
               "         [--optimizer sgd|adamw|lamb] [--beta1 X] [--beta2 X] [--eps X] [--clip-norm X]\n"
               "         [--lr-schedule constant|cosine|step] [--warmup-steps N] [--lr-min X] [--step-size N]"
               " [--gamma X]\n"
               "         [--loss ce|mse] [--backup-stages S1,S2,...] [--backup-every N] [--joinable] [--join-backups]\n"
               "  --devices FILE: balance the stages to the machines of a devices file (docs/devices.md);\n"
               "  clusters and stages are then chosen for them unless --clusters C / --stages K fix the counts,\n"
               "  and each node gets its machine's address.\n"
               "  --batch is the global batch of one step; each micro-batch has B/M samples.\n"
               "  With C clusters, each trains the whole model on 1/C of every epoch and averages\n"
               "  parameters with the others every S steps. --late-deadline S: a cluster more than S seconds late\n"
               "  for a round is averaged in at a later one instead of stalling the others (docs/training.md).\n"
               "  C is none, fp16, bf16, int8 or topk:FRACTION (docs/compression.md).\n"
               "  Optimizers, schedules and clipping: docs/training.md (\"Optimizers\").\n"
               "  --loss: what is appended to a model that ends in logits: ce (softmax cross-entropy, the default)\n"
               "  or mse (mean squared error against one-hot labels); a model with its own loss takes only ce.\n"
               "  --backup-stages: a backup node for each listed stage (S: of cluster 0; C:S: of cluster C), which\n"
               "  receives the stage's state every step and takes the stage over if its node fails, in its pipeline\n"
               "  and in its averaging rings (docs/faults.md; synchronous training);\n"
               "  --backup-every N: the state goes to the backup every N steps (a takeover replays up to N steps,\n"
               "  every stage keeps N + 1 snapshots). --joinable: with several clusters, nodes started with\n"
               "  `ravnest-rt join` during the run form a new cluster (docs/faults.md). --join-backups: with several\n"
               "  clusters, they become backups of stages without one instead (implied by --backup-stages).\n");
  return 2;
}

bool parse_int(const char* text, long long* out) {
  if (!text || !*text) return false;
  char* end = nullptr;
  *out = std::strtoll(text, &end, 10);
  return *end == '\0';
}

// "K" or "K1,K2,...": every item an integer in [lo, hi]; false otherwise.
bool parse_int_list(const char* text, long long lo, long long hi, std::vector<long long>* out) {
  std::string list = text ? text : "";
  out->clear();
  for (size_t pos = 0; pos <= list.size();) {
    size_t comma = list.find(',', pos);
    std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    long long n = 0;
    if (!parse_int(item.c_str(), &n) || n < lo || n > hi) return false;
    out->push_back(n);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return true;
}

bool parse_float(const char* text, double* out) {
  if (!text || !*text) return false;
  char* end = nullptr;
  *out = std::strtod(text, &end);
  return *end == '\0';
}

}  // namespace

int run_compile(int argc, char** argv) {
  using namespace ravnest;
  cg::CompileOptions options;
  std::vector<int> stage_list{1};
  int clusters = 0;  // 0: as many as --stages lists
  bool stages_given = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    long long n = 0;
    double x = 0;
    if (arg == "-o" || arg == "--output") {
      const char* v = value();
      if (!v) return compile_usage("-o needs a folder");
      options.out_dir = v;
    } else if (arg == "--stages") {
      // K, or K1,K2,... with one entry per cluster.
      std::vector<long long> items;
      if (!parse_int_list(value(), 1, 1024, &items))
        return compile_usage("--stages needs K or K1,K2,... with each K in 1..1024");
      stage_list.assign(items.begin(), items.end());
      stages_given = true;
    } else if (arg == "--devices") {
      const char* v = value();
      if (!v) return compile_usage("--devices needs a devices file (docs/devices.md)");
      options.devices_path = v;
    } else if (arg == "--clusters") {
      if (!parse_int(value(), &n) || n < 1 || n > 256) return compile_usage("--clusters needs a number in 1..256");
      clusters = static_cast<int>(n);
    } else if (arg == "--backup-stages") {
      // S1,S2,... or C:S,...: a backup node for each of these stages (of cluster 0, or of cluster C; docs/faults.md).
      const char* v = value();
      std::string list = v ? v : "";
      for (size_t at = 0; v && at <= list.size();) {
        const size_t comma = std::min(list.find(',', at), list.size());
        std::string item = list.substr(at, comma - at);
        const size_t colon = item.find(':');
        long long c = 0, s = 0;
        const bool parsed = colon == std::string::npos
                                ? parse_int(item.c_str(), &s)
                                : parse_int(item.substr(0, colon).c_str(), &c) && parse_int(item.substr(colon + 1).c_str(), &s);
        if (!parsed || c < 0 || c > 4095 || s < 0 || s > 4095) {
          v = nullptr;
          break;
        }
        options.backup_stages.emplace_back(static_cast<int>(c), static_cast<int>(s));
        at = comma + 1;
      }
      if (!v || options.backup_stages.empty())
        return compile_usage("--backup-stages needs S1,S2,... (stages of cluster 0) or C:S,... (stage S of cluster C)");
    } else if (arg == "--joinable") {
      options.joinable = true;
    } else if (arg == "--join-backups") {
      options.join_backups = true;
    } else if (arg == "--backup-every") {
      if (!parse_int(value(), &n) || n < 1 || n > 1000) return compile_usage("--backup-every needs a number of steps in 1..1000");
      options.training.backup_every = n;
    } else if (arg == "--replan-every") {
      if (!parse_int(value(), &n) || n < 0) return compile_usage("--replan-every needs a number of rounds (0: never)");
      options.training.replan_every = n;
    } else if (arg == "--late-deadline") {
      const char* v = value();
      char* end = nullptr;
      const double s = v ? std::strtod(v, &end) : 0;
      if (!v || *end != '\0' || !(s > 0) || s > 86400) return compile_usage("--late-deadline needs seconds in (0, 86400]");
      options.training.late_deadline_s = s;
    } else if (arg == "--average-optimizer-state") {
      options.training.average_optimizer_state = true;
    } else if (arg == "--local-steps") {
      // K1,K2,...: per cluster, local steps between averaging rounds (flexible update rule).
      std::vector<long long> items;
      if (!parse_int_list(value(), 1, INT32_MAX, &items))
        return compile_usage("--local-steps needs K1,K2,... (positive)");
      options.local_steps.assign(items.begin(), items.end());
    } else if (arg == "--average-every") {
      if (!parse_int(value(), &n) || n < 1) return compile_usage("--average-every needs a positive number of steps");
      options.training.average_every = n;
    } else if (arg == "--batch") {
      if (!parse_int(value(), &n) || n < 1) return compile_usage("--batch needs a positive number");
      options.batch = n;
    } else if (arg == "--microbatches") {
      if (!parse_int(value(), &n) || n < 1) return compile_usage("--microbatches needs a positive number");
      options.microbatches = n;
    } else if (arg == "--schedule") {
      const char* v = value();
      if (!v) return compile_usage("--schedule needs gpipe, 1f1b, zb-h1, zb-h2 or auto");
      options.schedule = v;
    } else if (arg == "--shape") {
      const char* v = value();
      const char* eq = v ? std::strchr(v, '=') : nullptr;
      if (!eq) return compile_usage("--shape needs NAME=AxBx...");
      auto shape = parse_shape(eq + 1);
      if (!shape.ok()) return compile_usage(shape.status().message().c_str());
      options.shapes[std::string(v, eq)] = *shape;
    } else if (arg == "--lr") {
      if (!parse_float(value(), &x) || x <= 0) return compile_usage("--lr needs a positive number");
      options.training.optimizer.lr = x;
    } else if (arg == "--momentum") {
      if (!parse_float(value(), &x) || x < 0 || x >= 1) return compile_usage("--momentum needs a number in [0, 1)");
      options.training.optimizer.momentum = x;
    } else if (arg == "--weight-decay") {
      if (!parse_float(value(), &x) || x < 0) return compile_usage("--weight-decay needs a non-negative number");
      options.training.optimizer.weight_decay = x;
    } else if (arg == "--nesterov") {
      options.training.optimizer.nesterov = true;
    } else if (arg == "--optimizer" || arg == "--lr-schedule") {
      // Values are checked with the rest of the optimizer by rt::validate_optimizer.
      const char* v = value();
      if (!v) return compile_usage(arg == "--optimizer" ? "--optimizer needs sgd, adamw or lamb"
                                                        : "--lr-schedule needs constant, cosine or step");
      (arg == "--optimizer" ? options.training.optimizer.type : options.training.optimizer.lr_schedule) = v;
    } else if (arg == "--beta1" || arg == "--beta2" || arg == "--eps" || arg == "--lr-min" || arg == "--gamma" ||
               arg == "--clip-norm") {
      if (!parse_float(value(), &x)) return compile_usage((arg + " needs a number").c_str());
      rt::OptimizerConfig& o = options.training.optimizer;
      (arg == "--beta1"    ? o.beta1
       : arg == "--beta2"  ? o.beta2
       : arg == "--eps"    ? o.eps
       : arg == "--lr-min" ? o.lr_min
       : arg == "--gamma"  ? o.gamma
                           : o.clip_norm) = x;
    } else if (arg == "--warmup-steps" || arg == "--step-size") {
      if (!parse_int(value(), &n) || n < 0) return compile_usage((arg + " needs a number of optimizer updates").c_str());
      (arg == "--warmup-steps" ? options.training.optimizer.warmup_steps : options.training.optimizer.step_size) = n;
    } else if (arg == "--epochs") {
      if (!parse_int(value(), &n) || n < 1) return compile_usage("--epochs needs a positive number");
      options.training.epochs = n;
    } else if (arg == "--steps") {
      if (!parse_int(value(), &n) || n < 1) return compile_usage("--steps needs a positive number");
      options.training.max_steps = n;
    } else if (arg == "--seed") {
      if (!parse_int(value(), &n) || n < 0) return compile_usage("--seed needs a non-negative number");
      options.training.seed = static_cast<uint64_t>(n);
    } else if (arg == "--dataset") {
      const char* v = value();
      if (!v) return compile_usage("--dataset needs auto, fashion-mnist, sort or sort-classify");
      options.dataset = v;
    } else if (arg == "--data") {
      const char* v = value();
      if (!v) return compile_usage("--data needs a folder");
      options.training.data.dir = v;
    } else if (arg == "--async") {
      options.training.mode = "async";
    } else if (arg == "--compress-activations" || arg == "--compress-gradients" || arg == "--compress-averaging") {
      const char* v = value();
      auto spec = rt::parse_codec_spec(v ? v : "");
      if (!spec.ok()) return compile_usage((arg + ": " + spec.status().message()).c_str());
      rt::CompressionConfig& c = options.training.compression;
      (arg == "--compress-activations" ? c.activations : arg == "--compress-gradients" ? c.gradients : c.averaging) =
          *spec;
    } else if (arg == "--loss") {
      const char* v = value();
      if (!v || (std::strcmp(v, "ce") != 0 && std::strcmp(v, "mse") != 0))
        return compile_usage("--loss needs ce (softmax cross-entropy) or mse (mean squared error)");
      options.loss = v;
    } else if (arg == "--no-eval") {
      options.training.evaluate = false;
    } else if (arg == "--host") {
      const char* v = value();
      if (!v) return compile_usage("--host needs a host name or address");
      options.host = v;
    } else if (arg == "--base-port") {
      if (!parse_int(value(), &n) || n < 1 || n > 65535) return compile_usage("--base-port needs a port number");
      options.base_port = static_cast<int>(n);
    } else if (arg == "-h" || arg == "--help") {
      compile_usage(nullptr);
      return 0;
    } else if (!arg.empty() && arg[0] == '-') {
      return compile_usage(("unknown option '" + arg + "'").c_str());
    } else if (options.model_path.empty()) {
      options.model_path = arg;
    } else {
      return compile_usage("only one model file may be given");
    }
  }
  if (options.model_path.empty()) return compile_usage("a model file is required");
  if (!options.devices_path.empty()) {
    // With machines, --clusters and --stages fix the counts the cluster former would choose.
    if (stage_list.size() > 1)
      return compile_usage("with --devices, --stages takes one number (machines per cluster), not a list");
    options.device_clusters = clusters;
    options.device_stages = stages_given ? stage_list[0] : 0;
  }
  if (clusters > 0 && stage_list.size() > 1 && static_cast<int>(stage_list.size()) != clusters)
    return compile_usage("--stages lists a different number of clusters than --clusters");
  if (clusters > 1 && stage_list.size() == 1) stage_list.assign(static_cast<size_t>(clusters), stage_list[0]);
  options.stages = stage_list[0];
  if (stage_list.size() > 1) options.cluster_stages = stage_list;
  if (options.out_dir.empty()) return compile_usage("-o DIR is required");
  auto summary = cg::compile_model(options, std::cout);
  if (!summary.ok()) {
    std::fprintf(stderr, "ravnestc: error: %s\n", summary.status().message().c_str());
    return 1;
  }
  std::printf("wrote %d bundle(s) to %s (run id %s); start them with: ravnest-launch %s\n", summary->stages,
              options.out_dir.c_str(), summary->run_id.c_str(), options.out_dir.c_str());
  return 0;
}
