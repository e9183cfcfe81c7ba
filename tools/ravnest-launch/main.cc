// ravnest-launch: runs every node of a bundle folder as local processes on
// loopback and shows one merged progress line.
//
//   ravnest-launch DIR [--steps N] [--no-eval] [--losses FILE] [--save-params DIR]
//                  [--timeout S] [--rt PATH] [--trace OUT.json [--predict]] [--links FILE] [--quiet]
//                  [--checkpoint-dir DIR [--checkpoint-every N] [--resume]]
//
// Each node gets a free loopback port chosen here (the bundles' own addresses
// are for real deployments). If any node fails, the others get a grace period
// to report their own view of the failure, then are stopped; the exit status
// is then non-zero and names the failed node. With several clusters, a failed
// node ends only its own cluster (its other nodes are stopped after the grace
// period); the others train on without it (docs/faults.md), and the run
// succeeds, naming the lost cluster, if at least one cluster finishes. With --trace, each node writes
// its own trace next to OUT.json and the launcher merges them into OUT.json at
// the end (also after a failure, from the nodes that wrote one). With --links,
// each pipeline link runs through an emulated home link (docs/links.md). With
// --predict, after a successful traced run the simulator's timeline of one step
// (from each node's schedule.json and measured mean F/B/W times) is added to
// OUT.json as "predicted <node>" processes (codegen/prediction.h).
// It prints where each node listens, which `ravnest-rt join --via ID=HOST:PORT`
// needs; a worker whose joined backup announced itself (docs/faults.md) may fail
// without ending the run, as one with a compiled backup.
// With --checkpoint-dir each node writes its checkpoints under DIR/<node id>
// (docs/checkpoints.md); --resume restarts every node from the newest step all
// of them hold a checkpoint of.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/json.h"
#include "codegen/prediction.h"
#include "common/ports.h"
#include "runtime/netem/links.h"
#include "runtime/trace.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct NodeProc {
  std::string id;
  std::string dir;
  int stage = 0;
  int port = 0;
  pid_t pid = -1;
  int out_fd = -1;
  std::string buffer;
  bool exited = false;
  int status = 0;
  int64_t step = 0;
  int cluster = 0;
  std::string backup_of;  // a backup node: the worker it shadows
  std::string backup;     // a worker with a backup: the backup's id
  bool took_over = false;  // a backup that took its stage over
  bool replaced = false;   // a worker that failed and whose backup took over
  std::string joined_backup;  // a backup that joined during the run (`ravnest-rt join`), not started here
  ravnest::cg::StageCost cost;  // mean F/B/W seconds from the "done" event
  bool done = false;
};

int usage(const char* message) {
  if (message) std::fprintf(stderr, "ravnest-launch: %s\n", message);
  std::fprintf(stderr,
               "usage: ravnest-launch DIR [--steps N] [--no-eval] [--losses FILE] [--save-params DIR]\n"
               "                      [--timeout SECONDS] [--rt PATH] [--trace OUT.json [--predict]] [--links FILE] [--quiet]\n"
               "                      [--checkpoint-dir DIR [--checkpoint-every N] [--resume]]\n");
  return 2;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

// Where node `id` writes its part of the trace OUT.json (merged, then removed).
std::string node_trace_path(const std::string& out, const std::string& id) { return out + "." + id + ".part"; }

// Merges the node traces that exist into `out` and removes them; says so on stderr when it cannot.
bool merge_node_traces(const std::string& out, const std::vector<NodeProc>& nodes) {
  std::vector<std::string> parts;
  std::error_code ec;
  for (const auto& n : nodes)
    if (fs::exists(node_trace_path(out, n.id), ec)) parts.push_back(node_trace_path(out, n.id));
  if (parts.empty()) {
    std::fprintf(stderr, "ravnest-launch: no node wrote a trace; %s not written\n", out.c_str());
    return false;
  }
  ravnest::Status st = ravnest::rt::merge_traces(parts, out);
  for (const auto& p : parts) fs::remove(p, ec);
  if (!st.ok()) {
    std::fprintf(stderr, "ravnest-launch: error: %s\n", st.message().c_str());
    return false;
  }
  std::fprintf(stderr, "ravnest-launch: trace of %zu of %zu nodes written to %s (open it in https://ui.perfetto.dev)\n",
               parts.size(), nodes.size(), out.c_str());
  return true;
}

// Adds the simulator's timeline of one step to the merged trace; says so on stderr.
bool add_prediction(const std::string& trace_path, const std::vector<NodeProc>& nodes) {
  std::vector<std::string> schedules, ids;
  std::vector<ravnest::cg::StageCost> costs;
  for (const auto& n : nodes) {
    if (!n.done) {
      std::fprintf(stderr, "ravnest-launch: error: %s reported no mean F/B/W times; no prediction added\n", n.id.c_str());
      return false;
    }
    schedules.push_back((fs::path(n.dir) / "schedule.json").string());
    ids.push_back(n.id);
    costs.push_back(n.cost);
  }
  auto sim = ravnest::cg::add_prediction_to_trace_file(trace_path, schedules, costs, ids);
  if (!sim.ok()) {
    std::fprintf(stderr, "ravnest-launch: error: %s\n", sim.status().message().c_str());
    return false;
  }
  std::fprintf(stderr, "ravnest-launch: predicted step (%s): %.1f ms, bubble %.3f (steady %.3f), added to %s\n",
               sim->kind.c_str(), sim->makespan * 1e3, sim->bubble_ratio, sim->steady_bubble_ratio,
               trace_path.c_str());
  return true;
}

std::string exit_description(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "ended";
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  std::vector<std::string> passthrough;
  std::string rt_path = (fs::read_symlink("/proc/self/exe").parent_path() / "ravnest-rt").string();
  std::string save_dir;
  std::string trace_path;
  std::string links_path;
  double timeout_s = 0;
  bool quiet = false;
  bool predict = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--steps" || arg == "--losses" || arg == "--checkpoint-dir" || arg == "--checkpoint-every") {
      const char* v = value();
      if (!v) return usage((arg + " needs a value").c_str());
      passthrough.push_back(arg);
      passthrough.push_back(v);
    } else if (arg == "--no-eval" || arg == "--resume") {  // --resume: every node, from the same checkpoint step
      passthrough.push_back(arg);
    } else if (arg == "--save-params") {
      const char* v = value();
      if (!v) return usage("--save-params needs a folder");
      save_dir = v;
    } else if (arg == "--trace") {
      const char* v = value();
      if (!v) return usage("--trace needs an output file");
      trace_path = v;
    } else if (arg == "--links") {
      const char* v = value();
      if (!v) return usage("--links needs a links file (docs/links.md)");
      links_path = v;
    } else if (arg == "--timeout") {
      const char* v = value();
      if (!v || (timeout_s = std::atof(v)) <= 0) return usage("--timeout needs a positive number of seconds");
    } else if (arg == "--rt") {
      const char* v = value();
      if (!v) return usage("--rt needs a path");
      rt_path = v;
    } else if (arg == "--quiet") {
      quiet = true;
    } else if (arg == "--predict") {
      predict = true;
    } else if (arg == "-h" || arg == "--help") {
      usage(nullptr);
      return 0;
    } else if (!arg.empty() && arg[0] == '-') {
      return usage(("unknown option '" + arg + "'").c_str());
    } else if (dir.empty()) {
      dir = arg;
    } else {
      return usage("only one bundle folder may be given");
    }
  }
  if (dir.empty()) return usage("a bundle folder (the -o of `ravnestc compile`) is required");
  if (predict && trace_path.empty()) return usage("--predict adds to the trace: give --trace OUT.json too");

  // Find the nodes.
  std::vector<NodeProc> nodes;
  int64_t batch = 0;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    std::fprintf(stderr, "ravnest-launch: error: '%s' is not a folder; pass the -o folder of `ravnestc compile`\n",
                 dir.c_str());
    return 1;
  }
  for (const auto& entry : fs::directory_iterator(dir)) {
    fs::path manifest = entry.path() / "manifest.json";
    if (!entry.is_directory() || !fs::exists(manifest)) continue;
    auto json = ravnest::read_json_file(manifest.string());
    if (!json.ok()) {
      std::fprintf(stderr, "ravnest-launch: error: %s\n", json.status().message().c_str());
      return 1;
    }
    NodeProc n;
    n.dir = entry.path().string();
    auto id = json->get_string("node.id");
    auto stage = json->get_int("stage");
    auto b = json->get_int("training.batch");
    if (!id.ok() || !stage.ok() || !b.ok()) {
      std::fprintf(stderr, "ravnest-launch: error: %s: not a Ravnest manifest (no node.id, stage or training.batch)\n",
                   manifest.c_str());
      return 1;
    }
    n.id = *id;
    n.stage = static_cast<int>(*stage);
    auto cluster = json->get_int_or("cluster", 0);
    n.cluster = cluster.ok() ? static_cast<int>(*cluster) : 0;
    if (auto of = json->get_string_or("backup_of.id", ""); of.ok()) n.backup_of = *of;
    if (auto backups = json->get_array("backups"); backups.ok())
      for (const auto& entry : **backups) {
        auto stage_of = entry.get_int_or("stage", -1);
        auto backup_id = entry.get_string_or("id", "");
        if (stage_of.ok() && *stage_of == n.stage && n.backup_of.empty() && backup_id.ok()) n.backup = *backup_id;
      }
    batch = *b;
    nodes.push_back(std::move(n));
  }
  if (nodes.empty()) {
    std::fprintf(stderr, "ravnest-launch: error: no node bundles (*/manifest.json) in '%s'\n", dir.c_str());
    return 1;
  }
  std::sort(nodes.begin(), nodes.end(), [](const NodeProc& a, const NodeProc& b) {
    return std::pair(a.cluster, a.stage) < std::pair(b.cluster, b.stage);
  });
  for (auto& n : nodes) {
    n.port = ravnest::free_loopback_port();
    if (n.port <= 0) {
      std::fprintf(stderr, "ravnest-launch: error: no free loopback port for %s\n", n.id.c_str());
      return 1;
    }
  }
  if (!save_dir.empty()) fs::create_directories(save_dir, ec);

  // Threads: share the cores between the nodes unless the user chose.
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  if (!std::getenv("OMP_NUM_THREADS")) {
    std::string threads = std::to_string(std::max<unsigned>(1, cores / static_cast<unsigned>(nodes.size())));
    setenv("OMP_NUM_THREADS", threads.c_str(), 1);
  }
  signal(SIGPIPE, SIG_IGN);
  // Emulated home links between pipeline neighbours (docs/links.md); direct addresses without --links.
  std::vector<ravnest::rt::LaunchedNode> launched;
  for (const auto& n : nodes) launched.push_back({n.id, n.stage, n.port, n.cluster});
  auto links = ravnest::rt::PipelineLinks::start(links_path, launched);
  if (!links.ok()) {
    std::fprintf(stderr, "ravnest-launch: error: %s\n", links.status().message().c_str());
    return 1;
  }
  if (!quiet) for (const auto& line : (*links)->describe()) std::printf("%s\n", line.c_str());
  // Where each node listens: what `ravnest-rt join --via ID=HOST:PORT` needs (docs/faults.md).
  if (!quiet)
    for (const auto& n : nodes)
      std::printf("%s (cluster %d, stage %d%s) listens at 127.0.0.1:%d\n", n.id.c_str(), n.cluster, n.stage,
                  n.backup_of.empty() ? "" : ", backup", n.port);

  for (auto& n : nodes) {
    std::vector<std::string> args{rt_path, "--bundle", n.dir, "--listen", "127.0.0.1:" + std::to_string(n.port)};
    for (const auto& other : nodes)
      if (other.id != n.id) {
        args.push_back("--peer");
        args.push_back(other.id + "=" + (*links)->peer_address(n.id, other.id));
      }
    args.insert(args.end(), passthrough.begin(), passthrough.end());
    if (!save_dir.empty()) {
      args.push_back("--save-params");
      args.push_back((fs::path(save_dir) / (n.id + ".rvt")).string());
    }
    if (!trace_path.empty()) {
      args.push_back("--trace");
      args.push_back(node_trace_path(trace_path, n.id));
    }
    int pipefd[2];
    if (pipe(pipefd) != 0) {
      std::perror("ravnest-launch: pipe");
      return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("ravnest-launch: fork");
      return 1;
    }
    if (pid == 0) {
      dup2(pipefd[1], STDOUT_FILENO);
      close(pipefd[0]);
      close(pipefd[1]);
      std::vector<char*> cargs;
      for (auto& a : args) cargs.push_back(a.data());
      cargs.push_back(nullptr);
      execv(cargs[0], cargs.data());
      std::fprintf(stderr, "ravnest-launch: cannot run %s: %s\n", cargs[0], std::strerror(errno));
      _exit(127);
    }
    close(pipefd[1]);
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    n.pid = pid;
    n.out_fd = pipefd[0];
  }

  const bool tty = isatty(STDOUT_FILENO);
  auto start = Clock::now();
  auto last_print = start - std::chrono::seconds(60);
  std::string failed;
  Clock::time_point failure_time;
  // With several clusters a failure ends only its cluster: lost clusters and when they failed.
  std::set<int> clusters;
  for (const auto& n : nodes) clusters.insert(n.cluster);
  const bool multi_cluster = clusters.size() > 1;
  std::map<int, std::pair<std::string, Clock::time_point>> lost;  // cluster -> (first failed node, when)
  std::set<int> stopped;                                          // lost clusters whose nodes were stopped
  auto live = [&](const NodeProc& n) { return lost.count(n.cluster) == 0; };
  int64_t total_steps = 0, last_step = 0;
  double loss = NAN, train_acc = NAN;
  std::vector<std::string> eval_lines;
  std::map<std::string, double> traffic;  // bytes summed over the nodes' "done" events
  std::map<std::string, std::set<std::pair<int64_t, int64_t>>> late;  // node -> (ring, round) it was late for
  bool progress_open = false;

  auto print_progress = [&](bool force) {
    if (quiet) return;
    auto now = Clock::now();
    double since = std::chrono::duration<double>(now - last_print).count();
    if (!force && since < (tty ? 0.25 : 10.0)) return;
    last_print = now;
    int64_t done = -1;
    for (const auto& n : nodes)  // standby backups report no steps; failed workers no more
      if (live(n) && (n.backup_of.empty() || n.took_over) && !n.replaced)
        done = done < 0 ? n.step : std::min(done, n.step);
    done = std::max<int64_t>(done, 0);
    double elapsed = std::chrono::duration<double>(now - start).count();
    double rate = elapsed > 0 ? static_cast<double>(last_step * batch) / elapsed : 0;
    double eta = done > 0 && total_steps > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total_steps - done) : NAN;
    char line[256];
    std::snprintf(line, sizeof line, "step %lld/%lld | loss %.4f | train acc %5.1f%% | %.0f samples/s | elapsed %s | ETA %s",
                  static_cast<long long>(done), static_cast<long long>(total_steps), loss, train_acc * 100, rate,
                  format_duration(elapsed).c_str(), format_duration(eta).c_str());
    if (tty) {
      std::printf("\r%-110s", line);
      progress_open = true;
    } else {
      std::printf("%s\n", line);
    }
    std::fflush(stdout);
  };
  auto end_progress_line = [&] {
    if (progress_open) std::printf("\n");
    progress_open = false;
  };

  auto handle_line = [&](NodeProc& n, const std::string& line) {
    auto json = ravnest::parse_json(line);
    if (!json.ok()) return;
    auto event = json->get_string_or("event", "");
    if (!event.ok()) return;
    if (*event == "step") {
      n.step = json->get_int_or("step", n.step).value();
      total_steps = json->get_int_or("steps", total_steps).value();
      // With several clusters, show the first live cluster's.
      if (json->has("loss") && live(n) && n.cluster == *std::find_if(clusters.begin(), clusters.end(),
                                                                       [&](int c) { return !lost.count(c); })) {
        loss = json->get_double_or("loss", loss).value();
        train_acc = json->get_double_or("train_accuracy", train_acc).value();
        last_step = n.step;
      }
      print_progress(false);
    } else if (*event == "eval") {
      char buf[160];
      std::snprintf(buf, sizeof buf, "epoch %lld: test accuracy %.2f%% (%lld/%lld)",
                    static_cast<long long>(json->get_int_or("epoch", 0).value() + 1),
                    json->get_double_or("accuracy", 0).value() * 100,
                    static_cast<long long>(json->get_int_or("correct", 0).value()),
                    static_cast<long long>(json->get_int_or("total", 0).value()));
      print_progress(true);
      end_progress_line();
      std::printf("%s\n", buf);
      std::fflush(stdout);
      eval_lines.push_back(buf);
    } else if (*event == "takeover") {
      n.took_over = true;
      n.step = json->get_int_or("step", 0).value();
      end_progress_line();
      std::printf("%s took over stage %d at step %lld in %.3f s\n", n.id.c_str(), n.stage,
                  static_cast<long long>(n.step), json->get_double_or("seconds", 0).value());
      std::fflush(stdout);
    } else if (*event == "late") {
      late[json->get_string_or("late", "").value()].insert(
          {json->get_int_or("ring", 0).value(), json->get_int_or("round", 0).value()});
    } else if (*event == "backup_joined") {
      n.joined_backup = json->get_string_or("backup", "").value();
      end_progress_line();
      std::printf("%s joined as the backup of stage %d (%s) after step %lld\n", n.joined_backup.c_str(), n.stage,
                  n.id.c_str(), static_cast<long long>(json->get_int_or("step", 0).value()));
      std::fflush(stdout);
    } else if (*event == "done") {
      n.cost = {json->get_double_or("f_s", 0).value(), json->get_double_or("b_s", 0).value(),
                json->get_double_or("w_s", 0).value()};
      n.done = true;
      for (const char* key : {"bytes_act", "bytes_act_raw", "bytes_grad", "bytes_grad_raw", "bytes_avg", "bytes_avg_dense"})
        traffic[key] += static_cast<double>(json->get_int_or(key, 0).value());
    }
  };

  size_t running = nodes.size();
  bool killed = false;
  while (running > 0) {
    std::vector<pollfd> fds;
    for (auto& n : nodes)
      if (n.out_fd >= 0) fds.push_back({n.out_fd, POLLIN, 0});
    if (!fds.empty()) poll(fds.data(), fds.size(), 200);
    else std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (auto& n : nodes) {
      if (n.out_fd < 0) continue;
      char buf[65536];
      while (true) {
        ssize_t got = read(n.out_fd, buf, sizeof buf);
        if (got > 0) {
          n.buffer.append(buf, static_cast<size_t>(got));
          size_t nl;
          while ((nl = n.buffer.find('\n')) != std::string::npos) {
            handle_line(n, n.buffer.substr(0, nl));
            n.buffer.erase(0, nl + 1);
          }
          continue;
        }
        if (got == 0) {
          close(n.out_fd);
          n.out_fd = -1;
        }
        break;
      }
    }
    for (auto& n : nodes) {
      if (n.exited) continue;
      int status = 0;
      if (waitpid(n.pid, &status, WNOHANG) == n.pid) {
        n.exited = true;
        n.status = status;
        --running;
        bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        // A worker whose backup is still running: the backup takes its stage over.
        auto backup = std::find_if(nodes.begin(), nodes.end(), [&](const NodeProc& b) { return b.id == n.backup; });
        if (!ok && !killed && backup != nodes.end() && !backup->exited) {
          end_progress_line();
          std::fprintf(stderr, "ravnest-launch: %s (stage %d) failed: %s; its backup %s takes over\n", n.id.c_str(),
                       n.stage, exit_description(status).c_str(), backup->id.c_str());
          n.replaced = true;
          continue;
        }
        if (!ok && !killed && !n.joined_backup.empty()) {  // a backup that joined runs elsewhere: the run goes on
          end_progress_line();
          std::fprintf(stderr, "ravnest-launch: %s (stage %d) failed: %s; its joined backup %s takes over\n",
                       n.id.c_str(), n.stage, exit_description(status).c_str(), n.joined_backup.c_str());
          n.replaced = true;
          continue;
        }
        if (!ok && multi_cluster && !killed && stopped.count(n.cluster) == 0) {
          if (lost.count(n.cluster) == 0) {
            lost[n.cluster] = {n.id, Clock::now()};
            end_progress_line();
            std::fprintf(stderr, "ravnest-launch: %s (cluster %d, stage %d) failed: %s; cluster %d is lost, the others "
                         "train on\n", n.id.c_str(), n.cluster, n.stage, exit_description(status).c_str(), n.cluster);
          }
          if (lost.size() == clusters.size() && failed.empty()) {
            failed = lost.begin()->second.first;
            failure_time = lost.begin()->second.second;
          }
        } else if (!ok && failed.empty() && !killed) {
          failed = n.id;
          failure_time = Clock::now();
          end_progress_line();
          std::fprintf(stderr, "ravnest-launch: %s (stage %d) failed: %s\n", n.id.c_str(), n.stage,
                       exit_description(status).c_str());
        }
      }
    }
    auto now = Clock::now();
    bool timed_out = timeout_s > 0 && std::chrono::duration<double>(now - start).count() > timeout_s;
    bool grace_over = !failed.empty() && now - failure_time > std::chrono::seconds(15);
    // A lost cluster's nodes that did not end by themselves are stopped after the grace period.
    for (const auto& [c, what] : lost) {
      if (stopped.count(c) || now - what.second <= std::chrono::seconds(15)) continue;
      for (auto& n : nodes)
        if (n.cluster == c && !n.exited) kill(n.pid, SIGKILL);
      stopped.insert(c);
    }
    if ((timed_out || grace_over) && !killed && running > 0) {
      end_progress_line();
      if (timed_out) std::fprintf(stderr, "ravnest-launch: timed out after %.0f s; stopping every node\n", timeout_s);
      else std::fprintf(stderr, "ravnest-launch: stopping the remaining nodes after %s failed\n", failed.c_str());
      for (auto& n : nodes)
        if (!n.exited) kill(n.pid, SIGKILL);
      killed = true;
      if (failed.empty()) failed = "timeout";
    }
  }
  print_progress(true);
  end_progress_line();
  if (!quiet) for (const auto& line : (*links)->summary()) std::printf("%s\n", line.c_str());
  bool traced = trace_path.empty() || merge_node_traces(trace_path, nodes);
  if (traced && predict && failed.empty()) traced = add_prediction(trace_path, nodes);
  if (!failed.empty()) {
    std::fprintf(stderr, "ravnest-launch: the run failed (%s)\n",
                 failed == "timeout" ? "timed out" : ("first failure: " + failed).c_str());
    return 1;
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  for (const auto& [c, what] : lost)
    std::printf("cluster %d was lost (%s failed); the run finished on the other cluster(s)\n", c, what.first.c_str());
  std::printf("done: %lld steps in %s on %zu nodes\n", static_cast<long long>(last_step), format_duration(elapsed).c_str(),
              nodes.size());
  // What crossed the wire, as sent and as it would have been uncompressed.
  auto mb = [&](const char* key) { return traffic[key] / 1e6; };
  std::printf("traffic: activations %.1f MB (raw %.1f), gradients %.1f MB (raw %.1f)", mb("bytes_act"),
              mb("bytes_act_raw"), mb("bytes_grad"), mb("bytes_grad_raw"));
  if (traffic["bytes_avg_dense"] > 0)  // clusters averaged
    std::printf(", averaging %.1f MB (dense %.1f)", mb("bytes_avg"), mb("bytes_avg_dense"));
  std::printf("\n");
  for (const auto& [node, rounds] : late)  // --late-deadline (docs/training.md)
    std::printf("late: %s missed %zu ring rounds, averaged in at later ones\n", node.c_str(), rounds.size());
  if (!eval_lines.empty()) std::printf("final %s\n", eval_lines.back().c_str());
  return traced ? 0 : 1;
}
