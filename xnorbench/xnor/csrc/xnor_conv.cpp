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

//
// This file is the GEMM driver and the tensor-level API; the paths it dispatches to are
// in the headers: layout.h (ISA, weight layout), pack_input.h, gemm_common.h,
// gemm_avx512.h, gemm_avx2.h, gemm_scalar.h. Python reaches it through bindings.cpp.

#include "tensor_api.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "layout.h"
#include "pack_input.h"
#include "gemm_common.h"
#include "gemm_avx512.h"
#include "gemm_avx2.h"
#include "gemm_scalar.h"
#include "xnor_ops.h"

namespace {

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

}  // namespace


// Pack float weights [OC][C][KH][KW] to B[ceil(OC/FB)][KH*KW*Cw][WB] (int64): 8 filters
// per word position (AVX-512, scalar), or for AVX2 32 filters x 16 nibbles, one byte each.
at::Tensor pack_weight(at::Tensor w) {
  TORCH_CHECK(w.dim() == 4, "pack_weight: weight must be [OC, C, KH, KW]");
  w = w.detach().to(at::kCPU, at::kFloat).contiguous();
  const int64_t OC = w.size(0), C = w.size(1), KH = w.size(2), KW = w.size(3);
  const int64_t Cw = ceil_div(C, 64), K = KH * KW * Cw, OCB = ceil_div(OC, 8);
  auto B = at::zeros({OCB, K, 8}, at::kLong);
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
  auto S = at::zeros({nblk, K, WB}, at::kLong);
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

// Where a binary layer's time goes, summed over calls while profiling is on
// (kernel_profile_start / _stop): sign-packing the input (with the AVX2 path's
// nibble-split copy), the XNOR-popcount GEMM with its epilogue, and the whole call
// (allocation and checks included). Off, each timer costs one relaxed load.
struct KernelProfile {
  std::atomic<bool> on{false};
  std::atomic<int64_t> calls{0}, total{0}, pack{0}, gemm{0};
};
KernelProfile& kprof() {
  static KernelProfile p;
  return p;
}

class Timed {
 public:
  explicit Timed(std::atomic<int64_t>& into)
      : into_(kprof().on.load(std::memory_order_relaxed) ? &into : nullptr),
        t0_(into_ ? now() : 0) {}
  ~Timed() {
    if (into_) into_->fetch_add(now() - t0_, std::memory_order_relaxed);
  }
  Timed(const Timed&) = delete;
  Timed& operator=(const Timed&) = delete;

 private:
  static int64_t now() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  std::atomic<int64_t>* into_;
  int64_t t0_;
};

// One public entry point's call: counted, and its whole time summed. Also a profiler
// scope ("xnor::layer"), so torch.profiler files the ATen operators a call runs inside
// (allocation, layout copies) under the binary layer, not beside it.
struct TimedCall : Timed {
  TimedCall() : Timed(kprof().total), scope_(at::RecordScope::FUNCTION) {
    if (kprof().on.load(std::memory_order_relaxed)) kprof().calls.fetch_add(1);
    if (scope_.isActive()) scope_.before("xnor::layer");
  }

 private:
  at::RecordFunction scope_;
};


// x as float32 with every sign kept: another floating dtype is turned into +-1 in its own
// precision first (float64 -1e-300 would otherwise round to -0.0 and count as +1).
at::Tensor float_keeping_signs(const at::Tensor& x) {
  if (x.scalar_type() == at::kFloat) return x;
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "xnor_conv2d: the input must be a "
              "floating-point tensor, got ", x.scalar_type());
  return at::where(x.lt(0), -1.0, 1.0).to(at::kFloat);
}

// Sign-pack x (either memory format) into P (zeroed, padded layout), thresholds optional.
void pack_into(at::Tensor x, uint64_t* p, int64_t ph, int64_t pw, const Threshold& T) {
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
  bool relu_residual = false;      // add max(residual, 0)
  const Threshold* next = nullptr; // bits out: the next layer's thresholds
  int64_t ph2 = 0, pw2 = 0;        // and its padding
};

// A packed (and padded) input: p[N][Hp][Wp][ceil(C / 64)] words of C channels.
struct PackedIn {
  const uint64_t* p;
  int64_t N, Hp, Wp, C;
};

at::Tensor conv_on_packed(const PackedIn& in, const BinaryLayer& l,
                             const c10::optional<at::Tensor>& kscale,
                             const c10::optional<at::Tensor>& residual, bool integer,
                             const OutMode& mode = OutMode{}) {
  const uint64_t* p = in.p;
  const int64_t N = in.N, Hp = in.Hp, Wp = in.Wp, C = in.C;
  const int64_t OC = l.out_channels, KH = l.kh, KW = l.kw, sh = l.sh, sw = l.sw;
  at::Tensor wpacked = l.wpacked, alpha = l.alpha;
  const c10::optional<at::Tensor>& bias = l.bias;
  const int64_t Cw = ceil_div(C, 64);
  const int64_t K = KH * KW * Cw, OCB = ceil_div(OC, FB);
  // the kernels load weight blocks with aligned instructions: any valid tensor (a view at
  // an odd offset included) is copied to an aligned one first
  if (reinterpret_cast<uintptr_t>(wpacked.data_ptr()) % 64 != 0) wpacked = wpacked.clone();
  TORCH_CHECK(wpacked.dim() == 3 && wpacked.scalar_type() == at::kLong &&
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
  {
    Timed t(kprof().pack);
    nibble_split(p, D.data(), words);
  }
  R = ARows{D.data(), KH, KW * Cw * NSPLIT, M, OH, OW, Hp, Wp, Cw * NSPLIT, sh, sw};
#endif

  alpha = alpha.to(at::kFloat).contiguous();
  at::Tensor b, k, res;
  Epilogue e{};
  e.alpha = alpha.data_ptr<float>();
  e.OC = OC;
  e.nbits = C * KH * KW;
  if (bias.has_value() && bias->defined()) {
    b = bias->to(at::kFloat).contiguous();
    e.bias = b.data_ptr<float>();
  }
  if (kscale.has_value() && kscale->defined()) {
    k = kscale->to(at::kFloat).contiguous();
    TORCH_CHECK(k.numel() == M, "xnor_conv2d: K scale must have N*OH*OW values");
    e.kscale = k.data_ptr<float>();
  }
  if (residual.has_value() && residual->defined()) {
    TORCH_CHECK(!integer, "xnor_conv2d: a residual needs float output");
    TORCH_CHECK(residual->dim() == 4 && residual->size(0) == N && residual->size(1) == OC &&
                    residual->size(2) == OH && residual->size(3) == OW,
                "xnor_conv2d: the residual must have the output's shape");
    res = residual->to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
    e.residual = res.data_ptr<float>();
    e.residual_relu = mode.relu_residual;
  }
  at::Tensor out;
  if (mode.next != nullptr) {
    const int64_t cw2 = ceil_div(OC, 64);
    out = at::zeros({N, OH + 2 * mode.ph2, OW + 2 * mode.pw2, cw2}, at::kLong);
    e.out_bits = reinterpret_cast<uint8_t*>(out.data_ptr<int64_t>());
    e.nth = mode.next->th;
    e.nflip = mode.next->flip;
    e.OH = OH;
    e.OW = OW;
    e.ph2 = mode.ph2;
    e.pw2 = mode.pw2;
    e.bpp = cw2 * 8;
  } else if (integer) {
    out = at::empty({N, OC, OH, OW},
                       at::TensorOptions().dtype(at::kInt)
                           .memory_format(at::MemoryFormat::ChannelsLast));
    e.out_int = out.data_ptr<int32_t>();
  } else if (mode.inplace) {
    TORCH_CHECK(e.residual != nullptr && res.is_same(*residual),
                "xnor_conv2d: in place needs a float32 channels_last residual");
    out = res;
    e.out = out.data_ptr<float>();
  } else {
    out = at::empty({N, OC, OH, OW},
                       at::TensorOptions().dtype(at::kFloat)
                           .memory_format(at::MemoryFormat::ChannelsLast));
    e.out = out.data_ptr<float>();
  }
  {
    Timed t(kprof().gemm);
    binary_gemm(R, reinterpret_cast<const uint64_t*>(wpacked.data_ptr<int64_t>()), OCB, e);
  }
  return out;
}

Threshold thresholds(const at::Tensor& th, const at::Tensor& flip, int64_t C) {
  Threshold T;
  if (!th.defined()) return T;
  TORCH_CHECK(flip.defined(), "xnor_conv2d: thresholds need flips");
  TORCH_CHECK(th.scalar_type() == at::kFloat && th.is_contiguous() && th.numel() == C &&
                  flip.scalar_type() == at::kByte && flip.is_contiguous() &&
                  flip.numel() == C,
              "xnor_conv2d: thresholds must be contiguous float32 [C], flips uint8 [C]");
  T.th = th.data_ptr<float>();
  T.flip = flip.data_ptr<uint8_t>();
  return T;
}

}  // namespace

// Sign-pack a float NCHW input (either memory format) with spatial padding in place.
at::Tensor pack_input(at::Tensor x, int64_t ph, int64_t pw) {
  TimedCall call;
  TORCH_CHECK(x.dim() == 4, "pack_input: input must be [N, C, H, W]");
  TORCH_CHECK(x.device().is_cpu(), "pack_input: CPU tensors only");
  x = float_keeping_signs(x);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto P = at::zeros({N, H + 2 * ph, W + 2 * pw, ceil_div(C, 64)}, at::kLong);
  {
    Timed t(kprof().pack);
    pack_into(x, reinterpret_cast<uint64_t*>(P.data_ptr<int64_t>()), ph, pw, Threshold{});
  }
  return P;
}

// The binary convolution of `l` on an already packed (and padded) input P[N][Hp][Wp][Cw]
// of l.in_channels channels: XNOR-popcount GEMM, scale by alpha [* K] [+ bias].
at::Tensor xnor_conv2d_packed(const BinaryLayer& l, at::Tensor P,
                                 c10::optional<at::Tensor> kscale, bool integer) {
  TimedCall call;
  TORCH_CHECK(P.dim() == 4 && P.scalar_type() == at::kLong && P.is_contiguous(),
              "xnor_conv2d_packed: P must be a contiguous int64 [N, Hp, Wp, Cw] tensor");
  TORCH_CHECK(P.size(3) == ceil_div(l.in_channels, 64),
              "xnor_conv2d_packed: the layer's in_channels do not match P");
  const PackedIn in{reinterpret_cast<const uint64_t*>(P.data_ptr<int64_t>()), P.size(0),
                    P.size(1), P.size(2), l.in_channels};
  return conv_on_packed(in, l, kscale, c10::nullopt, integer);
}

// The whole binary convolution of `l` on a float input: sign-pack x itself (padding with
// +1; the layer's BatchNorm thresholds are not applied), then xnor_conv2d_packed. Returns
// float NCHW in channels_last storage, or the integer +-1 dot products (int32) when
// `integer` is true.
at::Tensor xnor_conv2d(const BinaryLayer& l, at::Tensor x,
                          c10::optional<at::Tensor> kscale, bool integer) {
  TORCH_CHECK(x.dim() == 4, "xnor_conv2d: input must be [N, C, H, W]");
  TORCH_CHECK(x.size(2) + 2 * l.ph >= l.kh && x.size(3) + 2 * l.pw >= l.kw,
              "xnor_conv2d: kernel larger than the padded input");
  BinaryLayer on_x = l;
  on_x.in_channels = x.size(1);
  return xnor_conv2d_packed(on_x, pack_input(x, l.ph, l.pw), kscale, integer);
}

// The fused inference layer: BatchNorm + sign folded into the packing (per-channel
// thresholds and flips, see Threshold), the binary conv, alpha [+ bias], a residual added
// in the epilogue (through a ReLU with `relu_residual`), optionally written over the
// residual (`inplace`), or, given the next binary layer, written straight as that layer's
// packed input (bits, with its padding). Packed input and its nibble-split copy live in a
// reused workspace. `x` is a float NCHW tensor, or (`packed_in`) an already packed input
// P[N][Hp][Wp][Cw] of the layer's in_channels.
at::Tensor run_binary_layer(const BinaryLayer& l, at::Tensor x, bool packed_in,
                               const LayerOutput& o) {
  TimedCall call;
  OutMode mode;
  mode.inplace = o.inplace;
  mode.relu_residual = o.relu_residual;
  Threshold next;
  if (o.next != nullptr) {
    next = thresholds(o.next->thresh, o.next->flip, l.out_channels);
    mode.next = &next;
    mode.ph2 = o.next->ph;
    mode.pw2 = o.next->pw;
  }
  if (packed_in) {
    TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kLong && x.is_contiguous() &&
                    x.size(3) == ceil_div(l.in_channels, 64),
                "xnor_conv2d: a packed input must be contiguous int64 [N, Hp, Wp, Cw]");
    const PackedIn in{reinterpret_cast<const uint64_t*>(x.data_ptr<int64_t>()), x.size(0),
                      x.size(1), x.size(2), l.in_channels};
    return conv_on_packed(in, l, c10::nullopt, o.residual, false, mode);
  }
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu(), "xnor_conv2d: input must be CPU [N, C, H, W]");
  TORCH_CHECK(x.size(2) + 2 * l.ph >= l.kh && x.size(3) + 2 * l.pw >= l.kw,
              "xnor_conv2d: kernel larger than the padded input");
  TORCH_CHECK(!l.thresh.defined() || x.scalar_type() == at::kFloat,
              "xnor_conv2d: BatchNorm thresholds need a float32 input (got ", x.scalar_type(),
              "); take BN and the sign in the input's dtype first");
  x = float_keeping_signs(x);
  const int64_t N = x.size(0), C = x.size(1), Hp = x.size(2) + 2 * l.ph,
                Wp = x.size(3) + 2 * l.pw;
  const Threshold T = thresholds(l.thresh, l.flip, C);
  std::vector<uint64_t>& P = workspace().P;
  const int64_t words = N * Hp * Wp * ceil_div(C, 64);
  if ((int64_t)P.size() < words) P.resize(words);
  {
    Timed t(kprof().pack);
    std::fill(P.begin(), P.begin() + words, 0);
    pack_into(x, P.data(), l.ph, l.pw, T);
  }
  return conv_on_packed(PackedIn{P.data(), N, Hp, Wp, C}, l, c10::nullopt, o.residual, false,
                        mode);
}

void kernel_profile_start() {
  KernelProfile& p = kprof();
  p.calls = 0;
  p.total = 0;
  p.pack = 0;
  p.gemm = 0;
  p.on = true;
}

std::vector<int64_t> kernel_profile_stop() {
  KernelProfile& p = kprof();
  p.on = false;
  return {p.calls.load(), p.total.load(), p.pack.load(), p.gemm.load()};
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

std::string isa() {
  return XNOR_AVX512 ? "avx512-vpopcntdq" : (XNOR_AVX2 ? "avx2-pshufb" : "scalar-popcnt");
}
