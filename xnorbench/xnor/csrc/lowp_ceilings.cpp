// lowp_ceilings.cpp: the int8 and bf16 multiply-add peaks of this core, per unit.
//
// The units a deployer's int8 and bf16 engines use (oneDNN picks the widest the CPU
// has), each in a register-only loop of independent accumulators, so it runs at the
// unit's issue rate, which no real kernel exceeds:
//
//   int8 "avx2"         VPMADDUBSW + VPMADDWD + VPADDD on ymm: 32 u8*s8 MACs per triple
//                       (what an int8 engine runs on a CPU without VNNI)
//   int8 "avx_vnni"     VEX VPDPBUSD on ymm: 32 MACs per instruction
//   int8 "avx512_vnni"  VPDPBUSD on zmm: 64 MACs per instruction
//   int8 "amx_int8"     TDPBUSD on 16x64 tiles: 16384 MACs per instruction
//   bf16 "avx512_bf16"  VDPBF16PS on zmm: 32 MACs per instruction
//   bf16 "amx_bf16"     TDPBF16PS on 16x32 tiles: 8192 MACs per instruction
//
// Each function carries its own target attribute, so every build (portable included)
// compiles all of them; which may run is the caller's to decide from the CPU's flags
// (xnorbench.measure.cpu_units), and the caller runs them in a child process, so a CPU
// or kernel that refuses an instruction cannot take the measuring process down. AMX
// needs the kernel's permission for the tile state first (arch_prctl), asked here.
// Returns multiply-adds per second on the calling thread, or -1 for an unknown unit,
// -2 where the kernel refuses AMX tiles.

#include "tensor_api.h"

#include <chrono>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace xnor_lowp {

static double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

#if defined(__x86_64__)
// A register-only loop of one target: ZERO clears the operand registers, BODY is one
// iteration of independent multiply-adds worth MACS; the clobbered registers follow.
#define PEAK_LOOP(NAME, TARGET, ZERO, BODY, MACS, ...)                          \
  __attribute__((target(TARGET))) static double NAME(int64_t iters) {           \
    int64_t n = iters;                                                          \
    const auto t0 = std::chrono::steady_clock::now();                           \
    asm volatile(ZERO "1:\n\t" BODY "dec %[n]\n\tjnz 1b\n\t"                    \
                 : [n] "+r"(n)                                                  \
                 :                                                              \
                 : __VA_ARGS__, "cc");                                          \
    return double(MACS) * iters / since(t0);                                    \
  }

#define YZERO "vpxor %%ymm14, %%ymm14, %%ymm14\n\tvpxor %%ymm15, %%ymm15, %%ymm15\n\t"
#define ZZERO "vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31\n\t"
#define Y(OP, A, B, D) OP " %%ymm" #A ", %%ymm" #B ", %%ymm" #D "\n\t"
#define Z(OP, D) OP " %%zmm31, %%zmm30, %%zmm" #D "\n\t"
#define Z12(OP) Z(OP, 0) Z(OP, 1) Z(OP, 2) Z(OP, 3) Z(OP, 4) Z(OP, 5) Z(OP, 6) Z(OP, 7) \
  Z(OP, 8) Z(OP, 9) Z(OP, 10) Z(OP, 11)
#define ZREGS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
  "xmm9", "xmm10", "xmm11", "xmm30", "xmm31"

// AVX2: 32 u8*s8 products summed to int16 pairs, widened to int32, accumulated
#define AVX2_CHAIN(T, ACC) Y("vpmaddubsw", 15, 14, T) Y("vpmaddwd", 15, T, T) \
  Y("vpaddd", T, ACC, ACC)
PEAK_LOOP(avx2_int8, "avx2", YZERO,
          AVX2_CHAIN(0, 8) AVX2_CHAIN(1, 9) AVX2_CHAIN(2, 10) AVX2_CHAIN(3, 11), 4 * 32,
          "xmm0", "xmm1", "xmm2", "xmm3", "xmm8", "xmm9", "xmm10", "xmm11", "xmm14", "xmm15")

#define VEX_DP(D) Y("%{vex%} vpdpbusd", 15, 14, D)
PEAK_LOOP(avx_vnni_int8, "avxvnni", YZERO,
          VEX_DP(0) VEX_DP(1) VEX_DP(2) VEX_DP(3) VEX_DP(4) VEX_DP(5) VEX_DP(6) VEX_DP(7),
          8 * 32, "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm14",
          "xmm15")
PEAK_LOOP(avx512_vnni_int8, "avx512f,avx512vnni", ZZERO, Z12("vpdpbusd"), 12 * 64, ZREGS)
PEAK_LOOP(avx512_bf16, "avx512f,avx512bf16", ZZERO, Z12("vdpbf16ps"), 12 * 32, ZREGS)

// AMX: 8 tiles of 16 rows x 64 bytes; tmm0-3 accumulate tmm4/5 (A) times tmm6/7 (B)
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

static bool amx_permitted() {
  const long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
  return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

static double amx(int64_t iters, bool bf16) {
  if (!amx_permitted()) return -2;
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  alignas(64) static uint8_t zeros[16 * 64];
  std::memset(zeros, 0, sizeof(zeros));
  const int64_t stride = 64;
  asm volatile(
      "ldtilecfg (%[cfg])\n\t"
      "tilezero %%tmm0\n\ttilezero %%tmm1\n\ttilezero %%tmm2\n\ttilezero %%tmm3\n\t"
      "tileloadd (%[a],%[s],1), %%tmm4\n\ttileloadd (%[a],%[s],1), %%tmm5\n\t"
      "tileloadd (%[a],%[s],1), %%tmm6\n\ttileloadd (%[a],%[s],1), %%tmm7\n\t"
      :
      : [cfg] "r"(&cfg), [a] "r"(zeros), [s] "r"(stride)
      : "memory");
  int64_t n = iters;
  const auto t0 = std::chrono::steady_clock::now();
  if (bf16) {
    asm volatile(
        "1:\n\t"
        "tdpbf16ps %%tmm6, %%tmm4, %%tmm0\n\ttdpbf16ps %%tmm7, %%tmm4, %%tmm1\n\t"
        "tdpbf16ps %%tmm6, %%tmm5, %%tmm2\n\ttdpbf16ps %%tmm7, %%tmm5, %%tmm3\n\t"
        "dec %[n]\n\tjnz 1b\n\t"
        : [n] "+r"(n)::"cc");
  } else {
    asm volatile(
        "1:\n\t"
        "tdpbusd %%tmm6, %%tmm4, %%tmm0\n\ttdpbusd %%tmm7, %%tmm4, %%tmm1\n\t"
        "tdpbusd %%tmm6, %%tmm5, %%tmm2\n\ttdpbusd %%tmm7, %%tmm5, %%tmm3\n\t"
        "dec %[n]\n\tjnz 1b\n\t"
        : [n] "+r"(n)::"cc");
  }
  const double s = since(t0);
  asm volatile("tilerelease" ::: "memory");
  return 4.0 * (bf16 ? 16 * 16 * 32 : 16 * 16 * 64) * iters / s;
}
#endif

double lowp_peak(c10::string_view unit, int64_t iters) {
#if defined(__x86_64__)
  if (unit == "avx2") return avx2_int8(iters);
  if (unit == "avx_vnni") return avx_vnni_int8(iters);
  if (unit == "avx512_vnni") return avx512_vnni_int8(iters);
  if (unit == "amx_int8") return amx(iters, false);
  if (unit == "avx512_bf16") return avx512_bf16(iters);
  if (unit == "amx_bf16") return amx(iters, true);
#endif
  (void)iters;
  return -1;
}

}  // namespace xnor_lowp
