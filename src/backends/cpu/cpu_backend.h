// The CPU backend's fast kernels. Each factory returns nullptr for configurations it does not
// cover, and the executor falls back to the layer's reference kernel.
#pragma once

#include <memory>
#include <vector>

#include "backends/kernel.h"

namespace espresso::cpu {

using KernelFactory = std::unique_ptr<Kernel> (*)(const Layer& layer, const std::vector<Shape>& inputs);

// The fast kernel for this layer and these input shapes, or nullptr.
std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs);

// Factories, one per file in backends/cpu/, listed in the table in cpu_backend.cpp.
std::unique_ptr<Kernel> make_absval(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_activation(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_batch_norm(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_bias(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_binary(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_convolution(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_deconvolution(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_eltwise(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_inner_product(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_lrn(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_matmul(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_pooling(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_power(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_prelu(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_relu(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_scale(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_sigmoid(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_softmax(const Layer& layer, const std::vector<Shape>& inputs);
std::unique_ptr<Kernel> make_tanh(const Layer& layer, const std::vector<Shape>& inputs);

}  // namespace espresso::cpu
