// The part of ATen the kernels use: tensors, the few factory functions they call, the
// thread pool, profiler scopes, TORCH_CHECK. Only bindings.cpp includes torch's Python
// bindings (<torch/csrc/utils/pybind.h>); <torch/extension.h>, torch's whole C++ API
// plus those bindings, took 50 s of CPU to parse per file on a 2-vCPU Zen 3 against
// 10 s for these (g++ -O3, measured while another build ran).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/record_function.h>
