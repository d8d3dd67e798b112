// Plain-loop reference implementations of every op's forward and backward, templated on the scalar
// (double for the truth, float to see what plain f32 loops give). No tiling, no online softmax, no
// threads: each formula is written as in SPEC-llama.md §3, so the tests can check these against
// central finite differences in double and then the production kernels against these. Row-major
// std::vector storage; shapes in the glossary's letters. Header-only, used by tests only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace adapt::ops::ref {

using std::size_t;

// ---- linear: y (N, out) = x (N, in) · Wᵀ, W (out, in) ------------------------------------------------

template <typename T>
void linear_forward(std::vector<T>& y, const std::vector<T>& x, const std::vector<T>& w, size_t N, size_t in,
                    size_t out) {
  y.assign(N * out, T(0));
  for (size_t n = 0; n < N; ++n)
    for (size_t o = 0; o < out; ++o) {
      T acc = 0;
      for (size_t i = 0; i < in; ++i) acc += x[n * in + i] * w[o * in + i];
      y[n * out + o] = acc;
    }
}

/// dx (N, in) += dy · W; dw (out, in) += dyᵀ · x when dw is not null.
template <typename T>
void linear_backward(std::vector<T>& dx, std::vector<T>* dw, const std::vector<T>& dy, const std::vector<T>& x,
                     const std::vector<T>& w, size_t N, size_t in, size_t out) {
  dx.resize(N * in, T(0));
  for (size_t n = 0; n < N; ++n)
    for (size_t o = 0; o < out; ++o) {
      const T g = dy[n * out + o];
      for (size_t i = 0; i < in; ++i) {
        dx[n * in + i] += g * w[o * in + i];
        if (dw) (*dw)[o * in + i] += g * x[n * in + i];
      }
    }
}

// ---- RMSNorm: y = x · rstd · w, rstd = (mean(x²) + eps)^-1/2 per row --------------------------------

template <typename T>
void rms_norm_forward(std::vector<T>& y, std::vector<T>* rstd, const std::vector<T>& x, const std::vector<T>& w,
                      size_t N, size_t C, T eps) {
  y.resize(N * C);
  if (rstd) rstd->resize(N);
  for (size_t n = 0; n < N; ++n) {
    T ss = 0;
    for (size_t c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    const T r = T(1) / std::sqrt(ss / T(C) + eps);
    if (rstd) (*rstd)[n] = r;
    for (size_t c = 0; c < C; ++c) y[n * C + c] = x[n * C + c] * r * w[c];
  }
}

/// dx (N, C) += the input gradient; dw (C) += Σ_rows dy · x · rstd when not null. rstd is recomputed.
template <typename T>
void rms_norm_backward(std::vector<T>& dx, std::vector<T>* dw, const std::vector<T>& dy, const std::vector<T>& x,
                       const std::vector<T>& w, size_t N, size_t C, T eps) {
  dx.resize(N * C, T(0));
  for (size_t n = 0; n < N; ++n) {
    T ss = 0, dot = 0;
    for (size_t c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    const T r = T(1) / std::sqrt(ss / T(C) + eps);
    for (size_t c = 0; c < C; ++c) dot += dy[n * C + c] * w[c] * x[n * C + c];
    for (size_t c = 0; c < C; ++c) {
      dx[n * C + c] += r * dy[n * C + c] * w[c] - x[n * C + c] * r * r * r * dot / T(C);
      if (dw) (*dw)[c] += dy[n * C + c] * x[n * C + c] * r;
    }
  }
}

// ---- RoPE (rotate_half pairs j, j + D/2): x (N, Hx, D) with one table row per token (N, D/2) ----------

template <typename T>
void rope_forward(std::vector<T>& x, const std::vector<T>& cos, const std::vector<T>& sin, size_t N, size_t Hx,
                  size_t D) {
  const size_t half = D / 2;
  for (size_t n = 0; n < N; ++n)
    for (size_t h = 0; h < Hx; ++h)
      for (size_t j = 0; j < half; ++j) {
        T& a = x[(n * Hx + h) * D + j];
        T& b = x[(n * Hx + h) * D + j + half];
        const T c = cos[n * half + j], s = sin[n * half + j], a0 = a, b0 = b;
        a = a0 * c - b0 * s;
        b = b0 * c + a0 * s;
      }
}

/// In place: the gradient of the rotation's input from the gradient of its output (rotation by −θ).
template <typename T>
void rope_backward(std::vector<T>& dx, const std::vector<T>& cos, const std::vector<T>& sin, size_t N, size_t Hx,
                   size_t D) {
  const size_t half = D / 2;
  for (size_t n = 0; n < N; ++n)
    for (size_t h = 0; h < Hx; ++h)
      for (size_t j = 0; j < half; ++j) {
        T& a = dx[(n * Hx + h) * D + j];
        T& b = dx[(n * Hx + h) * D + j + half];
        const T c = cos[n * half + j], s = sin[n * half + j], g0 = a, g1 = b;
        a = g0 * c + g1 * s;
        b = g1 * c - g0 * s;
      }
}

// ---- SwiGLU: out = silu(gate) ⊙ up ------------------------------------------------------------------

template <typename T>
T sigmoid(T z) {
  return T(1) / (T(1) + std::exp(-z));
}

template <typename T>
void swiglu_forward(std::vector<T>& out, const std::vector<T>& gate, const std::vector<T>& up) {
  out.resize(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

/// dgate, dup += the gradients.
template <typename T>
void swiglu_backward(std::vector<T>& dgate, std::vector<T>& dup, const std::vector<T>& dout, const std::vector<T>& gate,
                     const std::vector<T>& up) {
  dgate.resize(gate.size(), T(0));
  dup.resize(gate.size(), T(0));
  for (size_t i = 0; i < gate.size(); ++i) {
    const T s = sigmoid(gate[i]);
    dgate[i] += dout[i] * up[i] * s * (T(1) + gate[i] * (T(1) - s));
    dup[i] += dout[i] * gate[i] * s;
  }
}

// ---- embedding -----------------------------------------------------------------------------------------

template <typename T>
void embedding_forward(std::vector<T>& out, const std::vector<T>& table, const std::vector<std::int64_t>& ids,
                       size_t C) {
  out.resize(ids.size() * C);
  for (size_t i = 0; i < ids.size(); ++i)
    for (size_t c = 0; c < C; ++c) out[i * C + c] = table[static_cast<size_t>(ids[i]) * C + c];
}

template <typename T>
void embedding_backward(std::vector<T>& dtable, const std::vector<T>& dout, const std::vector<std::int64_t>& ids,
                        size_t C) {
  for (size_t i = 0; i < ids.size(); ++i)
    for (size_t c = 0; c < C; ++c) dtable[static_cast<size_t>(ids[i]) * C + c] += dout[i * C + c];
}

// ---- cross-entropy over V, ignore_index rows skipped -----------------------------------------------------

template <typename T>
struct CrossEntropyRef {
  T loss_sum = 0;
  std::int64_t n_valid = 0;
};

/// Loss sum and count over targets != ignore; dlogits (N, V) = (softmax − onehot) · grad_scale on valid
/// rows, 0 on ignored rows (when dlogits is not null).
template <typename T>
CrossEntropyRef<T> cross_entropy(std::vector<T>* dlogits, const std::vector<T>& logits,
                                 const std::vector<std::int64_t>& targets, size_t V, T grad_scale,
                                 std::int64_t ignore_index = -100) {
  CrossEntropyRef<T> r;
  if (dlogits) dlogits->assign(logits.size(), T(0));
  for (size_t n = 0; n < targets.size(); ++n) {
    if (targets[n] == ignore_index) continue;
    const T* z = logits.data() + n * V;
    T m = z[0], sum = 0;
    for (size_t j = 1; j < V; ++j) m = std::max(m, z[j]);
    for (size_t j = 0; j < V; ++j) sum += std::exp(z[j] - m);
    const auto y = static_cast<size_t>(targets[n]);
    r.loss_sum += std::log(sum) + m - z[y];
    ++r.n_valid;
    if (dlogits) {
      for (size_t j = 0; j < V; ++j) (*dlogits)[n * V + j] = std::exp(z[j] - m) / sum * grad_scale;
      (*dlogits)[n * V + y] -= grad_scale;
    }
  }
  return r;
}

// ---- attention: causal GQA, optional segments ----------------------------------------------------------

struct AttentionShape {
  size_t B = 0, T = 0, H = 0, Hkv = 0, D = 0, S = 0;  // q (B, T, H, D); k, v (B, Hkv, S, D)
  size_t offset = 0;                                  // query t sits at position offset + t among the keys
  const std::int32_t* segment_ids = nullptr;          // (B, T) or null; then S == T, offset 0
  double scale = 0;                                   // 0: 1/sqrt(D)

  /// Key j visible to query t of sequence b: causal, and within the same non-negative segment.
  bool visible(size_t b, size_t t, size_t j) const {
    if (j > offset + t) return false;
    if (!segment_ids) return true;
    const std::int32_t st = segment_ids[b * T + t];
    return st >= 0 && st == segment_ids[b * T + j];
  }
  double resolved_scale() const { return scale != 0 ? scale : 1.0 / std::sqrt(static_cast<double>(D)); }
};

/// The probabilities P (n_keys = S) of query row (b, h, t); all zero when it sees no key. Returns the
/// log-sum-exp (−inf then).
template <typename T>
T attention_probs(std::vector<T>& p, const std::vector<T>& q, const std::vector<T>& k, const AttentionShape& s,
                  size_t b, size_t h, size_t t) {
  const size_t g = h / (s.H / s.Hkv);
  const T scale = static_cast<T>(s.resolved_scale());
  p.assign(s.S, T(0));
  T m = -std::numeric_limits<T>::infinity();
  for (size_t j = 0; j < s.S; ++j) {
    if (!s.visible(b, t, j)) continue;
    T dot = 0;
    for (size_t d = 0; d < s.D; ++d)
      dot += q[((b * s.T + t) * s.H + h) * s.D + d] * k[((b * s.Hkv + g) * s.S + j) * s.D + d];
    p[j] = dot * scale;
    m = std::max(m, p[j]);
  }
  if (m == -std::numeric_limits<T>::infinity()) return m;
  T sum = 0;
  for (size_t j = 0; j < s.S; ++j) sum += s.visible(b, t, j) ? std::exp(p[j] - m) : T(0);
  for (size_t j = 0; j < s.S; ++j) p[j] = s.visible(b, t, j) ? std::exp(p[j] - m) / sum : T(0);
  return m + std::log(sum);
}

/// out (B, T, H, D) = P · V per head (0 for a row that sees no key); lse (B, H, T) when not null.
template <typename T>
void attention_forward(std::vector<T>& out, std::vector<T>* lse, const std::vector<T>& q, const std::vector<T>& k,
                       const std::vector<T>& v, const AttentionShape& s) {
  out.assign(s.B * s.T * s.H * s.D, T(0));
  if (lse) lse->assign(s.B * s.H * s.T, T(0));
  std::vector<T> p;
  for (size_t b = 0; b < s.B; ++b)
    for (size_t h = 0; h < s.H; ++h)
      for (size_t t = 0; t < s.T; ++t) {
        const size_t g = h / (s.H / s.Hkv);
        const T l = attention_probs(p, q, k, s, b, h, t);
        if (lse) (*lse)[(b * s.H + h) * s.T + t] = l;
        for (size_t j = 0; j < s.S; ++j)
          for (size_t d = 0; d < s.D; ++d)
            out[((b * s.T + t) * s.H + h) * s.D + d] += p[j] * v[((b * s.Hkv + g) * s.S + j) * s.D + d];
      }
}

/// dq, dk, dv += the gradients, textbook form (SPEC §3.8) with the full P of every row: dV = Pᵀ dO,
/// dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = scale · dS K, dK = scale · dSᵀ Q; GQA sums a KV
/// head's gradients over its query heads.
template <typename T>
void attention_backward(std::vector<T>& dq, std::vector<T>& dk, std::vector<T>& dv, const std::vector<T>& dout,
                        const std::vector<T>& q, const std::vector<T>& k, const std::vector<T>& v,
                        const AttentionShape& s) {
  dq.resize(q.size(), T(0));
  dk.resize(k.size(), T(0));
  dv.resize(v.size(), T(0));
  const T scale = static_cast<T>(s.resolved_scale());
  std::vector<T> p, dp(s.S);
  for (size_t b = 0; b < s.B; ++b)
    for (size_t h = 0; h < s.H; ++h)
      for (size_t t = 0; t < s.T; ++t) {
        const size_t g = h / (s.H / s.Hkv);
        attention_probs(p, q, k, s, b, h, t);
        const T* dO = dout.data() + ((b * s.T + t) * s.H + h) * s.D;
        T rowsum = 0;
        for (size_t j = 0; j < s.S; ++j) {
          const T* vj = v.data() + ((b * s.Hkv + g) * s.S + j) * s.D;
          T acc = 0;
          for (size_t d = 0; d < s.D; ++d) {
            acc += dO[d] * vj[d];
            dv[((b * s.Hkv + g) * s.S + j) * s.D + d] += p[j] * dO[d];
          }
          dp[j] = acc;
          rowsum += p[j] * acc;
        }
        for (size_t j = 0; j < s.S; ++j) {
          const T ds = p[j] * (dp[j] - rowsum) * scale;
          if (ds == T(0)) continue;
          for (size_t d = 0; d < s.D; ++d) {
            dq[((b * s.T + t) * s.H + h) * s.D + d] += ds * k[((b * s.Hkv + g) * s.S + j) * s.D + d];
            dk[((b * s.Hkv + g) * s.S + j) * s.D + d] += ds * q[((b * s.T + t) * s.H + h) * s.D + d];
          }
        }
      }
}

}  // namespace adapt::ops::ref
