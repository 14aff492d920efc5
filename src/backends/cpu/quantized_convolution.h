// Int8 convolution kernels on the CPU (gemm_int8.h): for QuantizedConvolution layers, and for float
// Convolution layers in a net run with Precision::int8 (weights quantized per output channel once,
// activations quantized per image from their range).
#pragma once

#include <memory>
#include <vector>

#include "backends/kernel.h"

namespace espresso::cpu {

// The int8 kernel of a float Convolution, or nullptr for shapes it does not cover (not 1-D or 2-D).
std::unique_ptr<Kernel> int8_convolution_kernel(const Layer& layer, const std::vector<Shape>& inputs);

}  // namespace espresso::cpu
