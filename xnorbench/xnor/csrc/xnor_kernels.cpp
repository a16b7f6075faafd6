// XNOR + popcount convolution on bit-packed operands (CPU).
//
// Bit convention (shared with xnorbench/xnor/packing.py): bit 1 = -1, bit 0 = +1.
// sign(0) = +1 packs to 0, so spatial padding bits (0) stand for +1: the binary path
// pads its binarized input with +1, exactly like the simulated XNORConv2d.
// Channel-padding bits are 0 in both operands, so their XOR is 0 and they never count.
//
// For one output (pixel m, filter o) with n = C*KH*KW real bits:
//     dot(sign(x), sign(w)) = n - 2 * popcount(x_bits XOR w_bits)
//
// Layout: the packed input P[N][H+2ph][W+2pw][Cw] (Cw = ceil(C/64) words per pixel) is
// gathered into A[M][K] (M = N*OH*OW rows, K = KH*KW*Cw words, tap-major); the packed
// weight is B[OC/8][K][8]: eight filters side by side per 64-bit word position, so a
// 512-bit register holds the same word of 8 filters. The micro-kernel broadcasts one
// word of each of MR rows of A, XORs it with NV such registers, and accumulates
// VPOPCNTQ counts: MR x 8*NV outputs with no horizontal reductions.
// AVX2 has no VPOPCNTQ; its kernel (below, "table lookups") works on nibbles instead.
//
// Threads: at::parallel_for over micro-tiles; the extension is built with -fopenmp so
// that it shares torch's OpenMP pool and torch.set_num_threads() (without the flag,
// at::parallel_for in an extension silently runs on one thread).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VPOPCNTDQ__) && \
    defined(__AVX512DQ__) && defined(__AVX512VL__)
#define XNOR_AVX512 1
#define XNOR_AVX2 0
#include <immintrin.h>
#elif defined(__AVX2__)
#define XNOR_AVX512 0
#define XNOR_AVX2 1
#include <immintrin.h>
#else
#define XNOR_AVX512 0
#define XNOR_AVX2 0
#endif

// AVX2 has no vector popcount. Its kernel counts with 16-byte tables instead: every
// 64-bit word is split into 16 nibbles, one byte each. A register holds the same nibble
// of 32 filters (bytes of B), and the matching nibble `a` of one input row selects the
// table T_a[b] = popcount(a XOR b), so one VPSHUFB(T_a, B) gives 32 XOR-popcounts at
// once and the XOR itself disappears: VPSHUFB + VPADDB per 128 bit pairs.
#if XNOR_AVX2
constexpr int NSPLIT = 2;   // A row: 16 bytes (nibbles, stored as nibble * 16) per word
constexpr int FB = 32;      // filters per packed-weight block
#else
constexpr int NSPLIT = 1;
constexpr int FB = 8;
#endif
constexpr int WB = FB * NSPLIT;  // int64 words per (filter block, word position) of B
constexpr uint64_t NIB = 0x0F0F0F0F0F0F0F0FULL;

// AVX2 weight layout: KN = 16 * K nibble steps per filter, 32 filters (one block) per
// 32-byte register. Blocks in full groups of kGroup (the wide tile's four) lie side by
// side per step, [KN][kGroup][32] bytes per group, so one pointer walks the whole group;
// the blocks after the last full group follow one after another, [KN][32] each.
constexpr int kGroup = 4;
inline int64_t b_offset(int64_t blk, int64_t step, int64_t nblk, int64_t KN) {
  if (blk < nblk / kGroup * kGroup)
    return (blk - blk % kGroup) * KN * 32 + (step * kGroup + blk % kGroup) * 32;
  return (blk * KN + step) * 32;
}

namespace {

constexpr int MR = 6;     // rows of A per micro-tile
#if XNOR_AVX2
constexpr int NVMAX = 2;  // 32-filter blocks per micro-tile (12 byte accumulators)
#else
constexpr int NVMAX = 4;  // 8-filter vectors per micro-tile
#endif

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------- input packing
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

// NHWC (channels_last) float -> P, same layout.
void pack_nhwc(const float* x, uint64_t* P, int64_t N, int64_t C, int64_t H, int64_t W,
               int64_t ph, int64_t pw, int64_t Cw, const Threshold& T) {
  const int64_t Wp = W + 2 * pw, Hp = H + 2 * ph;
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
          const __m512 zero = _mm512_setzero_ps();
          for (int64_t j = 0; j * 16 < nc; ++j) {
            const int64_t left = nc - j * 16;
            const __mmask16 lm = (__mmask16)(left >= 16 ? 0xFFFF : ((1u << left) - 1));
            __m512 v = _mm512_maskz_loadu_ps(lm, src + c0 + j * 16);
            __mmask16 m;
            if (!T.th) {
              m = _mm512_mask_cmp_ps_mask(lm, v, zero, _CMP_LT_OQ);
            } else {  // per lane: x < t, or x > t where the channel's BN scale is negative
              const __m512 t = _mm512_maskz_loadu_ps(lm, T.th + c0 + j * 16);
              const __mmask16 fl = (__mmask16)_mm_movepi8_mask(
                  _mm_sub_epi8(_mm_setzero_si128(),
                               _mm_maskz_loadu_epi8(lm, T.flip + c0 + j * 16)));
              m = (_mm512_mask_cmp_ps_mask(lm, v, t, _CMP_LT_OQ) & (__mmask16)~fl) |
                  (_mm512_mask_cmp_ps_mask(lm, v, t, _CMP_GT_OQ) & fl);
            }
            word |= (uint64_t)m << (16 * j);
          }
#else
          int64_t c = 0;
#if XNOR_AVX2
          const __m256 zero = _mm256_setzero_ps();
          for (; !T.th && c + 8 <= nc; c += 8)
            word |= (uint64_t)_mm256_movemask_ps(
                        _mm256_cmp_ps(_mm256_loadu_ps(src + c0 + c), zero, _CMP_LT_OQ)) << c;
          for (; T.th && c + 8 <= nc; c += 8) {
            const __m256 v = _mm256_loadu_ps(src + c0 + c);
            const __m256 t = _mm256_loadu_ps(T.th + c0 + c);
            const uint32_t lt = _mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_LT_OQ));
            const uint32_t gt = _mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_GT_OQ));
            uint32_t fl = 0;
            for (int j = 0; j < 8; ++j) fl |= (uint32_t)(T.flip[c0 + c + j] != 0) << j;
            word |= (uint64_t)((lt & ~fl) | (gt & fl)) << c;
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

// ---------------------------------------------------------------- micro-kernels
// Where the GEMM's rows of A come from. Row m of A is output pixel m's receptive field:
// KH segments of KW * Cw consecutive words of the packed input P (one per filter row),
// which every kernel reads from P directly (`nseg` = KH segments): the AVX-512 and scalar
// kernels from P, the AVX2 kernels from its nibble-split copy (NSPLIT words per word;
// `Cw` and `seg_len` then count words of that copy).
struct ARows {
  const uint64_t* base;  // P, or its nibble-split copy
  int64_t nseg, seg_len; // segments per row and their length (words); K = nseg * seg_len
  int64_t M, OH, OW, Hp, Wp, Cw, sh, sw;
  // Row m's first segment; segment s starts seg_stride() words further.
  inline const uint64_t* row(int64_t m) const {
    m = std::min(m, M - 1);  // rows past M (a tile's padding) are computed and discarded
    const int64_t n = m / (OH * OW), q = m % (OH * OW), oh = q / OW, ow = q % OW;
    return base + ((n * Hp + oh * sh) * Wp + ow * sw) * Cw;
  }
  inline int64_t seg_stride() const { return Wp * Cw; }
  // The NR rows from m0: one division, then steps along the output row.
  template <int NR>
  inline void rows(int64_t m0, const uint64_t** out) const {
    int64_t m = std::min(m0, M - 1);
    int64_t n = m / (OH * OW), q = m % (OH * OW), oh = q / OW, ow = q % OW;
    for (int r = 0; r < NR; ++r) {
      out[r] = base + ((n * Hp + oh * sh) * Wp + ow * sw) * Cw;
      if (m0 + r + 1 >= M) continue;  // the rest repeat the last row (discarded)
      if (++ow == OW) {
        ow = 0;
        if (++oh == OH) {
          oh = 0;
          ++n;
        }
      }
    }
  }
};

struct Epilogue {
  float* out;            // [M][OC] (channels_last NCHW storage)
  int32_t* out_int;      // or integer dot products [M][OC]
  const float* alpha;    // [OC]
  const float* bias;     // [OC] or nullptr
  const float* kscale;   // [M] or nullptr
  const float* residual; // [M][OC] added last (a fused residual connection) or nullptr
  int64_t OC;
  int64_t nbits;
  // Bits out instead of floats: the sign of the next layer's BN of each output value
  // (thresholds nth, flips nflip), written into that layer's packed, padded input
  // out_bits[N][OH + 2 ph2][OW + 2 pw2][bpp bytes]; filter o is bit o % 8 of byte o / 8.
  uint8_t* out_bits;
  const float* nth;
  const uint8_t* nflip;
  int64_t OH, OW, ph2, pw2, bpp;
  inline uint8_t* bits_row(int64_t m) const {
    const int64_t n = m / (OH * OW), q = m % (OH * OW), oh = q / OW, ow = q % OW;
    return out_bits + ((n * (OH + 2 * ph2) + oh + ph2) * (OW + 2 * pw2) + ow + pw2) * bpp;
  }
  inline bool neg(float v, int64_t o) const { return nflip[o] ? v > nth[o] : v < nth[o]; }
};

template <typename T>
inline void store_row(const Epilogue& e, int64_t m, int64_t ob, const T* cnt8) {
  const int64_t o0 = ob * FB, no = std::min<int64_t>(FB, e.OC - o0);
  if (e.out_int) {
    for (int64_t l = 0; l < no; ++l)
      e.out_int[m * e.OC + o0 + l] = (int32_t)(e.nbits - 2 * cnt8[l]);
    return;
  }
  const float k = e.kscale ? e.kscale[m] : 1.0f;
  uint8_t byte = 0;
  for (int64_t l = 0; l < no; ++l) {
    float v = (float)(e.nbits - 2 * cnt8[l]) * e.alpha[o0 + l];
    if (e.kscale) v *= k;
    if (e.bias) v += e.bias[o0 + l];
    if (e.residual) v += e.residual[m * e.OC + o0 + l];
    if (!e.out_bits) {
      e.out[m * e.OC + o0 + l] = v;
      continue;
    }
    byte |= (uint8_t)e.neg(v, o0 + l) << ((o0 + l) % 8);
    if ((o0 + l) % 8 == 7 || l == no - 1) {
      e.bits_row(m)[(o0 + l) / 8] = byte;
      byte = 0;
    }
  }
}

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
        if (e.residual)
          f = _mm512_add_ps(f, _mm512_maskz_loadu_ps(om, e.residual + (m0 + r) * e.OC + o0));
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

#if XNOR_AVX2
// kXorPop.t[a] = popcount(a ^ b) for b = 0..15: the VPSHUFB table for input nibble a,
// broadcast into both 128-bit lanes by VBROADCASTI128. A rows store nibble * 16, the
// table's offset, so the byte of A feeds the address directly.
struct XorPopTable {
  alignas(64) uint8_t t[16][16];
  constexpr XorPopTable() : t() {
    for (int a = 0; a < 16; ++a)
      for (int b = 0; b < 16; ++b) t[a][b] = (uint8_t)__builtin_popcount(a ^ b);
  }
};
alignas(64) constexpr XorPopTable kXorPop{};

// Byte counters (at most 63 steps x 4 = 252) are widened into 16-bit partial sums after
// every chunk of <= 63 steps: unpacklo puts filters 0-7 and 16-23 in words 0-15, unpackhi
// filters 8-15 and 24-31 in words 16-31. 16 bits hold 260 chunks (65520), so a row's
// counts stay in 16 bits while 4 * KN < 65536 (K < 1024 words: 3x3 filters on up to 7168
// channels) and the epilogue reads them there; longer rows fold them into int32 totals
// every 256 chunks. The first flush after a fold stores, so nothing is zeroed per tile.
constexpr int kChunk = 63;
template <int R, int V>
struct TileSums {
  alignas(32) uint16_t t16[R][V][32];
  alignas(32) int32_t tot[R][V][32];
  int pending = 0;      // chunks in t16 since the last fold (0: t16 holds nothing yet)
  bool folded = false;  // tot holds counts

  inline void flush(int r, int v, __m256i acc) {
    const __m256i z = _mm256_setzero_si256();
    __m256i* lo = (__m256i*)t16[r][v];
    __m256i* hi = (__m256i*)(t16[r][v] + 16);
    __m256i l = _mm256_unpacklo_epi8(acc, z), h = _mm256_unpackhi_epi8(acc, z);
    if (pending > 0) {
      l = _mm256_add_epi16(l, _mm256_load_si256(lo));
      h = _mm256_add_epi16(h, _mm256_load_si256(hi));
    }
    _mm256_store_si256(lo, l);
    _mm256_store_si256(hi, h);
  }
  inline void end_chunk() {
    if (++pending < 256) return;
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v)
        for (int q = 0; q < 4; ++q) {
          __m256i c = words(r, v, q);
          __m256i* t = (__m256i*)(tot[r][v] + 8 * q);
          if (folded) c = _mm256_add_epi32(c, _mm256_load_si256(t));
          _mm256_store_si256(t, c);
        }
    folded = true;
    pending = 0;
  }
  // Filters 8q .. 8q+7 of t16[r][v] as int32 (see the word order above).
  inline __m256i words(int r, int v, int q) const {
    static constexpr int kAt[4] = {0, 16, 8, 24};
    return _mm256_cvtepu16_epi32(_mm_load_si128((const __m128i*)(t16[r][v] + kAt[q])));
  }
  // The counts of row r, block v: filters 8q .. 8q+7 in c[q].
  inline void counts(int r, int v, __m256i* c) const {
    for (int q = 0; q < 4; ++q) {
      c[q] = pending > 0 ? words(r, v, q) : _mm256_setzero_si256();
      if (folded)
        c[q] = _mm256_add_epi32(c[q], _mm256_load_si256((const __m256i*)(tot[r][v] + 8 * q)));
    }
  }
};

// A tile's counts out: R rows of which the first min(R, M - m0) are real, V blocks of 32
// filters. Vectorised like the AVX-512 epilogue, with the same operations: per block the
// per-filter constants are loaded once, then per row and 8 filters
//   out = count * (-2 alpha) + (nbits alpha + bias)       one FMA, or with K:
//   out = (nbits - 2 count) * alpha * K + bias             (exact integers first)
// [+ residual], stored as floats or as the next layer's sign bits. Integer output and a
// partial last block go through store_row.
template <int R, int V>
inline void store_tile(const Epilogue& e, int64_t m0, int64_t M, int64_t nb0,
                       const TileSums<R, V>& s) {
  const int rows = (int)std::min<int64_t>(R, M - m0);
  const __m256 nbf = _mm256_set1_ps((float)e.nbits);
  for (int v = 0; v < V; ++v) {
    const int64_t o0 = (nb0 + v) * 32;
    if (e.out_int || o0 + 32 > e.OC) {
      for (int r = 0; r < rows; ++r) {
        __m256i c[4];
        alignas(32) int32_t tot[32];
        s.counts(r, v, c);
        for (int q = 0; q < 4; ++q) _mm256_store_si256((__m256i*)(tot + 8 * q), c[q]);
        store_row(e, m0 + r, nb0 + v, tot);
      }
      continue;
    }
    __m256 al[4], bi[4], m2al[4], offs[4], nt[4];
    uint32_t fl[4] = {};
    for (int q = 0; q < 4; ++q) {
      al[q] = _mm256_loadu_ps(e.alpha + o0 + 8 * q);
      bi[q] = e.bias ? _mm256_loadu_ps(e.bias + o0 + 8 * q) : _mm256_setzero_ps();
      m2al[q] = _mm256_mul_ps(al[q], _mm256_set1_ps(-2.0f));
      offs[q] = _mm256_fmadd_ps(nbf, al[q], bi[q]);
      if (e.out_bits) {
        nt[q] = _mm256_loadu_ps(e.nth + o0 + 8 * q);
        for (int j = 0; j < 8; ++j) fl[q] |= (uint32_t)(e.nflip[o0 + 8 * q + j] != 0) << j;
      }
    }
    if (!e.kscale && !e.residual && !e.out_bits && !s.folded) {
      // the common case in a tight loop: the Epilogue's fields read once, not after
      // every store (which the compiler must assume could change them)
      float* const out = e.out + m0 * e.OC + o0;
      const int64_t OC = e.OC;
      for (int r = 0; r < rows; ++r)
        for (int q = 0; q < 4; ++q)
          _mm256_storeu_ps(out + r * OC + 8 * q,
                           _mm256_fmadd_ps(_mm256_cvtepi32_ps(s.words(r, v, q)), m2al[q],
                                           offs[q]));
      continue;
    }
    for (int r = 0; r < rows; ++r) {
      const int64_t m = m0 + r;
      __m256i c[4];
      s.counts(r, v, c);
      for (int q = 0; q < 4; ++q) {
        const __m256 cnt = _mm256_cvtepi32_ps(c[q]);
        __m256 f;
        if (!e.kscale) {
          f = _mm256_fmadd_ps(cnt, m2al[q], offs[q]);
        } else {
          f = _mm256_mul_ps(_mm256_fnmadd_ps(cnt, _mm256_set1_ps(2.0f), nbf), al[q]);
          f = _mm256_add_ps(_mm256_mul_ps(f, _mm256_set1_ps(e.kscale[m])), bi[q]);
        }
        if (e.residual)
          f = _mm256_add_ps(f, _mm256_loadu_ps(e.residual + m * e.OC + o0 + 8 * q));
        if (e.out_bits) {
          const uint32_t lt = _mm256_movemask_ps(_mm256_cmp_ps(f, nt[q], _CMP_LT_OQ));
          const uint32_t gt = _mm256_movemask_ps(_mm256_cmp_ps(f, nt[q], _CMP_GT_OQ));
          e.bits_row(m)[(o0 + 8 * q) / 8] = (uint8_t)((lt & ~fl[q]) | (gt & fl[q]));
          continue;
        }
        _mm256_storeu_ps(e.out + m * e.OC + o0 + 8 * q, f);
      }
    }
  }
}

// One step for one row: load its table, VPSHUFB it by the B nibbles of NB filter blocks
// and add to that row's byte counters. Written in asm because GCC spills the twelve
// accumulators of the 6 x 2 tile (12 + 2 B + 2 temporaries = all 16 ymm registers).
#define XNOR_ROW2(ACC0, ACC1, ADDR)                \
  "movzbl " ADDR ", %k[i]\n\t"                     \
  "vbroadcasti128 (%[tab],%q[i],1), %[t]\n\t"      \
  "vpshufb %[b0], %[t], %[u]\n\t"                  \
  "vpaddb %[u], %[" #ACC0 "], %[" #ACC0 "]\n\t"    \
  "vpshufb %[b1], %[t], %[t]\n\t"                  \
  "vpaddb %[t], %[" #ACC1 "], %[" #ACC1 "]\n\t"
#define XNOR_ROW1(ACC0, ADDR)                      \
  "movzbl " ADDR ", %k[i]\n\t"                     \
  "vbroadcasti128 (%[tab],%q[i],1), %[t]\n\t"      \
  "vpshufb %[b0], %[t], %[t]\n\t"                  \
  "vpaddb %[t], %[" #ACC0 "], %[" #ACC0 "]\n\t"

// A tile's rows as bytes of the nibble-split input, one byte per nibble step: step k of
// row r lies in segment k / SL, at byte k % SL of it. For the piece of a chunk inside
// segment sg, at(r, sg) + k addresses step k, so one index register walks every row.
template <int NR>
struct TileRows {
  const uint8_t* row0[NR];
  int64_t SL = 0, gap = 0;  // steps (bytes) per segment; bytes from one's end to the next
  TileRows() = default;
  TileRows(const ARows& R, int64_t m0) {
    const uint64_t* rp[NR];
    R.rows<NR>(m0, rp);
    for (int r = 0; r < NR; ++r) row0[r] = reinterpret_cast<const uint8_t*>(rp[r]);
    SL = R.seg_len * 8;
    gap = R.seg_stride() * 8 - SL;
  }
  inline const uint8_t* at(int r, int64_t sg) const { return row0[r] + sg * gap; }
  // the end of the piece of [k, k1) that lies in k's segment
  inline int64_t piece_end(int64_t k, int64_t k1) const {
    return std::min(k1, (k / SL + 1) * SL);
  }
};

// MR (= 6) rows x NB (1 or 2) blocks of 32 filters, for the blocks past the last full
// group of four (see b_offset: each such block is KN x 32 filter nibbles).
template <int NB>
inline void micro_avx2(const ARows& R, const uint8_t* B, int64_t nb0, int64_t m0,
                       const Epilogue& e) {
  static_assert(MR == 6 && (NB == 1 || NB == 2), "the asm step is written for 6 x {1,2}");
  const uint8_t* tab = &kXorPop.t[0][0];
  const int64_t KN = R.nseg * R.seg_len * 8;
  TileSums<MR, NB> s;
  const TileRows<MR> rows(R, m0);
  const uint8_t* b0p = B + nb0 * KN * 32;
  const uint8_t* b1p = B + (nb0 + NB - 1) * KN * 32;
  for (int64_t k0 = 0; k0 < KN; k0 += kChunk) {
    const int64_t k1 = std::min<int64_t>(KN, k0 + kChunk);
    __m256i c00 = _mm256_setzero_si256(), c10 = c00, c20 = c00, c30 = c00, c40 = c00,
            c50 = c00, c01 = c00, c11 = c00, c21 = c00, c31 = c00, c41 = c00, c51 = c00;
    __m256i t, u;
    uint64_t i;
    for (int64_t k = k0; k < k1;) {
      const int64_t sg = k / rows.SL, ke = rows.piece_end(k, k1);
      const uint8_t *r0 = rows.at(0, sg), *r1 = rows.at(1, sg), *r2 = rows.at(2, sg),
                    *r3 = rows.at(3, sg), *r4 = rows.at(4, sg), *r5 = rows.at(5, sg);
      for (; k < ke; ++k) {
        const __m256i b0 = _mm256_load_si256((const __m256i*)(b0p + k * 32));
        // three rows (accumulators X0, X1, X2 of block 0 and Y0, Y1, Y2 of block 1)
#define XNOR_NARROW2(X0, Y0, X1, Y1, X2, Y2, RA, RB, RC)                                 \
  asm volatile(XNOR_ROW2(a0, b0a, "(%[ra],%[k])") XNOR_ROW2(a1, b1a, "(%[rb],%[k])")       \
               XNOR_ROW2(a2, b2a, "(%[rc],%[k])")                                          \
               : [a0] "+x"(X0), [b0a] "+x"(Y0), [a1] "+x"(X1), [b1a] "+x"(Y1), [a2] "+x"(X2), \
                 [b2a] "+x"(Y2), [t] "=&x"(t), [u] "=&x"(u), [i] "=&r"(i)                  \
               : [b0] "x"(b0), [b1] "x"(b1), [tab] "r"(tab), [ra] "r"(RA), [rb] "r"(RB),   \
                 [rc] "r"(RC), [k] "r"(k)                                                  \
               : "memory")
#define XNOR_NARROW1(X0, X1, X2, RA, RB, RC)                                             \
  asm volatile(XNOR_ROW1(a0, "(%[ra],%[k])") XNOR_ROW1(a1, "(%[rb],%[k])")                 \
               XNOR_ROW1(a2, "(%[rc],%[k])")                                               \
               : [a0] "+x"(X0), [a1] "+x"(X1), [a2] "+x"(X2), [t] "=&x"(t), [i] "=&r"(i)   \
               : [b0] "x"(b0), [tab] "r"(tab), [ra] "r"(RA), [rb] "r"(RB), [rc] "r"(RC),   \
                 [k] "r"(k)                                                                \
               : "memory")
        if constexpr (NB == 2) {
          const __m256i b1 = _mm256_load_si256((const __m256i*)(b1p + k * 32));
          XNOR_NARROW2(c00, c01, c10, c11, c20, c21, r0, r1, r2);
          XNOR_NARROW2(c30, c31, c40, c41, c50, c51, r3, r4, r5);
        } else {
          XNOR_NARROW1(c00, c10, c20, r0, r1, r2);
          XNOR_NARROW1(c30, c40, c50, r3, r4, r5);
        }
#undef XNOR_NARROW2
#undef XNOR_NARROW1
      }
    }
    const __m256i col0[MR] = {c00, c10, c20, c30, c40, c50};
    const __m256i col1[MR] = {c01, c11, c21, c31, c41, c51};
    for (int r = 0; r < MR; ++r) {
      s.flush(r, 0, col0[r]);
      if constexpr (NB == 2) s.flush(r, 1, col1[r]);
    }
    s.end_chunk();
  }
  store_tile(e, m0, R.M, nb0, s);
}

// The wide tile: 3 rows x 4 blocks of 32 filters (one group, see b_offset). Per row and
// step one table load feeds four VPSHUFB (one block's nibbles in a register, three as
// memory operands), so the scalar index load and the table load are paid once per four
// shuffles. The group's four blocks lie side by side per step, so one pointer walks all
// of B and one index all three rows; unrolled 16 times that is about 31 instructions per
// step for 12 shuffles, under Zen's 6 per cycle at the shuffle units' 2 per cycle. The
// table loads are software-pipelined one row-step ahead (two table registers, ta and
// tb). 12 accumulators + 1 B + 2 tables + 1 temporary use all 16 ymm registers. What
// bounds it on Zen 4 (about 88 % of the register-only shuffle peak at long K): 13 vector
// loads per step (3 table broadcasts, 10 of B) against two per cycle.
//
// XNOR_ROW4: one row-step of a tile of fewer rows (the last of a conv whose row count is
// not a multiple of 3), not pipelined.
#define XNOR_ROW4(A0, A1, A2, A3, ADDR)            \
  "movzbl " ADDR ", %k[i]\n\t"                     \
  "vbroadcasti128 (%[tab],%q[i],1), %[t]\n\t"      \
  "vpshufb %[b0], %[t], %[u]\n\t"                  \
  "vpaddb %[u], %[" #A0 "], %[" #A0 "]\n\t"        \
  "vpshufb %[b1], %[t], %[u]\n\t"                  \
  "vpaddb %[u], %[" #A1 "], %[" #A1 "]\n\t"        \
  "vpshufb %[b2], %[t], %[u]\n\t"                  \
  "vpaddb %[u], %[" #A2 "], %[" #A2 "]\n\t"        \
  "vpshufb %[b3], %[t], %[t]\n\t"                  \
  "vpaddb %[t], %[" #A3 "], %[" #A3 "]\n\t"
constexpr int WMR = 3, WNB = kGroup;
constexpr int kWideChunk = 48;  // 3 words of 16 steps: the most whole words under 64 steps
constexpr int kWideBatch = 8;   // row tiles that share each chunk of B while it is in L1
// Up to kWideBatch consecutive wide tiles (rows m0 .. m0 + 3 * ntiles) of one group. The
// chunk loop is outside the tile loop, so each 6 KiB chunk of B is read from L2 once per
// batch and from L1 by the other tiles. Segments are whole words (16 steps) and chunks
// three words, so every piece of a chunk is a multiple of the 16-step unrolled body.
inline void micro_avx2_wide(const ARows& R, const uint8_t* B, int64_t nb0, int64_t m0,
                            int ntiles, const Epilogue& e) {
  const uint8_t* tab = &kXorPop.t[0][0];
  const int64_t KN = R.nseg * R.seg_len * 8;
  TileSums<WMR, WNB> sums[kWideBatch];
  TileRows<WMR> rows[kWideBatch];
  for (int j = 0; j < ntiles; ++j) rows[j] = TileRows<WMR>(R, m0 + j * WMR);
  const uint8_t* bg = B + nb0 * KN * 32;  // the group: [KN][4 blocks][32 filters]
  for (int64_t k0 = 0; k0 < KN; k0 += kWideChunk) {
    const int64_t k1 = std::min<int64_t>(KN, k0 + kWideChunk);
    for (int j = 0; j < ntiles; ++j) {
      __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c03 = c00, c10 = c00,
              c11 = c00, c12 = c00, c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00;
      __m256i u;
      uint64_t i;
      __m256i ta, tb;
#define XNOR_WIDE_SHUF(A0, A1, A2, A3, TC)                   \
  "vpshufb %[b0], %[" TC "], %[u]\n\t"                       \
  "vpaddb %[u], %[" #A0 "], %[" #A0 "]\n\t"                  \
  "vpshufb %[b1], %[" TC "], %[u]\n\t"                       \
  "vpaddb %[u], %[" #A1 "], %[" #A1 "]\n\t"                  \
  "vpshufb %[b2], %[" TC "], %[u]\n\t"                       \
  "vpaddb %[u], %[" #A2 "], %[" #A2 "]\n\t"                  \
  "vpshufb %[b3], %[" TC "], %[u]\n\t"                       \
  "vpaddb %[u], %[" #A3 "], %[" #A3 "]\n\t"
#define XNOR_WIDE_OUTS(A0, A1, A2, A3)                                                  \
  [A0] "+x"(A0), [A1] "+x"(A1), [A2] "+x"(A2), [A3] "+x"(A3), [ta] "+x"(ta),            \
      [tb] "+x"(tb), [u] "=&x"(u), [i] "=&r"(i)
#define XNOR_WIDE_INS(O)                                                                \
  [b0] "x"(b0), [b1] "m"(*(const __m256i*)(q + 128 * O + 32)),                          \
      [b2] "m"(*(const __m256i*)(q + 128 * O + 64)),                                    \
      [b3] "m"(*(const __m256i*)(q + 128 * O + 96)), [tab] "r"(tab), [k] "r"(k)
#define XNOR_WIDE_ROW(O, A0, A1, A2, A3, TC, TN, ON, RN)                                 \
  asm volatile("movzbl %c[on](%[rn],%[k]), %k[i]\n\t"                                   \
               "vbroadcasti128 (%[tab],%q[i],1), %[" TN "]\n\t"                         \
               XNOR_WIDE_SHUF(A0, A1, A2, A3, TC)                                        \
               : XNOR_WIDE_OUTS(A0, A1, A2, A3)                                          \
               : XNOR_WIDE_INS(O), [rn] "r"(RN), [on] "i"(ON)                            \
               : "memory")
#define XNOR_WIDE_LAST(O, A0, A1, A2, A3, TC)                                            \
  asm volatile(XNOR_WIDE_SHUF(A0, A1, A2, A3, TC)                                         \
               : XNOR_WIDE_OUTS(A0, A1, A2, A3)                                          \
               : XNOR_WIDE_INS(O)                                                        \
               : "memory")
#define XNOR_WIDE_STEP(O, T0, T1)                                                       \
  {                                                                                     \
    const __m256i b0 = _mm256_load_si256((const __m256i*)(q + 128 * O));                \
    XNOR_WIDE_ROW(O, c00, c01, c02, c03, T0, T1, O, r1);                                \
    XNOR_WIDE_ROW(O, c10, c11, c12, c13, T1, T0, O, r2);                                \
    XNOR_WIDE_ROW(O, c20, c21, c22, c23, T0, T1, O + 1, r0);                            \
  }
      for (int64_t k = k0; k < k1;) {
        const int64_t sg = k / rows[j].SL, ke = rows[j].piece_end(k, k1);
        const uint8_t *r0 = rows[j].at(0, sg), *r1 = rows[j].at(1, sg), *r2 = rows[j].at(2, sg);
        for (const uint8_t* q = bg + k * 128; k < ke; k += 16, q += 16 * 128) {
          asm volatile("movzbl (%[r0],%[k]), %k[i]\n\t"
                       "vbroadcasti128 (%[tab],%q[i],1), %[ta]\n\t"
                       : [ta] "=x"(ta), [i] "=&r"(i)
                       : [r0] "r"(r0), [k] "r"(k), [tab] "r"(tab)
                       : "memory");
          XNOR_WIDE_STEP(0, "ta", "tb") XNOR_WIDE_STEP(1, "tb", "ta")
          XNOR_WIDE_STEP(2, "ta", "tb") XNOR_WIDE_STEP(3, "tb", "ta")
          XNOR_WIDE_STEP(4, "ta", "tb") XNOR_WIDE_STEP(5, "tb", "ta")
          XNOR_WIDE_STEP(6, "ta", "tb") XNOR_WIDE_STEP(7, "tb", "ta")
          XNOR_WIDE_STEP(8, "ta", "tb") XNOR_WIDE_STEP(9, "tb", "ta")
          XNOR_WIDE_STEP(10, "ta", "tb") XNOR_WIDE_STEP(11, "tb", "ta")
          XNOR_WIDE_STEP(12, "ta", "tb") XNOR_WIDE_STEP(13, "tb", "ta")
          XNOR_WIDE_STEP(14, "ta", "tb")
          {
            const __m256i b0 = _mm256_load_si256((const __m256i*)(q + 128 * 15));
            XNOR_WIDE_ROW(15, c00, c01, c02, c03, "tb", "ta", 15, r1);
            XNOR_WIDE_ROW(15, c10, c11, c12, c13, "ta", "tb", 15, r2);
            XNOR_WIDE_LAST(15, c20, c21, c22, c23, "tb");
          }
        }
      }
#undef XNOR_WIDE_STEP
#undef XNOR_WIDE_LAST
#undef XNOR_WIDE_ROW
#undef XNOR_WIDE_INS
#undef XNOR_WIDE_OUTS
#undef XNOR_WIDE_SHUF
      const __m256i acc[WMR][WNB] = {{c00, c01, c02, c03}, {c10, c11, c12, c13},
                                     {c20, c21, c22, c23}};
      for (int r = 0; r < WMR; ++r)
        for (int v = 0; v < WNB; ++v) sums[j].flush(r, v, acc[r][v]);
      sums[j].end_chunk();
    }
  }
  for (int j = 0; j < ntiles; ++j) store_tile(e, m0 + j * WMR, R.M, nb0, sums[j]);
}
// The last rows of a conv whose row count is not a multiple of 3: NR (1 or 2) rows x 4
// blocks, one step at a time, so no rows are computed only to be discarded.
template <int NR>
inline void micro_avx2_wide_tail(const ARows& R, const uint8_t* B, int64_t nb0, int64_t m0,
                                 const Epilogue& e) {
  static_assert(NR == 1 || NR == 2, "the tail has one or two rows");
  const uint8_t* tab = &kXorPop.t[0][0];
  const int64_t KN = R.nseg * R.seg_len * 8;
  TileSums<NR, WNB> s;
  const TileRows<NR> rows(R, m0);
  const uint8_t* bg = B + nb0 * KN * 32;
  for (int64_t k0 = 0; k0 < KN; k0 += kChunk) {
    const int64_t k1 = std::min<int64_t>(KN, k0 + kChunk);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c03 = c00, c10 = c00,
            c11 = c00, c12 = c00, c13 = c00;
    __m256i t, u;
    uint64_t i;
    for (int64_t k = k0; k < k1;) {
      const int64_t sg = k / rows.SL, ke = rows.piece_end(k, k1);
      const uint8_t* r0 = rows.at(0, sg);
      const uint8_t* r1 = rows.at(NR - 1, sg);
      for (const uint8_t* q = bg + k * 128; k < ke; ++k, q += 128) {
        const __m256i b0 = _mm256_load_si256((const __m256i*)q);
        const __m256i b1 = _mm256_load_si256((const __m256i*)(q + 32));
#define XNOR_TAIL_ROW(A0, A1, A2, A3, ROW)                                               \
  asm volatile(XNOR_ROW4(A0, A1, A2, A3, "(%[ra],%[k])")                                   \
               : [A0] "+x"(A0), [A1] "+x"(A1), [A2] "+x"(A2), [A3] "+x"(A3), [t] "=&x"(t), \
                 [u] "=&x"(u), [i] "=&r"(i)                                                \
               : [b0] "x"(b0), [b1] "x"(b1), [b2] "m"(*(const __m256i*)(q + 64)),          \
                 [b3] "m"(*(const __m256i*)(q + 96)), [tab] "r"(tab), [ra] "r"(ROW),       \
                 [k] "r"(k)                                                                \
               : "memory")
        XNOR_TAIL_ROW(c00, c01, c02, c03, r0);
        if constexpr (NR == 2) XNOR_TAIL_ROW(c10, c11, c12, c13, r1);
#undef XNOR_TAIL_ROW
      }
    }
    const __m256i acc[2][WNB] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}};
    for (int r = 0; r < NR; ++r)
      for (int v = 0; v < WNB; ++v) s.flush(r, v, acc[r][v]);
    s.end_chunk();
  }
  store_tile(e, m0, R.M, nb0, s);
}
#undef XNOR_ROW4
#undef XNOR_ROW2
#undef XNOR_ROW1
#endif

template <int NV>
inline void micro_portable(const ARows& R, const uint64_t* B, int64_t ob0, int64_t m0,
                           const Epilogue& e) {
  const int64_t K = R.nseg * R.seg_len;
  const int rows = (int)std::min<int64_t>(MR, R.M - m0);
  for (int r = 0; r < rows; ++r) {
    for (int v = 0; v < NV; ++v) {
      int64_t cnt[8] = {0};
      for (int64_t sg = 0; sg < R.nseg; ++sg) {
        const uint64_t* a = R.row(m0 + r) + sg * R.seg_stride();
        const uint64_t* b = B + ((ob0 + v) * K + sg * R.seg_len) * 8;
        for (int64_t k = 0; k < R.seg_len; ++k)
          for (int l = 0; l < 8; ++l) cnt[l] += __builtin_popcountll(a[k] ^ b[k * 8 + l]);
      }
      store_row(e, m0 + r, ob0 + v, cnt);
    }
  }
}

template <int NV>
inline void micro(const ARows& R, const uint64_t* B, int64_t ob0, int64_t m0,
                  const Epilogue& e) {
#if XNOR_AVX512
  micro_avx512<NV>(R, B, ob0, m0, e);
#elif XNOR_AVX2
  micro_avx2<NV>(R, reinterpret_cast<const uint8_t*>(B), ob0, m0, e);
#else
  micro_portable<NV>(R, B, ob0, m0, e);
#endif
}

void binary_gemm(const ARows& R, const uint64_t* B, int64_t OCB, const Epilogue& e) {
  const int64_t M = R.M;
#if XNOR_AVX2
  // full groups of 4 filter blocks: the wide 3 x 4 tile; the rest: 6 x {2, 1} tiles
  // (batches of full 3-row tiles, then the 1 or 2 rows left, per group)
  const int64_t wide = OCB / WNB, wtiles = M / WMR, left = M % WMR;
  const int64_t batches = ceil_div(wtiles, kWideBatch) + (left > 0);
  const uint8_t* b8 = reinterpret_cast<const uint8_t*>(B);
  if (wide > 0) {
    at::parallel_for(0, wide * batches, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t nb0 = (t / batches) * WNB, first = (t % batches) * kWideBatch;
        if (first < wtiles)
          micro_avx2_wide(R, b8, nb0, first * WMR,
                          (int)std::min<int64_t>(kWideBatch, wtiles - first), e);
        else if (left == 1)
          micro_avx2_wide_tail<1>(R, b8, nb0, wtiles * WMR, e);
        else
          micro_avx2_wide_tail<2>(R, b8, nb0, wtiles * WMR, e);
      }
    });
  }
  const int64_t done = wide * WNB;
  if (done == OCB) return;
  const int64_t mtiles = ceil_div(M, MR), ntiles = ceil_div(OCB - done, NVMAX);
  at::parallel_for(0, ntiles * mtiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t ob0 = done + (t / mtiles) * NVMAX, m0 = (t % mtiles) * MR;
      if (OCB - ob0 >= 2)
        micro<2>(R, B, ob0, m0, e);
      else
        micro<1>(R, B, ob0, m0, e);
    }
  });
#else
  const int64_t mtiles = ceil_div(M, MR), ntiles = ceil_div(OCB, NVMAX);
  at::parallel_for(0, ntiles * mtiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t nt = t / mtiles, mt = t % mtiles;
      const int64_t ob0 = nt * NVMAX, nv = std::min<int64_t>(NVMAX, OCB - ob0);
      const int64_t m0 = mt * MR;
      switch (nv) {
        case 4: micro<4>(R, B, ob0, m0, e); break;
        case 3: micro<3>(R, B, ob0, m0, e); break;
        case 2: micro<2>(R, B, ob0, m0, e); break;
        default: micro<1>(R, B, ob0, m0, e); break;
      }
    }
  });
#endif
}

#if XNOR_AVX2
// P -> its nibble-split copy D (the AVX2 kernels' rows): word j of P becomes words 2j (its
// low nibbles, each times 16: its table's offset) and 2j + 1 (its high nibbles). The
// kernels read every receptive field from D directly, so this touches each input word
// once (an im2col copy would touch it KH * KW times).
void nibble_split(const uint64_t* P, uint64_t* D, int64_t words) {
  constexpr int64_t kBlock = 4096;
  at::parallel_for(0, ceil_div(words, kBlock), 1, [&](int64_t b0, int64_t b1) {
    const __m256i nib = _mm256_set1_epi64x((long long)NIB);
    const int64_t end = std::min(words, b1 * kBlock);
    int64_t j = b0 * kBlock;
    for (; j + 4 <= end; j += 4) {
      const __m256i v = _mm256_loadu_si256((const __m256i*)(P + j));
      const __m256i lo = _mm256_slli_epi64(_mm256_and_si256(v, nib), 4);
      const __m256i hi = _mm256_andnot_si256(nib, v);
      const __m256i w02 = _mm256_unpacklo_epi64(lo, hi);  // words 0 and 2
      const __m256i w13 = _mm256_unpackhi_epi64(lo, hi);  // words 1 and 3
      _mm256_storeu_si256((__m256i*)(D + 2 * j), _mm256_permute2x128_si256(w02, w13, 0x20));
      _mm256_storeu_si256((__m256i*)(D + 2 * j + 4), _mm256_permute2x128_si256(w02, w13, 0x31));
    }
    for (; j < end; ++j) {
      D[2 * j] = (P[j] & NIB) << 4;
      D[2 * j + 1] = P[j] & ~NIB;
    }
  });
}
#endif

}  // namespace

// Pack float weights [OC][C][KH][KW] to B[ceil(OC/FB)][KH*KW*Cw][WB] (int64): 8 filters
// per word position (AVX-512, scalar), or for AVX2 32 filters x 16 nibbles, one byte each.
torch::Tensor pack_weight(torch::Tensor w) {
  TORCH_CHECK(w.dim() == 4, "pack_weight: weight must be [OC, C, KH, KW]");
  w = w.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const int64_t OC = w.size(0), C = w.size(1), KH = w.size(2), KW = w.size(3);
  const int64_t Cw = ceil_div(C, 64), K = KH * KW * Cw, OCB = ceil_div(OC, 8);
  auto B = torch::zeros({OCB, K, 8}, torch::kLong);
  auto* b = reinterpret_cast<uint64_t*>(B.data_ptr<int64_t>());
  const float* src = w.data_ptr<float>();
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ky = 0; ky < KH; ++ky)
        for (int64_t kx = 0; kx < KW; ++kx)
          if (src[((o * C + c) * KH + ky) * KW + kx] < 0.0f) {
            const int64_t k = (ky * KW + kx) * Cw + c / 64;
            b[((o / 8) * K + k) * 8 + (o % 8)] |= (uint64_t)1 << (c % 64);
          }
  if (FB == 8) return B;
  // AVX2: step 16 k + q of filter o holds nibble q of its word k (nibbles 0-7 are the
  // low nibbles of bytes 0-7, 8-15 the high ones: the order nibble_split uses), placed by
  // b_offset; the tensor keeps the shape [blocks][K][WB], only the byte order differs.
  const int64_t nblk = ceil_div(OC, FB), KN = 16 * K;
  auto S = torch::zeros({nblk, K, WB}, torch::kLong);
  auto* sp = reinterpret_cast<uint8_t*>(S.data_ptr<int64_t>());
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t k = 0; k < K; ++k) {
      const uint64_t word = b[((o / 8) * K + k) * 8 + (o % 8)];
      for (int q = 0; q < 8; ++q) {
        sp[b_offset(o / FB, 16 * k + q, nblk, KN) + o % FB] = (uint8_t)((word >> (8 * q)) & 0xF);
        sp[b_offset(o / FB, 16 * k + q + 8, nblk, KN) + o % FB] =
            (uint8_t)((word >> (8 * q + 4)) & 0xF);
      }
    }
  return S;
}

namespace {

// x as float32 with every sign kept: another floating dtype is turned into +-1 in its own
// precision first (float64 -1e-300 would otherwise round to -0.0 and count as +1).
torch::Tensor float_keeping_signs(const torch::Tensor& x) {
  if (x.scalar_type() == torch::kFloat) return x;
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "xnor_conv2d: the input must be a "
              "floating-point tensor, got ", x.scalar_type());
  return torch::where(x < 0, -1.0, 1.0).to(torch::kFloat);
}

// Sign-pack x (either memory format) into P (zeroed, padded layout), thresholds optional.
void pack_into(torch::Tensor x, uint64_t* p, int64_t ph, int64_t pw, const Threshold& T) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cw = ceil_div(C, 64);
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous()) {
    pack_nhwc(x.data_ptr<float>(), p, N, C, H, W, ph, pw, Cw, T);
  } else {
    x = x.contiguous();
    pack_nchw(x.data_ptr<float>(), p, N, C, H, W, ph, pw, Cw, T);
  }
}

// Scratch memory reused across calls (per calling thread): the packed input and its
// nibble-split copy (AVX2) are temporaries, and fresh multi-megabyte allocations cost a
// page fault per 4 KiB on every call, which at batch 64 took as long as the binary GEMM
// itself.
struct Workspace {
  std::vector<uint64_t> P, split;
};
Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

// XNOR-popcount GEMM and epilogue on a packed input p[N][Hp][Wp][Cw] of C channels.
// What a fused layer writes: floats (a fresh tensor, or over its residual), or the
// packed input of the next binary layer (sign of that layer's BN, see Epilogue).
struct OutMode {
  bool inplace = false;            // write over the residual's storage
  const Threshold* next = nullptr; // bits out: the next layer's thresholds
  int64_t ph2 = 0, pw2 = 0;        // and its padding
};

torch::Tensor conv_on_packed(const uint64_t* p, int64_t N, int64_t Hp, int64_t Wp,
                             int64_t C, torch::Tensor wpacked, torch::Tensor alpha,
                             c10::optional<torch::Tensor> bias,
                             c10::optional<torch::Tensor> kscale,
                             c10::optional<torch::Tensor> residual, int64_t OC, int64_t KH,
                             int64_t KW, int64_t sh, int64_t sw, bool integer,
                             const OutMode& mode = OutMode{}) {
  const int64_t Cw = ceil_div(C, 64);
  const int64_t K = KH * KW * Cw, OCB = ceil_div(OC, FB);
  // the kernels load weight blocks with aligned instructions: any valid tensor (a view at
  // an odd offset included) is copied to an aligned one first
  if (reinterpret_cast<uintptr_t>(wpacked.data_ptr()) % 64 != 0) wpacked = wpacked.clone();
  TORCH_CHECK(wpacked.dim() == 3 && wpacked.scalar_type() == torch::kLong &&
                  wpacked.is_contiguous() && wpacked.size(0) == OCB &&
                  wpacked.size(1) == K && wpacked.size(2) == WB,
              "xnor_conv2d: packed weight does not match the input's channels/kernel");
  TORCH_CHECK(Hp >= KH && Wp >= KW, "xnor_conv2d: kernel larger than the padded input");
  const int64_t OH = (Hp - KH) / sh + 1, OW = (Wp - KW) / sw + 1;
  const int64_t M = N * OH * OW;

  ARows R{p, KH, KW * Cw, M, OH, OW, Hp, Wp, Cw, sh, sw};
#if XNOR_AVX2
  // the AVX2 kernels read the nibble-split copy of P
  std::vector<uint64_t>& D = workspace().split;
  const int64_t words = N * Hp * Wp * Cw;
  if ((int64_t)D.size() < words * NSPLIT) D.resize(words * NSPLIT);
  nibble_split(p, D.data(), words);
  R = ARows{D.data(), KH, KW * Cw * NSPLIT, M, OH, OW, Hp, Wp, Cw * NSPLIT, sh, sw};
#endif

  alpha = alpha.to(torch::kFloat).contiguous();
  torch::Tensor b, k, res;
  Epilogue e{};
  e.alpha = alpha.data_ptr<float>();
  e.OC = OC;
  e.nbits = C * KH * KW;
  if (bias.has_value() && bias->defined()) {
    b = bias->to(torch::kFloat).contiguous();
    e.bias = b.data_ptr<float>();
  }
  if (kscale.has_value() && kscale->defined()) {
    k = kscale->to(torch::kFloat).contiguous();
    TORCH_CHECK(k.numel() == M, "xnor_conv2d: K scale must have N*OH*OW values");
    e.kscale = k.data_ptr<float>();
  }
  if (residual.has_value() && residual->defined()) {
    TORCH_CHECK(!integer, "xnor_conv2d: a residual needs float output");
    TORCH_CHECK(residual->dim() == 4 && residual->size(0) == N && residual->size(1) == OC &&
                    residual->size(2) == OH && residual->size(3) == OW,
                "xnor_conv2d: the residual must have the output's shape");
    res = residual->to(torch::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
    e.residual = res.data_ptr<float>();
  }
  torch::Tensor out;
  if (mode.next != nullptr) {
    const int64_t cw2 = ceil_div(OC, 64);
    out = torch::zeros({N, OH + 2 * mode.ph2, OW + 2 * mode.pw2, cw2}, torch::kLong);
    e.out_bits = reinterpret_cast<uint8_t*>(out.data_ptr<int64_t>());
    e.nth = mode.next->th;
    e.nflip = mode.next->flip;
    e.OH = OH;
    e.OW = OW;
    e.ph2 = mode.ph2;
    e.pw2 = mode.pw2;
    e.bpp = cw2 * 8;
  } else if (integer) {
    out = torch::empty({N, OC, OH, OW},
                       torch::TensorOptions().dtype(torch::kInt)
                           .memory_format(at::MemoryFormat::ChannelsLast));
    e.out_int = out.data_ptr<int32_t>();
  } else if (mode.inplace) {
    TORCH_CHECK(e.residual != nullptr && res.is_same(*residual),
                "xnor_conv2d: in place needs a float32 channels_last residual");
    out = res;
    e.out = out.data_ptr<float>();
  } else {
    out = torch::empty({N, OC, OH, OW},
                       torch::TensorOptions().dtype(torch::kFloat)
                           .memory_format(at::MemoryFormat::ChannelsLast));
    e.out = out.data_ptr<float>();
  }
  binary_gemm(R, reinterpret_cast<const uint64_t*>(wpacked.data_ptr<int64_t>()), OCB, e);
  return out;
}

Threshold thresholds(const c10::optional<torch::Tensor>& th,
                     const c10::optional<torch::Tensor>& flip, int64_t C) {
  Threshold T;
  if (!th.has_value() || !th->defined()) return T;
  TORCH_CHECK(flip.has_value() && flip->defined(), "xnor_conv2d: thresholds need flips");
  TORCH_CHECK(th->scalar_type() == torch::kFloat && th->is_contiguous() && th->numel() == C &&
                  flip->scalar_type() == torch::kUInt8 && flip->is_contiguous() &&
                  flip->numel() == C,
              "xnor_conv2d: thresholds must be contiguous float32 [C], flips uint8 [C]");
  T.th = th->data_ptr<float>();
  T.flip = flip->data_ptr<uint8_t>();
  return T;
}

}  // namespace

// Sign-pack a float NCHW input (either memory format) with spatial padding in place.
torch::Tensor pack_input(torch::Tensor x, int64_t ph, int64_t pw) {
  TORCH_CHECK(x.dim() == 4, "pack_input: input must be [N, C, H, W]");
  TORCH_CHECK(x.device().is_cpu(), "pack_input: CPU tensors only");
  x = float_keeping_signs(x);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto P = torch::zeros({N, H + 2 * ph, W + 2 * pw, ceil_div(C, 64)}, torch::kLong);
  pack_into(x, reinterpret_cast<uint64_t*>(P.data_ptr<int64_t>()), ph, pw, Threshold{});
  return P;
}

// The binary convolution on an already packed (and padded) input P[N][Hp][Wp][Cw] of C
// channels: XNOR-popcount GEMM, scale by alpha [* K] [+ bias].
torch::Tensor xnor_conv2d_packed(torch::Tensor P, int64_t C, torch::Tensor wpacked,
                                 torch::Tensor alpha, c10::optional<torch::Tensor> bias,
                                 c10::optional<torch::Tensor> kscale, int64_t OC, int64_t KH,
                                 int64_t KW, int64_t sh, int64_t sw, bool integer) {
  TORCH_CHECK(P.dim() == 4 && P.scalar_type() == torch::kLong && P.is_contiguous(),
              "xnor_conv2d_packed: P must be a contiguous int64 [N, Hp, Wp, Cw] tensor");
  TORCH_CHECK(P.size(3) == ceil_div(C, 64), "xnor_conv2d_packed: C does not match P");
  return conv_on_packed(reinterpret_cast<const uint64_t*>(P.data_ptr<int64_t>()), P.size(0),
                        P.size(1), P.size(2), C, wpacked, alpha, bias, kscale, c10::nullopt,
                        OC, KH, KW, sh, sw, integer);
}

// The whole binary convolution: sign-pack the float input (padding with +1), then
// xnor_conv2d_packed. Returns float NCHW in channels_last storage, or the integer +-1
// dot products (int32) when `integer` is true.
torch::Tensor xnor_conv2d(torch::Tensor x, torch::Tensor wpacked, torch::Tensor alpha,
                          c10::optional<torch::Tensor> bias, c10::optional<torch::Tensor> kscale,
                          int64_t OC, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                          int64_t ph, int64_t pw, bool integer) {
  TORCH_CHECK(x.dim() == 4, "xnor_conv2d: input must be [N, C, H, W]");
  TORCH_CHECK(x.size(2) + 2 * ph >= KH && x.size(3) + 2 * pw >= KW,
              "xnor_conv2d: kernel larger than the padded input");
  return xnor_conv2d_packed(pack_input(x, ph, pw), x.size(1), wpacked, alpha, bias, kscale,
                            OC, KH, KW, sh, sw, integer);
}

// The fused inference layer: BatchNorm + sign folded into the packing (per-channel
// thresholds and flips, see Threshold), the binary conv, alpha [+ bias], a residual added
// in the epilogue, optionally written over the residual (`inplace`), or, given the next
// binary layer's thresholds, written straight as that layer's packed input (bits, with
// its padding). Packed input and its nibble-split copy live in a reused workspace. `x` is a float
// NCHW tensor, or (`C` > 0) an already packed input P[N][Hp][Wp][Cw] of C channels.
torch::Tensor xnor_conv2d_fused(torch::Tensor x, int64_t C, c10::optional<torch::Tensor> thresh,
                                c10::optional<torch::Tensor> flip, torch::Tensor wpacked,
                                torch::Tensor alpha, c10::optional<torch::Tensor> bias,
                                c10::optional<torch::Tensor> residual, bool inplace,
                                c10::optional<torch::Tensor> next_thresh,
                                c10::optional<torch::Tensor> next_flip, int64_t next_ph,
                                int64_t next_pw, int64_t OC, int64_t KH, int64_t KW,
                                int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  OutMode mode;
  mode.inplace = inplace;
  const Threshold next = thresholds(next_thresh, next_flip, OC);
  if (next.th != nullptr) {
    mode.next = &next;
    mode.ph2 = next_ph;
    mode.pw2 = next_pw;
  }
  if (C > 0) {  // already packed
    TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kLong && x.is_contiguous() &&
                    x.size(3) == ceil_div(C, 64),
                "xnor_conv2d: a packed input must be contiguous int64 [N, Hp, Wp, Cw]");
    return conv_on_packed(reinterpret_cast<const uint64_t*>(x.data_ptr<int64_t>()), x.size(0),
                          x.size(1), x.size(2), C, wpacked, alpha, bias, c10::nullopt,
                          residual, OC, KH, KW, sh, sw, false, mode);
  }
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu(), "xnor_conv2d: input must be CPU [N, C, H, W]");
  TORCH_CHECK(x.size(2) + 2 * ph >= KH && x.size(3) + 2 * pw >= KW,
              "xnor_conv2d: kernel larger than the padded input");
  const bool has_th = thresh.has_value() && thresh->defined();
  TORCH_CHECK(!has_th || x.scalar_type() == torch::kFloat,
              "xnor_conv2d: BatchNorm thresholds need a float32 input (got ", x.scalar_type(),
              "); take BN and the sign in the input's dtype first");
  x = float_keeping_signs(x);
  const int64_t N = x.size(0), Hp = x.size(2) + 2 * ph, Wp = x.size(3) + 2 * pw;
  C = x.size(1);
  const Threshold T = thresholds(thresh, flip, C);
  std::vector<uint64_t>& P = workspace().P;
  const int64_t words = N * Hp * Wp * ceil_div(C, 64);
  if ((int64_t)P.size() < words) P.resize(words);
  std::fill(P.begin(), P.begin() + words, 0);
  pack_into(x, P.data(), ph, pw, T);
  return conv_on_packed(P.data(), N, Hp, Wp, C, wpacked, alpha, bias, c10::nullopt, residual,
                        OC, KH, KW, sh, sw, false, mode);
}

// How many threads at::parallel_for really runs inside this extension (a build without
// OpenMP would report 1 whatever torch.set_num_threads says).
int64_t threads_used() {
  std::vector<int> seen(at::get_num_threads() + 1, 0);
  at::parallel_for(0, 1024, 1, [&](int64_t, int64_t) {
    const int t = at::get_thread_num();
    if (t >= 0 && t < (int)seen.size()) seen[t] = 1;
  });
  int64_t n = 0;
  for (int v : seen) n += v;
  return n;
}

std::string isa() { return XNOR_AVX512 ? "avx512-vpopcntdq" : (XNOR_AVX2 ? "avx2-pshufb" : "scalar-popcnt"); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack_weight", &pack_weight, "sign-pack conv weights for xnor_conv2d");
  m.def("pack_input", &pack_input, "sign-pack a float NCHW input with +1 padding");
  m.def("xnor_conv2d", &xnor_conv2d, "binary convolution: pack the float input, then XNOR");
  m.def("xnor_conv2d_packed", &xnor_conv2d_packed, "binary convolution on a packed input");
  m.def("xnor_conv2d_fused", &xnor_conv2d_fused,
        "BN thresholds folded into packing, binary conv, alpha, bias, residual");
  m.def("isa", &isa, "which popcount path this build uses");
  m.def("threads_used", &threads_used, "threads at::parallel_for uses in this extension");
}
