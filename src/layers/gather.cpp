#include "layers/gather.h"

#include <cmath>

namespace espresso {

const LayerSchema& GatherLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{0}},
          },
      .weights = "–",
      .notes = "inputs: data, indices (whole numbers as floats, negative from the end)",
  };
  return schema;
}

std::vector<Shape> GatherLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, 2);
  const Shape& data = inputs[0];
  if (data.rank() == 0) fail_shape("cannot gather from a scalar");
  if (axis_ < -data.rank() || axis_ >= data.rank())
    fail_shape("axis " + std::to_string(axis_) + " is out of range for " + data.str());
  const int axis = data.canonical_axis(axis_);
  std::vector<std::int64_t> dims(data.dims().begin(), data.dims().begin() + axis);
  dims.insert(dims.end(), inputs[1].dims().begin(), inputs[1].dims().end());
  dims.insert(dims.end(), data.dims().begin() + axis + 1, data.dims().end());
  return {Shape(dims)};
}

void GatherLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& data = inputs[0].shape();
  const int axis = data.canonical_axis(axis_);
  const std::int64_t outer = data.count(0, axis), size = data[axis], inner = data.count(axis + 1);
  const float* x = inputs[0].data<float>();
  const float* indices = inputs[1].data<float>();
  const std::int64_t count = inputs[1].numel();
  float* y = outputs[0].data<float>();
  for (std::int64_t j = 0; j < count; ++j) {
    auto index = static_cast<std::int64_t>(std::llround(indices[j]));
    if (index < 0) index += size;
    if (index < 0 || index >= size) {
      fail_shape("index " + std::to_string(indices[j]) + " is out of range for axis of size " +
                 std::to_string(size));
    }
  }
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t j = 0; j < count; ++j) {
      auto index = static_cast<std::int64_t>(std::llround(indices[j]));
      if (index < 0) index += size;
      for (std::int64_t i = 0; i < inner; ++i)
        y[(o * count + j) * inner + i] = x[(o * size + index) * inner + i];
    }
  }
}

void GatherLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                           const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                           std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const Shape& data = inputs[0].shape();
  const int axis = data.canonical_axis(axis_);
  const std::int64_t outer = data.count(0, axis), size = data[axis], inner = data.count(axis + 1);
  const float* indices = inputs[1].data<float>();
  const std::int64_t count = inputs[1].numel();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  // Repeated indices add up: each gathered copy sends its gradient back.
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t j = 0; j < count; ++j) {
      auto index = static_cast<std::int64_t>(std::llround(indices[j]));
      if (index < 0) index += size;
      for (std::int64_t i = 0; i < inner; ++i)
        dx[(o * size + index) * inner + i] += dy[(o * count + j) * inner + i];
    }
  }
}

}  // namespace espresso
