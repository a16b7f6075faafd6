// What every GEMM path shares: where the rows of A come from (ARows) and what happens to
// a tile's counts (Epilogue: alpha, bias, BN-sign outputs, residual; store_row).
#pragma once

#include <algorithm>

#include "layout.h"

namespace {

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
  bool residual_relu;    // add max(residual, 0): a ReLU on the shortcut, never stored
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
    if (e.residual) {
      const float r = e.residual[m * e.OC + o0 + l];
      v += e.residual_relu ? std::max(r, 0.0f) : r;
    }
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

}  // namespace
