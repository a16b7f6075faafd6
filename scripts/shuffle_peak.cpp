// How fast can this CPU count bits with VPSHUFB? The ceiling of the AVX2 XNOR kernel.
//
// The AVX2 kernel spends two vector instructions per 128 bit pairs (VPSHUFB of a
// popcount(a XOR b) table, VPADDB into a byte counter); the previous nibble-split kernel
// spent three (VPXOR, VPSHUFB, VPADDB). This program times both instruction mixes on
// independent registers (no loads, no dependencies between pairs), plus a chain of
// dependent scalar adds to estimate the clock, and prints bit pairs per second: the
// most any popcount GEMM built from them can reach on this core.
//
//   g++ -O2 -march=native -o /tmp/shuffle_peak scripts/shuffle_peak.cpp && /tmp/shuffle_peak
// (-march=native matters: with generic tuning the loop runs about 30 % slower here).
#include <immintrin.h>

#include <chrono>
#include <cstdio>

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

#define PAIR(R, T) "vpshufb %[b],%[t],%%" T "\n\tvpaddb %%" T ",%[" R "],%[" R "]\n\t"
#define TRIPLE(R, T) \
  "vpxor %[b],%[t],%%" T "\n\tvpshufb %%" T ",%[t],%%" T "\n\tvpaddb %%" T ",%[" R "],%[" R "]\n\t"
#define EIGHT(M) M("a0", "ymm14") M("a1", "ymm15") M("a2", "ymm14") M("a3", "ymm15") \
                 M("a4", "ymm14") M("a5", "ymm15") M("a6", "ymm14") M("a7", "ymm15")

template <int Kind>
double groups_per_second(long iters) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
          a7 = a0;
  const __m256i t = _mm256_set1_epi8(3), b = _mm256_set1_epi8(5);
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < iters; ++i) {
    if constexpr (Kind == 0) {
      asm volatile(EIGHT(PAIR)
                   : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3),
                     [a4] "+x"(a4), [a5] "+x"(a5), [a6] "+x"(a6), [a7] "+x"(a7)
                   : [t] "x"(t), [b] "x"(b)
                   : "xmm14", "xmm15");
    } else {
      asm volatile(EIGHT(TRIPLE)
                   : [a0] "+x"(a0), [a1] "+x"(a1), [a2] "+x"(a2), [a3] "+x"(a3),
                     [a4] "+x"(a4), [a5] "+x"(a5), [a6] "+x"(a6), [a7] "+x"(a7)
                   : [t] "x"(t), [b] "x"(b)
                   : "xmm14", "xmm15");
    }
  }
  return 8.0 * iters / seconds_since(t0);
}
}  // namespace

int main() {
  for (int rep = 0; rep < 3; ++rep) {
    long x = 0;
    const long n = 500000000;
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i)
      asm volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    const double ghz = 4.0 * n / seconds_since(t0) / 1e9;
    const double tab = groups_per_second<0>(200000000);
    const double xr = groups_per_second<1>(200000000);
    std::printf("clock ~%.2f GHz | VPSHUFB+VPADDB: %.0f G bit pairs/s (%.2f per cycle) | "
                "VPXOR+VPSHUFB+VPADDB: %.0f G bit pairs/s (%.2f per cycle)\n",
                ghz, tab * 128 / 1e9, tab / (ghz * 1e9), xr * 128 / 1e9, xr / (ghz * 1e9));
  }
  return 0;
}
