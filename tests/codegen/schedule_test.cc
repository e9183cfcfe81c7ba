// Schedule generators and the schedule validator.
#include <gtest/gtest.h>

#include "codegen/schedule.h"

namespace ravnest::cg {
namespace {

using rt::Instr;
using rt::InstrOp;

int count(const rt::StageSchedule& s, InstrOp op) {
  int n = 0;
  for (const auto& i : s.instrs) n += i.op == op;
  return n;
}

TEST(Schedule, GeneratedSchedulesValidate) {
  for (const char* kind : {"1f1b", "gpipe", "zb-h1", "zb-h2", "auto"})
    for (int p = 1; p <= 8; ++p)
      for (int m : {1, 2, 3, 8, 17})
        for (int s = 0; s < p; ++s) {
          auto sched = make_schedule(kind, s, p, m);
          ASSERT_TRUE(sched.ok()) << kind << " p=" << p << " m=" << m << " s=" << s << ": " << sched.status().to_string();
          EXPECT_EQ(count(*sched, InstrOp::kF), m);
          EXPECT_EQ(count(*sched, InstrOp::kW), m);
          EXPECT_EQ(count(*sched, InstrOp::kRecvAct), s > 0 ? m : 0);
          EXPECT_EQ(count(*sched, InstrOp::kSendGrad), s > 0 ? m : 0);
        }
}

// 1F1B keeps at most p - s micro-batches in flight on stage s.
TEST(Schedule, OneFOneBBoundsInFlightMicrobatches) {
  const int p = 4, m = 8;
  for (int s = 0; s < p; ++s) {
    auto sched = make_schedule("1f1b", s, p, m);
    ASSERT_TRUE(sched.ok());
    int in_flight = 0, peak = 0;
    for (const auto& i : sched->instrs) {
      if (i.op == InstrOp::kF) peak = std::max(peak, ++in_flight);
      if (i.op == InstrOp::kW) --in_flight;
    }
    EXPECT_EQ(peak, p - s) << "stage " << s;
  }
}

// make_schedule(kind, stage, ...) is stage `stage` of make_schedules(kind, ...).
TEST(Schedule, PerStageAndWholePipelineAgree) {
  for (const char* kind : {"1f1b", "zb-h1", "zb-h2", "auto"}) {
    auto all = make_schedules(kind, 4, 9);
    ASSERT_TRUE(all.ok()) << all.status().to_string();
    for (int s = 0; s < 4; ++s) {
      auto one = make_schedule(kind, s, 4, 9);
      ASSERT_TRUE(one.ok());
      EXPECT_EQ(one->instrs, (*all)[static_cast<size_t>(s)].instrs) << kind << " stage " << s;
      EXPECT_EQ(one->kind, kind);
    }
  }
}

// ZB-H1 defers W: stage s holds at most p micro-batches, and some W runs after a later B.
TEST(Schedule, ZeroBubbleH1DefersWeightGradients) {
  auto all = make_schedules("zb-h1", 4, 8);
  ASSERT_TRUE(all.ok());
  for (const auto& sched : *all) {
    int in_flight = 0, peak = 0, last_b = -1;
    bool deferred = false;
    for (const auto& i : sched.instrs) {
      if (i.op == InstrOp::kF) peak = std::max(peak, ++in_flight);
      if (i.op == InstrOp::kW) --in_flight, deferred |= i.microbatch < last_b;
      if (i.op == InstrOp::kB) last_b = i.microbatch;
    }
    EXPECT_LE(peak, 4) << "stage " << sched.stage;
    EXPECT_EQ(deferred, sched.stage > 0) << "stage " << sched.stage;
  }
}

TEST(Schedule, ValidatorNamesTheBadInstruction) {
  auto sched = make_schedule("1f1b", 1, 3, 2);
  ASSERT_TRUE(sched.ok());
  rt::StageSchedule missing = *sched;
  std::erase(missing.instrs, Instr{InstrOp::kRecvAct, 1});
  Status st = rt::validate_schedule(missing);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'RECV_ACT 1' is missing"), std::string::npos) << st.message();

  rt::StageSchedule reordered = *sched;
  auto f0 = std::find(reordered.instrs.begin(), reordered.instrs.end(), Instr{InstrOp::kF, 0});
  auto b0 = std::find(reordered.instrs.begin(), reordered.instrs.end(), Instr{InstrOp::kB, 0});
  std::iter_swap(f0, b0);
  st = rt::validate_schedule(reordered);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'B 0'"), std::string::npos) << st.message();

  EXPECT_FALSE(make_schedule("zigzag", 0, 2, 2).ok());
}

TEST(Schedule, JsonRoundTrip) {
  auto sched = make_schedule("1f1b", 2, 4, 6);
  ASSERT_TRUE(sched.ok());
  auto back = rt::schedule_from_json(rt::schedule_to_json(*sched));
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->instrs, sched->instrs);
  EXPECT_EQ(back->stage, 2);
}

}  // namespace
}  // namespace ravnest::cg
