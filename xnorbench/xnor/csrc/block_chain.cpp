// A ResNet's chain of packed pre-activation blocks run by one call from Python.
//
// Each block is two fused binary convs (the first writes the second's packed input as
// bits, the second adds the shortcut in its epilogue) and a shortcut (the block's input,
// or a packed 1x1 conv of it). Run from Python, every block costs two or three calls
// through pybind11 (21 arguments each) and the module glue around them: at batch 1 that
// was a fifth of ResNet-18's time. The chain holds the layers' tensors (the same storage
// as the Python modules' buffers) and calls xnor_conv2d_fused directly, block after
// block, with exactly the arguments PackedPreActBlock passes, so it computes the same
// bits and floats.

#include <torch/extension.h>

#include <vector>

#include "xnor_ops.h"

namespace {

torch::Tensor conv(const BinaryLayer& l, const torch::Tensor& x, int64_t C,
                   const c10::optional<torch::Tensor>& residual, bool inplace,
                   const BinaryLayer* next) {
  return xnor_conv2d_fused(
      x, C, l.thresh, l.flip, l.wpacked, l.alpha, l.bias, residual, inplace,
      next ? c10::optional<torch::Tensor>(next->thresh) : c10::nullopt,
      next ? c10::optional<torch::Tensor>(next->flip) : c10::nullopt, next ? next->ph : 0,
      next ? next->pw : 0, l.out_channels, l.kh, l.kw, l.sh, l.sw, l.ph, l.pw);
}

bool float_channels_last(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat && t.dim() == 4 &&
         t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace

void BlockChain::add(BinaryLayer unit1, BinaryLayer unit2,
                     c10::optional<BinaryLayer> shortcut) {
  blocks_.push_back(Block{std::move(unit1), std::move(unit2), std::move(shortcut)});
}

torch::Tensor BlockChain::run(torch::Tensor x) const {
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Block& b = blocks_[i];
    torch::Tensor bits = conv(b.unit1, x, 0, c10::nullopt, false, &b.unit2);
    torch::Tensor residual =
        b.shortcut ? conv(*b.shortcut, x, 0, c10::nullopt, false, nullptr) : x;
    // the chain made every block's input after the first: it may write over it
    const bool own = b.shortcut.has_value() || i > 0;
    x = conv(b.unit2, bits, b.unit2.in_channels, residual, own && float_channels_last(residual),
             nullptr);
  }
  return x;
}
