// The CUDA kernels' factories, one per file in backends/cuda/, listed in the table in
// cuda_backend.cpp. Each returns nullptr for configurations it does not cover.
#pragma once

#include <memory>
#include <vector>

#include "backends/cuda/context.h"
#include "backends/kernel.h"

namespace espresso::cuda {

using KernelFactory = std::unique_ptr<Kernel> (*)(const Layer& layer, const std::vector<Shape>& inputs,
                                                  StreamContext& context);

std::unique_ptr<Kernel> make_convolution(const Layer& layer, const std::vector<Shape>& inputs,
                                         StreamContext& context);
std::unique_ptr<Kernel> make_deconvolution(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context);
std::unique_ptr<Kernel> make_inner_product(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context);
std::unique_ptr<Kernel> make_lrn(const Layer& layer, const std::vector<Shape>& inputs,
                                 StreamContext& context);
std::unique_ptr<Kernel> make_pooling(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context);
std::unique_ptr<Kernel> make_relu(const Layer& layer, const std::vector<Shape>& inputs,
                                  StreamContext& context);

}  // namespace espresso::cuda
