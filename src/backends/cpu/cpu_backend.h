// The CPU backend: fast kernels where a file in backends/cpu/ defines `make_<layer>`, the layer's
// reference kernel everywhere else. A factory returns nullptr for configurations it does not cover,
// and the backend falls back to the reference.
#pragma once

#include <memory>
#include <vector>

#include "backends/kernel.h"

namespace espresso::cpu {

#define ESPRESSO_KERNEL(type, stem) \
  std::unique_ptr<Kernel> make_##stem(const Layer& layer, const std::vector<Shape>& inputs);
#include "cpu_kernels.inc"
#undef ESPRESSO_KERNEL

}  // namespace espresso::cpu
