// Training-side operators of the fused XNOR path (CPU, float32), registered with the
// dispatcher (bindings.cpp) under this extension's name (torch.ops.<TORCH_EXTENSION_NAME>.*),
// so the profiler counts each as the one operator it is.
//
// Why they exist: an XNOR training step in plain torch ops runs a dozen elementwise
// passes per layer (sign, |x| < 1, casts, masks, alpha, the gradient rule) and keeps
// float copies of what backward needs. These do each job in one pass and keep bits:
//
//   sign_bits(x)              -> (sign(x) as float +-1, neg bits, ste bits), ceil(n/8)
//                                bytes each: bit i = x_i < 0, resp. |x_i| < 1
//   sign_bits_(x)             -> the same with the signs written over x
//   signs_from_bits(b, n, k, c) -> float +-1 of plane b (the conv's input, rebuilt);
//                                with dropout's keep bits k: 0 where dropped, +-c kept
//   grad_through_bits(g, b, k, c) -> g_i where bit i is set, else 0 (BinActive's
//                                backward); with keep bits: (g_i * c) where also kept
//   nonzero_bits(t)           -> bits of t != 0 (which elements dropout kept)
//   scaled_sign_grad_, grad_through_bits_: the same, in place on the gradient (a
//                                backward owns its fresh gradients; no new allocation)
//   binarize_weight(w)        -> alpha * sign(w), alpha = mean |w| per filter (dim 0)
//   scaled_sign_grad(w, g, r) -> dC/dW from dC/dWt by rule r (0 corrected, 1 paper,
//                                2 reference), the formulas of binarize.py
//   center_clamp_(ws)         -> every w: w -= mean over dim 1, then clamp to [-1, 1]
//   border_add_, border_grad_add_: the +1 padding term of a zero-padded conv, in place
//
// Bit order: element i of the tensor's memory order is bit (i % 8) of byte i / 8, the
// same order as xnorbench/xnor/bitops.py's torch fallback. sign(0) = +1 as everywhere.

#include "tensor_api.h"

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define TRAIN_AVX512 1
#else
#define TRAIN_AVX512 0
#endif

namespace xnor_train {

constexpr int64_t GRAIN = 1 << 14;  // bytes of bits per parallel chunk

void check_f32(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat,
              what, ": expected a float32 CPU tensor");
}

// Every op reads and writes memory order; a caller hands dense tensors only.
const float* dense_f32(const at::Tensor& t, const char* what) {
  check_f32(t, what);
  TORCH_CHECK(t.is_non_overlapping_and_dense(), what, ": expected a dense tensor");
  return t.data_ptr<float>();
}

// Signs into `s` (which may be x itself), bits into two new planes.
std::tuple<at::Tensor, at::Tensor> sign_bits_into(const at::Tensor& x,
                                                        at::Tensor& s) {
  const float* px = dense_f32(x, "sign_bits");
  const int64_t n = x.numel(), nb = (n + 7) / 8;
  auto neg_bits = at::empty({nb}, x.options().dtype(at::kByte));
  auto ste_bits = at::empty({nb}, x.options().dtype(at::kByte));
  float* ps = s.data_ptr<float>();
  uint8_t* neg = neg_bits.data_ptr<uint8_t>();
  uint8_t* ste = ste_bits.data_ptr<uint8_t>();
  at::parallel_for(0, nb, GRAIN, [&](int64_t b0, int64_t b1) {
    int64_t b = b0;
#if TRAIN_AVX512
    const __m512 one = _mm512_set1_ps(1.0f), mone = _mm512_set1_ps(-1.0f);
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (; b + 2 <= b1 && (b + 2) * 8 <= n; b += 2) {
      const __m512 v = _mm512_loadu_ps(px + b * 8);
      const __mmask16 lt0 = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
      const __mmask16 small = _mm512_cmp_ps_mask(_mm512_and_ps(v, absmask), one, _CMP_LT_OQ);
      _mm512_storeu_ps(ps + b * 8, _mm512_mask_blend_ps(lt0, one, mone));
      neg[b] = static_cast<uint8_t>(lt0);
      neg[b + 1] = static_cast<uint8_t>(lt0 >> 8);
      ste[b] = static_cast<uint8_t>(small);
      ste[b + 1] = static_cast<uint8_t>(small >> 8);
    }
#endif
    for (; b < b1; ++b) {
      uint8_t bn = 0, bs = 0;
      const int64_t e = std::min<int64_t>(8, n - b * 8);
      for (int64_t j = 0; j < e; ++j) {
        const float v = px[b * 8 + j];
        ps[b * 8 + j] = v < 0.0f ? -1.0f : 1.0f;
        bn |= static_cast<uint8_t>(v < 0.0f) << j;
        bs |= static_cast<uint8_t>(std::fabs(v) < 1.0f) << j;
      }
      neg[b] = bn;
      ste[b] = bs;
    }
  });
  return {neg_bits, ste_bits};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sign_bits(const at::Tensor& x) {
  auto s = at::empty_like(x);
  auto [neg, ste] = sign_bits_into(x, s);
  return {s, neg, ste};
}

// x becomes sign(x): for a caller that owns x (a BatchNorm output nothing else reads).
std::tuple<at::Tensor, at::Tensor> sign_bits_(at::Tensor x) {
  return sign_bits_into(x, x);
}

const uint8_t* plane(const at::Tensor& bits, int64_t n, const char* what) {
  TORCH_CHECK(bits.scalar_type() == at::kByte && bits.is_contiguous() &&
              bits.numel() == (n + 7) / 8, what, ": expected ", (n + 7) / 8, " bytes of bits");
  return bits.data_ptr<uint8_t>();
}

// Dropout after BinActive: `keep` (bit i = element i survived) and its scale 1/(1-p)
// turn +-1 into {0, +-scale}; without dropout keep is absent and scale 1.
inline bool kept(const uint8_t* pk, int64_t i) { return !pk || ((pk[i >> 3] >> (i & 7)) & 1); }

at::Tensor signs_from_bits(const at::Tensor& bits, int64_t n,
                              const std::optional<at::Tensor>& keep, double scale) {
  const uint8_t* pb = plane(bits, n, "signs_from_bits");
  const uint8_t* pk = keep ? plane(*keep, n, "signs_from_bits") : nullptr;
  const float sc = static_cast<float>(scale);
  auto s = at::empty({n}, bits.options().dtype(at::kFloat));
  float* ps = s.data_ptr<float>();
  at::parallel_for(0, (n + 7) / 8, GRAIN, [&](int64_t b0, int64_t b1) {
    int64_t b = b0;
#if TRAIN_AVX512
    const __m512 one = _mm512_set1_ps(sc), mone = _mm512_set1_ps(-sc);
    for (; !pk && b + 2 <= b1 && (b + 2) * 8 <= n; b += 2) {
      const __mmask16 m = static_cast<__mmask16>(pb[b] | (pb[b + 1] << 8));
      _mm512_storeu_ps(ps + b * 8, _mm512_mask_blend_ps(m, one, mone));
    }
#endif
    for (; b < b1; ++b) {
      const int64_t e = std::min<int64_t>(8, n - b * 8);
      for (int64_t j = 0; j < e; ++j)
        ps[b * 8 + j] = kept(pk, b * 8 + j) ? ((pb[b] >> j) & 1 ? -sc : sc) : 0.0f;
    }
  });
  return s;
}

// g masked into out (which may be g itself).
void grad_through_bits_into(const at::Tensor& g, const at::Tensor& bits,
                            const std::optional<at::Tensor>& keep, double scale,
                            at::Tensor& out) {
  const float* pg = dense_f32(g, "grad_through_bits");
  const int64_t n = g.numel();
  const uint8_t* pb = plane(bits, n, "grad_through_bits");
  const uint8_t* pk = keep ? plane(*keep, n, "grad_through_bits") : nullptr;
  const float sc = static_cast<float>(scale);
  float* po = out.data_ptr<float>();
  at::parallel_for(0, (n + 7) / 8, GRAIN, [&](int64_t b0, int64_t b1) {
    int64_t b = b0;
#if TRAIN_AVX512
    for (; !pk && b + 2 <= b1 && (b + 2) * 8 <= n; b += 2) {
      const __mmask16 m = static_cast<__mmask16>(pb[b] | (pb[b + 1] << 8));
      _mm512_storeu_ps(po + b * 8, _mm512_maskz_loadu_ps(m, pg + b * 8));
    }
#endif
    for (; b < b1; ++b) {
      const int64_t e = std::min<int64_t>(8, n - b * 8);
      for (int64_t j = 0; j < e; ++j) {
        const int64_t i = b * 8 + j;
        po[i] = (pb[b] >> j) & 1 && kept(pk, i) ? (pk ? pg[i] * sc : pg[i]) : 0.0f;
      }
    }
  });
}

at::Tensor grad_through_bits(const at::Tensor& g, const at::Tensor& bits,
                                const std::optional<at::Tensor>& keep, double scale) {
  auto out = at::empty_like(g);
  grad_through_bits_into(g, bits, keep, scale, out);
  return out;
}

void grad_through_bits_(at::Tensor g, const at::Tensor& bits,
                        const std::optional<at::Tensor>& keep, double scale) {
  grad_through_bits_into(g, bits, keep, scale, g);
}

// Bits of t != 0 (which elements dropout kept).
at::Tensor nonzero_bits(const at::Tensor& t) {
  const float* pt = dense_f32(t, "nonzero_bits");
  const int64_t n = t.numel(), nb = (n + 7) / 8;
  auto bits = at::empty({nb}, t.options().dtype(at::kByte));
  uint8_t* pb = bits.data_ptr<uint8_t>();
  at::parallel_for(0, nb, GRAIN, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      uint8_t v = 0;
      const int64_t e = std::min<int64_t>(8, n - b * 8);
      for (int64_t j = 0; j < e; ++j) v |= static_cast<uint8_t>(pt[b * 8 + j] != 0.0f) << j;
      pb[b] = v;
    }
  });
  return bits;
}

// Per filter f (dim 0, `per` elements each): alpha_f = mean |w|.
at::Tensor binarize_weight(const at::Tensor& w) {
  TORCH_CHECK(w.dim() >= 2, "binarize_weight: expected a weight of 2 or more dims");
  auto wc = w.contiguous();
  const float* pw = dense_f32(wc, "binarize_weight");
  const int64_t nf = wc.size(0), per = wc.numel() / nf;
  auto out = at::empty_like(wc);
  float* po = out.data_ptr<float>();
  at::parallel_for(0, nf, 1, [&](int64_t f0, int64_t f1) {
    for (int64_t f = f0; f < f1; ++f) {
      const float* a = pw + f * per;
      double acc = 0.0;
#pragma omp simd reduction(+ : acc)
      for (int64_t i = 0; i < per; ++i) acc += std::fabs(a[i]);
      const float alpha = static_cast<float>(acc / per);
      float* o = po + f * per;
#pragma omp simd
      for (int64_t i = 0; i < per; ++i) o[i] = a[i] < 0.0f ? -alpha : alpha;
    }
  });
  return out;
}

// The weight-gradient rules, by code. Python's xnor.binarize.GradRule mirrors this enum
// (name -> code); tests/test_gradient.py checks the two against each other through
// grad_rule_code, so neither side can reorder or renumber alone.
enum class GradRule : int64_t { corrected = 0, paper = 1, reference = 2 };
constexpr const char* kGradRuleNames[] = {"corrected", "paper", "reference"};

int64_t grad_rule_code(c10::string_view name) {
  for (int64_t code = 0; code < 3; ++code)
    if (name == kGradRuleNames[code]) return code;
  TORCH_CHECK(false, "unknown gradient rule '", std::string(name), "'");
}

// dC/dW_i = (1/n) s_i sum_j g_j s_j + g_i alpha 1[|W_i| <= 1]            (corrected)
//         = g_i (1/n + alpha 1[|W_i| <= 1])                                  (paper)
//         = corrected * (1 - 1/C_in) * n                                     (reference)
// Writes into `out` (which may be `g` itself: each filter is read whole before written).
void scaled_sign_grad_into(const at::Tensor& w, const at::Tensor& g, int64_t rule,
                           at::Tensor& out) {
  TORCH_CHECK(rule >= 0 && rule <= 2, "scaled_sign_grad: rule must be a GradRule code");
  const auto which = static_cast<GradRule>(rule);
  TORCH_CHECK(w.sizes() == g.sizes(), "scaled_sign_grad: weight and grad differ in shape");
  TORCH_CHECK(w.is_contiguous() && g.is_contiguous() && out.is_contiguous(),
              "scaled_sign_grad: expected contiguous tensors");
  const float* pw = dense_f32(w, "scaled_sign_grad");
  const float* pg = dense_f32(g, "scaled_sign_grad");
  const int64_t nf = w.size(0), per = w.numel() / nf;
  const double ref_scale = which == GradRule::reference ? (1.0 - 1.0 / w.size(1)) * per : 1.0;
  float* po = out.data_ptr<float>();
  at::parallel_for(0, nf, 1, [&](int64_t f0, int64_t f1) {
    for (int64_t f = f0; f < f1; ++f) {
      const float* a = pw + f * per;
      const float* d = pg + f * per;
      float* o = po + f * per;
      double abs_sum = 0.0, gs = 0.0;
#pragma omp simd reduction(+ : abs_sum, gs)
      for (int64_t i = 0; i < per; ++i) {
        abs_sum += std::fabs(a[i]);
        gs += (a[i] < 0.0f ? -1.0f : 1.0f) * d[i];  // a select of d[i] would not vectorize
      }
      const float alpha = static_cast<float>(abs_sum / per);
      if (which == GradRule::paper) {
        const float inv = 1.0f / static_cast<float>(per);
#pragma omp simd
        for (int64_t i = 0; i < per; ++i)
          o[i] = d[i] * (inv + (std::fabs(a[i]) <= 1.0f ? alpha : 0.0f));
        continue;
      }
      const float mean_gs = static_cast<float>(gs / per), scale = static_cast<float>(ref_scale);
#pragma omp simd
      for (int64_t i = 0; i < per; ++i) {
        const float sgn = a[i] < 0.0f ? -mean_gs : mean_gs;
        const float ste = std::fabs(a[i]) <= 1.0f ? alpha : 0.0f;
        o[i] = (sgn + d[i] * ste) * scale;
      }
    }
  });
}

at::Tensor scaled_sign_grad(const at::Tensor& w, const at::Tensor& g, int64_t rule) {
  auto wc = w.contiguous(), gc = g.contiguous();
  auto out = at::empty_like(wc);
  scaled_sign_grad_into(wc, gc, rule, out);
  return out;
}

// In place: g becomes dC/dW (saves a weight-sized allocation per layer and step).
void scaled_sign_grad_(at::Tensor g, const at::Tensor& w, int64_t rule) {
  scaled_sign_grad_into(w.contiguous(), g, rule, g);
}

// +1 padding as a border term on a zero-padded conv (see functional.py). An output
// position is "border" when one of its taps falls on padding; only those positions get
// a term, so both ops touch O x (border positions) x taps values, not the whole tensor.
struct Border {
  std::vector<int64_t> pos;          // border output positions i * OW + j
  std::vector<uint8_t> pad_tap;      // [pos][kh * KW + kw]: 1 if that tap is on padding
  int64_t taps;
};

Border border_positions(int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw, int64_t OH, int64_t OW) {
  Border b;
  b.taps = KH * KW;
  for (int64_t i = 0; i < OH; ++i)
    for (int64_t j = 0; j < OW; ++j) {
      std::vector<uint8_t> t(b.taps, 0);
      bool any = false;
      for (int64_t kh = 0; kh < KH; ++kh)
        for (int64_t kw = 0; kw < KW; ++kw) {
          const int64_t y = i * sh - ph + kh, x = j * sw - pw + kw;
          if (y < 0 || y >= H || x < 0 || x >= W) t[kh * KW + kw] = any = true;
        }
      if (!any) continue;
      b.pos.push_back(i * OW + j);
      b.pad_tap.insert(b.pad_tap.end(), t.begin(), t.end());
    }
  return b;
}

// out[n, o, i, j] += sum over the padding taps of (i, j) of sum_c wb[o, c, kh, kw]
void border_add_(at::Tensor out, const at::Tensor& wb, int64_t H, int64_t W,
                 int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  check_f32(out, "border_add_");
  auto w = wb.contiguous();
  const float* pw_ = dense_f32(w, "border_add_");
  const int64_t N = out.size(0), O = out.size(1), OH = out.size(2), OW = out.size(3);
  const int64_t C = w.size(1), KH = w.size(2), KW = w.size(3), T = KH * KW;
  TORCH_CHECK(w.size(0) == O, "border_add_: weight and output disagree on channels");
  const Border b = border_positions(H, W, KH, KW, sh, sw, ph, pw, OH, OW);
  const int64_t P = static_cast<int64_t>(b.pos.size());
  std::vector<float> term(O * P);  // term[o][p]: what +1 padding adds at border position p
  for (int64_t o = 0; o < O; ++o) {
    std::vector<double> wsum(T, 0.0);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < T; ++t) wsum[t] += pw_[(o * C + c) * T + t];
    for (int64_t p = 0; p < P; ++p) {
      double v = 0.0;
      for (int64_t t = 0; t < T; ++t) v += b.pad_tap[p * T + t] ? wsum[t] : 0.0;
      term[o * P + p] = static_cast<float>(v);
    }
  }
  std::vector<int64_t> offset(P);  // position p's offset inside one (n, o) plane
  for (int64_t p = 0; p < P; ++p)
    offset[p] = (b.pos[p] / OW) * out.stride(2) + (b.pos[p] % OW) * out.stride(3);
  float* po = out.data_ptr<float>();
  const int64_t s0 = out.stride(0), s1 = out.stride(1);
  at::parallel_for(0, N * O, 16, [&](int64_t q0, int64_t q1) {  // one plane at a time
    for (int64_t q = q0; q < q1; ++q) {
      float* plane = po + (q / O) * s0 + (q % O) * s1;
      const float* tp = term.data() + (q % O) * P;
      for (int64_t p = 0; p < P; ++p) plane[offset[p]] += tp[p];
    }
  });
}

// gwb[o, c, kh, kw] += sum_n sum over border (i, j) whose tap (kh, kw) is on padding
//                      of grad[n, o, i, j]   (the same for every input channel c)
void border_grad_add_(at::Tensor gwb, const at::Tensor& grad, int64_t H, int64_t W,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  check_f32(gwb, "border_grad_add_");
  check_f32(grad, "border_grad_add_");
  TORCH_CHECK(gwb.is_contiguous(), "border_grad_add_: expected a contiguous weight grad");
  const int64_t N = grad.size(0), O = grad.size(1), OH = grad.size(2), OW = grad.size(3);
  const int64_t C = gwb.size(1), KH = gwb.size(2), KW = gwb.size(3), T = KH * KW;
  const Border b = border_positions(H, W, KH, KW, sh, sw, ph, pw, OH, OW);
  const int64_t P = static_cast<int64_t>(b.pos.size());
  std::vector<int64_t> offset(P);
  for (int64_t p = 0; p < P; ++p)
    offset[p] = (b.pos[p] / OW) * grad.stride(2) + (b.pos[p] % OW) * grad.stride(3);
  const float* pg = grad.data_ptr<float>();
  float* pw_ = gwb.data_ptr<float>();
  const int64_t s0 = grad.stride(0), s1 = grad.stride(1);
  at::parallel_for(0, O, 1, [&](int64_t o0, int64_t o1) {
    std::vector<double> gp(P), gsum(T);
    for (int64_t o = o0; o < o1; ++o) {
      std::fill(gp.begin(), gp.end(), 0.0);
      for (int64_t n = 0; n < N; ++n) {  // plane by plane: sum over the batch per position
        const float* plane = pg + n * s0 + o * s1;
        for (int64_t p = 0; p < P; ++p) gp[p] += plane[offset[p]];
      }
      std::fill(gsum.begin(), gsum.end(), 0.0);
      for (int64_t p = 0; p < P; ++p)
        for (int64_t t = 0; t < T; ++t) gsum[t] += b.pad_tap[p * T + t] ? gp[p] : 0.0;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < T; ++t) pw_[(o * C + c) * T + t] += static_cast<float>(gsum[t]);
    }
  });
}

// The port's per-step preparation of the latent weights, for every layer in one call.
void center_clamp_(at::TensorList ws) {
  for (const auto& w : ws) {
    TORCH_CHECK(w.is_contiguous() && w.dim() >= 2, "center_clamp_: expected contiguous "
                "weights of 2 or more dims");
    check_f32(w, "center_clamp_");
    float* p = w.data_ptr<float>();
    const int64_t o = w.size(0), c = w.size(1), inner = w.numel() / (o * c);
    at::parallel_for(0, o, 1, [&](int64_t f0, int64_t f1) {
      std::vector<double> mean(inner);
      std::vector<float> meanf(inner);
      for (int64_t f = f0; f < f1; ++f) {
        float* base = p + f * c * inner;
        std::fill(mean.begin(), mean.end(), 0.0);
        for (int64_t ci = 0; ci < c; ++ci)
          for (int64_t k = 0; k < inner; ++k) mean[k] += base[ci * inner + k];
        for (int64_t k = 0; k < inner; ++k) meanf[k] = static_cast<float>(mean[k] / c);
        for (int64_t ci = 0; ci < c; ++ci) {
          float* row = base + ci * inner;
#pragma omp simd
          for (int64_t k = 0; k < inner; ++k)
            row[k] = std::min(1.0f, std::max(-1.0f, row[k] - meanf[k]));
        }
      }
    });
  }
}

}  // namespace xnor_train
