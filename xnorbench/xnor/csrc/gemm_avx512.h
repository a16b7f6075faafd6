// The AVX-512 VPOPCNTDQ micro-kernel: MR rows of A x NV registers of 8 filters, XOR then
// VPOPCNTQ, counts accumulated in registers (no horizontal reductions).
#pragma once

#include "gemm_common.h"

namespace {

#if XNOR_AVX512
template <int NV>
inline void micro_avx512(const ARows& R, const uint64_t* B, int64_t ob0, int64_t m0,
                         const Epilogue& e) {
  const int64_t M = R.M, K = R.nseg * R.seg_len;
  __m512i acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  const uint64_t* arow[MR];
  R.rows<MR>(m0, arow);
  const int64_t stride = R.seg_stride();
  for (int64_t sg = 0; sg < R.nseg; ++sg) {
    if (sg > 0)
      for (int r = 0; r < MR; ++r) arow[r] += stride;
    const uint64_t* bcol[NV];
    for (int v = 0; v < NV; ++v) bcol[v] = B + ((ob0 + v) * K + sg * R.seg_len) * 8;
    for (int64_t k = 0; k < R.seg_len; ++k) {
      __m512i b[NV];
      for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_si512(bcol[v] + k * 8);
      for (int r = 0; r < MR; ++r) {
        const __m512i a = _mm512_set1_epi64((long long)arow[r][k]);
        for (int v = 0; v < NV; ++v)
          acc[r][v] = _mm512_add_epi64(acc[r][v],
                                       _mm512_popcnt_epi64(_mm512_xor_si512(a, b[v])));
      }
    }
  }
  const int rows = (int)std::min<int64_t>(MR, M - m0);
  if (!e.out_int && rows > 0) {
    // Vectorised epilogue, 16 filters (two accumulators) at a time: the low 32 bits of
    // each count (< 2^31) gathered into one register, one conversion, then
    //   out = count * (-2 alpha) + (nbits alpha + bias)       one FMA, or with K:
    //   out = (nbits - 2 count) * alpha * K + bias             (exact integers first)
    // [+ residual], stored as floats or as the next layer's sign bits.
    const __m512i lo32 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                           26, 28, 30);
    const __m512 nbf = _mm512_set1_ps((float)e.nbits);
    uint8_t* brow[MR] = {};
    if (e.out_bits)
      for (int r = 0; r < rows; ++r) brow[r] = e.bits_row(m0 + r);
    for (int v = 0; v < NV; v += 2) {
      const bool pair = v + 1 < NV;
      const int64_t o0 = (ob0 + v) * 8;
      const int64_t no = std::min<int64_t>(pair ? 16 : 8, e.OC - o0);
      const __mmask16 om = (__mmask16)(no >= 16 ? 0xFFFF : ((1u << no) - 1));
      const __m512 al = _mm512_maskz_loadu_ps(om, e.alpha + o0);
      const __m512 bi = e.bias ? _mm512_maskz_loadu_ps(om, e.bias + o0) : _mm512_setzero_ps();
      const __m512 m2al = _mm512_mul_ps(al, _mm512_set1_ps(-2.0f));
      const __m512 offs = _mm512_fmadd_ps(nbf, al, bi);
      __m512 nt = _mm512_setzero_ps();
      __mmask16 fl = 0;
      if (e.out_bits) {
        nt = _mm512_maskz_loadu_ps(om, e.nth + o0);
        fl = (__mmask16)_mm_movepi8_mask(
            _mm_sub_epi8(_mm_setzero_si128(), _mm_maskz_loadu_epi8(om, e.nflip + o0)));
      }
      for (int r = 0; r < rows; ++r) {
        const __m512i c32 = pair ? _mm512_permutex2var_epi32(acc[r][v], lo32, acc[r][v + 1])
                                 : _mm512_permutexvar_epi32(lo32, acc[r][v]);
        const __m512 cnt = _mm512_cvtepi32_ps(c32);
        __m512 f;
        if (!e.kscale) {
          f = _mm512_fmadd_ps(cnt, m2al, offs);
        } else {
          f = _mm512_mul_ps(_mm512_fnmadd_ps(cnt, _mm512_set1_ps(2.0f), nbf), al);
          f = _mm512_add_ps(_mm512_mul_ps(f, _mm512_set1_ps(e.kscale[m0 + r])), bi);
        }
        if (e.residual) {
          __m512 res = _mm512_maskz_loadu_ps(om, e.residual + (m0 + r) * e.OC + o0);
          if (e.residual_relu) res = _mm512_max_ps(res, _mm512_setzero_ps());
          f = _mm512_add_ps(f, res);
        }
        if (e.out_bits) {
          const __mmask16 lt = _mm512_mask_cmp_ps_mask(om, f, nt, _CMP_LT_OQ);
          const __mmask16 gt = _mm512_mask_cmp_ps_mask(om, f, nt, _CMP_GT_OQ);
          const uint16_t bits = (uint16_t)((lt & ~fl) | (gt & fl));
          brow[r][ob0 + v] = (uint8_t)bits;
          if (pair) brow[r][ob0 + v + 1] = (uint8_t)(bits >> 8);
          continue;
        }
        _mm512_mask_storeu_ps(e.out + (m0 + r) * e.OC + o0, om, f);
      }
    }
    return;
  }
  alignas(64) int64_t cnt[8];
  for (int r = 0; r < rows; ++r)
    for (int v = 0; v < NV; ++v) {
      _mm512_store_si512(cnt, acc[r][v]);
      store_row(e, m0 + r, ob0 + v, cnt);
    }
}
#endif

}  // namespace
