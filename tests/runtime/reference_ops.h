// Naive float64 reference implementations of the runtime's ops, shared by
// kernels_test.cc (per-op checks) and executor_test.cc (graph compositions).
//
// Guarantees: straightforward loops in double written from the ONNX definitions,
// independent of the kernels under test (no shared helpers with runtime/cpu).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "common/dtype.h"

namespace ravnest::rt::ref {

using Vec = std::vector<double>;

struct ConvAttrs {
  int64_t sh = 1, sw = 1;
  int64_t pt = 0, pl = 0, pb = 0, pr = 0;
  int64_t dh = 1, dw = 1;
  int64_t group = 1;
};

inline Shape conv_out_shape(const Shape& xs, const Shape& ws, const ConvAttrs& a) {
  const int64_t oh = (xs[2] + a.pt + a.pb - ((ws[2] - 1) * a.dh + 1)) / a.sh + 1;
  const int64_t ow = (xs[3] + a.pl + a.pr - ((ws[3] - 1) * a.dw + 1)) / a.sw + 1;
  return {xs[0], ws[0], oh, ow};
}

// Y[n,m,oh,ow] = B[m] + sum_{c in group(m), i, j} X[n,c,oh*sh-pt+i*dh, ow*sw-pl+j*dw] * W[m,c',i,j]
inline Vec conv(const Vec& x, const Shape& xs, const Vec& w, const Shape& ws, const Vec* b, const ConvAttrs& a) {
  const Shape ys = conv_out_shape(xs, ws, a);
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], M = ws[0], CG = ws[1], KH = ws[2], KW = ws[3];
  const int64_t OH = ys[2], OW = ys[3], MG = M / a.group;
  Vec y(static_cast<size_t>(N * M * OH * OW), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = b ? (*b)[m] : 0.0;
          const int64_t g = m / MG;
          for (int64_t cg = 0; cg < CG; ++cg)
            for (int64_t i = 0; i < KH; ++i)
              for (int64_t j = 0; j < KW; ++j) {
                const int64_t h = oh * a.sh - a.pt + i * a.dh, ww = ow * a.sw - a.pl + j * a.dw;
                if (h < 0 || h >= H || ww < 0 || ww >= W) continue;
                const int64_t c = g * CG + cg;
                acc += x[((n * C + c) * H + h) * W + ww] * w[((m * CG + cg) * KH + i) * KW + j];
              }
          y[((n * M + m) * OH + oh) * OW + ow] = acc;
        }
  return y;
}

struct PoolAttrs {
  int64_t kh = 2, kw = 2, sh = 2, sw = 2, pt = 0, pl = 0, pb = 0, pr = 0;
  bool ceil_mode = false;
};

inline Shape pool_out_shape(const Shape& xs, const PoolAttrs& a) {
  auto out = [&](int64_t in, int64_t k, int64_t s, int64_t p0, int64_t p1) {
    const int64_t room = in + p0 + p1 - k;
    int64_t o = (a.ceil_mode ? (room + s - 1) / s : room / s) + 1;
    if (a.ceil_mode && (o - 1) * s >= in + p0) --o;
    return o;
  };
  return {xs[0], xs[1], out(xs[2], a.kh, a.sh, a.pt, a.pb), out(xs[3], a.kw, a.sw, a.pl, a.pr)};
}

// Max over each window (padding excluded); indices into the flattened input.
inline Vec maxpool(const Vec& x, const Shape& xs, const PoolAttrs& a, Vec* indices = nullptr) {
  const Shape ys = pool_out_shape(xs, a);
  const int64_t H = xs[2], W = xs[3];
  Vec y(static_cast<size_t>(numel(ys)));
  if (indices) indices->assign(y.size(), -1);
  for (int64_t p = 0; p < xs[0] * xs[1]; ++p)
    for (int64_t oh = 0; oh < ys[2]; ++oh)
      for (int64_t ow = 0; ow < ys[3]; ++ow) {
        double best = -std::numeric_limits<double>::infinity();
        int64_t at = -1;
        for (int64_t i = 0; i < a.kh; ++i)
          for (int64_t j = 0; j < a.kw; ++j) {
            const int64_t h = oh * a.sh - a.pt + i, w = ow * a.sw - a.pl + j;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            const int64_t flat = (p * H + h) * W + w;
            if (x[flat] > best) {
              best = x[flat];
              at = flat;
            }
          }
        const int64_t o = (p * ys[2] + oh) * ys[3] + ow;
        y[o] = best;
        if (indices) (*indices)[o] = static_cast<double>(at);
      }
  return y;
}

// Row-major [M,N] = alpha * op(A) op(B) + beta * C (C broadcast from c_shape).
inline Vec gemm(const Vec& A, const Shape& as, const Vec& B, const Shape& bs, const Vec* C, const Shape& cs,
                bool ta, bool tb, double alpha, double beta) {
  const int64_t M = ta ? as[1] : as[0], K = ta ? as[0] : as[1], N = tb ? bs[0] : bs[1];
  Vec y(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += A[ta ? k * M + m : m * K + k] * B[tb ? n * K + k : k * N + n];
      double c = 0;
      if (C) {
        // Right-aligned broadcast of C (rank <= 2).
        const int64_t cr = cs.size() == 2 ? cs[0] : 1, cc = cs.empty() ? 1 : cs.back();
        c = (*C)[(cr == 1 ? 0 : m) * cc + (cc == 1 ? 0 : n)];
      }
      y[m * N + n] = alpha * acc + beta * c;
    }
  return y;
}

// Index of `out_index` (over `out` shape) into a tensor of shape `in` broadcast to `out`.
inline int64_t broadcast_index(const Shape& in, const Shape& out, int64_t out_index) {
  int64_t index = 0, stride = 1;
  for (size_t d = out.size(); d-- > 0;) {
    const int64_t coord = out_index % out[d];
    out_index /= out[d];
    const size_t lead = out.size() - in.size();
    if (d < lead) continue;
    const int64_t dim = in[d - lead];
    index += (dim == 1 ? 0 : coord) * stride;
    stride *= dim;
  }
  return index;
}

inline Vec add(const Vec& a, const Shape& as, const Vec& b, const Shape& bs, const Shape& ys) {
  Vec y(static_cast<size_t>(numel(ys)));
  for (int64_t i = 0; i < numel(ys); ++i) y[i] = a[broadcast_index(as, ys, i)] + b[broadcast_index(bs, ys, i)];
  return y;
}

// numpy matmul for rank >= 2 operands (1-D handled by the caller reshaping).
inline Vec matmul(const Vec& a, const Shape& as, const Vec& b, const Shape& bs, const Shape& ys) {
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  const Shape batch(ys.begin(), ys.end() - 2);
  const Shape ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  Vec y(static_cast<size_t>(numel(ys)));
  for (int64_t t = 0; t < numel(batch); ++t) {
    const int64_t ia = broadcast_index(ab, batch, t), ib = broadcast_index(bb, batch, t);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += a[(ia * M + m) * K + k] * b[(ib * K + k) * N + n];
        y[(t * M + m) * N + n] = acc;
      }
  }
  return y;
}

// Sum over `axes` (all flagged true), output laid out without the reduced dims.
inline Vec reduce_sum(const Vec& x, const Shape& xs, const std::vector<bool>& reduce) {
  Shape kept;
  for (size_t d = 0; d < xs.size(); ++d) kept.push_back(reduce[d] ? 1 : xs[d]);
  Vec y(static_cast<size_t>(numel(kept)), 0.0);
  for (int64_t i = 0; i < numel(xs); ++i) {
    int64_t rem = i, out = 0, stride = 1;
    for (size_t d = xs.size(); d-- > 0;) {
      const int64_t coord = rem % xs[d];
      rem /= xs[d];
      if (!reduce[d]) out += coord * stride;
      stride *= kept[d];
    }
    y[out] += x[i];
  }
  return y;
}

inline Vec transpose(const Vec& x, const Shape& xs, const std::vector<int64_t>& perm) {
  Shape ys(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) ys[i] = xs[perm[i]];
  Vec y(x.size());
  for (int64_t i = 0; i < numel(ys); ++i) {
    int64_t rem = i;
    std::vector<int64_t> coord(ys.size());
    for (size_t d = ys.size(); d-- > 0;) {
      coord[d] = rem % ys[d];
      rem /= ys[d];
    }
    int64_t src = 0;
    std::vector<int64_t> in_coord(xs.size());
    for (size_t d = 0; d < ys.size(); ++d) in_coord[perm[d]] = coord[d];
    for (size_t d = 0; d < xs.size(); ++d) src = src * xs[d] + in_coord[d];
    y[i] = x[src];
  }
  return y;
}

// Softmax cross-entropy on [N,C]; returns per-sample losses (0 when ignored) and log_prob.
struct SceResult {
  Vec per_sample, log_prob;
  int64_t counted = 0;
};

inline SceResult softmax_cross_entropy(const Vec& scores, int64_t N, int64_t C, const std::vector<int64_t>& labels,
                                       bool has_ignore, int64_t ignore_index) {
  SceResult r;
  r.per_sample.assign(N, 0.0);
  r.log_prob.assign(N * C, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += std::exp(scores[n * C + c]);
    for (int64_t c = 0; c < C; ++c) r.log_prob[n * C + c] = scores[n * C + c] - std::log(sum);
    if (has_ignore && labels[n] == ignore_index) continue;
    r.per_sample[n] = -r.log_prob[n * C + labels[n]];
    ++r.counted;
  }
  return r;
}

// Central finite differences of a scalar function at x (exact up to O(eps^2)).
inline Vec numeric_gradient(const std::function<double(const Vec&)>& f, Vec x, double eps) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + eps;
    const double up = f(x);
    x[i] = keep - eps;
    const double down = f(x);
    x[i] = keep;
    g[i] = (up - down) / (2 * eps);
  }
  return g;
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace ravnest::rt::ref
