// Posted receives (Transport::post_recv / wait_recv / cancel_recv / recv_into) and the ring
// all-reduce that uses them: payloads land byte for byte in the caller's buffer and nowhere
// else, whether the frame comes after the posting (read by the I/O thread straight into place)
// or before it (copied from the mailbox); a corrupt, mis-sized or late frame fails clearly; a
// cancelled or timed-out posting no longer writes into its buffer. Every wait is bounded.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/json.h"
#include "runtime/collectives/ring_allreduce.h"
#include "runtime/transport/crc32c.h"
#include "runtime/transport/frame.h"
#include "runtime/transport/transport.h"
#include "tests/runtime/pattern_tensor.h"
#include "tests/runtime/raw_client.h"
#include "tests/status_assertions.h"

namespace ravnest::rt {
namespace {

using namespace std::chrono_literals;
using testing::fails_with;

constexpr auto kWait = 5s;  // bound of every wait in these tests
constexpr std::byte kGuard{0xA5};

TransportOptions options(const std::string& node) {
  TransportOptions o;
  o.node_id = node;
  o.run_id = "run-1";
  return o;
}

FrameMeta act(uint64_t step, uint32_t id = 0) {
  return FrameMeta{FrameKind::kActivation, step, 0, id};
}

// `floats` floats whose bytes follow a pattern of `seed`.
Tensor pattern(size_t floats, uint32_t seed) {
  return testing::pattern(DType::kF32, {static_cast<int64_t>(floats)}, seed);
}

// A buffer with guard bytes on both sides of the `bytes` where a payload must land.
struct Guarded {
  static constexpr size_t kPad = 64;
  std::vector<std::byte> all;
  explicit Guarded(size_t bytes) : all(bytes + 2 * kPad, kGuard) {}
  std::span<std::byte> dst() { return std::span<std::byte>(all).subspan(kPad, all.size() - 2 * kPad); }
  ::testing::AssertionResult holds(const Tensor& t) {
    for (size_t i = 0; i < kPad; ++i) {
      if (all[i] != kGuard || all[all.size() - 1 - i] != kGuard)
        return ::testing::AssertionFailure() << "a guard byte around the payload was overwritten";
    }
    if (t.bytes() != dst().size())
      return ::testing::AssertionFailure() << "size " << t.bytes() << " vs " << dst().size();
    if (t.bytes() && std::memcmp(t.raw(), dst().data(), t.bytes()) != 0)
      return ::testing::AssertionFailure() << "payload bytes differ";
    return ::testing::AssertionSuccess();
  }
  bool untouched() const {
    for (std::byte b : all)
      if (b != kGuard) return false;
    return true;
  }
};

// Two transports, "b" connected to listening "a".
struct Pair {
  std::unique_ptr<Transport> a = std::make_unique<Transport>(options("a"));
  std::unique_ptr<Transport> b = std::make_unique<Transport>(options("b"));
  Pair() {
    EXPECT_TRUE(a->listen("127.0.0.1", 0).ok());
    Status st = b->connect("a", "127.0.0.1", a->port(), deadline_after(kWait));
    EXPECT_TRUE(st.ok()) << st.to_string();
    st = a->wait_for_peer("b", deadline_after(kWait));
    EXPECT_TRUE(st.ok()) << st.to_string();
  }
};

// A hand-made peer "raw" connected to `t` (which listens), handshake done.
std::unique_ptr<RawClient> raw_peer(Transport& t, const std::string& id = "raw") {
  auto raw = std::make_unique<RawClient>(t.port());
  raw->send_hello(id, "run-1");
  Result<Json> answer = raw->read_hello();
  EXPECT_TRUE(answer.ok()) << answer.status().to_string();
  EXPECT_TRUE(t.wait_for_peer(id, deadline_after(kWait)).ok());
  return raw;
}

// ------------------------------------------------------------------ transport

// Posted before the frame is sent, so the I/O thread reads it into place; sizes cover an empty
// payload, odd float counts (a ragged last chunk), one that spans many socket reads, and 64 MiB.
TEST(TransportPosted, PayloadLandsExactlyInTheCallersBufferAndNowhereElse) {
  Pair p;
  const std::vector<size_t> sizes = {0, 1, 3, 1000, (size_t{256} << 10) / 4 + 3, size_t{16} << 20};
  std::vector<Guarded> bufs;
  for (size_t floats : sizes) bufs.emplace_back(floats * sizeof(float));
  for (size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_TRUE(p.b->post_recv("a", act(1, static_cast<uint32_t>(i)), DType::kF32, bufs[i].dst()).ok());
  }
  std::vector<Tensor> sent;
  for (size_t i = 0; i < sizes.size(); ++i) {
    sent.push_back(pattern(sizes[i], static_cast<uint32_t>(i + 1)));
    ASSERT_TRUE(p.a->send("b", act(1, static_cast<uint32_t>(i)), sent.back()).ok());
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    SCOPED_TRACE("floats " + std::to_string(sizes[i]));
    Status st = p.b->wait_recv("a", act(1, static_cast<uint32_t>(i)), deadline_after(kWait * 4));
    ASSERT_TRUE(st.ok()) << st.to_string();
    EXPECT_TRUE(bufs[i].holds(sent[i]));
  }
  // Nothing of these frames is left in the mailbox: a recv() of one of them times out.
  EXPECT_TRUE(fails_with(p.b->recv("a", act(1, 1), deadline_after(50ms)).status(), Code::kTimeout, {"ACTIVATION"}));
}

// A frame that arrived before its posting is copied from the mailbox (decoded if it was encoded).
TEST(TransportPosted, FrameThatCameFirstIsCopiedIntoPlace) {
  Pair p;
  Tensor early = pattern(777, 9);
  Tensor marker = pattern(1, 10);
  ASSERT_TRUE(p.a->send("b", act(2), early).ok());
  ASSERT_TRUE(p.a->send("b", act(3), marker).ok());
  // Frames to one peer arrive in send order: once the marker is here, the first one is in the mailbox.
  ASSERT_TRUE(p.b->recv("a", act(3), deadline_after(kWait)).ok());
  Guarded buf(early.bytes());
  Status st = p.b->recv_into("a", act(2), DType::kF32, buf.dst(), deadline_after(kWait));
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_TRUE(buf.holds(early));
}

TEST(TransportPosted, FrameOfAnotherSizeOrDtypeIsRejectedNamingBoth) {
  Pair p;
  Guarded small(8);
  ASSERT_TRUE(p.b->post_recv("a", act(4), DType::kF32, small.dst()).ok());
  ASSERT_TRUE(p.a->send("b", act(4), pattern(3, 1)).ok());
  EXPECT_TRUE(fails_with(p.b->wait_recv("a", act(4), deadline_after(kWait)), Code::kCorrupt,
                         {"ACTIVATION step 4", "12 payload bytes", "raw float32 payload of 8 bytes"}));
  EXPECT_TRUE(small.untouched());
  // The posting is gone: the same key can be posted again, and a second posting of it is refused.
  ASSERT_TRUE(p.b->post_recv("a", act(5), DType::kF32, small.dst()).ok());
  EXPECT_TRUE(
      fails_with(p.b->post_recv("a", act(5), DType::kF32, small.dst()), Code::kInvalidArgument, {"already posted"}));
  p.b->cancel_recv("a", act(5));
  EXPECT_TRUE(fails_with(p.b->wait_recv("a", act(5), deadline_after(kWait)), Code::kInvalidArgument,
                         {"is posted; call post_recv() first"}));
}

// A corrupt payload read straight into the buffer is reported with the checksum field; the
// connection closes, as for a corrupt frame received into the mailbox.
TEST(TransportPosted, CorruptPayloadFailsTheReceiveAndClosesTheConnection) {
  Transport a(options("a"));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  std::unique_ptr<RawClient> raw = raw_peer(a);
  Guarded buf(4);
  ASSERT_TRUE(a.post_recv("raw", act(3), DType::kU8, buf.dst()).ok());
  raw->send_frame(*make_header(FrameKind::kActivation, 3, 0, 0, DType::kU8, {4}), "abcd", /*corrupt_crc=*/true);
  EXPECT_TRUE(fails_with(a.wait_recv("raw", act(3), deadline_after(kWait)), Code::kCorrupt,
                         {"bad frame from peer 'raw' (127.0.0.1:", "field 'payload_crc'", "corrupted in transit"}));
  EXPECT_TRUE(raw->closed_by_server());
}

TEST(TransportPosted, TimeoutAndCancelLeaveTheBufferAlone) {
  Pair p;
  Guarded buf(40);
  // Nothing sent: a timeout naming the frame, and the posting is gone.
  EXPECT_TRUE(fails_with(p.b->recv_into("a", act(6), DType::kF32, buf.dst(), deadline_after(100ms)), Code::kTimeout,
                         {"ACTIVATION step 6", "peer 'a'"}));
  // Cancelled before the frame comes: the frame goes to the mailbox, the buffer stays as it was.
  ASSERT_TRUE(p.b->post_recv("a", act(7), DType::kF32, buf.dst()).ok());
  p.b->cancel_recv("a", act(7));
  Tensor t = pattern(10, 3);
  ASSERT_TRUE(p.a->send("b", act(7), t).ok());
  Result<Tensor> got = p.b->recv("a", act(7), deadline_after(kWait));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(std::memcmp(got->raw(), t.raw(), t.bytes()), 0);
  EXPECT_TRUE(buf.untouched());
}

// The deadline passes while the payload trickles in: the receive fails and the connection is
// closed, the only way to stop the I/O thread from writing into the caller's buffer afterwards.
TEST(TransportPosted, DeadlineDuringThePayloadClosesTheConnection) {
  Transport a(options("a"));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  std::unique_ptr<RawClient> raw = raw_peer(a);
  Guarded buf(1000);
  ASSERT_TRUE(a.post_recv("raw", act(8), DType::kU8, buf.dst()).ok());
  FrameHeader h = *make_header(FrameKind::kActivation, 8, 0, 0, DType::kU8, {1000});
  const std::string payload(1000, 'x');
  h.payload_crc = crc32c(payload.data(), payload.size());
  const auto header = encode_header(h);
  raw->write(header.data(), header.size());
  raw->write(payload.data(), 400);  // the rest never comes
  EXPECT_TRUE(fails_with(a.wait_recv("raw", act(8), deadline_after(300ms)), Code::kTimeout,
                         {"ACTIVATION step 8", "while its payload was arriving", "connection is closed"}));
  EXPECT_TRUE(raw->closed_by_server());
  // The rest arriving now cannot land anywhere: the socket is closed.
  EXPECT_TRUE(fails_with(a.recv("raw", act(9), deadline_after(kWait)).status(), Code::kTimeout,
                         {"while its payload was arriving"}));
}

// wait_sent(): returns once what send() queued is written; at the deadline (a receiver that reads
// nothing) it closes the connection, so no queued frame is read from the caller's memory afterwards.
TEST(TransportPosted, WaitSentReturnsWhenWrittenOrClosesTheConnectionAtTheDeadline) {
  Pair p;
  Tensor t = pattern(1000, 4);
  ASSERT_TRUE(p.a->send("b", act(10), t).ok());
  Status st = p.a->wait_sent("b", deadline_after(kWait));
  EXPECT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(p.a->sent(FrameKind::kActivation).frames, 1u);

  Transport a(options("a"));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  std::unique_ptr<RawClient> raw = raw_peer(a);
  Tensor big = pattern(size_t{16} << 20, 5);  // 64 MiB: more than the socket buffers hold
  ASSERT_TRUE(a.send("raw", act(11), big).ok());
  EXPECT_TRUE(fails_with(a.wait_sent("raw", deadline_after(300ms)), Code::kTimeout,
                         {"frames to peer 'raw'", "so its connection is closed"}));
  EXPECT_TRUE(fails_with(a.flush(deadline_after(kWait)), Code::kNetwork, {"were not delivered"}));
}

// forget_lost(): a peer given up on (replaced, or its cluster lost) is not reported by flush(),
// until a peer of that id connects again.
TEST(TransportPosted, ForgottenLossesAreNotReportedUntilThePeerConnectsAgain) {
  Transport a(options("a"));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  Tensor big = pattern(size_t{16} << 20, 6);  // 64 MiB: more than the socket buffers hold
  auto lose_one = [&](uint64_t step) {
    std::unique_ptr<RawClient> raw = raw_peer(a);
    ASSERT_TRUE(a.send("raw", act(step), big).ok());
    EXPECT_TRUE(fails_with(a.wait_sent("raw", deadline_after(300ms)), Code::kTimeout, {"so its connection is closed"}));
  };
  lose_one(12);
  EXPECT_EQ(a.forget_lost("raw"), 1u);
  Status st = a.flush(deadline_after(kWait));
  EXPECT_TRUE(st.ok()) << st.to_string();
  lose_one(13);  // the peer came back: its losses count again
  EXPECT_TRUE(fails_with(a.flush(deadline_after(kWait)), Code::kNetwork, {"1 frames queued for peer 'raw'"}));
}

// ------------------------------------------------------------------ ring all-reduce

// Member m0 of a two-member ring whose other member is a hand-made peer: a corrupt chunk fails
// run() naming the ring step and the checksum, and is not applied (reduce-scatter: `data` keeps its
// values; nothing is forwarded after it).
TEST(RingAllreducePosted, CorruptChunkFailsTheRunAndIsNotApplied) {
  Transport m0(options("m0"));
  ASSERT_TRUE(m0.listen("127.0.0.1", 0).ok());
  std::unique_ptr<RawClient> raw = raw_peer(m0, "m1");
  RingOptions o;
  o.members = {"m0", "m1"};
  o.rank = 0;
  o.tag = 5;
  Result<RingAllreduce> ring = RingAllreduce::create(m0, o);
  ASSERT_TRUE(ring.ok()) << ring.status().to_string();
  std::vector<float> data = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};  // segments of 6 and 5 floats
  const std::vector<float> before = data;
  // m0 receives segment 1 (5 floats) at reduce-scatter step 0, chunk 0.
  const std::string chunk(5 * sizeof(float), '\x01');
  raw->send_frame(*make_header(FrameKind::kCollective, uint64_t{5} << 32, 0, 0, DType::kF32, {5}), chunk,
                  /*corrupt_crc=*/true);
  Status st = ring->run(data, ReduceOp::kSum, 1.0, deadline_after(kWait));
  EXPECT_TRUE(fails_with(st, Code::kCorrupt,
                         {"ring all-reduce tag 5 round 0", "reduce-scatter step 0, chunk 0", "field 'payload_crc'"}));
  EXPECT_EQ(data, before);
}

// The same peer sends a chunk of the wrong size: the members disagree on the buffer size.
TEST(RingAllreducePosted, ChunkOfAnotherSizeNamesTheBufferSize) {
  Transport m0(options("m0"));
  ASSERT_TRUE(m0.listen("127.0.0.1", 0).ok());
  std::unique_ptr<RawClient> raw = raw_peer(m0, "m1");
  RingOptions o;
  o.members = {"m0", "m1"};
  Result<RingAllreduce> ring = RingAllreduce::create(m0, o);
  ASSERT_TRUE(ring.ok()) << ring.status().to_string();
  std::vector<float> data(11, 1.0f);
  raw->send_frame(*make_header(FrameKind::kCollective, 0, 0, 0, DType::kF32, {4}), std::string(16, '\0'));
  EXPECT_TRUE(fails_with(ring->run(data, ReduceOp::kSum, 1.0, deadline_after(kWait)), Code::kCorrupt,
                         {"reduce-scatter step 0, chunk 0", "same buffer size (11 here)"}));
}

}  // namespace
}  // namespace ravnest::rt
