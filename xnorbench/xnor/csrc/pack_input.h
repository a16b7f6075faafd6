// Input packing: float activations (NCHW or channels_last) to sign bits, 64 channels per
// word, with the spatial padding already in place (bit 0 = +1), and optionally
// BatchNorm folded in as a per-channel threshold. AVX-512, AVX2 and scalar paths.
#pragma once

#include <vector>

#include "layout.h"
#include "tensor_api.h"

namespace {

// BatchNorm folded into packing: sign(BN(x)) of channel c is -1 exactly when x < t_c, or
// x > t_c for a channel whose BN scale is negative (flip_c), t_c = the x at which BN(x)
// crosses 0. Without thresholds (th == nullptr) the bit is x < 0.
struct Threshold {
  const float* th = nullptr;    // [C]
  const uint8_t* flip = nullptr;  // [C]
  inline bool neg(float v, int64_t c) const {
    if (!th) return v < 0.0f;
    return flip[c] ? v > th[c] : v < th[c];
  }
};

// NCHW float -> P[N][Hp][Wp][Cw] with padding already in place (zeros = +1).
void pack_nchw(const float* x, uint64_t* P, int64_t N, int64_t C, int64_t H, int64_t W,
               int64_t ph, int64_t pw, int64_t Cw, const Threshold& T) {
  const int64_t HW = H * W, Wp = W + 2 * pw, Hp = H + 2 * ph;
  const int64_t nblk = ceil_div(HW, 16);
  at::parallel_for(0, N * Cw * nblk, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t t = b0; t < b1; ++t) {
      const int64_t blk = t % nblk, cw = (t / nblk) % Cw, n = t / (nblk * Cw);
      const int64_t p0 = blk * 16, np = std::min<int64_t>(16, HW - p0);
      const int64_t c0 = cw * 64, nc = std::min<int64_t>(64, C - c0);
      uint64_t words[16] = {0};
#if XNOR_AVX512
      alignas(64) uint16_t m16[64] = {0};
      const __mmask16 lm = (__mmask16)((np == 16) ? 0xFFFF : ((1u << np) - 1));
      const __m512 zero = _mm512_setzero_ps();
      for (int64_t c = 0; c < nc; ++c) {
        const float* src = x + (n * C + c0 + c) * HW + p0;
        __m512 v = _mm512_maskz_loadu_ps(lm, src);
        if (!T.th) {
          m16[c] = _mm512_mask_cmp_ps_mask(lm, v, zero, _CMP_LT_OQ);
        } else {
          const __m512 t = _mm512_set1_ps(T.th[c0 + c]);
          m16[c] = T.flip[c0 + c] ? _mm512_mask_cmp_ps_mask(lm, v, t, _CMP_GT_OQ)
                                  : _mm512_mask_cmp_ps_mask(lm, v, t, _CMP_LT_OQ);
        }
      }
      const __m512i z0 = _mm512_load_si512(m16), z1 = _mm512_load_si512(m16 + 32);
      for (int64_t p = 0; p < np; ++p) {
        const __m512i bit = _mm512_set1_epi16((short)(1u << p));
        const uint64_t lo = (uint32_t)_mm512_test_epi16_mask(z0, bit);
        const uint64_t hi = (uint32_t)_mm512_test_epi16_mask(z1, bit);
        words[p] = lo | (hi << 32);
      }
#else
#if XNOR_AVX2
      if (np == 16) {
        // 8-pixel sign masks per channel (VMOVMSKPS), then a bit transpose: shifting
        // 16-bit lanes puts bit p of every byte on top, VPMOVMSKB gathers 32 of them.
        alignas(32) uint8_t lo8[64] = {0}, hi8[64] = {0};
        for (int64_t c = 0; c < nc; ++c) {
          const float* src = x + (n * C + c0 + c) * HW + p0;
          const __m256 t = _mm256_set1_ps(T.th ? T.th[c0 + c] : 0.0f);
          if (T.th && T.flip[c0 + c]) {
            lo8[c] = (uint8_t)_mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_loadu_ps(src), t, _CMP_GT_OQ));
            hi8[c] = (uint8_t)_mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_loadu_ps(src + 8), t, _CMP_GT_OQ));
          } else {
            lo8[c] = (uint8_t)_mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_loadu_ps(src), t, _CMP_LT_OQ));
            hi8[c] = (uint8_t)_mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_loadu_ps(src + 8), t, _CMP_LT_OQ));
          }
        }
        const __m256i l0 = _mm256_load_si256((const __m256i*)lo8);
        const __m256i l1 = _mm256_load_si256((const __m256i*)(lo8 + 32));
        const __m256i h0 = _mm256_load_si256((const __m256i*)hi8);
        const __m256i h1 = _mm256_load_si256((const __m256i*)(hi8 + 32));
        for (int p = 0; p < 8; ++p) {
          const __m128i sh = _mm_cvtsi32_si128(7 - p);
          words[p] = (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_sll_epi16(l0, sh)) |
                     (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_sll_epi16(l1, sh)) << 32;
          words[p + 8] =
              (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_sll_epi16(h0, sh)) |
              (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_sll_epi16(h1, sh)) << 32;
        }
      } else
#endif
      for (int64_t c = 0; c < nc; ++c) {
        const float* src = x + (n * C + c0 + c) * HW + p0;
        for (int64_t p = 0; p < np; ++p)
          words[p] |= (uint64_t)T.neg(src[p], c0 + c) << c;
      }
#endif
      for (int64_t p = 0; p < np; ++p) {
        const int64_t q = p0 + p, h = q / W, w = q % W;
        P[((n * Hp + h + ph) * Wp + w + pw) * Cw + cw] = words[p];
      }
    }
  });
}

// NHWC (channels_last) float -> P, same layout. The thresholds are first turned into one
// comparison per channel: where the BN scale is negative, x > t is -x < -t, so the
// vector paths flip the sign bit of x (XOR) and compare "less than" against a per-channel
// bound, with no per-pixel mask logic.
void pack_nhwc(const float* x, uint64_t* P, int64_t N, int64_t C, int64_t H, int64_t W,
               int64_t ph, int64_t pw, int64_t Cw, const Threshold& T) {
  const int64_t Wp = W + 2 * pw, Hp = H + 2 * ph;
  const int64_t Cp = Cw * 64;
  std::vector<float> bound(Cp, 0.0f);
  std::vector<uint32_t> sign(Cp, 0u);
  for (int64_t c = 0; T.th && c < C; ++c) {
    sign[c] = T.flip[c] ? 0x80000000u : 0u;
    bound[c] = T.flip[c] ? -T.th[c] : T.th[c];
  }
  at::parallel_for(0, N * H, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / H, h = r % H;
      for (int64_t w = 0; w < W; ++w) {
        const float* src = x + ((n * H + h) * W + w) * C;
        uint64_t* dst = P + ((n * Hp + h + ph) * Wp + w + pw) * Cw;
        for (int64_t cw = 0; cw < Cw; ++cw) {
          uint64_t word = 0;
          const int64_t c0 = cw * 64, nc = std::min<int64_t>(64, C - c0);
#if XNOR_AVX512
          for (int64_t j = 0; j * 16 < nc; ++j) {
            const int64_t left = nc - j * 16, c = c0 + j * 16;
            const __mmask16 lm = (__mmask16)(left >= 16 ? 0xFFFF : ((1u << left) - 1));
            const __m512i v = _mm512_xor_si512(
                _mm512_castps_si512(_mm512_maskz_loadu_ps(lm, src + c)),
                _mm512_loadu_si512(sign.data() + c));
            const __mmask16 m = _mm512_mask_cmp_ps_mask(
                lm, _mm512_castsi512_ps(v), _mm512_loadu_ps(bound.data() + c), _CMP_LT_OQ);
            word |= (uint64_t)m << (16 * j);
          }
#else
          int64_t c = 0;
#if XNOR_AVX2
          for (; c + 8 <= nc; c += 8) {
            const __m256i v = _mm256_xor_si256(
                _mm256_castps_si256(_mm256_loadu_ps(src + c0 + c)),
                _mm256_loadu_si256((const __m256i*)(sign.data() + c0 + c)));
            word |= (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(
                        _mm256_castsi256_ps(v), _mm256_loadu_ps(bound.data() + c0 + c),
                        _CMP_LT_OQ)) << c;
          }
#endif
          for (; c < nc; ++c) word |= (uint64_t)T.neg(src[c0 + c], c0 + c) << c;
#endif
          dst[cw] = word;
        }
      }
    }
  });
}

}  // namespace
