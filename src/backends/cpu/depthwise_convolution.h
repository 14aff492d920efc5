// The CPU Convolution factory's direct kernel for depthwise 2-D convolutions.
#pragma once

#include <memory>

#include "backends/kernel.h"
#include "layers/convolution.h"

namespace espresso::cpu {

// A direct kernel when every channel is its own group (group == in_channels == out_channels) over
// 2 spatial axes, else nullptr.
std::unique_ptr<Kernel> depthwise_convolution_kernel(const ConvolutionLayer& layer, const ConvGeometry& g);

}  // namespace espresso::cpu
