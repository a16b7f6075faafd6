// The one place Python reaches the extension through (its functions are declared in
// xnor_ops.h). Two registries, each for a reason:
//
// * pybind11 (this module's attributes): the inference kernels, called directly from
//   the packed layers and the sweeps. They never meet autograd, and a direct call costs
//   no dispatcher overhead on convolutions that take microseconds.
// * the dispatcher (torch.ops.<TORCH_EXTENSION_NAME>.*): the training operators and the
//   ceiling probes. The fused layers' autograd functions and torch.compile need them as
//   operators with schemas, and the profiler counts each as the one operator it is.
//
// TORCH_LIBRARY pastes its namespace argument into identifiers, so the extension's name
// (a macro) goes through one more macro to be expanded first.

#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include "xnor_ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack_weight", &pack_weight, "sign-pack conv weights for xnor_conv2d");
  m.def("pack_input", &pack_input, "sign-pack a float NCHW input with +1 padding");
  m.def("xnor_conv2d", &xnor_conv2d, pybind11::arg("layer"), pybind11::arg("x"),
        pybind11::arg("kscale") = pybind11::none(), pybind11::arg("integer") = false,
        "binary convolution of a layer: sign-pack the float input, then XNOR");
  m.def("xnor_conv2d_packed", &xnor_conv2d_packed, pybind11::arg("layer"),
        pybind11::arg("P"), pybind11::arg("kscale") = pybind11::none(),
        pybind11::arg("integer") = false, "binary convolution of a layer on a packed input");
  m.def(
      "run_binary_layer",
      [](const BinaryLayer& l, at::Tensor x, bool packed_in,
         c10::optional<at::Tensor> residual, bool relu_residual, bool inplace,
         c10::optional<BinaryLayer> next) {
        LayerOutput o;
        o.residual = residual;
        o.relu_residual = relu_residual;
        o.inplace = inplace;
        o.next = next ? &*next : nullptr;
        return run_binary_layer(l, x, packed_in, o);
      },
      pybind11::arg("layer"), pybind11::arg("x"), pybind11::arg("packed_in") = false,
      pybind11::arg("residual") = pybind11::none(), pybind11::arg("relu_residual") = false,
      pybind11::arg("inplace") = false, pybind11::arg("next") = pybind11::none(),
      "a fused layer: BN thresholds folded into packing, binary conv, alpha, bias, "
      "residual (through a ReLU), written over the residual or as the next layer's bits");
  m.def("small_conv2d", &small_conv2d,
        "direct float conv for few input channels, channels-last output");
  m.def("pooled_head", &pooled_head,
        "per channel mean of max(0, scale * x + shift): BatchNorm, ReLU and global pooling");
  m.def("isa", &isa, "which popcount path this build uses");
  m.def("threads_used", &threads_used, "threads at::parallel_for uses in this extension");
  // module_local: the three builds of this extension load into one process (tests), and
  // pybind11 registers a C++ type once per process unless told the type is the module's
  pybind11::class_<BinaryLayer>(m, "BinaryLayer", pybind11::module_local())
      .def(pybind11::init([](at::Tensor wpacked, at::Tensor alpha,
                             c10::optional<at::Tensor> bias,
                             c10::optional<at::Tensor> thresh,
                             c10::optional<at::Tensor> flip,
                             std::vector<int64_t> geometry) {
             TORCH_CHECK(geometry.size() == 8,
                         "BinaryLayer: geometry is [in_channels, out_channels, kh, kw, sh, "
                         "sw, ph, pw]");
             const auto& g = geometry;
             return BinaryLayer{wpacked, alpha, bias,
                                thresh.value_or(at::Tensor()),
                                flip.value_or(at::Tensor()),
                                g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
           }),
           pybind11::arg("wpacked"), pybind11::arg("alpha"),
           pybind11::arg("bias") = pybind11::none(), pybind11::arg("thresh") = pybind11::none(),
           pybind11::arg("flip") = pybind11::none(), pybind11::arg("geometry"));
  pybind11::class_<LayerChain>(m, "LayerChain", pybind11::module_local())
      .def(pybind11::init<>())
      .def("add", &LayerChain::add, pybind11::arg("layer"), pybind11::arg("next"),
           pybind11::arg("input"), pybind11::arg("residual"), pybind11::arg("packed_in"),
           pybind11::arg("relu_residual"),
           "append a step; returns the slot its output goes to (the run's input is 0)")
      .def("run", &LayerChain::run, "every step on x, one after the other")
      .def("__len__", &LayerChain::size);
  m.def("kernel_profile_start", &kernel_profile_start, "reset and start the layer timers");
  m.def("kernel_profile_stop", &kernel_profile_stop,
        "stop the layer timers: [calls, total ns, packing ns, GEMM ns]");
}

#define XNOR_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define XNOR_IMPL(ns, m) TORCH_LIBRARY_IMPL(ns, CPU, m)

XNOR_LIBRARY(TORCH_EXTENSION_NAME, m) {
  using namespace xnor_train;
  m.def("sign_bits(Tensor x) -> (Tensor, Tensor, Tensor)");
  m.def("sign_bits_(Tensor(a!) x) -> (Tensor, Tensor)");
  m.def("signs_from_bits(Tensor bits, int n, Tensor? keep, float scale) -> Tensor");
  m.def("grad_through_bits(Tensor g, Tensor bits, Tensor? keep, float scale) -> Tensor");
  m.def("nonzero_bits(Tensor t) -> Tensor");
  m.def("binarize_weight(Tensor w) -> Tensor");
  m.def("grad_rule_code(str name) -> int", &grad_rule_code);
  m.def("scaled_sign_grad(Tensor w, Tensor g, int rule) -> Tensor");
  m.def("scaled_sign_grad_(Tensor(a!) g, Tensor w, int rule) -> ()");
  m.def("grad_through_bits_(Tensor(a!) g, Tensor bits, Tensor? keep, float scale) -> ()");
  m.def("center_clamp_(Tensor(a!)[] ws) -> ()");
  m.def("border_add_(Tensor(a!) out, Tensor wb, int H, int W, int sh, int sw, int ph, "
        "int pw) -> ()");
  m.def("border_grad_add_(Tensor(a!) gwb, Tensor grad, int H, int W, int sh, int sw, "
        "int ph, int pw) -> ()");
  // the ceilings: register-only peak loops (no tensors, so no CPU kernel to dispatch)
  m.def("fma_peak(int iters) -> float", &xnor_ceilings::fma_peak);
  m.def("binary_peak(int iters) -> float", &xnor_ceilings::binary_peak);
  m.def("binary_peak_isa() -> str", &xnor_ceilings::binary_peak_isa);
  m.def("fma_isa() -> str", &xnor_ceilings::fma_isa);
  m.def("lowp_peak(str unit, int iters) -> float", &xnor_lowp::lowp_peak);
}

XNOR_IMPL(TORCH_EXTENSION_NAME, m) {
  using namespace xnor_train;
  m.impl("sign_bits", &sign_bits);
  m.impl("sign_bits_", &sign_bits_);
  m.impl("signs_from_bits", &signs_from_bits);
  m.impl("grad_through_bits", &grad_through_bits);
  m.impl("nonzero_bits", &nonzero_bits);
  m.impl("binarize_weight", &binarize_weight);
  m.impl("scaled_sign_grad", &scaled_sign_grad);
  m.impl("scaled_sign_grad_", &scaled_sign_grad_);
  m.impl("grad_through_bits_", &grad_through_bits_);
  m.impl("center_clamp_", &center_clamp_);
  m.impl("border_add_", &border_add_);
  m.impl("border_grad_add_", &border_grad_add_);
}
