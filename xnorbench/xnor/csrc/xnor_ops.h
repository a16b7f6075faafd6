// Every function the extension offers Python, declared once. bindings.cpp registers them;
// each is defined in the file named beside its group.
#pragma once

#include "tensor_api.h"

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

// xnor_conv.cpp: packing and the XNOR-popcount convolution (inference)
// One binary conv: its packed weights, alpha [and bias], the BatchNorm-and-sign
// thresholds of its input (undefined: plain sign), and its geometry (what
// PackedXNORConv2d holds).
struct BinaryLayer {
  at::Tensor wpacked, alpha;
  c10::optional<at::Tensor> bias;
  at::Tensor thresh, flip;
  int64_t in_channels = 0, out_channels = 0, kh = 0, kw = 0, sh = 1, sw = 1, ph = 0, pw = 0;
};
// What a fused binary layer adds and writes: floats [+ residual, or + max(residual, 0)],
// a fresh tensor or over the residual (`inplace`), or bits: the packed input of `next`.
struct LayerOutput {
  c10::optional<at::Tensor> residual;
  bool relu_residual = false;
  bool inplace = false;
  const BinaryLayer* next = nullptr;
};
at::Tensor pack_weight(at::Tensor w);
at::Tensor pack_input(at::Tensor x, int64_t ph, int64_t pw);
at::Tensor xnor_conv2d_packed(const BinaryLayer& l, at::Tensor P,
                                 c10::optional<at::Tensor> kscale, bool integer);
at::Tensor xnor_conv2d(const BinaryLayer& l, at::Tensor x,
                          c10::optional<at::Tensor> kscale, bool integer);
at::Tensor run_binary_layer(const BinaryLayer& l, at::Tensor x, bool packed_in,
                               const LayerOutput& o);
std::string isa();
int64_t threads_used();

// float_layers.cpp: a direct float conv for few input channels (a network's first conv),
// and a CNN's head (BatchNorm, ReLU, global average pooling) in one pass
at::Tensor small_conv2d(at::Tensor x, at::Tensor wt, at::Tensor bias, int64_t OC,
                           int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                           int64_t pw);
at::Tensor pooled_head(at::Tensor x, c10::optional<at::Tensor> scale,
                          c10::optional<at::Tensor> shift, bool relu);

// layer_chain.cpp: a run of fused binary layers executed by one call
class LayerChain {
 public:
  // append a step: `layer` on value `input` (packed bits with `packed_in`), + value
  // `residual` (-1: none; through a ReLU with `relu_residual`), writing bits for `next`
  // when given; returns the slot of its output (slot 0 is run's input)
  int64_t add(BinaryLayer layer, c10::optional<BinaryLayer> next, int64_t input,
              int64_t residual, bool packed_in, bool relu_residual);
  at::Tensor run(at::Tensor x) const;  // the last step's output
  size_t size() const { return steps_.size(); }

 private:
  struct Step {
    BinaryLayer layer;
    c10::optional<BinaryLayer> next;
    int64_t input, residual;
    bool packed_in, relu_residual;
  };
  std::vector<Step> steps_;
  std::vector<int64_t> last_use_;  // per slot: the last step that reads it
};
// where the binary layers' time goes: start resets and turns the counters on; stop turns
// them off and returns {calls, whole calls ns, packing ns, GEMM + epilogue ns}
void kernel_profile_start();
std::vector<int64_t> kernel_profile_stop();

// train_ops.cpp: the fused training path's operators
namespace xnor_train {
std::tuple<at::Tensor, at::Tensor, at::Tensor> sign_bits(const at::Tensor& x);
std::tuple<at::Tensor, at::Tensor> sign_bits_(at::Tensor x);
at::Tensor signs_from_bits(const at::Tensor& bits, int64_t n,
                              const std::optional<at::Tensor>& keep, double scale);
at::Tensor grad_through_bits(const at::Tensor& g, const at::Tensor& bits,
                                const std::optional<at::Tensor>& keep, double scale);
void grad_through_bits_(at::Tensor g, const at::Tensor& bits,
                        const std::optional<at::Tensor>& keep, double scale);
at::Tensor nonzero_bits(const at::Tensor& t);
at::Tensor binarize_weight(const at::Tensor& w);
int64_t grad_rule_code(c10::string_view name);
at::Tensor scaled_sign_grad(const at::Tensor& w, const at::Tensor& g, int64_t rule);
void scaled_sign_grad_(at::Tensor g, const at::Tensor& w, int64_t rule);
void border_add_(at::Tensor out, const at::Tensor& wb, int64_t H, int64_t W,
                 int64_t sh, int64_t sw, int64_t ph, int64_t pw);
void border_grad_add_(at::Tensor gwb, const at::Tensor& grad, int64_t H, int64_t W,
                      int64_t sh, int64_t sw, int64_t ph, int64_t pw);
void center_clamp_(at::TensorList ws);
}  // namespace xnor_train

// ceilings.cpp: this core's peak rates
namespace xnor_ceilings {
double fma_peak(int64_t iters);
double binary_peak(int64_t iters);
std::string fma_isa();
std::string binary_peak_isa();
}  // namespace xnor_ceilings

// lowp_ceilings.cpp: int8 and bf16 peaks per unit (run in a child process by the caller)
namespace xnor_lowp {
double lowp_peak(c10::string_view unit, int64_t iters);
}  // namespace xnor_lowp
