// `ravnest-rt profile` against a loopback `ravnest-rt profile --serve` writes a
// profile that the compiler's strict loader accepts, with positive measurements
// and the link to the peer.
#include <gtest/gtest.h>

#include "common/ports.h"
#include "partitioner/devices.h"
#include "tests/integration/process.h"

namespace ravnest {
namespace {

using testing::binary;
using testing::Process;
using testing::run_process;

TEST(Profile, LoopbackPeerGivesAValidProfile) {
  const std::string dir = testing::temp_dir("profile");
  const std::string peer = "127.0.0.1:" + std::to_string(free_loopback_port());
  Process server({binary("ravnest-rt"), "profile", "--serve", "--listen", peer, "--clients", "1"});
  ASSERT_TRUE(server.wait_for_output("listening", 20));
  const std::string out = dir + "/me.json";
  auto r = run_process({binary("ravnest-rt"), "profile", "--peers", peer, "--seconds", "3", "--id", "me", "--address",
                        "127.0.0.1:29500", "-o", out},
                       60, {"OMP_NUM_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto served = server.wait(30);
  EXPECT_EQ(served.exit_code, 0) << served.err;

  auto profile = part::load_device_profile(out);
  ASSERT_TRUE(profile.ok()) << profile.status().message();
  EXPECT_EQ(profile->id, "me");
  EXPECT_EQ(profile->address, "127.0.0.1:29500");
  EXPECT_GE(profile->cores, 1);
  EXPECT_GT(profile->gemm_gflops, 0);
  EXPECT_GT(profile->conv_gflops, 0);
  EXPECT_GT(profile->memory_bandwidth_gbps, 0);
  EXPECT_GT(profile->memory_bytes, 0);
  ASSERT_EQ(profile->links.size(), 1u);
  EXPECT_EQ(profile->links[0].peer, peer);
  EXPECT_GT(profile->links[0].bandwidth_bps, 0);
  EXPECT_GT(profile->links[0].latency_s, 0);

  // The peer, named by its address, resolves in a devices set.
  part::DeviceProfile other = *profile;
  other.id = "peer";
  other.address = peer;
  other.links.clear();
  auto set = part::combine_profiles({*profile, other});
  ASSERT_TRUE(set.ok()) << set.status().message();
  part::LinkEstimate link = set->link_between(0, 1, part::default_link());
  EXPECT_EQ(link.source, "measured");
  EXPECT_DOUBLE_EQ(link.bandwidth_bps, profile->links[0].bandwidth_bps);
}

TEST(Profile, BadUsageAndUnreachablePeerFailClearly) {
  auto usage = run_process({binary("ravnest-rt"), "profile"}, 10);
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_NE(usage.err.find("-o FILE is required"), std::string::npos) << usage.err;
  const std::string dir = testing::temp_dir("profile-unreachable");
  const std::string nobody = "127.0.0.1:" + std::to_string(free_loopback_port());
  auto r = run_process({binary("ravnest-rt"), "profile", "--peers", nobody, "--seconds", "1", "-o", dir + "/me.json"},
                       60, {"OMP_NUM_THREADS=1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(nobody), std::string::npos) << r.err;
}

}  // namespace
}  // namespace ravnest
