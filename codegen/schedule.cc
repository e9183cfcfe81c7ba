// Schedule generators (see schedule.h). gpipe and 1f1b are fixed per-stage
// patterns; zb-h1, zb-h2 and auto come from one greedy list scheduler that plays
// the step forward in time across all stages and, at each stage's free moment,
// picks B (the critical path) before F before W, deferring W into the gaps.
#include "codegen/schedule.h"

#include <algorithm>
#include <deque>
#include <limits>

namespace ravnest::cg {
namespace {

using rt::Instr;
using rt::InstrOp;

constexpr double kUnknown = std::numeric_limits<double>::infinity();

struct Emitter {
  int stage, num_stages;
  std::vector<Instr>* out;
  bool has_prev() const { return stage > 0; }
  bool has_next() const { return stage + 1 < num_stages; }
  void forward(int mb) {
    if (has_prev()) out->push_back({InstrOp::kRecvAct, mb});
    out->push_back({InstrOp::kF, mb});
    if (has_next()) out->push_back({InstrOp::kSendAct, mb});
  }
  void input_grad(int mb) {
    if (has_next()) out->push_back({InstrOp::kRecvGrad, mb});
    out->push_back({InstrOp::kB, mb});
    if (has_prev()) out->push_back({InstrOp::kSendGrad, mb});
  }
  void weight_grad(int mb) { out->push_back({InstrOp::kW, mb}); }
  // B then its W immediately (gpipe, 1f1b).
  void backward(int mb) {
    input_grad(mb);
    weight_grad(mb);
  }
};

rt::StageSchedule empty_schedule(const std::string& kind, int stage, int num_stages, int microbatches) {
  rt::StageSchedule s;
  s.kind = kind;
  s.stage = stage;
  s.num_stages = num_stages;
  s.microbatches = microbatches;
  return s;
}

rt::StageSchedule fixed_pattern(const std::string& kind, int stage, int num_stages, int microbatches) {
  rt::StageSchedule s = empty_schedule(kind, stage, num_stages, microbatches);
  Emitter e{stage, num_stages, &s.instrs};
  if (kind == "gpipe") {
    for (int mb = 0; mb < microbatches; ++mb) e.forward(mb);
    for (int mb = 0; mb < microbatches; ++mb) e.backward(mb);
  } else if (kind == "1f1b") {
    int warmup = std::min(num_stages - stage - 1, microbatches);
    int next_f = 0, next_b = 0;
    for (; next_f < warmup; ++next_f) e.forward(next_f);
    while (next_f < microbatches) {
      e.forward(next_f++);
      e.backward(next_b++);
    }
    while (next_b < microbatches) e.backward(next_b++);
  } else {  // zb-h1
    // 1F1B's p - s warm-up forwards; then each B is followed by the W of the
    // micro-batch s places behind it and by the next F. Stage s thus holds s Ws
    // back; in the tail they fill the gaps between Bs arriving ever faster.
    int next_f = 0, next_w = 0;
    for (; next_f < std::min(num_stages - stage, microbatches); ++next_f) e.forward(next_f);
    for (int b = 0; b < microbatches; ++b) {
      e.input_grad(b);
      if (b >= stage) e.weight_grad(next_w++);
      if (next_f < microbatches) e.forward(next_f++);
    }
    while (next_w < microbatches) e.weight_grad(next_w++);
  }
  s.instrs.push_back({InstrOp::kStep, -1});
  return s;
}

// The knobs of the paper's heuristic that auto searches over.
struct Policy {
  bool warmup_f_delays_b = true;   // before the first B: F even if it ends after the first B is ready
  bool steady_f_delays_b = false;  // after it: likewise
  bool w_in_small_gaps = false;    // W even if it ends after the next B or F is ready
  bool w_when_unknown = true;      // W while the next B's arrival is not yet known
  // Most micro-batches stage s may have between F and B: ahead(s) = ahead_base - ahead_slope * s
  // (at least 1); with F = B = W that is how many forwards run before the first B.
  int ahead_base = 1 << 30, ahead_slope = 0;
  int ahead(int s) const { return std::max(1, ahead_base - ahead_slope * s); }
};

// One stage's state while the greedy plays the step forward.
struct GreedyStage {
  double now = 0;
  int next_f = 0, next_b = 0, in_flight = 0;
  std::deque<int> pending_w;  // B done, W not, oldest first
  std::vector<double> act_at, grad_at;  // arrival of micro-batch mb's activation / gradient
  bool waiting = false;  // found nothing to do at `now`
  bool stuck = false;    // and nothing to take when every stage waits
};

Result<std::vector<rt::StageSchedule>> greedy(const std::string& kind, int p, int m, const std::vector<StageCost>& cost,
                                              double comm, int limit, const Policy& policy) {
  std::vector<rt::StageSchedule> out;
  std::vector<GreedyStage> st(static_cast<size_t>(p));
  for (int s = 0; s < p; ++s) {
    out.push_back(empty_schedule(kind, s, p, m));
    st[static_cast<size_t>(s)].act_at.assign(static_cast<size_t>(m), s == 0 ? 0 : kUnknown);
    st[static_cast<size_t>(s)].grad_at.assign(static_cast<size_t>(m), kUnknown);
  }
  auto finished = [&](const GreedyStage& g) { return g.next_b == m && g.pending_w.empty(); };
  for (;;) {
    // The unfinished stage whose next free moment is earliest; at equal times one
    // that has not already found nothing to do.
    int s = -1;
    bool unfinished = false;
    for (int i = 0; i < p; ++i) {
      const GreedyStage& g = st[static_cast<size_t>(i)];
      if (finished(g)) continue;
      unfinished = true;
      if (g.stuck) continue;
      const GreedyStage* best = s < 0 ? nullptr : &st[static_cast<size_t>(s)];
      if (!best || g.now < best->now || (g.now == best->now && best->waiting && !g.waiting)) s = i;
    }
    if (s < 0 && unfinished)
      return error(Code::kInternal, "schedule ", kind, ": the greedy scheduler is stuck; this is a bug in Ravnest");
    if (s < 0) break;
    GreedyStage& g = st[static_cast<size_t>(s)];
    const StageCost& c = cost[static_cast<size_t>(s)];
    Emitter e{s, p, &out[static_cast<size_t>(s)].instrs};
    const double t = g.now;
    const bool last = s + 1 == p;
    const double b_ready = g.next_b < g.next_f ? (last ? t : g.grad_at[static_cast<size_t>(g.next_b)]) : kUnknown;
    const bool memory_full = g.in_flight >= limit;
    const bool may_run_ahead = g.next_f - g.next_b < policy.ahead(s);
    const double f_ready = g.next_f < m && !memory_full && may_run_ahead ? g.act_at[static_cast<size_t>(g.next_f)] : kUnknown;
    enum { kNone, kF, kB, kW } act = kNone;
    if (b_ready <= t) {
      act = kB;
    } else if (f_ready <= t && (b_ready == kUnknown || t + c.f <= b_ready ||
                                (g.next_b == 0 ? policy.warmup_f_delays_b : policy.steady_f_delays_b))) {
      act = kF;
    } else if (!g.pending_w.empty()) {
      double next = std::min(b_ready, f_ready);
      bool nothing_else = g.next_f == m && g.next_b == m;
      if (nothing_else || (memory_full && g.next_f < m) || policy.w_in_small_gaps ||
          (next == kUnknown ? policy.w_when_unknown : t + c.w <= next))
        act = kW;
    }
    if (act == kNone) {
      if (!g.waiting) {
        g.waiting = true;  // let the other stages at this moment move first
        continue;
      }
      // Every stage at this moment waits: jump to the next moment anything can change.
      double next = kUnknown;
      for (double ready : {b_ready, f_ready})
        if (ready > t) next = std::min(next, ready);
      for (const GreedyStage& o : st)
        if (!finished(o) && o.now > t) next = std::min(next, o.now);
      if (next != kUnknown) {
        g.now = next;
        continue;
      }
      // Nothing will change unless some stage acts: take what this one declined.
      if (!g.pending_w.empty()) {
        act = kW;
      } else if (f_ready <= t) {
        act = kF;
      } else {
        g.stuck = true;  // another waiting stage may have something to take
        continue;
      }
    }
    for (GreedyStage& o : st) o.waiting = o.stuck = false;
    if (act == kB) {
      int mb = g.next_b++;
      e.input_grad(mb);
      g.now += c.b;
      if (s > 0) st[static_cast<size_t>(s - 1)].grad_at[static_cast<size_t>(mb)] = g.now + comm;
      g.pending_w.push_back(mb);
    } else if (act == kF) {
      int mb = g.next_f++;
      e.forward(mb);
      g.now += c.f;
      if (!last) st[static_cast<size_t>(s + 1)].act_at[static_cast<size_t>(mb)] = g.now + comm;
      ++g.in_flight;
    } else {
      e.weight_grad(g.pending_w.front());
      g.pending_w.pop_front();
      g.now += c.w;
      --g.in_flight;
    }
  }
  for (rt::StageSchedule& s : out) s.instrs.push_back({InstrOp::kStep, -1});
  return out;
}

// ZB-H2: the greedy at unit costs with up to 2p - 1 micro-batches in flight and
// 2(p - s) - 1 forwards before stage s's first B, which is when it arrives.
Result<std::vector<rt::StageSchedule>> zero_bubble(int p, int m) {
  Policy policy;
  policy.ahead_base = 2 * p - 1;
  policy.ahead_slope = 2;
  return greedy("zb-h2", p, m, std::vector<StageCost>(static_cast<size_t>(p)), 0, 2 * p - 1, policy);
}

Result<std::vector<rt::StageSchedule>> auto_schedule(int p, int m, const ScheduleCosts& costs) {
  std::vector<StageCost> cost = costs.stages;
  if (cost.empty()) cost.assign(static_cast<size_t>(p), StageCost{});
  if (static_cast<int>(cost.size()) != p)
    return error(Code::kInvalidArgument, "schedule auto: ", cost.size(), " stage costs for ", p, " stages");
  const int limit = costs.memory_limit > 0 ? costs.memory_limit : 2 * p - 1;
  SimOptions sim{costs.comm, limit, 0};
  std::vector<rt::StageSchedule> best;
  double best_time = kUnknown;
  int best_peak = 0;
  auto consider = [&](Result<std::vector<rt::StageSchedule>> candidate) -> Status {
    RN_RETURN_IF_ERROR(candidate.status());
    auto r = simulate(*candidate, cost, sim);
    if (!r.ok()) {
      if (r.status().code() == Code::kResourceExhausted) return ok_status();  // over the memory limit
      return r.status().with_context("schedule auto");
    }
    int peak = *std::max_element(r->peak_in_flight.begin(), r->peak_in_flight.end());
    // Shortest step first; at (nearly) equal length, less memory.
    if (r->makespan < best_time * (1 - 1e-9) || (r->makespan <= best_time * (1 + 1e-9) && peak < best_peak)) {
      best = std::move(candidate).value();
      best_time = r->makespan;
      best_peak = peak;
    }
    return ok_status();
  };
  for (const char* kind : {"1f1b", "gpipe", "zb-h1"}) {
    std::vector<rt::StageSchedule> fixed;
    for (int s = 0; s < p; ++s) fixed.push_back(fixed_pattern(kind, s, p, m));
    RN_RETURN_IF_ERROR(consider(std::move(fixed)));
  }
  RN_RETURN_IF_ERROR(consider(zero_bubble(p, m)));
  std::vector<int> limits = {limit};
  for (int l : {p, std::max(1, p / 2)})
    if (l < limit) limits.push_back(l);
  // Warm-up depths: as deep as memory allows, ZB-H1's p - s, ZB-H2's 2(p - s) - 1.
  const std::pair<int, int> aheads[] = {{1 << 30, 0}, {p, 1}, {2 * p - 1, 2}};
  for (int l : limits)
    for (auto [base, slope] : aheads)
      for (int bits = 0; bits < 16; ++bits) {
        Policy policy{(bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, (bits & 8) != 0, base, slope};
        RN_RETURN_IF_ERROR(consider(greedy("auto", p, m, cost, costs.comm, l, policy)));
      }
  if (best.empty())
    return error(Code::kInvalidArgument, "schedule auto: no schedule fits a memory limit of ", limit,
                 " micro-batches per stage; raise --memory-limit");
  for (rt::StageSchedule& s : best) s.kind = "auto";
  return best;
}

}  // namespace

Result<std::vector<rt::StageSchedule>> make_schedules(const std::string& kind, int num_stages, int microbatches,
                                                      const ScheduleCosts& costs) {
  if (num_stages < 1 || num_stages > 4096 || microbatches < 1 || microbatches > 65536)
    return error(Code::kInvalidArgument, "schedule: ", num_stages, " stages with ", microbatches,
                 " micro-batches is out of range");
  std::vector<rt::StageSchedule> out;
  if (kind == "gpipe" || kind == "1f1b" || kind == "zb-h1") {
    for (int s = 0; s < num_stages; ++s) out.push_back(fixed_pattern(kind, s, num_stages, microbatches));
  } else if (kind == "zb-h2") {
    RN_ASSIGN_OR_RETURN(out, zero_bubble(num_stages, microbatches));
  } else if (kind == "auto") {
    RN_ASSIGN_OR_RETURN(out, auto_schedule(num_stages, microbatches, costs));
  } else {
    return error(Code::kInvalidArgument, "unknown schedule '", kind, "'; choose ", kScheduleKinds);
  }
  for (const rt::StageSchedule& s : out) RN_RETURN_IF_ERROR(rt::validate_schedule(s));
  return out;
}

Result<rt::StageSchedule> make_schedule(const std::string& kind, int stage, int num_stages, int microbatches) {
  if (num_stages < 1 || stage < 0 || stage >= num_stages || microbatches < 1)
    return error(Code::kInvalidArgument, "schedule: stage ", stage, " of ", num_stages, " with ", microbatches,
                 " micro-batches is out of range");
  if (kind == "gpipe" || kind == "1f1b" || kind == "zb-h1") {
    rt::StageSchedule s = fixed_pattern(kind, stage, num_stages, microbatches);
    RN_RETURN_IF_ERROR(rt::validate_schedule(s));
    return s;
  }
  RN_ASSIGN_OR_RETURN(std::vector<rt::StageSchedule> all, make_schedules(kind, num_stages, microbatches));
  return all[static_cast<size_t>(stage)];
}

}  // namespace ravnest::cg
