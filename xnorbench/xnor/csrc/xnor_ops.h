// Every function the extension offers Python, declared once. bindings.cpp registers them;
// each is defined in the file named beside its group.
#pragma once

#include <torch/extension.h>

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
  torch::Tensor wpacked, alpha;
  c10::optional<torch::Tensor> bias;
  torch::Tensor thresh, flip;
  int64_t in_channels = 0, out_channels = 0, kh = 0, kw = 0, sh = 1, sw = 1, ph = 0, pw = 0;
};
// What a fused binary layer adds and writes: floats [+ residual, or + max(residual, 0)],
// a fresh tensor or over the residual (`inplace`), or bits: the packed input of `next`.
struct LayerOutput {
  c10::optional<torch::Tensor> residual;
  bool relu_residual = false;
  bool inplace = false;
  const BinaryLayer* next = nullptr;
};
torch::Tensor pack_weight(torch::Tensor w);
torch::Tensor pack_input(torch::Tensor x, int64_t ph, int64_t pw);
torch::Tensor xnor_conv2d_packed(const BinaryLayer& l, torch::Tensor P,
                                 c10::optional<torch::Tensor> kscale, bool integer);
torch::Tensor xnor_conv2d(const BinaryLayer& l, torch::Tensor x,
                          c10::optional<torch::Tensor> kscale, bool integer);
torch::Tensor run_binary_layer(const BinaryLayer& l, torch::Tensor x, bool packed_in,
                               const LayerOutput& o);
std::string isa();
int64_t threads_used();

// float_layers.cpp: a direct float conv for few input channels (a network's first conv),
// and a CNN's head (BatchNorm, ReLU, global average pooling) in one pass
torch::Tensor small_conv2d(torch::Tensor x, torch::Tensor wt, torch::Tensor bias, int64_t OC,
                           int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                           int64_t pw);
torch::Tensor pooled_head(torch::Tensor x, c10::optional<torch::Tensor> scale,
                          c10::optional<torch::Tensor> shift, bool relu);

// layer_chain.cpp: a run of fused binary layers executed by one call
class LayerChain {
 public:
  // append a step: `layer` on value `input` (packed bits with `packed_in`), + value
  // `residual` (-1: none; through a ReLU with `relu_residual`), writing bits for `next`
  // when given; returns the slot of its output (slot 0 is run's input)
  int64_t add(BinaryLayer layer, c10::optional<BinaryLayer> next, int64_t input,
              int64_t residual, bool packed_in, bool relu_residual);
  torch::Tensor run(torch::Tensor x) const;  // the last step's output
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
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> sign_bits(const torch::Tensor& x);
std::tuple<torch::Tensor, torch::Tensor> sign_bits_(torch::Tensor x);
torch::Tensor signs_from_bits(const torch::Tensor& bits, int64_t n,
                              const std::optional<torch::Tensor>& keep, double scale);
torch::Tensor grad_through_bits(const torch::Tensor& g, const torch::Tensor& bits,
                                const std::optional<torch::Tensor>& keep, double scale);
void grad_through_bits_(torch::Tensor g, const torch::Tensor& bits,
                        const std::optional<torch::Tensor>& keep, double scale);
torch::Tensor nonzero_bits(const torch::Tensor& t);
torch::Tensor binarize_weight(const torch::Tensor& w);
int64_t grad_rule_code(c10::string_view name);
torch::Tensor scaled_sign_grad(const torch::Tensor& w, const torch::Tensor& g, int64_t rule);
void scaled_sign_grad_(torch::Tensor g, const torch::Tensor& w, int64_t rule);
void border_add_(torch::Tensor out, const torch::Tensor& wb, int64_t H, int64_t W,
                 int64_t sh, int64_t sw, int64_t ph, int64_t pw);
void border_grad_add_(torch::Tensor gwb, const torch::Tensor& grad, int64_t H, int64_t W,
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
