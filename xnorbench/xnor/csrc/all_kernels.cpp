// Every kernel file in one translation unit, beside bindings.cpp (the build's two).
//
// Each kernel file includes the ATen headers (tensor_api.h); parsing them is most of a
// file's compile. One unit parses them once: the six files took 66.5 s of CPU compiled
// apart and 14.8 s together (g++ -O3 -march=native, one at a time, 2-vCPU AMD Zen 3,
// 8 December 2026), and a build compiles this unit and bindings.cpp in parallel.
// Sharing a unit, the files share its anonymous namespace and macros: a name added to
// one must not repeat one of another's (checked with g++ -fsyntax-only -Wall for
// -march=x86-64, x86-64-v3, znver3 and sapphirerapids, the AVX-512 blocks included).

#include "xnor_conv.cpp"
#include "layer_chain.cpp"
#include "float_layers.cpp"
#include "train_ops.cpp"
#include "ceilings.cpp"
#include "lowp_ceilings.cpp"
