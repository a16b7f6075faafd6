// Which ISA this build compiles the XNOR kernels for (chosen by -march), and the packed
// weight layout and tile sizes that follow from it. Included by xnor_conv.cpp only: every
// GEMM header is read there, so their inline code is compiled (and inlined) exactly as
// one file would be.
#pragma once

#include <cstdint>

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

}  // namespace
