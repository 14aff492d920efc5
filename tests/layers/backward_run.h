// One layer's forward and backward outside the harness, through the reference and through its CUDA
// kernel, for fixed cases that a numeric gradient cannot judge (ties, straight-through gradients,
// random masks).
#pragma once

#include <optional>

#include "test_support.h"
#include "layers/layer_test_util.h"

namespace espresso::testing {

struct BackwardRun {
  std::vector<Tensor> outputs;      // of the last forward
  std::vector<Tensor> input_grads;  // undefined for inputs that take none
  std::vector<Tensor> weight_grads;
};

inline std::vector<Shape> shapes_of(const std::vector<Tensor>& tensors) {
  std::vector<Shape> shapes;
  for (const Tensor& t : tensors) shapes.push_back(t.shape());
  return shapes;
}

// `forwards` forward passes, then one backward from zeroed gradients, all on `device`; the results
// come back on the CPU.
inline BackwardRun run_forwards_and_backward(Kernel& kernel, const Layer& layer,
                                             const std::vector<Tensor>& inputs,
                                             const std::vector<Tensor>& output_grads, int forwards,
                                             Device device, Stream* context) {
  std::vector<Tensor> device_inputs, outputs, device_output_grads, input_grads, weight_grads;
  for (const Tensor& t : inputs) device_inputs.push_back(t.to(device));
  for (const Shape& s : layer.output_shapes(shapes_of(inputs)))
    outputs.push_back(Tensor::empty(s, DType::f32, device));
  for (const Tensor& t : output_grads) device_output_grads.push_back(t.to(device));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    input_grads.push_back(layer.differentiable_input(i) ? Tensor::zeros(inputs[i].shape(), DType::f32, device)
                                                        : Tensor{});
  }
  for (const Tensor& w : layer.weights())
    weight_grads.push_back(Tensor::zeros(w.shape(), DType::f32, device));
  for (int f = 0; f < forwards; ++f) kernel.forward(device_inputs, outputs);
  kernel.backward(layer, device_inputs, outputs, device_output_grads, input_grads, weight_grads);
  if (context != nullptr) context->synchronize();
  BackwardRun run;
  for (const Tensor& t : outputs) run.outputs.push_back(t.to(Device::cpu()));
  for (const Tensor& t : input_grads) run.input_grads.push_back(t.defined() ? t.to(Device::cpu()) : Tensor{});
  for (const Tensor& t : weight_grads) run.weight_grads.push_back(t.to(Device::cpu()));
  return run;
}

// Through the layer's reference forward and backward.
inline BackwardRun run_backward_on_cpu(const Layer& layer, const std::vector<Tensor>& inputs,
                                       const std::vector<Tensor>& output_grads, int forwards = 1) {
  ReferenceKernel reference(layer);
  return run_forwards_and_backward(reference, layer, inputs, output_grads, forwards, Device::cpu(), nullptr);
}

// Through the layer's CUDA kernel; nullopt without a GPU.
inline std::optional<BackwardRun> run_backward_on_gpu(const Layer& layer, const std::vector<Tensor>& inputs,
                                                      const std::vector<Tensor>& output_grads,
                                                      int forwards = 1) {
  if (!have_gpu()) return std::nullopt;
  const std::unique_ptr<Stream> context = gpu_stream();
  const std::unique_ptr<Kernel> kernel = make_kernel(layer, shapes_of(inputs), *context);
  if (!kernel || !kernel->has_fast_backward()) {
    ADD_FAILURE() << "no CUDA kernel with a backward pass for " << layer.type();
    return std::nullopt;
  }
  return run_forwards_and_backward(*kernel, layer, inputs, output_grads, forwards, context->device(),
                                   context.get());
}

}  // namespace espresso::testing
