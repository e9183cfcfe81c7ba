// The schedule simulator against the analytical bubbles of Qi et al. (ICLR 2024),
// its deadlock and memory checks, and every generator run through it.
//
// Cost convention: F = B = W = 1 per micro-batch and stage, no communication.
// The paper's 1F1B baseline has one backward of B + W that sends the gradient
// when both are done: simulated as costs F = 1, B = 2, W = 0, its step takes
// 3(m + p - 1), bubble (p-1)/(m+p-1). Ravnest's 1F1B already sends after B, so at
// F = B = W = 1 it takes 3m + 2(p - 1). ZB-H1 takes 3m + p - 1, bubble
// (p-1)/(3m+p-1): (p-1)(F+B-W) of idle per stage instead of (p-1)(F+B+W), a
// third. ZB-H2 takes as long but every stage is busy from its first F to its
// last W, so its steady-state bubble (the paper's measure) is 0 for m >= 2p.
#include <gtest/gtest.h>

#include <random>

#include "codegen/schedule.h"
#include "codegen/simulator.h"

namespace ravnest::cg {
namespace {

using rt::Instr;
using rt::InstrOp;

const char* const kKinds[] = {"gpipe", "1f1b", "zb-h1", "zb-h2", "auto"};

std::vector<StageCost> unit_costs(int p) { return std::vector<StageCost>(static_cast<size_t>(p)); }

SimResult run(const std::string& kind, int p, int m, const std::vector<StageCost>& costs, SimOptions options = {}) {
  ScheduleCosts sc{costs, options.comm, options.memory_limit};
  auto schedules = make_schedules(kind, p, m, sc);
  EXPECT_TRUE(schedules.ok()) << kind << " p=" << p << " m=" << m << ": " << schedules.status().to_string();
  if (!schedules.ok()) return {};
  auto r = simulate(*schedules, costs, options);
  EXPECT_TRUE(r.ok()) << kind << " p=" << p << " m=" << m << ": " << r.status().to_string();
  return r.ok() ? *r : SimResult{};
}

TEST(Simulator, BubblesMatchThePaperAtEqualCosts) {
  for (int p : {2, 3, 4, 6, 8})
    for (int m : {p, 2 * p, 3 * p, 16, 32}) {
      const double pd = p, md = m;
      const std::vector<StageCost> fused(static_cast<size_t>(p), StageCost{1, 2, 0});
      SimResult one = run("1f1b", p, m, fused);
      EXPECT_DOUBLE_EQ(one.makespan, 3 * (md + pd - 1)) << "p=" << p << " m=" << m;
      EXPECT_NEAR(one.bubble_ratio, (pd - 1) / (md + pd - 1), 1e-12) << "p=" << p << " m=" << m;
      SimResult gpipe = run("gpipe", p, m, fused);
      EXPECT_NEAR(gpipe.bubble_ratio, (pd - 1) / (md + pd - 1), 1e-12);
      SimResult split = run("1f1b", p, m, unit_costs(p));
      EXPECT_DOUBLE_EQ(split.makespan, 3 * md + 2 * (pd - 1)) << "p=" << p << " m=" << m;

      SimResult h1 = run("zb-h1", p, m, unit_costs(p));
      EXPECT_DOUBLE_EQ(h1.makespan, 3 * md + pd - 1) << "p=" << p << " m=" << m;
      EXPECT_NEAR(h1.bubble_ratio, (pd - 1) / (3 * md + pd - 1), 1e-12) << "p=" << p << " m=" << m;
      // Idle per stage: (p-1) against 1F1B's 3(p-1).
      EXPECT_NEAR(h1.bubble_ratio * h1.makespan, one.bubble_ratio * one.makespan / 3, 1e-9);
      for (int s = 0; s < p; ++s) EXPECT_LE(h1.peak_in_flight[static_cast<size_t>(s)], p) << "stage " << s;

      if (m >= 2 * p) {
        SimResult h2 = run("zb-h2", p, m, unit_costs(p));
        EXPECT_NEAR(h2.steady_bubble_ratio, 0, 1e-12) << "p=" << p << " m=" << m;
        EXPECT_DOUBLE_EQ(h2.makespan, 3 * md + pd - 1) << "p=" << p << " m=" << m;
        EXPECT_LE(h2.peak_in_flight[0], 2 * p - 1);
        EXPECT_GT(h2.peak_in_flight[0], p);
      }
    }
}

// Every kind, p up to 16, m up to 64, equal and random unequal costs, with and
// without communication time: valid, no deadlock, each F/B/W run exactly once.
TEST(Simulator, EveryGeneratedScheduleRunsToTheEnd) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> cost(0.2, 3.0);
  for (const char* kind : kKinds)
    for (int p : {1, 2, 3, 5, 8, 16})
      for (int m : {1, 2, 3, 7, 16, 33, 64}) {
        if (std::string(kind) == "auto" && p * m > 256) continue;  // keeps the suite to seconds
        for (int variant = 0; variant < 2; ++variant) {
          std::vector<StageCost> costs = unit_costs(p);
          SimOptions options;
          if (variant == 1) {
            for (StageCost& c : costs) c = {cost(rng), cost(rng), cost(rng)};
            options.comm = 0.25;
          }
          SimResult r = run(kind, p, m, costs, options);
          ASSERT_EQ(r.events.size(), static_cast<size_t>(3 * p * m)) << kind << " p=" << p << " m=" << m;
          double total = 0;
          for (int s = 0; s < p; ++s) {
            const StageCost& c = costs[static_cast<size_t>(s)];
            EXPECT_NEAR(r.busy[static_cast<size_t>(s)], m * (c.f + c.b + c.w), 1e-9);
            total += r.busy[static_cast<size_t>(s)];
          }
          EXPECT_GE(r.bubble_ratio, -1e-12);
          EXPECT_NEAR(r.bubble_ratio, 1 - total / (p * r.makespan), 1e-12);
        }
      }
}

TEST(Simulator, AutoIsNoWorseThanAnyFixedScheduleUnderTheSameLimit) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> cost(0.3, 2.5);
  for (int p : {2, 4, 6})
    for (int m : {4, 12})
      for (int limit : {p, 2 * p - 1}) {
        std::vector<StageCost> costs(static_cast<size_t>(p));
        for (StageCost& c : costs) c = {cost(rng), cost(rng), cost(rng)};
        SimOptions options{0.1, limit, 0};
        SimResult best = run("auto", p, m, costs, options);
        for (int s = 0; s < p; ++s) EXPECT_LE(best.peak_in_flight[static_cast<size_t>(s)], limit);
        int compared = 0;
        for (const char* kind : {"gpipe", "1f1b", "zb-h1", "zb-h2"}) {
          auto fixed = make_schedules(kind, p, m);
          ASSERT_TRUE(fixed.ok());
          auto r = simulate(*fixed, costs, options);
          if (!r.ok()) {
            EXPECT_EQ(r.status().code(), Code::kResourceExhausted) << r.status().to_string();
            continue;
          }
          ++compared;
          EXPECT_LE(best.makespan, r->makespan + 1e-9) << kind << " p=" << p << " m=" << m << " limit=" << limit;
        }
        EXPECT_GE(compared, 1);
      }
}

TEST(Simulator, RejectsAMissingReceiveNamingStageAndInstruction) {
  auto schedules = make_schedules("1f1b", 3, 2);
  ASSERT_TRUE(schedules.ok());
  std::erase((*schedules)[1].instrs, Instr{InstrOp::kRecvAct, 1});
  auto r = simulate(*schedules, unit_costs(3), {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("stage 1"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("'RECV_ACT 1' is missing"), std::string::npos) << r.status().message();
}

// Stage 0 waits for the gradient of micro-batch 0 before sending the activation
// stage 1 needs to produce it.
TEST(Simulator, DetectsACrossStageCycle) {
  rt::StageSchedule s0{"bad", 0, 2, 1,
                       {{InstrOp::kF, 0}, {InstrOp::kRecvGrad, 0}, {InstrOp::kB, 0}, {InstrOp::kW, 0},
                        {InstrOp::kSendAct, 0}, {InstrOp::kStep, -1}}};
  rt::StageSchedule s1{"bad", 1, 2, 1,
                       {{InstrOp::kRecvAct, 0}, {InstrOp::kF, 0}, {InstrOp::kB, 0}, {InstrOp::kSendGrad, 0},
                        {InstrOp::kW, 0}, {InstrOp::kStep, -1}}};
  ASSERT_TRUE(rt::validate_schedule(s0).ok());
  ASSERT_TRUE(rt::validate_schedule(s1).ok());
  auto r = simulate({s0, s1}, unit_costs(2), {});
  ASSERT_FALSE(r.ok());
  const std::string& msg = r.status().message();
  EXPECT_NE(msg.find("deadlock"), std::string::npos) << msg;
  EXPECT_NE(msg.find("stage 0 blocks at instruction 1 'RECV_GRAD 0' waiting for 'SEND_GRAD 0' of stage 1"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("stage 1 blocks at instruction 0 'RECV_ACT 0' waiting for 'SEND_ACT 0' of stage 0"),
            std::string::npos)
      << msg;
}

TEST(Simulator, ReportsMemoryOverTheLimit) {
  auto schedules = make_schedules("1f1b", 4, 8);
  ASSERT_TRUE(schedules.ok());
  auto r = simulate(*schedules, unit_costs(4), SimOptions{0, 3, 0});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kResourceExhausted);
  EXPECT_NE(r.status().message().find("stage 0: instruction"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("'F 3'"), std::string::npos) << r.status().message();
  EXPECT_TRUE(simulate(*schedules, unit_costs(4), SimOptions{0, 4, 0}).ok());
}

TEST(Simulator, CommunicationDelaysArrivals) {
  auto schedules = make_schedules("1f1b", 2, 1);
  ASSERT_TRUE(schedules.ok());
  auto r = simulate(*schedules, unit_costs(2), SimOptions{0.5, 0, 0});
  ASSERT_TRUE(r.ok());
  // Stage 0: F0 [0,1]; stage 1: F0 [1.5,2.5] B0 [2.5,3.5] W0 [3.5,4.5]; the
  // gradient reaches stage 0 at 4: B0 [4,5] W0 [5,6].
  EXPECT_DOUBLE_EQ(r->makespan, 6);
  EXPECT_DOUBLE_EQ(r->busy[0], 3);
}

TEST(Render, TextGridAndSvg) {
  SimResult r = run("1f1b", 2, 2, unit_costs(2));
  EXPECT_EQ(render_text(r), "stage 0   |FF.BW.BW|\nstage 1   |.FBWFBW.|\n");
  std::string svg = render_svg(r);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("makespan 8.000, bubble ratio 25.0%"), std::string::npos) << svg;
  size_t boxes = 0;
  for (size_t at = svg.find("<title>"); at != std::string::npos; at = svg.find("<title>", at + 1)) ++boxes;
  EXPECT_EQ(boxes, 12u);  // 2 stages x 2 micro-batches x F, B, W 
  for (const char* legend : {"F (forward)", "B (input gradient)", "W (weight gradient)", "idle"})
    EXPECT_NE(svg.find(legend), std::string::npos) << legend;
}

}  // namespace
}  // namespace ravnest::cg
