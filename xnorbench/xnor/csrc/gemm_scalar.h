// The portable micro-kernel: scalar POPCNT over 64-bit words, 8 filters per word position
// (the path of the portable build and of CPUs without AVX2).
#pragma once

#include "gemm_common.h"

namespace {

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

}  // namespace
