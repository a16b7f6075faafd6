// Ceilings: the most this core can do, measured with register-only loops.
//
// A speedup of a binary conv over a float conv is bounded by the ratio of two peaks on
// the same core: binary multiply-accumulates per second (XOR + popcount + add on full
// registers) and fp32 FLOP/s (fused multiply-add on full registers). Both loops keep
// several independent accumulators in registers (no loads, no dependent chains), so
// they run at the issue width of the execution units, which is what a perfect kernel
// could reach and no real one exceeds. Each returns operations per second on the
// calling thread (one core).
//
//   fma_peak(iters)         fp32 FLOP/s (2 per lane per FMA), widest vectors of this build
//   binary_peak(iters)      binary MAC/s of this build's popcount path:
//                             AVX-512: VPXORQ + VPOPCNTQ + VPADDQ, 512 MACs per triple
//                             AVX2:    VPSHUFB + VPADDB of the kernel's nibble tables,
//                                      128 MACs per pair (no XOR: it is in the table)
//                             scalar:  XOR + POPCNT + ADD on 64-bit words, 64 MACs
//   binary_peak_isa(), fma_isa(): which instruction mix each measured
//
// asm volatile on the accumulators keeps the compiler from folding the loops away.

#include "tensor_api.h"

#include <chrono>
#include <cstdint>
#include <string>

#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
#define CEIL_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__)
#define CEIL_AVX512 0
#define CEIL_AVX2 1
#include <immintrin.h>
#endif
#ifndef CEIL_AVX2
#define CEIL_AVX2 0
#endif

namespace xnor_ceilings {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// GCC vector extension at this build's widest float register, kept in registers.
#if defined(__AVX512F__)
constexpr int LANES = 16;
#define VREG "+v"
#elif defined(__AVX__)
constexpr int LANES = 8;
#define VREG "+x"
#else
constexpr int LANES = 4;
#define VREG "+x"
#endif
typedef float vf __attribute__((vector_size(LANES * 4)));

double fma_peak(int64_t iters) {
  vf a0{}, a1{}, a2{}, a3{}, a4{}, a5{}, a6{}, a7{}, a8{}, a9{}, a10{}, a11{};
  vf m, c;
  for (int i = 0; i < LANES; ++i) {
    m[i] = 0.999999f;
    c[i] = 1e-7f;
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) {
    a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
    a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
    a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;
    asm volatile("" : VREG(a0), VREG(a1), VREG(a2), VREG(a3), VREG(a4), VREG(a5));
    asm volatile("" : VREG(a6), VREG(a7), VREG(a8), VREG(a9), VREG(a10), VREG(a11));
  }
  const double s = since(t0);
  volatile float sink = a0[0] + a1[0] + a2[0] + a3[0] + a4[0] + a5[0] + a6[0] + a7[0] +
                        a8[0] + a9[0] + a10[0] + a11[0];
  (void)sink;
  return 12.0 * LANES * 2 * iters / s;
}

std::string fma_isa() {
#if defined(__FMA__)
  return std::to_string(LANES * 32) + "-bit fma";
#else
  return std::to_string(LANES * 32) + "-bit mul+add (this build has no FMA)";
#endif
}

#if CEIL_AVX512
#define XPA(R) "vpxorq %[b], %[" R "x], %%zmm30\n\tvpopcntq %%zmm30, %%zmm30\n\t" \
               "vpaddq %%zmm30, %[" R "], %[" R "]\n\t"
double binary_peak(int64_t iters) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  __m512i x0 = _mm512_set1_epi64(0x5555), x1 = _mm512_set1_epi64(0x3333), x2 = x0, x3 = x1,
          x4 = x0, x5 = x1;
  const __m512i b = _mm512_set1_epi64(0x0F0F);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(XPA("a0") XPA("a1") XPA("a2") XPA("a3") XPA("a4") XPA("a5")
                 : [a0] "+v"(a0), [a1] "+v"(a1), [a2] "+v"(a2), [a3] "+v"(a3), [a4] "+v"(a4),
                   [a5] "+v"(a5)
                 : [b] "v"(b), [a0x] "v"(x0), [a1x] "v"(x1), [a2x] "v"(x2), [a3x] "v"(x3),
                   [a4x] "v"(x4), [a5x] "v"(x5)
                 : "xmm30");
  }
  const double s = since(t0);
  return 6.0 * 512 * iters / s;
}
std::string binary_peak_isa() { return "avx512-vpopcntdq: vpxorq+vpopcntq+vpaddq"; }
#elif CEIL_AVX2
#define PAIR(R, T) "vpshufb %[b],%[t],%%" T "\n\tvpaddb %%" T ",%[" R "],%[" R "]\n\t"
double binary_peak(int64_t iters) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
          a6 = a0, a7 = a0;
  const __m256i t = _mm256_set1_epi8(3), b = _mm256_set1_epi8(5);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) {
    asm volatile(PAIR("a0", "ymm14") PAIR("a1", "ymm15") PAIR("a2", "ymm14")
                 PAIR("a3", "ymm15") PAIR("a4", "ymm14") PAIR("a5", "ymm15")
                 PAIR("a6", "ymm14") PAIR("a7", "ymm15")
                 : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3),
                   [a4] "+x"(a4), [a5] "+x"(a5), [a6] "+x"(a6), [a7] "+x"(a7)
                 : [t] "x"(t), [b] "x"(b)
                 : "xmm14", "xmm15");
  }
  const double s = since(t0);
  return 8.0 * 128 * iters / s;
}
std::string binary_peak_isa() { return "avx2-pshufb: vpshufb+vpaddb"; }
#else
double binary_peak(int64_t iters) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  uint64_t x0 = 0x5555, x1 = 0x3333, x2 = 0x0F0F, x3 = 0x00FF;
  const uint64_t b = 0x1234;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) {
    a0 += __builtin_popcountll(x0 ^ b);
    a1 += __builtin_popcountll(x1 ^ b);
    a2 += __builtin_popcountll(x2 ^ b);
    a3 += __builtin_popcountll(x3 ^ b);
    asm volatile("" : "+r"(a0), "+r"(a1), "+r"(a2), "+r"(a3), "+r"(x0), "+r"(x1), "+r"(x2),
                 "+r"(x3));
  }
  const double s = since(t0);
  return 4.0 * 64 * iters / s;
}
std::string binary_peak_isa() { return "scalar-popcnt: xor+popcnt+add"; }
#endif

}  // namespace xnor_ceilings
