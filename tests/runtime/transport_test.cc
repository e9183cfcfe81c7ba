// Wire frames and the TCP transport: header validation field by field, tensors both
// ways between two transports on 127.0.0.1, the mailbox, deadlines, peers that
// leave, crash (a real child process killed with SIGKILL) or misbehave (raw sockets).
// Every wait is bounded by a deadline of a few seconds.
#include "runtime/transport/transport.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/json.h"
#include "runtime/transport/crc32c.h"
#include "runtime/transport/frame.h"
#include "tests/runtime/pattern_tensor.h"
#include "tests/runtime/raw_client.h"
#include "tests/status_assertions.h"

namespace ravnest::rt {
namespace {

using namespace std::chrono_literals;

constexpr auto kWait = 5s;  // bound of every wait in these tests

// ------------------------------------------------------------------ helpers

using testing::fails_with;

TransportOptions options(const std::string& node, const std::string& run = "run-1") {
  TransportOptions o;
  o.node_id = node;
  o.run_id = run;
  return o;
}

using testing::pattern;

::testing::AssertionResult same(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) return ::testing::AssertionFailure() << "dtype differs";
  if (a.shape() != b.shape()) {
    return ::testing::AssertionFailure() << "shape " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  }
  if (a.bytes() && std::memcmp(a.raw(), b.raw(), a.bytes()) != 0)
    return ::testing::AssertionFailure() << "bytes differ";
  return ::testing::AssertionSuccess();
}

FrameMeta act(uint64_t step, uint32_t mb = 0, uint32_t id = 0) {
  return FrameMeta{FrameKind::kActivation, step, mb, id};
}

// Two transports, "b" connected to listening "a".
struct Pair {
  std::unique_ptr<Transport> a = std::make_unique<Transport>(options("a"));
  std::unique_ptr<Transport> b = std::make_unique<Transport>(options("b"));
  Pair() {
    EXPECT_TRUE(a->listen("127.0.0.1", 0).ok());
    EXPECT_NE(a->port(), 0);
    Status st = b->connect("a", "127.0.0.1", a->port(), deadline_after(kWait));
    EXPECT_TRUE(st.ok()) << st.to_string();
    st = a->wait_for_peer("b", deadline_after(kWait));
    EXPECT_TRUE(st.ok()) << st.to_string();
  }
};


// ------------------------------------------------------------------ frames

TEST(Crc32c, StandardCheckValueAndExtension) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  std::string long_text(1000, 'x');
  for (size_t i = 0; i < long_text.size(); ++i) long_text[i] = static_cast<char>(i * 13);
  uint32_t whole = crc32c(long_text.data(), long_text.size());
  for (size_t split : {0, 1, 7, 8, 9, 500, 999}) {
    EXPECT_EQ(crc32c(long_text.data() + split, long_text.size() - split, crc32c(long_text.data(), split)), whole);
  }
}

// The crc32-instruction path checksums three interleaved blocks (8 KiB, then 256 B) and joins
// them; the folding path takes 256 bytes a round from 1 KiB on, then 64, then 16. Every path the
// CPU has, at every length around those boundaries and at odd offsets, must match one bit at a time.
TEST(Crc32c, EveryPathMatchesABitwiseReferenceAroundEveryBlockBoundary) {
  auto bitwise = [](const uint8_t* p, size_t n, uint32_t crc) {
    crc = ~crc;
    while (n--) {
      crc ^= *p++;
      for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
  };
  std::vector<uint8_t> bytes(3 * 8192 * 4 + 64);
  uint32_t x = 12345;
  for (uint8_t& b : bytes) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  std::vector<Crc32cPath> paths;
  for (Crc32cPath path : {Crc32cPath::kPortable, Crc32cPath::kSse42, Crc32cPath::kAvx512Clmul}) {
    if (crc32c_path_available(path)) paths.push_back(path);
  }
  std::cout << "CRC-32C paths on this CPU: " << paths.size() << " of 3\n";
  for (size_t base : {size_t{0}, size_t{3 * 256}, size_t{1024}, size_t{1024 + 64}, size_t{1024 + 256},
                      size_t{3 * 8192}, size_t{2 * 3 * 8192 + 3 * 256}}) {
    for (size_t delta : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{16}, size_t{63}}) {
      for (size_t len : {base + delta, base > delta ? base - delta : 0}) {
        for (size_t offset : {size_t{0}, size_t{3}}) {
          ASSERT_LE(offset + len, bytes.size());
          const uint32_t expected = bitwise(bytes.data() + offset, len, 0x1234u);
          EXPECT_EQ(crc32c(bytes.data() + offset, len, 0x1234u), expected)
              << "length " << len << " at offset " << offset;
          for (Crc32cPath path : paths) {
            EXPECT_EQ(crc32c_on(path, bytes.data() + offset, len, 0x1234u), expected)
                << "path " << static_cast<int>(path) << ", length " << len << " at offset " << offset;
          }
        }
      }
    }
  }
  for (Crc32cPath path : paths) {
    EXPECT_EQ(crc32c_on(path, bytes.data(), bytes.size()), bitwise(bytes.data(), bytes.size(), 0));
  }
}

FrameHeader sample_header() {
  FrameHeader h = *make_header(FrameKind::kGradient, (uint64_t{1} << 40) + 3, 7, 9, DType::kF16, {2, 3, 4});
  h.payload_crc = 0xDEADBEEF;
  return h;
}

// Re-stamps the header checksum after a test edits a field, so the edited field is what fails.
void reseal(std::array<uint8_t, kFrameHeaderBytes>& b) {
  uint32_t crc = crc32c(b.data(), 108);
  std::memcpy(b.data() + 108, &crc, 4);
}

template <typename T>
std::array<uint8_t, kFrameHeaderBytes> with_field(size_t offset, T value) {
  auto b = encode_header(sample_header());
  std::memcpy(b.data() + offset, &value, sizeof(T));
  reseal(b);
  return b;
}

TEST(Frame, HeaderRoundTrip) {
  FrameHeader h = sample_header();
  auto bytes = encode_header(h);
  EXPECT_EQ(std::memcmp(bytes.data(), "RVNF", 4), 0);
  Result<FrameHeader> back = decode_header(bytes, FrameLimits{});
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->version, kProtocolVersion);
  EXPECT_EQ(back->kind, FrameKind::kGradient);
  EXPECT_EQ(back->step, (uint64_t{1} << 40) + 3);
  EXPECT_EQ(back->microbatch, 7u);
  EXPECT_EQ(back->tensor_id, 9u);
  EXPECT_EQ(back->dtype, DType::kF16);
  EXPECT_EQ(back->codec, Codec::kRaw);
  EXPECT_EQ(back->shape, (Shape{2, 3, 4}));
  EXPECT_EQ(back->payload_bytes, 48u);
  EXPECT_EQ(back->payload_crc, 0xDEADBEEFu);
  // A scalar and an empty tensor are valid too.
  EXPECT_TRUE(decode_header(encode_header(*make_header(FrameKind::kLabels, 0, 0, 0, DType::kI64, {})), {}).ok());
  EXPECT_TRUE(decode_header(encode_header(*make_header(FrameKind::kControl, 0, 0, 0, DType::kF32, {0, 5})), {}).ok());
}

TEST(Frame, EachInvalidFieldIsRejectedByName) {
  FrameLimits limits;
  auto rejects = [&](const std::array<uint8_t, kFrameHeaderBytes>& b, Code code,
                     std::initializer_list<std::string> parts) {
    Result<FrameHeader> r = decode_header(b, limits);
    return fails_with(r.ok() ? Status() : r.status(), code, parts);
  };
  EXPECT_TRUE(rejects(with_field<uint32_t>(0, 0x12345678), Code::kCorrupt, {"field 'magic' is 0x12345678"}));
  EXPECT_TRUE(rejects(with_field<uint16_t>(4, 2), Code::kUnsupported, {"field 'version' is 2", "version 1"}));
  auto flipped = encode_header(sample_header());
  flipped[50] ^= 0x40;  // a dims byte, without re-stamping the checksum
  EXPECT_TRUE(rejects(flipped, Code::kCorrupt, {"field 'header_crc'"}));
  EXPECT_TRUE(rejects(with_field<uint16_t>(6, 0), Code::kCorrupt, {"field 'kind' is 0"}));
  EXPECT_TRUE(rejects(with_field<uint16_t>(6, 99), Code::kCorrupt, {"field 'kind' is 99"}));
  EXPECT_TRUE(rejects(with_field<int32_t>(24, 5), Code::kCorrupt, {"field 'dtype' is 5"}));
  EXPECT_TRUE(rejects(with_field<uint8_t>(28, 1), Code::kCorrupt, {"field 'codec' is 1"}));
  EXPECT_TRUE(rejects(with_field<uint8_t>(29, 9), Code::kCorrupt, {"field 'rank' is 9, at most 8"}));
  EXPECT_TRUE(rejects(with_field<uint16_t>(30, 1), Code::kCorrupt, {"field 'reserved' is 1"}));
  EXPECT_TRUE(rejects(with_field<int64_t>(32 + 8, -3), Code::kCorrupt, {"field 'dims' is -3 at index 1"}));
  EXPECT_TRUE(rejects(with_field<int64_t>(32 + 8 * 5, 4), Code::kCorrupt, {"field 'dims' is 4 at index 5"}));
  EXPECT_TRUE(rejects(with_field<uint64_t>(96, 47), Code::kCorrupt,
                      {"field 'payload_bytes' is 47", "shape 2x3x4 of float16 needs 48 bytes"}));
  EXPECT_TRUE(rejects(with_field<int64_t>(32, INT64_MAX), Code::kCorrupt, {"field 'dims'", "overflows"}));
  limits.max_payload_bytes = 40;
  EXPECT_TRUE(
      rejects(encode_header(sample_header()), Code::kCorrupt, {"field 'payload_bytes' is 48, above the limit of 40"}));

  Result<FrameHeader> deep = make_header(FrameKind::kActivation, 0, 0, 0, DType::kF32, Shape(9, 1));
  EXPECT_TRUE(fails_with(deep.status(), Code::kInvalidArgument, {"rank 9"}));
}

// ------------------------------------------------------------------ transport

TEST(Transport, ExchangesTensorsBothWaysInAnyOrder) {
  Pair p;
  // b -> a: five activations of several dtypes; a receives them in reverse order.
  std::vector<Tensor> sent;
  const DType dtypes[] = {DType::kF32, DType::kI64, DType::kF16, DType::kU8, DType::kF64};
  for (uint32_t i = 0; i < 5; ++i) {
    sent.push_back(pattern(dtypes[i], {static_cast<int64_t>(i + 1), 3}, i));
    ASSERT_TRUE(p.b->send("a", act(10 + i, i % 2, i), sent.back()).ok());
  }
  // a -> b: gradients and labels, interleaved kinds with equal (step, microbatch, id).
  Tensor grad = pattern(DType::kF32, {4, 4}, 100);
  Tensor labels = pattern(DType::kI64, {4}, 101);
  Tensor scalar = pattern(DType::kF32, {}, 102);
  ASSERT_TRUE(p.a->send("b", FrameMeta{FrameKind::kGradient, 1, 0, 0}, grad).ok());
  ASSERT_TRUE(p.a->send("b", FrameMeta{FrameKind::kLabels, 1, 0, 0}, labels).ok());
  ASSERT_TRUE(p.a->send("b", FrameMeta{FrameKind::kControl, 1, 0, 0}, scalar).ok());

  for (int i = 4; i >= 0; --i) {
    Result<Tensor> got =
        p.a->recv("b", act(10 + static_cast<uint64_t>(i), static_cast<uint32_t>(i) % 2, static_cast<uint32_t>(i)),
                  deadline_after(kWait));
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    EXPECT_TRUE(same(*got, sent[static_cast<size_t>(i)])) << "activation " << i;
  }
  Result<Tensor> got_labels = p.b->recv("a", FrameMeta{FrameKind::kLabels, 1, 0, 0}, deadline_after(kWait));
  Result<Tensor> got_scalar = p.b->recv("a", FrameMeta{FrameKind::kControl, 1, 0, 0}, deadline_after(kWait));
  Result<Tensor> got_grad = p.b->recv("a", FrameMeta{FrameKind::kGradient, 1, 0, 0}, deadline_after(kWait));
  ASSERT_TRUE(got_labels.ok() && got_grad.ok() && got_scalar.ok());
  EXPECT_TRUE(same(*got_labels, labels));
  EXPECT_TRUE(same(*got_grad, grad));
  EXPECT_TRUE(same(*got_scalar, scalar));
  EXPECT_TRUE(p.a->flush(deadline_after(kWait)).ok());
  EXPECT_TRUE(p.b->flush(deadline_after(kWait)).ok());
  EXPECT_EQ(p.a->connected_peers(), std::vector<std::string>{"b"});
  EXPECT_TRUE(p.a->refused_connections().empty());
}

TEST(Transport, SameKeyFramesArriveInSendOrder) {
  Pair p;
  for (uint32_t i = 0; i < 20; ++i) {
    Tensor t = Tensor::empty(DType::kI32, {1});
    t.data<int32_t>()[0] = static_cast<int32_t>(i);
    ASSERT_TRUE(p.b->send("a", act(0), t).ok());
  }
  for (int32_t i = 0; i < 20; ++i) {
    Result<Tensor> got = p.a->recv("b", act(0), deadline_after(kWait));
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    EXPECT_EQ(got->data<int32_t>()[0], i);
  }
}

TEST(Transport, LargeTensorArrivesIntact) {
  Pair p;
  Tensor big = pattern(DType::kF32, {16, 1024, 1024}, 7);  // 64 MiB
  ASSERT_TRUE(p.a->send("b", act(1), big).ok());
  Status flushed = p.a->flush(deadline_after(kWait * 4));
  EXPECT_TRUE(flushed.ok()) << flushed.to_string();
  Result<Tensor> got = p.b->recv("a", act(1), deadline_after(kWait * 4));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_TRUE(same(*got, big));
}

// Frames queued while a write is in flight go out in one gathered write; each must still
// arrive intact and in order, be counted once in stats(), and (with on_frame_written, which
// keeps one frame per write) be reported once, in send order.
TEST(Transport, BurstOfQueuedFramesArrivesIntactAndIsCountedFrameByFrame) {
  for (bool with_callback : {false, true}) {
    SCOPED_TRACE(with_callback ? "with on_frame_written" : "without on_frame_written");
    std::vector<FrameWritten> written;
    std::mutex written_mu;
    TransportOptions sender_options = options("b");
    if (with_callback) {
      sender_options.on_frame_written = [&](const FrameWritten& w) {
        std::lock_guard<std::mutex> lock(written_mu);
        written.push_back(w);
      };
    }
    Transport a(options("a"));
    Transport b(std::move(sender_options));
    ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
    ASSERT_TRUE(b.connect("a", "127.0.0.1", a.port(), deadline_after(kWait)).ok());
    ASSERT_TRUE(a.wait_for_peer("b", deadline_after(kWait)).ok());
    // Empty frames, small ones, and one over the 8 MiB cap of a gathered write.
    std::vector<Tensor> sent;
    uint64_t payload_bytes = 0;
    for (uint32_t i = 0; i < 150; ++i) {
      const int64_t elems = i == 70 ? (int64_t{9} << 20) / 4 : i % 10 == 0 ? 0 : static_cast<int64_t>(1 + 97 * i);
      sent.push_back(pattern(DType::kF32, {elems}, i));
      payload_bytes += sent.back().bytes();
      ASSERT_TRUE(b.send("a", act(3, 0, i), sent.back()).ok());
    }
    ASSERT_TRUE(b.flush(deadline_after(kWait)).ok());
    const TrafficStats stats = b.sent(FrameKind::kActivation);
    EXPECT_EQ(stats.frames, sent.size());
    EXPECT_EQ(stats.bytes, sent.size() * kFrameHeaderBytes + payload_bytes);
    for (uint32_t i = 0; i < sent.size(); ++i) {
      Result<Tensor> got = a.recv("b", act(3, 0, i), deadline_after(kWait));
      ASSERT_TRUE(got.ok()) << got.status().to_string();
      EXPECT_TRUE(same(*got, sent[i])) << "frame " << i;
    }
    std::lock_guard<std::mutex> lock(written_mu);
    ASSERT_EQ(written.size(), with_callback ? sent.size() : 0u);
    for (uint32_t i = 0; i < written.size(); ++i) {
      EXPECT_EQ(written[i].header.tensor_id, i);
      EXPECT_EQ(written[i].header.payload_bytes, sent[i].bytes());
    }
  }
}

// write_in_send: send() writes on the caller's thread when nothing is queued, leaves what
// does not fit in the socket (3 MiB frames into an unread socket) to the I/O thread, and
// queues behind earlier frames otherwise. Mixed with ordinary sends, from two threads at
// once, every frame must arrive intact and in its stream's order, and be counted once.
TEST(Transport, WriteInSendKeepsOrderAndIntegrityAcrossPartialWrites) {
  Pair p;
  constexpr uint32_t kFrames = 40;
  WireCodec direct;
  direct.write_in_send = true;
  std::vector<std::vector<Tensor>> sent(2);
  uint64_t payload_bytes = 0;
  for (uint32_t stream = 0; stream < 2; ++stream) {
    for (uint32_t i = 0; i < kFrames; ++i) {
      const int64_t elems = i % 4 == 1 ? int64_t{3} << 18 : static_cast<int64_t>(1 + 31 * i);  // 3 MiB or small
      sent[stream].push_back(pattern(DType::kF32, {elems}, 1000 * stream + i));
      payload_bytes += sent[stream].back().bytes();
    }
  }
  std::vector<Status> results(2);
  std::vector<std::thread> senders;
  for (uint32_t stream = 0; stream < 2; ++stream) {
    senders.emplace_back([&, stream] {
      for (uint32_t i = 0; i < kFrames && results[stream].ok(); ++i) {
        // Every third frame takes the ordinary path through the I/O thread.
        results[stream] = p.b->send("a", act(7, stream, 0), sent[stream][i], i % 3 == 2 ? WireCodec{} : direct);
      }
    });
  }
  for (std::thread& t : senders) t.join();
  for (const Status& st : results) ASSERT_TRUE(st.ok()) << st.to_string();
  for (uint32_t i = 0; i < kFrames; ++i) {
    for (uint32_t stream = 0; stream < 2; ++stream) {
      Result<Tensor> got = p.a->recv("b", act(7, stream, 0), deadline_after(kWait));
      ASSERT_TRUE(got.ok()) << got.status().to_string();
      EXPECT_TRUE(same(*got, sent[stream][i])) << "stream " << stream << " frame " << i;
    }
  }
  ASSERT_TRUE(p.b->flush(deadline_after(kWait)).ok());
  const TrafficStats stats = p.b->sent(FrameKind::kActivation);
  EXPECT_EQ(stats.frames, 2 * kFrames);
  EXPECT_EQ(stats.bytes, 2 * kFrames * kFrameHeaderBytes + payload_bytes);
}

// A direct write to a peer that is gone fails that send() or a later one, never crashes
// (no SIGPIPE) and never writes to a closed descriptor.
TEST(Transport, WriteInSendToADestroyedPeerFailsCleanly) {
  Pair p;
  WireCodec direct;
  direct.write_in_send = true;
  p.a.reset();
  Tensor t = pattern(DType::kF32, {1 << 16}, 3);
  Status st;
  const Deadline deadline = deadline_after(kWait);
  while (st.ok() && Clock::now() < deadline) {
    st = p.b->send("a", act(1), t, direct);
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(fails_with(st, Code::kNetwork, {"'a'"})) << st.to_string();
}

TEST(Transport, RecvTimesOutNamingPeerAndFrame) {
  Pair p;
  Result<Tensor> r = p.a->recv("b", act(42, 3, 1), deadline_after(200ms));
  EXPECT_TRUE(fails_with(r.status(), Code::kTimeout,
                  {"waiting for ACTIVATION step 42 microbatch 3 tensor 1", "peer 'b' (127.0.0.1:", " ms"}));
  Result<Tensor> never = p.a->recv("nobody", act(0), deadline_after(100ms));
  EXPECT_TRUE(fails_with(never.status(), Code::kTimeout, {"peer 'nobody' (never connected)"}));
}

TEST(Transport, DestroyedPeerFailsRecvAndSendPromptly) {
  Pair p;
  Tensor last = pattern(DType::kF32, {8}, 1);
  ASSERT_TRUE(p.b->send("a", act(0), last).ok());
  p.b.reset();  // sends what is queued, then BYE, then closes
  // The frame sent before leaving is still delivered ...
  Result<Tensor> got = p.a->recv("b", act(0), deadline_after(kWait));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_TRUE(same(*got, last));
  // ... and the next wait fails with kNetwork well before its deadline (a timeout would be kTimeout).
  Result<Tensor> r = p.a->recv("b", act(1), deadline_after(kWait));
  EXPECT_TRUE(fails_with(r.status(), Code::kNetwork, {"peer 'b' (127.0.0.1:", "closed the connection"}));
  Status s = p.a->send("b", act(2), last);
  EXPECT_TRUE(fails_with(s, Code::kNetwork, {"peer 'b'", "closed the connection"}));
  EXPECT_TRUE(p.a->connected_peers().empty());
}

TEST(Transport, ConnectRetriesUntilThePeerListens) {
  uint16_t port = 0;
  {
    Transport probe(options("probe"));
    ASSERT_TRUE(probe.listen("127.0.0.1", 0).ok());
    port = probe.port();
  }  // the port is free again
  Transport a(options("a"));
  std::unique_ptr<Transport> late;
  std::thread starter([&] {
    std::this_thread::sleep_for(300ms);  // the peer starts after the first attempts were refused
    late = std::make_unique<Transport>(options("late"));
    EXPECT_TRUE(late->listen("127.0.0.1", port).ok());
  });
  Status st = a.connect("late", "127.0.0.1", port, deadline_after(kWait));
  starter.join();
  EXPECT_TRUE(st.ok()) << st.to_string();
  ASSERT_TRUE(a.send("late", act(5), pattern(DType::kF32, {3}, 5)).ok());
  Result<Tensor> got = late->recv("a", act(5), deadline_after(kWait));
  EXPECT_TRUE(got.ok()) << got.status().to_string();
}

TEST(Transport, ConnectToNobodyTimesOutWithTheLastError) {
  uint16_t port = 0;
  {
    Transport probe(options("probe"));
    ASSERT_TRUE(probe.listen("127.0.0.1", 0).ok());
    port = probe.port();
  }
  Transport a(options("a"));
  Status st = a.connect("ghost", "127.0.0.1", port, deadline_after(300ms));
  EXPECT_TRUE(fails_with(st, Code::kTimeout, {"peer 'ghost' at 127.0.0.1:", "attempts", "refused"}));
}

TEST(Transport, KilledChildProcessFailsPendingRecv) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child: a tiny server that sends one frame and then idles until it is killed.
    ::close(fds[0]);
    Transport child(options("child"));
    if (!child.listen("127.0.0.1", 0).ok()) ::_exit(2);
    uint16_t port = child.port();
    if (::write(fds[1], &port, sizeof(port)) != sizeof(port)) ::_exit(3);
    if (!child.wait_for_peer("parent", deadline_after(kWait)).ok()) ::_exit(4);
    if (!child.send("parent", act(0), pattern(DType::kF32, {4}, 9)).ok()) ::_exit(5);
    for (int i = 0; i < 200; ++i) ::usleep(50 * 1000);  // at most 10 s
    ::_exit(0);
  }
  ::close(fds[1]);
  uint16_t port = 0;
  ASSERT_EQ(::read(fds[0], &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
  ::close(fds[0]);

  Transport parent(options("parent"));
  Status st = parent.connect("child", "127.0.0.1", port, deadline_after(kWait));
  ASSERT_TRUE(st.ok()) << st.to_string();
  Result<Tensor> first = parent.recv("child", act(0), deadline_after(kWait));
  ASSERT_TRUE(first.ok()) << first.status().to_string();

  std::thread killer([pid] { ::kill(pid, SIGKILL); });
  Result<Tensor> r = parent.recv("child", act(1), deadline_after(kWait));
  killer.join();
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  EXPECT_TRUE(WIFSIGNALED(wstatus));
  EXPECT_TRUE(fails_with(r.status(), Code::kNetwork, {"peer 'child' (127.0.0.1:", "crashed"}));
}

TEST(Transport, GarbageConnectionIsRefusedNamingTheField) {
  Transport a(options("a"));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  RawClient raw(a.port());
  ASSERT_TRUE(raw.connected());
  std::string garbage(kFrameHeaderBytes, 'G');
  raw.write(garbage.data(), garbage.size());
  EXPECT_TRUE(raw.closed_by_server());
  std::vector<Status> refused = a.refused_connections();
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_TRUE(fails_with(refused[0], Code::kCorrupt,
                  {"node 'a' refused a connection: bad frame from unidentified peer at 127.0.0.1:",
                   "field 'magic' is 0x47474747"}));
}

TEST(Transport, BadFramesFromAConnectedPeerCloseItNamingTheField) {
  TransportOptions o = options("a");
  o.limits.max_payload_bytes = 1 << 20;
  Transport a(o);
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());

  // A hand-made peer completes the handshake, then sends a frame whose payload checksum is wrong.
  RawClient raw(a.port());
  raw.send_hello("raw", "run-1");
  Result<Json> answer = raw.read_hello();
  ASSERT_TRUE(answer.ok()) << answer.status().to_string();
  EXPECT_TRUE(*answer->get_bool("accepted"));
  EXPECT_EQ(*answer->get_string("node"), "a");
  raw.send_frame(*make_header(FrameKind::kActivation, 3, 0, 0, DType::kU8, {4}), "abcd", /*corrupt_crc=*/true);
  Result<Tensor> r = a.recv("raw", act(3), deadline_after(kWait));
  EXPECT_TRUE(fails_with(r.status(), Code::kCorrupt, {"bad frame from peer 'raw' (127.0.0.1:", "field 'payload_crc'"}));
  EXPECT_TRUE(raw.closed_by_server());

  // Another claims a payload above the limit: refused before anything is allocated.
  RawClient big(a.port());
  big.send_hello("big", "run-1");
  ASSERT_TRUE(big.read_hello().ok());
  big.send_frame(*make_header(FrameKind::kActivation, 0, 0, 0, DType::kF32, {1 << 20}), "");
  Result<Tensor> r2 = a.recv("big", act(0), deadline_after(kWait));
  EXPECT_TRUE(fails_with(r2.status(), Code::kCorrupt, {"peer 'big'", "field 'payload_bytes' is 4194304, above the limit"}));
}

TEST(Transport, RunIdMismatchIsRefusedOnBothSides) {
  Transport a(options("a", "run-1"));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  Transport b(options("b", "run-2"));
  Status st = b.connect("a", "127.0.0.1", a.port(), deadline_after(kWait));
  EXPECT_TRUE(
      fails_with(st, Code::kInvalidArgument, {"peer 'a' (127.0.0.1:", "refused the handshake", "run 'run-2'", "run 'run-1'"}));
  std::vector<Status> refused = a.refused_connections();
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_TRUE(fails_with(refused[0], Code::kInvalidArgument, {"run id mismatch: peer 'b' (127.0.0.1:"}));
  EXPECT_TRUE(a.connected_peers().empty());
  EXPECT_TRUE(b.connected_peers().empty());
}

TEST(Transport, ProtocolVersionMismatchIsRefusedWithAReason) {
  Transport a(options("a"));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  RawClient raw(a.port());
  raw.send_hello("future", "run-1", /*version=*/kProtocolVersion + 1);
  Result<Json> answer = raw.read_hello();
  ASSERT_TRUE(answer.ok()) << answer.status().to_string();
  EXPECT_FALSE(*answer->get_bool("accepted"));
  EXPECT_NE(answer->get_string("error")->find("field 'version' is 2"), std::string::npos);
  std::vector<Status> refused = a.refused_connections();
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_TRUE(fails_with(refused[0], Code::kUnsupported, {"field 'version' is 2"}));
}

TEST(Transport, WrongPeerIdAndUnknownPeerAreErrors) {
  Transport a(options("a"));
  ASSERT_TRUE(a.listen("127.0.0.1", 0).ok());
  Transport b(options("b"));
  Status st = b.connect("x", "127.0.0.1", a.port(), deadline_after(kWait));
  EXPECT_TRUE(fails_with(st, Code::kInvalidArgument, {"expected peer 'x'", "node 'a' answered"}));
  EXPECT_TRUE(fails_with(b.send("zzz", act(0), pattern(DType::kF32, {1}, 0)), Code::kNotFound, {"peer 'zzz'"}));
}

}  // namespace
}  // namespace ravnest::rt
