// Wire codecs and error feedback: round-trip error bounds per codec, top-k keeps
// exactly the k largest, error feedback keeps the running sum of what was decoded
// close to the running sum of the inputs, corrupt payloads are refused with a message
// naming the codec and the fault, and compressed frames cross two Transports on
// 127.0.0.1 (decoded by recv, bytes counted per peer and kind).
#include "runtime/compress/codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>

#include "runtime/bundle.h"
#include "runtime/transport/frame.h"
#include "runtime/transport/transport.h"

namespace ravnest::rt {
namespace {

using namespace std::chrono_literals;

std::vector<float> randn(int64_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(gen);
  return x;
}

std::vector<float> round_trip(Codec codec, const std::vector<float>& x, const CodecParams& params = {}) {
  Result<std::vector<uint8_t>> bytes = encode(codec, x.data(), static_cast<int64_t>(x.size()), params);
  EXPECT_TRUE(bytes.ok()) << bytes.status().to_string();
  if (!bytes.ok()) return {};
  EXPECT_TRUE(check_encoded_size(codec, static_cast<int64_t>(x.size()), bytes->size()).ok());
  std::vector<float> out(x.size(), -12345.0f);
  Status st = decode(codec, *bytes, out.data(), static_cast<int64_t>(out.size()));
  EXPECT_TRUE(st.ok()) << st.to_string();
  return out;
}

::testing::AssertionResult rejected(const Status& st, std::initializer_list<std::string> parts) {
  if (st.ok()) return ::testing::AssertionFailure() << "expected an error, got OK";
  for (const std::string& p : parts)
    if (st.message().find(p) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks '" << p << "': " << st.message();
  return ::testing::AssertionSuccess();
}

// The spacing of representable values of a format with `mant_bits` stored mantissa bits
// and minimum normal exponent `min_exp`, at magnitude |v|.
float ulp_at(float v, int mant_bits, int min_exp) {
  int e = std::max(std::ilogb(v == 0 ? 1e-30f : v), min_exp);
  return std::ldexp(1.0f, e - mant_bits);
}

TEST(Codec, NamesParseAndPrint) {
  for (const char* text : {"none", "fp16", "bf16", "int8", "topk:0.05"}) {
    Result<CodecSpec> spec = parse_codec_spec(text);
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status().to_string();
    EXPECT_EQ(codec_spec_str(*spec), text);
  }
  EXPECT_EQ(parse_codec_spec("topk:0.05")->params.topk_fraction, 0.05);
  EXPECT_TRUE(rejected(parse_codec_spec("zstd").status(), {"unknown codec 'zstd'", "fp16"}));
  EXPECT_TRUE(rejected(parse_codec_spec("topk:0").status(), {"topk needs a fraction in (0, 1]"}));
  EXPECT_TRUE(rejected(parse_codec_spec("topk:1.5").status(), {"topk"}));
  EXPECT_TRUE(rejected(parse_codec_spec("topk:abc").status(), {"topk"}));
  EXPECT_FALSE(is_lossy(Codec::kRaw));
  for (Codec c : {Codec::kF16, Codec::kBF16, Codec::kInt8, Codec::kTopK}) EXPECT_TRUE(is_lossy(c));
}

TEST(Codec, RawIsExact) {
  std::vector<float> x = randn(1000, 1);
  EXPECT_EQ(round_trip(Codec::kRaw, x), x);
}

TEST(Codec, HalfFormatsExactOnRepresentableValues) {
  // Values with few mantissa bits, in range for both formats: exact in fp16 and bf16.
  std::vector<float> x = {0.0f, -0.0f, 1.0f, -2.5f, 0.15625f, 1024.0f, -3.0f, 0.5f, 96.0f, 0x1p-10f};
  EXPECT_EQ(round_trip(Codec::kF16, x), x);
  EXPECT_EQ(round_trip(Codec::kBF16, x), x);
  // fp16 specifics: largest finite, smallest subnormal, infinities.
  std::vector<float> h = {65504.0f, 0x1p-24f, -0x1p-24f, INFINITY, -INFINITY, 0x1p-14f};
  EXPECT_EQ(round_trip(Codec::kF16, h), h);
  // bf16 keeps float32's range.
  std::vector<float> b = {0x1p100f, -0x1p-100f, INFINITY, 0x1p127f};
  EXPECT_EQ(round_trip(Codec::kBF16, b), b);
  EXPECT_TRUE(std::isnan(round_trip(Codec::kF16, {NAN})[0]));
  EXPECT_TRUE(std::isnan(round_trip(Codec::kBF16, {NAN})[0]));
}

TEST(Codec, HalfFormatsWithinHalfUlpAndTiesToEven) {
  std::vector<float> x = randn(4096, 2, 10.0f);
  for (int i = 0; i < 64; ++i) x.push_back(std::ldexp(1.37f, -20 + i / 4));  // fp16 subnormals too
  std::vector<float> h = round_trip(Codec::kF16, x), b = round_trip(Codec::kBF16, x);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_LE(std::abs(h[i] - x[i]), ulp_at(x[i], 10, -14) / 2) << "fp16 of " << x[i];
    EXPECT_LE(std::abs(b[i] - x[i]), ulp_at(x[i], 7, -126) / 2) << "bf16 of " << x[i];
  }
  // Exactly halfway cases round to the even neighbour.
  EXPECT_EQ(round_trip(Codec::kF16, {1.0f + 0x1p-11f})[0], 1.0f);                  // 1 (even) vs 1+2^-10
  EXPECT_EQ(round_trip(Codec::kF16, {1.0f + 3 * 0x1p-11f})[0], 1.0f + 0x1p-9f);    // up to the even one
  EXPECT_EQ(round_trip(Codec::kBF16, {1.0f + 0x1p-8f})[0], 1.0f);
  EXPECT_EQ(round_trip(Codec::kBF16, {1.0f + 3 * 0x1p-8f})[0], 1.0f + 0x1p-6f);
  // Beyond fp16's range: infinity.
  EXPECT_EQ(round_trip(Codec::kF16, {70000.0f})[0], INFINITY);
  EXPECT_EQ(round_trip(Codec::kF16, {65519.0f})[0], 65504.0f);
}

TEST(Codec, Int8ErrorWithinHalfScalePerChunk) {
  // 1000 elements: 3 full chunks of 256 and a partial one, with very different magnitudes.
  std::vector<float> x = randn(1000, 3);
  for (size_t i = 256; i < 512; ++i) x[i] *= 1000.0f;
  for (size_t i = 512; i < 768; ++i) x[i] = 0.0f;  // an all-zero chunk
  std::vector<float> y = round_trip(Codec::kInt8, x);
  auto bytes = encode(Codec::kInt8, x.data(), 1000);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->size(), 4u * 4 + 1000);
  for (size_t c = 0; c < 4; ++c) {
    const size_t begin = c * 256, end = std::min<size_t>(1000, begin + 256);
    float max_abs = 0;
    for (size_t i = begin; i < end; ++i) max_abs = std::max(max_abs, std::abs(x[i]));
    const float scale = max_abs / 127.0f;
    float stored;
    std::memcpy(&stored, bytes->data() + 4 * c, 4);
    EXPECT_EQ(stored, scale);
    for (size_t i = begin; i < end; ++i) EXPECT_LE(std::abs(y[i] - x[i]), scale / 2 * (1 + 1e-5f)) << i;
  }
  for (size_t i = 512; i < 768; ++i) EXPECT_EQ(y[i], 0.0f);
  Result<std::vector<uint8_t>> nan = encode(Codec::kInt8, std::vector<float>{1, NAN}.data(), 2);
  EXPECT_TRUE(rejected(nan.status(), {"int8", "non-finite", "index 1"}));
}

TEST(Codec, TopKKeepsExactlyTheKLargest) {
  std::vector<float> x = randn(1000, 4);
  const CodecParams params{0.05};
  ASSERT_EQ(topk_count(1000, 0.05), 50);
  EXPECT_EQ(topk_count(10, 0.01), 1);
  EXPECT_EQ(topk_count(7, 1.0), 7);
  std::vector<float> y = round_trip(Codec::kTopK, x, params);
  auto bytes = encode(Codec::kTopK, x.data(), 1000, params);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->size(), 50u * 8);
  std::vector<float> mags;
  for (float v : x) mags.push_back(std::abs(v));
  std::sort(mags.begin(), mags.end(), std::greater<>());
  const float threshold = mags[49];  // the 50th largest magnitude
  int kept = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (y[i] != 0) {
      ++kept;
      EXPECT_EQ(y[i], x[i]) << "kept values are exact";
      EXPECT_GE(std::abs(x[i]), threshold);
    } else {
      EXPECT_LT(std::abs(x[i]), threshold) << "index " << i << " is among the 50 largest but was dropped";
    }
  }
  EXPECT_EQ(kept, 50);
  EXPECT_TRUE(rejected(encode(Codec::kTopK, x.data(), 1000, CodecParams{0.0}).status(), {"topk fraction 0"}));
}

TEST(Codec, ErrorFeedbackSumTracksInputs) {
  // 200 steps of a stream; the decoded sum stays within one residual of the input sum.
  const int64_t n = 512;
  for (auto [codec, params] : {std::pair{Codec::kInt8, CodecParams{}}, std::pair{Codec::kTopK, CodecParams{0.05}},
                               std::pair{Codec::kBF16, CodecParams{}}}) {
    ErrorFeedback fb;
    const StreamKey key{"node1", static_cast<uint16_t>(FrameKind::kGradient), 0};
    std::vector<double> sum_in(n, 0.0), sum_out(n, 0.0), sum_plain(n, 0.0);
    float max_residual = 0;
    for (int step = 0; step < 200; ++step) {
      std::vector<float> x = randn(n, 100 + static_cast<uint32_t>(step));
      for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] += 0.05f;  // a small bias top-k alone would drop
      auto bytes = fb.encode(key, codec, x.data(), n, params);
      ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
      std::vector<float> y(n);
      ASSERT_TRUE(decode(codec, *bytes, y.data(), n).ok());
      std::vector<float> plain = round_trip(codec, x, params);
      for (int64_t i = 0; i < n; ++i) {
        sum_in[i] += x[i];
        sum_out[i] += y[i];
        sum_plain[i] += plain[i];
      }
      max_residual = std::max(max_residual, fb.max_abs_residual(key));
    }
    // Invariant: sum_in - sum_out == residual (up to float rounding), so it stays bounded.
    const float final_residual = fb.max_abs_residual(key);
    double worst = 0, worst_plain = 0;
    for (int64_t i = 0; i < n; ++i) {
      worst = std::max(worst, std::abs(sum_in[i] - sum_out[i]));
      worst_plain = std::max(worst_plain, std::abs(sum_in[i] - sum_plain[i]));
    }
    EXPECT_LE(worst, final_residual + 1e-3) << codec_name(codec);
    EXPECT_LT(max_residual, 100.0f) << codec_name(codec) << ": the residual must stay bounded";
    if (codec == Codec::kTopK) {
      EXPECT_GT(worst_plain, 5 * worst) << "without feedback top-k drifts";
    }
  }
  // A stream whose length changes restarts from zero.
  ErrorFeedback fb;
  StreamKey key{"p", 2, 1};
  std::vector<float> x = randn(300, 9);
  ASSERT_TRUE(fb.encode(key, Codec::kInt8, x.data(), 300).ok());
  EXPECT_GT(fb.max_abs_residual(key), 0.0f);
  ASSERT_TRUE(fb.encode(key, Codec::kRaw, x.data(), 300).ok());  // raw: no residual touched
  std::vector<float> zeros(10, 0.0f);
  ASSERT_TRUE(fb.encode(key, Codec::kInt8, zeros.data(), 10).ok());
  EXPECT_EQ(fb.max_abs_residual(key), 0.0f);
}

TEST(Codec, CorruptPayloadsAreRejectedByName) {
  std::vector<float> out(300);
  auto check = [&](Codec codec, std::vector<uint8_t> bytes, int64_t n, std::initializer_list<std::string> parts) {
    Status st = decode(codec, bytes, out.data(), n);
    EXPECT_EQ(st.code(), Code::kCorrupt) << st.to_string();
    return rejected(st, parts);
  };
  EXPECT_TRUE(check(Codec::kF16, std::vector<uint8_t>(11), 6, {"fp16 payload of 11 bytes for 6 elements", "12"}));
  EXPECT_TRUE(check(Codec::kBF16, std::vector<uint8_t>(14), 6, {"bf16 payload of 14 bytes"}));
  EXPECT_TRUE(check(Codec::kRaw, std::vector<uint8_t>(3), 1, {"raw payload of 3 bytes"}));
  EXPECT_TRUE(check(Codec::kInt8, std::vector<uint8_t>(300), 300, {"int8 payload of 300 bytes", "expected 308"}));
  EXPECT_TRUE(check(Codec::kTopK, std::vector<uint8_t>(12), 300, {"topk payload of 12 bytes", "multiple of 8"}));
  EXPECT_TRUE(check(Codec::kTopK, std::vector<uint8_t>(8 * 4), 3, {"topk payload of 32 bytes", "up to 24"}));

  std::vector<float> x = randn(300, 5);
  auto int8 = *encode(Codec::kInt8, x.data(), 300);
  auto bad_scale = int8;
  const float neg = -1.0f;
  std::memcpy(bad_scale.data() + 4, &neg, 4);
  EXPECT_TRUE(check(Codec::kInt8, bad_scale, 300, {"int8 payload", "scale of chunk 1 is -1"}));
  auto bad_value = int8;
  bad_value[8 + 17] = 0x80;
  EXPECT_TRUE(check(Codec::kInt8, bad_value, 300, {"int8 payload", "-128 at index 17"}));

  auto topk = *encode(Codec::kTopK, x.data(), 300, CodecParams{0.1});
  auto out_of_range = topk;
  const uint32_t big = 300;
  std::memcpy(out_of_range.data() + 8 * 2, &big, 4);
  EXPECT_TRUE(check(Codec::kTopK, out_of_range, 300, {"topk payload", "index 300 of pair 2", "out of range"}));
  auto unsorted = topk;
  std::memcpy(unsorted.data() + 8 * 3, unsorted.data(), 4);  // pair 3 repeats pair 0's index
  EXPECT_TRUE(check(Codec::kTopK, unsorted, 300, {"topk payload", "pair 3", "not above the previous index"}));
}

// The manifest carries the codecs; an unknown one is an error naming the field.
TEST(Codec, ManifestCompressionRoundTripsAndUnknownCodecIsRefused) {
  Manifest m;
  m.run_id = "r";
  m.data_input = "images";
  m.labels_input = "labels";
  m.loss_output = "loss";
  m.logits_output = "logits";
  m.programs = {{"forward", "f.onnx"}, {"backward", "b.onnx"}, {"weight", "w.onnx"}, {"optimizer", "o.onnx"}};
  m.training.compression.activations = *parse_codec_spec("fp16");
  m.training.compression.gradients = *parse_codec_spec("topk:0.05");
  Result<Manifest> back = manifest_from_json(manifest_to_json(m));
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->training.compression.activations, m.training.compression.activations);
  EXPECT_EQ(back->training.compression.gradients, m.training.compression.gradients);
  std::string text = manifest_to_json(m).dump(0);
  const size_t at = text.find("\"fp16\"");
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, 6, "\"zstd\"");
  Result<Json> j = parse_json(text);
  ASSERT_TRUE(j.ok());
  EXPECT_TRUE(rejected(manifest_from_json(*j).status(), {"training.compression.activations", "unknown codec 'zstd'"}));
}

// ------------------------------------------------------------------ frames and transport

TEST(CodecFrame, HeaderChecksEncodedSizes) {
  FrameHeader h = *make_header(FrameKind::kActivation, 1, 0, 0, DType::kF32, {4, 100});
  h.codec = Codec::kInt8;
  h.payload_bytes = 400 + 2 * 4;
  Result<FrameHeader> back = decode_header(encode_header(h), FrameLimits{});
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->codec, Codec::kInt8);
  EXPECT_EQ(back->shape, (Shape{4, 100}));
  h.payload_bytes = 1600;  // the raw size is not an int8 size
  EXPECT_TRUE(rejected(decode_header(encode_header(h), FrameLimits{}).status(),
                       {"field 'payload_bytes' is 1600", "int8 payload", "expected 408"}));
  h.codec = Codec::kTopK;
  h.payload_bytes = 8 * 401;
  EXPECT_TRUE(rejected(decode_header(encode_header(h), FrameLimits{}).status(), {"topk payload", "up to 3200"}));
  h.payload_bytes = 8 * 40;
  EXPECT_TRUE(decode_header(encode_header(h), FrameLimits{}).ok());
  // A small encoded payload may not announce a huge decoded tensor.
  EXPECT_TRUE(rejected(decode_header(encode_header(h), FrameLimits{1000}).status(),
                       {"decoded size of 1600 bytes is above the limit of 1000"}));
  FrameHeader i64 = *make_header(FrameKind::kActivation, 1, 0, 0, DType::kI64, {4});
  i64.codec = Codec::kF16;
  i64.payload_bytes = 8;
  EXPECT_TRUE(rejected(decode_header(encode_header(i64), FrameLimits{}).status(),
                       {"field 'codec' is 1 (fp16)", "not float32"}));
  FrameHeader unknown = h;
  unknown.codec = static_cast<Codec>(9);
  EXPECT_TRUE(rejected(decode_header(encode_header(unknown), FrameLimits{}).status(), {"field 'codec' is 9"}));
}

struct Pair {
  Pair() {
    TransportOptions oa, ob;
    oa.node_id = "a";
    ob.node_id = "b";
    oa.run_id = ob.run_id = "run-codec";
    a = std::make_unique<Transport>(oa);
    b = std::make_unique<Transport>(ob);
    EXPECT_TRUE(a->listen("127.0.0.1", 0).ok());
    EXPECT_TRUE(b->connect("a", "127.0.0.1", a->port(), deadline_after(5s)).ok());
    EXPECT_TRUE(a->wait_for_peer("b", deadline_after(5s)).ok());
  }
  std::unique_ptr<Transport> a, b;
};

Tensor float_tensor(Shape shape, uint32_t seed) {
  Tensor t = Tensor::empty(DType::kF32, shape);
  std::vector<float> v = randn(t.numel(), seed);
  std::memcpy(t.raw(), v.data(), t.bytes());
  return t;
}

TEST(CodecTransport, CompressedFramesRoundTripAndAreCounted) {
  Pair p;
  const Shape shape{8, 300};
  Tensor x = float_tensor(shape, 7);
  const std::vector<float> xs(x.data<float>(), x.data<float>() + x.numel());
  struct Case {
    CodecSpec spec;
    uint32_t id;
  };
  const Case cases[] = {{{Codec::kRaw, {}}, 0},
                        {{Codec::kF16, {}}, 1},
                        {{Codec::kBF16, {}}, 2},
                        {{Codec::kInt8, {}}, 3},
                        {{Codec::kTopK, {0.1}}, 4}};
  for (const Case& c : cases)
    ASSERT_TRUE(p.b->send("a", FrameMeta{FrameKind::kActivation, 1, 0, c.id}, x, WireCodec{c.spec, false}).ok());
  // A gradient with error feedback, and an int64 tensor raw beside them.
  ASSERT_TRUE(p.b->send("a", FrameMeta{FrameKind::kGradient, 1, 0, 0}, x, WireCodec{{Codec::kInt8, {}}, true}).ok());
  Tensor labels = Tensor::zeros(DType::kI64, {5});
  ASSERT_TRUE(p.b->send("a", FrameMeta{FrameKind::kLabels, 1, 0, 0}, labels).ok());
  EXPECT_TRUE(rejected(p.b->send("a", FrameMeta{FrameKind::kLabels, 1, 0, 1}, labels, WireCodec{{Codec::kF16, {}}}),
                       {"codec fp16", "float32", "int64"}));
  ASSERT_TRUE(p.b->flush(deadline_after(5s)).ok());

  for (const Case& c : cases) {
    Result<Tensor> got = p.a->recv("b", FrameMeta{FrameKind::kActivation, 1, 0, c.id}, deadline_after(5s));
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    EXPECT_EQ(got->dtype(), DType::kF32);
    EXPECT_EQ(got->shape(), shape);
    std::vector<float> expected = round_trip(c.spec.codec, xs, c.spec.params);
    EXPECT_EQ(std::memcmp(got->raw(), expected.data(), got->bytes()), 0) << codec_name(c.spec.codec);
  }
  Result<Tensor> grad = p.a->recv("b", FrameMeta{FrameKind::kGradient, 1, 0, 0}, deadline_after(5s));
  ASSERT_TRUE(grad.ok()) << grad.status().to_string();
  EXPECT_EQ(grad->shape(), shape);
  Result<Tensor> lab = p.a->recv("b", FrameMeta{FrameKind::kLabels, 1, 0, 0}, deadline_after(5s));
  ASSERT_TRUE(lab.ok());
  EXPECT_EQ(lab->dtype(), DType::kI64);

  // Bytes written, per kind: header + encoded payload vs header + raw payload.
  const uint64_t n = 8 * 300, hdr = kFrameHeaderBytes;
  const uint64_t int8_bytes = n + 4 * ((n + 255) / 256);
  TrafficStats act = p.b->sent(FrameKind::kActivation);
  EXPECT_EQ(act.frames, 5u);
  EXPECT_EQ(act.raw_bytes, 5 * (hdr + 4 * n));
  EXPECT_EQ(act.bytes, 5 * hdr + 4 * n + 2 * n + 2 * n + int8_bytes + 8 * (n / 10));
  TrafficStats g = p.b->stats().at(TrafficKey{"a", FrameKind::kGradient});
  EXPECT_EQ(g.frames, 1u);
  EXPECT_EQ(g.bytes, hdr + int8_bytes);
  EXPECT_EQ(g.raw_bytes, hdr + 4 * n);
  EXPECT_EQ(p.b->sent(FrameKind::kLabels).bytes, hdr + 40);
  EXPECT_EQ(p.a->sent(FrameKind::kActivation).frames, 0u);
}

}  // namespace
}  // namespace ravnest::rt
