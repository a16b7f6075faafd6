// The float layers around a packed network's binary ones, where torch's operators are
// slow at batch 1: a direct conv for few input channels (a network's first conv: 3
// channels at 32x32 or 224x224), and the head (BatchNorm, ReLU, global pooling) in one
// pass.
//
// At batch 1 torch runs such a conv on its slow path (im2col + GEMM, thnn_conv2d: about
// 0.13 ms for 3 -> 64 channels at 32x32 on a Zen 4, an eighth of a packed ResNet-18),
// and oneDNN's own path needs a channels-last input it must first copy. Here every output
// pixel is a sum of KH * KW * C rank-one updates of a block of 64 filters held in
// registers (the compiler vectorises the filter loop with the build's flags: AVX-512,
// AVX2 or SSE), written straight into channels-last storage, the layout the binary layers
// read. Rows of output pixels are split between threads.

#include "tensor_api.h"

#include <algorithm>
#include <cstring>

#include "xnor_ops.h"

namespace {

constexpr int64_t OB = 64;  // filters per register block
#ifdef __AVX512F__
constexpr int64_t PX = 4;  // output pixels per register block (16 zmm accumulators)
#else
constexpr int64_t PX = 2;  // (16 ymm accumulators)
#endif

typedef float v16 __attribute__((vector_size(64)));  // 16 floats: one zmm, two ymm

struct ConvGeometry {
  int64_t C, H, W, OC, OCp, KH, KW, sh, sw, ph, pw, OH, OW;
};

// (an out-parameter: returning a 64-byte vector by value warns of an ABI change in the
// builds without AVX-512)
inline void load16(v16& v, const float* p) { std::memcpy(&v, p, sizeof(v)); }

// Up to PX pixels side by side in a row (x: the first one's top-left input in the padded
// channels-last input) times filters [ob, ob + OB): bias + KH * KW * C rank-one updates,
// stored at out[pixel * OC + filter]. The accumulators stay in registers: nothing takes
// their address until the loop is done.
inline void block(const float* x, int64_t np, const float* wt, const float* bias,
                  const ConvGeometry& g, int64_t ob, float* out) {
  constexpr int64_t Q = OB / 16;
  v16 acc[PX][Q];
  for (int64_t q = 0; q < Q; ++q) {
    v16 b;
    load16(b, bias + ob + 16 * q);
    for (int64_t i = 0; i < PX; ++i) acc[i][q] = b;
  }
  const int64_t row = g.KW * g.C, step = g.sw * g.C;  // floats per tap row, per pixel
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    const float* xr = x + kh * (g.W + 2 * g.pw) * g.C;
    const float* wr = wt + kh * row * g.OCp + ob;
    for (int64_t j = 0; j < row; ++j) {
      v16 w[Q];
      for (int64_t q = 0; q < Q; ++q) load16(w[q], wr + j * g.OCp + 16 * q);
      for (int64_t i = 0; i < PX; ++i) {
        const float v = xr[i * step + j];
        for (int64_t q = 0; q < Q; ++q) acc[i][q] += v * w[q];
      }
    }
  }
  const int64_t n = std::min(OB, g.OC - ob);
  alignas(64) float tail[OB];
  for (int64_t i = 0; i < np; ++i) {
    float* o = out + i * g.OC + ob;
    for (int64_t q = 0; q < Q; ++q) {
      if (n == OB) {
        std::memcpy(o + 16 * q, &acc[i][q], sizeof(v16));
      } else {
        std::memcpy(tail + 16 * q, &acc[i][q], sizeof(v16));
      }
    }
    if (n < OB) std::memcpy(o, tail, n * sizeof(float));
  }
}

}  // namespace

at::Tensor small_conv2d(at::Tensor x, at::Tensor wt, at::Tensor bias, int64_t OC,
                           int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                           int64_t pw) {
  // a profiler scope: measure/breakdown.py counts the call as float conv
  at::RecordFunction scope(at::RecordScope::FUNCTION);
  if (scope.isActive()) scope.before("xnor::float_conv");
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "small_conv2d: input must be float32 CPU [N, C, H, W]");
  x = x.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OCp = (OC + OB - 1) / OB * OB;
  TORCH_CHECK(wt.scalar_type() == at::kFloat && wt.is_contiguous() &&
                  wt.numel() == KH * KW * C * OCp,
              "small_conv2d: weights must be contiguous float32 [KH][KW][C][OC padded to 64]");
  TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.is_contiguous() &&
                  bias.numel() == OCp, "small_conv2d: bias must be float32 [OC padded to 64]");
  TORCH_CHECK(H + 2 * ph >= KH && W + 2 * pw >= KW,
              "small_conv2d: kernel larger than the padded input");
  const ConvGeometry g{C, H, W, OC, OCp, KH, KW, sh, sw, ph, pw,
                       (H + 2 * ph - KH) / sh + 1, (W + 2 * pw - KW) / sw + 1};
  auto out = at::empty({N, g.OH, g.OW, OC}, at::kFloat);
  const float* xp = x.data_ptr<float>();
  const float* wp = wt.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // the input zero-padded and channels-last, with room for the last block's unused pixels
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw, spare = PX * sw * C;
  auto xpad = at::zeros({N * Hp * Wp * C + spare}, at::kFloat);
  float* xq = xpad.data_ptr<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          xq[((n * Hp + h + ph) * Wp + w + pw) * C + c] = xp[((n * C + c) * H + h) * W + w];
  at::parallel_for(0, N * g.OH, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / g.OH, oh = r % g.OH;
      const float* xr = xq + (n * Hp + oh * sh) * Wp * C;
      for (int64_t ow = 0; ow < g.OW; ow += PX) {
        const int64_t np = std::min(PX, g.OW - ow);
        for (int64_t ob = 0; ob < OC; ob += OB)
          block(xr + ow * sw * C, np, wp, bp, g, ob, op + (r * g.OW + ow) * OC);
      }
    }
  });
  return out.permute({0, 3, 1, 2});  // [N, OC, OH, OW] in channels-last storage
}

// The head of a CNN after its last conv: per channel mean over the feature map of
// max(0, scale * x + shift) (an eval BatchNorm and a ReLU, each optional), as [N, C].
// torch runs BatchNorm, ReLU and the pooling as three operators with an activation
// between each: 26 us at batch 1 for ResNet-18's 512x4x4 on a Zen 4, 15 us in one call.
at::Tensor pooled_head(at::Tensor x, c10::optional<at::Tensor> scale,
                          c10::optional<at::Tensor> shift, bool relu) {
  at::RecordFunction scope(at::RecordScope::FUNCTION);
  if (scope.isActive()) scope.before("xnor::float_head");
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "pooled_head: input must be float32 CPU [N, C, H, W]");
  x = x.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  TORCH_CHECK(HW > 0, "pooled_head: an empty feature map");
  const bool affine = scale.has_value() && scale->defined();
  at::Tensor s, t;
  if (affine) {
    s = scale->to(at::kFloat).contiguous();
    t = shift.has_value() && shift->defined() ? shift->to(at::kFloat).contiguous()
                                              : at::zeros({C});
    TORCH_CHECK(s.numel() == C && t.numel() == C, "pooled_head: scale/shift must be [C]");
  }
  auto out = at::zeros({N, C}, at::kFloat);
  const float* xp = x.data_ptr<float>();
  const float* sp = affine ? s.data_ptr<float>() : nullptr;
  const float* tp = affine ? t.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const float inv = 1.0f / (float)HW;
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      float* o = op + n * C;
      for (int64_t p = 0; p < HW; ++p) {
        const float* v = xp + (n * HW + p) * C;
        for (int64_t c = 0; c < C; ++c) {
          float y = affine ? sp[c] * v[c] + tp[c] : v[c];
          if (relu) y = std::max(y, 0.0f);
          o[c] += y;
        }
      }
      for (int64_t c = 0; c < C; ++c) o[c] *= inv;
    }
  });
  return out;
}
