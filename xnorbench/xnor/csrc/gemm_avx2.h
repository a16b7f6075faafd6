// The AVX2 micro-kernels: no vector popcount, so counts come from 16-entry nibble tables
// (VPSHUFB), 32 filters per register; and the nibble-split copy of the packed input they
// read (nibble_split).
#pragma once

#include "gemm_common.h"

namespace {

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
        if (e.residual) {
          __m256 r = _mm256_loadu_ps(e.residual + m * e.OC + o0 + 8 * q);
          if (e.residual_relu) r = _mm256_max_ps(r, _mm256_setzero_ps());
          f = _mm256_add_ps(f, r);
        }
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
