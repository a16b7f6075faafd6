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
#include <cstring>
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
// so the AVX-512 and scalar kernels read them from P directly (`nseg` = KH segments);
// the AVX2 kernel needs nibble-split rows and reads an im2col copy (one segment of K).
struct ARows {
  const uint64_t* base;  // P, or the im2col copy
  int64_t nseg, seg_len; // segments per row and their length (words); K = nseg * seg_len
  int64_t M, OH, OW, Hp, Wp, Cw, sh, sw;
  bool direct;
  // Row m's first segment; segment s starts seg_stride() words further.
  inline const uint64_t* row(int64_t m) const {
    m = std::min(m, M - 1);  // rows past M (a tile's padding) are computed and discarded
    if (!direct) return base + m * seg_len;
    const int64_t n = m / (OH * OW), q = m % (OH * OW), oh = q / OW, ow = q % OW;
    return base + ((n * Hp + oh * sh) * Wp + ow * sw) * Cw;
  }
  inline int64_t seg_stride() const { return direct ? Wp * Cw : seg_len; }
  // The MR rows from m0: one division, then steps along the output row.
  inline void rows(int64_t m0, const uint64_t** out) const {
    if (!direct) {
      for (int r = 0; r < MR; ++r) out[r] = row(m0 + r);
      return;
    }
    int64_t m = std::min(m0, M - 1);
    int64_t n = m / (OH * OW), q = m % (OH * OW), oh = q / OW, ow = q % OW;
    for (int r = 0; r < MR; ++r) {
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
  R.rows(m0, arow);
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
// kXorPop.t[a] = popcount(a ^ b) for b = 0..15, repeated in both 128-bit lanes: the
// VPSHUFB table for input nibble a. A rows store nibble * 16, and the table's address is
// tab + 2 * that byte, so the byte of A feeds the address directly.
struct XorPopTable {
  alignas(32) uint8_t t[16][32];
  constexpr XorPopTable() : t() {
    for (int a = 0; a < 16; ++a)
      for (int b = 0; b < 32; ++b) t[a][b] = (uint8_t)__builtin_popcount(a ^ (b & 15));
  }
};
alignas(64) constexpr XorPopTable kXorPop{};

// Byte counters (at most 63 steps x 4 = 252) are widened into 16-bit partial sums
// (unpacklo -> words 0-15, unpackhi -> words 16-31), which hold 256 flushes (64512);
// fold16 adds those into the int32 totals of the 32 filters in order.
inline void flush_bytes(__m256i acc, uint16_t* t16) {
  const __m256i z = _mm256_setzero_si256();
  __m256i* lo = (__m256i*)t16;
  __m256i* hi = (__m256i*)(t16 + 16);
  _mm256_store_si256(lo, _mm256_add_epi16(_mm256_load_si256(lo), _mm256_unpacklo_epi8(acc, z)));
  _mm256_store_si256(hi, _mm256_add_epi16(_mm256_load_si256(hi), _mm256_unpackhi_epi8(acc, z)));
}
inline void fold16(uint16_t* t16, int32_t* tot) {
  // unpacklo: lane 0 = filters 0-7, lane 1 = 16-23; unpackhi: 8-15 and 24-31
  for (int j = 0; j < 8; ++j) {
    tot[j] += t16[j];
    tot[16 + j] += t16[8 + j];
    tot[8 + j] += t16[16 + j];
    tot[24 + j] += t16[24 + j];
  }
  std::memset(t16, 0, 32 * sizeof(uint16_t));
}

// Epilogue of one row and one block of 32 filters (AVX2 kernels), vectorised; the
// same operations in the same order as store_row, which takes partial blocks.
inline void store_block32(const Epilogue& e, int64_t m, int64_t nb, const int32_t* tot) {
  const int64_t o0 = nb * 32;
  if (e.out_int || o0 + 32 > e.OC) {
    store_row(e, m, nb, tot);
    return;
  }
  const __m256i nbits = _mm256_set1_epi32((int32_t)e.nbits);
  const __m256 k = _mm256_set1_ps(e.kscale ? e.kscale[m] : 1.0f);
  for (int q = 0; q < 4; ++q) {
    const __m256i c = _mm256_load_si256((const __m256i*)(tot + 8 * q));
    __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(nbits, _mm256_slli_epi32(c, 1)));
    f = _mm256_mul_ps(f, _mm256_loadu_ps(e.alpha + o0 + 8 * q));
    if (e.kscale) f = _mm256_mul_ps(f, k);
    if (e.bias) f = _mm256_add_ps(f, _mm256_loadu_ps(e.bias + o0 + 8 * q));
    if (e.residual) f = _mm256_add_ps(f, _mm256_loadu_ps(e.residual + m * e.OC + o0 + 8 * q));
    if (e.out_bits) {
      const __m256 nt = _mm256_loadu_ps(e.nth + o0 + 8 * q);
      const uint32_t lt = _mm256_movemask_ps(_mm256_cmp_ps(f, nt, _CMP_LT_OQ));
      const uint32_t gt = _mm256_movemask_ps(_mm256_cmp_ps(f, nt, _CMP_GT_OQ));
      uint32_t fl = 0;
      for (int j = 0; j < 8; ++j) fl |= (uint32_t)(e.nflip[o0 + 8 * q + j] != 0) << j;
      e.bits_row(m)[(o0 + 8 * q) / 8] = (uint8_t)((lt & ~fl) | (gt & fl));
      continue;
    }
    _mm256_storeu_ps(e.out + m * e.OC + o0 + 8 * q, f);
  }
}

// A tile's 16-bit partial sums into its int32 totals, and its totals out (R rows of
// which the first min(R, M - m0) are real, V blocks of 32 filters; arrays sized S >= V).
template <int R, int V, int S>
inline void fold_tile(uint16_t (*t16)[S][32], int32_t (*tot)[S][32]) {
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) fold16(t16[r][v], tot[r][v]);
}
template <int R, int V, int S>
inline void store_tile(const Epilogue& e, int64_t m0, int64_t M, int64_t nb0,
                       int32_t (*tot)[S][32]) {
  const int rows = (int)std::min<int64_t>(R, M - m0);
  for (int r = 0; r < rows; ++r)
    for (int v = 0; v < V; ++v) store_block32(e, m0 + r, nb0 + v, tot[r][v]);
}

// One step for one row: load its table, VPSHUFB it by the B nibbles of NB filter blocks
// and add to that row's byte counters. Written in asm because GCC spills the twelve
// accumulators of the 6 x 2 tile (12 + 2 B + 2 temporaries = all 16 ymm registers).
#define XNOR_ROW2(ACC0, ACC1, ADDR)                \
  "movzbl " ADDR ", %k[i]\n\t"                     \
  "vmovdqa (%[tab],%q[i],2), %[t]\n\t"             \
  "vpshufb %[b0], %[t], %[u]\n\t"                  \
  "vpaddb %[u], %[" #ACC0 "], %[" #ACC0 "]\n\t"    \
  "vpshufb %[b1], %[t], %[t]\n\t"                  \
  "vpaddb %[t], %[" #ACC1 "], %[" #ACC1 "]\n\t"
#define XNOR_ROW1(ACC0, ADDR)                      \
  "movzbl " ADDR ", %k[i]\n\t"                     \
  "vmovdqa (%[tab],%q[i],2), %[t]\n\t"             \
  "vpshufb %[b0], %[t], %[t]\n\t"                  \
  "vpaddb %[t], %[" #ACC0 "], %[" #ACC0 "]\n\t"

// MR (= 6) rows x NB (1 or 2) blocks of 32 filters. A row: KN bytes, each an input nibble
// times 16; B block: KN x 32 filter nibbles. Rows 0-5 sit at ap + r * KN, addressed as
// (ap), (ap,KN), (ap,KN,2), (ap3), (ap,KN,4), (ap3,KN,2) with ap3 = ap + 3 KN.
template <int NB>
inline void micro_avx2(const uint8_t* A, int64_t KN, const uint8_t* B, int64_t nb0,
                       int64_t m0, int64_t M, const Epilogue& e) {
  static_assert(MR == 6 && (NB == 1 || NB == 2), "the asm step is written for 6 x {1,2}");
  const uint8_t* tab = &kXorPop.t[0][0];
  alignas(32) int32_t tot[MR][2][32] = {};
  alignas(32) uint16_t t16[MR][2][32] = {};
  const uint8_t* a0 = A + m0 * KN;
  const uint8_t* b0p = B + nb0 * KN * 32;
  const uint8_t* b1p = B + (nb0 + NB - 1) * KN * 32;
  for (int64_t k0 = 0, chunk = 1; k0 < KN; k0 += 63, ++chunk) {
    const int64_t k1 = std::min<int64_t>(KN, k0 + 63);
    __m256i c00 = _mm256_setzero_si256(), c10 = c00, c20 = c00, c30 = c00, c40 = c00,
            c50 = c00, c01 = c00, c11 = c00, c21 = c00, c31 = c00, c41 = c00, c51 = c00;
    __m256i t, u;
    uint64_t i;
    for (int64_t k = k0; k < k1; ++k) {
      const uint8_t* ap = a0 + k;
      const uint8_t* ap3 = a0 + 3 * KN + k;
      const __m256i b0 = _mm256_load_si256((const __m256i*)(b0p + k * 32));
      if constexpr (NB == 2) {
        const __m256i b1 = _mm256_load_si256((const __m256i*)(b1p + k * 32));
        asm volatile(XNOR_ROW2(c00, c01, "(%[ap])") XNOR_ROW2(c10, c11, "(%[ap],%[kn],1)")
                     XNOR_ROW2(c20, c21, "(%[ap],%[kn],2)")
                     : [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11),
                       [c20] "+x"(c20), [c21] "+x"(c21), [t] "=&x"(t), [u] "=&x"(u),
                       [i] "=&r"(i)
                     : [b0] "x"(b0), [b1] "x"(b1), [tab] "r"(tab), [ap] "r"(ap), [kn] "r"(KN)
                     : "memory");
        asm volatile(XNOR_ROW2(c30, c31, "(%[ap3])") XNOR_ROW2(c40, c41, "(%[ap],%[kn],4)")
                     XNOR_ROW2(c50, c51, "(%[ap3],%[kn],2)")
                     : [c30] "+x"(c30), [c31] "+x"(c31), [c40] "+x"(c40), [c41] "+x"(c41),
                       [c50] "+x"(c50), [c51] "+x"(c51), [t] "=&x"(t), [u] "=&x"(u),
                       [i] "=&r"(i)
                     : [b0] "x"(b0), [b1] "x"(b1), [tab] "r"(tab), [ap] "r"(ap),
                       [ap3] "r"(ap3), [kn] "r"(KN)
                     : "memory");
      } else {
        asm volatile(XNOR_ROW1(c00, "(%[ap])") XNOR_ROW1(c10, "(%[ap],%[kn],1)")
                     XNOR_ROW1(c20, "(%[ap],%[kn],2)") XNOR_ROW1(c30, "(%[ap3])")
                     XNOR_ROW1(c40, "(%[ap],%[kn],4)") XNOR_ROW1(c50, "(%[ap3],%[kn],2)")
                     : [c00] "+x"(c00), [c10] "+x"(c10), [c20] "+x"(c20), [c30] "+x"(c30),
                       [c40] "+x"(c40), [c50] "+x"(c50), [t] "=&x"(t), [i] "=&r"(i)
                     : [b0] "x"(b0), [tab] "r"(tab), [ap] "r"(ap), [ap3] "r"(ap3),
                       [kn] "r"(KN)
                     : "memory");
      }
    }
    const __m256i col0[MR] = {c00, c10, c20, c30, c40, c50};
    const __m256i col1[MR] = {c01, c11, c21, c31, c41, c51};
    for (int r = 0; r < MR; ++r) {
      flush_bytes(col0[r], t16[r][0]);
      if constexpr (NB == 2) flush_bytes(col1[r], t16[r][1]);
    }
    if (chunk % 256 == 0 || k1 == KN) fold_tile<MR, NB, 2>(t16, tot);
  }
  store_tile<MR, NB, 2>(e, m0, M, nb0, tot);
}

// The wide tile: 3 rows x 4 blocks of 32 filters. Per row and step one table load feeds
// four VPSHUFB (two blocks' nibbles in registers, two as memory operands), so the
// scalar index load and the table load are paid once per four shuffles instead of two:
// 10 instructions per row-step for 8 vector operations (the 6 x 2 tile: 6 for 4), which
// keeps the front end under its 6 per cycle at the shuffle units' rate. 12 accumulators
// + 2 B + 2 temporaries use all 16 ymm registers.
#define XNOR_ROW4(A0, A1, A2, A3, ADDR)            \
  "movzbl " ADDR ", %k[i]\n\t"                     \
  "vmovdqa (%[tab],%q[i],2), %[t]\n\t"             \
  "vpshufb %[b0], %[t], %[u]\n\t"                  \
  "vpaddb %[u], %[" #A0 "], %[" #A0 "]\n\t"        \
  "vpshufb %[b1], %[t], %[u]\n\t"                  \
  "vpaddb %[u], %[" #A1 "], %[" #A1 "]\n\t"        \
  "vpshufb %[b2], %[t], %[u]\n\t"                  \
  "vpaddb %[u], %[" #A2 "], %[" #A2 "]\n\t"        \
  "vpshufb %[b3], %[t], %[t]\n\t"                  \
  "vpaddb %[t], %[" #A3 "], %[" #A3 "]\n\t"
constexpr int WMR = 3, WNB = 4;
inline void micro_avx2_wide(const uint8_t* A, int64_t KN, const uint8_t* B, int64_t nb0,
                            int64_t m0, int64_t M, const Epilogue& e) {
  const uint8_t* tab = &kXorPop.t[0][0];
  alignas(32) int32_t tot[WMR][WNB][32] = {};
  alignas(32) uint16_t t16[WMR][WNB][32] = {};
  const uint8_t* a0 = A + m0 * KN;
  const uint8_t* bp[WNB];
  for (int v = 0; v < WNB; ++v) bp[v] = B + (nb0 + v) * KN * 32;
  for (int64_t k0 = 0, chunk = 1; k0 < KN; k0 += 63, ++chunk) {
    const int64_t k1 = std::min<int64_t>(KN, k0 + 63);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c03 = c00, c10 = c00,
            c11 = c00, c12 = c00, c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00;
    __m256i t, u;
    uint64_t i;
    const uint8_t* ap = a0 + k0;
    const uint8_t *q0 = bp[0] + k0 * 32, *q1 = bp[1] + k0 * 32, *q2 = bp[2] + k0 * 32,
                  *q3 = bp[3] + k0 * 32;
    for (int64_t k = k0; k < k1; ++k, ++ap, q0 += 32, q1 += 32, q2 += 32, q3 += 32) {
      const __m256i b0 = _mm256_load_si256((const __m256i*)q0);
      const __m256i b1 = _mm256_load_si256((const __m256i*)q1);
#define XNOR_WIDE_ROW(A0, A1, A2, A3, ADDR)                                              \
  asm volatile(XNOR_ROW4(A0, A1, A2, A3, ADDR)                                             \
               : [A0] "+x"(A0), [A1] "+x"(A1), [A2] "+x"(A2), [A3] "+x"(A3), [t] "=&x"(t), \
                 [u] "=&x"(u), [i] "=&r"(i)                                                \
               : [b0] "x"(b0), [b1] "x"(b1), [b2] "m"(*(const __m256i*)q2),                \
                 [b3] "m"(*(const __m256i*)q3), [tab] "r"(tab), [ap] "r"(ap), [kn] "r"(KN)  \
               : "memory")
      XNOR_WIDE_ROW(c00, c01, c02, c03, "(%[ap])");
      XNOR_WIDE_ROW(c10, c11, c12, c13, "(%[ap],%[kn],1)");
      XNOR_WIDE_ROW(c20, c21, c22, c23, "(%[ap],%[kn],2)");
    }
#undef XNOR_WIDE_ROW
    const __m256i acc[WMR][WNB] = {{c00, c01, c02, c03}, {c10, c11, c12, c13},
                                   {c20, c21, c22, c23}};
    for (int r = 0; r < WMR; ++r)
      for (int v = 0; v < WNB; ++v) flush_bytes(acc[r][v], t16[r][v]);
    if (chunk % 256 == 0 || k1 == KN) fold_tile<WMR, WNB, WNB>(t16, tot);
  }
  store_tile<WMR, WNB, WNB>(e, m0, M, nb0, tot);
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
  micro_avx2<NV>(reinterpret_cast<const uint8_t*>(R.base), R.seg_len * 16,
                 reinterpret_cast<const uint8_t*>(B), ob0, m0, R.M, e);
#else
  micro_portable<NV>(R, B, ob0, m0, e);
#endif
}

void binary_gemm(const ARows& R, const uint64_t* B, int64_t OCB, const Epilogue& e) {
  const int64_t M = R.M;
#if XNOR_AVX2
  // full groups of 4 filter blocks: the wide 3 x 4 tile; the rest: 6 x {2, 1} tiles
  const int64_t wide = OCB / WNB, wtiles = ceil_div(M, WMR);
  if (wide > 0) {
    at::parallel_for(0, wide * wtiles, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        micro_avx2_wide(reinterpret_cast<const uint8_t*>(R.base), R.seg_len * 16,
                        reinterpret_cast<const uint8_t*>(B), (t / wtiles) * WNB,
                        (t % wtiles) * WMR, M, e);
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
// P[N][Hp][Wp][Cw] -> A[Mpad][K], tap-major rows; rows past M stay zero.
void im2col(const uint64_t* P, uint64_t* A, int64_t N, int64_t Hp, int64_t Wp, int64_t Cw,
            int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t OH, int64_t OW) {
  const int64_t K = KH * KW * Cw;
  at::parallel_for(0, N * OH, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / OH, oh = r % OH;
      for (int64_t ow = 0; ow < OW; ++ow) {
        uint64_t* dst = A + ((n * OH + oh) * OW + ow) * K * NSPLIT;
        for (int64_t ky = 0; ky < KH; ++ky) {
          const uint64_t* src = P + ((n * Hp + oh * sh + ky) * Wp + ow * sw) * Cw;
          uint64_t* d = dst + ky * KW * Cw * NSPLIT;
          if (NSPLIT == 1) {
            std::memcpy(d, src, sizeof(uint64_t) * KW * Cw);
          } else {
            for (int64_t j = 0; j < KW * Cw; ++j) {
              d[2 * j] = (src[j] & NIB) << 4;   // nibble * 16: its table's offset
              d[2 * j + 1] = src[j] & ~NIB;
            }
          }
        }
      }
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
  // AVX2: byte [blk][k][q][i] = nibble q of word k of filter blk*32+i; nibbles 0-7 are
  // the low nibbles of bytes 0-7, nibbles 8-15 the high ones (the order im2col uses).
  auto S = torch::zeros({ceil_div(OC, FB), K, WB}, torch::kLong);
  auto* sp = reinterpret_cast<uint8_t*>(S.data_ptr<int64_t>());
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t k = 0; k < K; ++k) {
      const uint64_t word = b[((o / 8) * K + k) * 8 + (o % 8)];
      uint8_t* dst = sp + ((o / FB) * K + k) * 16 * FB + (o % FB);
      for (int q = 0; q < 8; ++q) {
        dst[q * FB] = (uint8_t)((word >> (8 * q)) & 0xF);
        dst[(q + 8) * FB] = (uint8_t)((word >> (8 * q + 4)) & 0xF);
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

// Scratch memory reused across calls (per calling thread): the packed input and the
// im2col rows are temporaries, and fresh multi-megabyte allocations cost a page fault
// per 4 KiB on every call, which at batch 64 took as long as the binary GEMM itself.
struct Workspace {
  std::vector<uint64_t> P, A;
};
Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

// im2col, XNOR-popcount GEMM, epilogue, on a packed input p[N][Hp][Wp][Cw] of C channels.
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
  const int64_t M = N * OH * OW, Mpad = ceil_div(M, MR) * MR;

  ARows R{p, KH, KW * Cw, M, OH, OW, Hp, Wp, Cw, sh, sw, true};
#if XNOR_AVX2
  // the AVX2 kernel reads nibble-split im2col rows; im2col writes every word of rows < M,
  // only the padding rows need zeros
  std::vector<uint64_t>& A = workspace().A;
  if ((int64_t)A.size() < Mpad * K * NSPLIT) A.resize(Mpad * K * NSPLIT);
  if (Mpad > M) std::fill(A.begin() + M * K * NSPLIT, A.begin() + Mpad * K * NSPLIT, 0);
  im2col(p, A.data(), N, Hp, Wp, Cw, KH, KW, sh, sw, OH, OW);
  R = ARows{A.data(), 1, K, M, OH, OW, Hp, Wp, Cw, sh, sw, false};
#else
  (void)Mpad;
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
// channels: im2col, XNOR-popcount GEMM, scale by alpha [* K] [+ bias].
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
// its padding). Packed input and im2col rows live in a reused workspace. `x` is a float
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
