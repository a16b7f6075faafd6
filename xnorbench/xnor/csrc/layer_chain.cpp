// A run of fused binary layers executed by one call from Python: a packed ResNet's
// blocks, or any run of packed convs that packed_graph.py finds on a traced network.
//
// Run from Python, every layer costs a call through pybind11 (21 arguments) and the module
// glue around it: at batch 1 that was a fifth of ResNet-18's time. The chain holds the
// layers' tensors (the same storage as the Python modules' buffers) and a list of steps
// over value slots (slot 0 is the chain's input); each step is one run_binary_layer call
// with exactly the arguments the Python modules pass, so it computes the same bits and
// floats. A step writes over its residual when nothing later reads that value and it is
// not the caller's input; a slot is released after its last reader.

#include "tensor_api.h"

#include <vector>

#include "xnor_ops.h"

namespace {

bool float_channels_last(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat && t.dim() == 4 &&
         t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace

int64_t LayerChain::add(BinaryLayer layer, c10::optional<BinaryLayer> next, int64_t input,
                        int64_t residual, bool packed_in, bool relu_residual) {
  const int64_t out = (int64_t)steps_.size() + 1;
  TORCH_CHECK(input >= 0 && input < out && residual < out,
              "LayerChain.add: a step reads a value no earlier step wrote");
  TORCH_CHECK(!relu_residual || residual >= 0, "LayerChain.add: a ReLU needs a residual");
  const int64_t index = (int64_t)steps_.size();
  last_use_.resize(out + 1, -1);
  last_use_[input] = index;
  if (residual >= 0) last_use_[residual] = index;
  steps_.push_back(Step{std::move(layer), std::move(next), input, residual, packed_in,
                        relu_residual});
  return out;
}

at::Tensor LayerChain::run(at::Tensor x) const {
  TORCH_CHECK(!steps_.empty(), "LayerChain.run: no steps");
  std::vector<at::Tensor> slots(steps_.size() + 1);
  slots[0] = std::move(x);
  for (size_t i = 0; i < steps_.size(); ++i) {
    const Step& s = steps_[i];
    const int64_t index = (int64_t)i;
    LayerOutput o;
    if (s.residual >= 0) {
      const at::Tensor& r = slots[s.residual];
      o.residual = r;
      o.relu_residual = s.relu_residual;
      // the chain made it and nobody reads it later: write the output over it
      o.inplace = s.residual > 0 && last_use_[s.residual] == index && float_channels_last(r);
    }
    o.next = s.next ? &*s.next : nullptr;
    slots[i + 1] = run_binary_layer(s.layer, slots[s.input], s.packed_in, o);
    o.residual.reset();
    for (int64_t v : {s.input, s.residual})
      if (v > 0 && last_use_[v] == index) slots[v] = at::Tensor();
  }
  return slots.back();
}
