// The CUDA kernels' factories, one per file in backends/cuda/, listed in the table in
// cuda_backend.cpp. Each returns nullptr for configurations it does not cover.
//
// Backward: a kernel that trains overrides Kernel::backward and has_fast_backward() (returning true).
// Every tensor it gets is on the context's device; it queues its work on context.stream() and, like
// Layer::backward, ADDS into the defined entries of input_grads and weight_grads (the executor zeroes
// them first). Layers that act differently in training read layer.training() when the kernel is made
// (Dropout, BatchNorm); a training net's weights are device tensors that the solver updates in place
// between iterations, so kernels keep pointers to them, never copies.
#pragma once

#include <memory>
#include <vector>

#include "backends/cuda/context.h"
#include "backends/kernel.h"

namespace espresso::cuda {

using KernelFactory = std::unique_ptr<Kernel> (*)(const Layer& layer, const std::vector<Shape>& inputs,
                                                  StreamContext& context);

std::unique_ptr<Kernel> make_absval(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context);
std::unique_ptr<Kernel> make_accuracy(const Layer& layer, const std::vector<Shape>& inputs,
                                      StreamContext& context);
std::unique_ptr<Kernel> make_activation(const Layer& layer, const std::vector<Shape>& inputs,
                                        StreamContext& context);
std::unique_ptr<Kernel> make_batch_norm(const Layer& layer, const std::vector<Shape>& inputs,
                                        StreamContext& context);
std::unique_ptr<Kernel> make_bias(const Layer& layer, const std::vector<Shape>& inputs,
                                  StreamContext& context);
std::unique_ptr<Kernel> make_binary(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context);
std::unique_ptr<Kernel> make_concat(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context);
std::unique_ptr<Kernel> make_constant(const Layer& layer, const std::vector<Shape>& inputs,
                                      StreamContext& context);
std::unique_ptr<Kernel> make_convolution(const Layer& layer, const std::vector<Shape>& inputs,
                                         StreamContext& context);
// Input 0 copied to every output: Flatten, Reshape, Split and Dropout at inference.
std::unique_ptr<Kernel> make_copy(const Layer& layer, const std::vector<Shape>& inputs,
                                  StreamContext& context);
std::unique_ptr<Kernel> make_deconvolution(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context);
std::unique_ptr<Kernel> make_dropout(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context);
std::unique_ptr<Kernel> make_eltwise(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context);
std::unique_ptr<Kernel> make_euclidean_loss(const Layer& layer, const std::vector<Shape>& inputs,
                                            StreamContext& context);
std::unique_ptr<Kernel> make_gather(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context);
std::unique_ptr<Kernel> make_inner_product(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context);
std::unique_ptr<Kernel> make_log_softmax(const Layer& layer, const std::vector<Shape>& inputs,
                                         StreamContext& context);
std::unique_ptr<Kernel> make_lrn(const Layer& layer, const std::vector<Shape>& inputs,
                                 StreamContext& context);
std::unique_ptr<Kernel> make_matmul(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context);
std::unique_ptr<Kernel> make_pad(const Layer& layer, const std::vector<Shape>& inputs,
                                 StreamContext& context);
std::unique_ptr<Kernel> make_pooling(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context);
std::unique_ptr<Kernel> make_power(const Layer& layer, const std::vector<Shape>& inputs,
                                   StreamContext& context);
std::unique_ptr<Kernel> make_prelu(const Layer& layer, const std::vector<Shape>& inputs,
                                   StreamContext& context);
std::unique_ptr<Kernel> make_reduce(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context);
std::unique_ptr<Kernel> make_relu(const Layer& layer, const std::vector<Shape>& inputs,
                                  StreamContext& context);
std::unique_ptr<Kernel> make_resize(const Layer& layer, const std::vector<Shape>& inputs,
                                    StreamContext& context);
std::unique_ptr<Kernel> make_scale(const Layer& layer, const std::vector<Shape>& inputs,
                                   StreamContext& context);
std::unique_ptr<Kernel> make_sigmoid(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context);
std::unique_ptr<Kernel> make_sigmoid_cross_entropy_loss(const Layer& layer, const std::vector<Shape>& inputs,
                                                        StreamContext& context);
std::unique_ptr<Kernel> make_slice(const Layer& layer, const std::vector<Shape>& inputs,
                                   StreamContext& context);
std::unique_ptr<Kernel> make_softmax(const Layer& layer, const std::vector<Shape>& inputs,
                                     StreamContext& context);
std::unique_ptr<Kernel> make_softmax_with_loss(const Layer& layer, const std::vector<Shape>& inputs,
                                               StreamContext& context);
std::unique_ptr<Kernel> make_strided_slice(const Layer& layer, const std::vector<Shape>& inputs,
                                           StreamContext& context);
std::unique_ptr<Kernel> make_transpose(const Layer& layer, const std::vector<Shape>& inputs,
                                       StreamContext& context);
std::unique_ptr<Kernel> make_tanh(const Layer& layer, const std::vector<Shape>& inputs,
                                  StreamContext& context);

}  // namespace espresso::cuda
