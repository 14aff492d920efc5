#include "layers/concat.h"

#include <algorithm>

#include "layers/axis.h"

namespace espresso {

const LayerSchema& ConcatLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{1}},
          },
      .weights = "–",
      .notes = "",
  };
  return schema;
}

ConcatLayer::ConcatLayer(const LayerSpec& spec) : Layer(spec), axis_(spec.attrs.require_int("axis")) {}

std::vector<Shape> ConcatLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, SIZE_MAX);
  const std::optional<int> axis = resolve_axis(axis_, inputs[0].rank());
  if (!axis)
    fail_shape("axis " + std::to_string(axis_) + " is out of range for input shape " + inputs[0].str());
  Shape joined = inputs[0];
  for (std::size_t i = 1; i < inputs.size(); ++i) {
    bool fits = inputs[i].rank() == joined.rank();
    for (int d = 0; fits && d < joined.rank(); ++d) fits = d == *axis || inputs[i][d] == joined[d];
    if (!fits) {
      fail_shape("input " + std::to_string(i) + " of shape " + inputs[i].str() +
                 " does not match input 0 of shape " + inputs[0].str() + " outside axis " +
                 std::to_string(*axis));
    }
    joined[*axis] += inputs[i][*axis];
  }
  return {joined};
}

void ConcatLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& out = outputs[0].shape();
  const int axis = *resolve_axis(axis_, out.rank());
  const std::int64_t outer = out.count(0, axis), inner = out.count(axis + 1);
  float* y = outputs[0].data<float>();
  std::int64_t offset = 0;
  for (const Tensor& input : inputs) {
    const std::int64_t block = input.shape()[axis] * inner;
    const float* x = input.data<float>();
    for (std::int64_t o = 0; o < outer; ++o) {
      std::copy(x + o * block, x + (o + 1) * block, y + o * out[axis] * inner + offset);
    }
    offset += block;
  }
}

void ConcatLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                           const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                           std::vector<Tensor>&) const {
  const Shape& out = outputs[0].shape();
  const int axis = *resolve_axis(axis_, out.rank());
  const std::int64_t outer = out.count(0, axis), inner = out.count(axis + 1);
  const float* dy = output_grads[0].data<float>();
  std::int64_t offset = 0;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const std::int64_t block = inputs[k].shape()[axis] * inner;
    if (input_grads[k].defined()) {
      float* dx = input_grads[k].data<float>();
      for (std::int64_t o = 0; o < outer; ++o) {
        const float* source = dy + o * out[axis] * inner + offset;
        for (std::int64_t i = 0; i < block; ++i) dx[o * block + i] += source[i];
      }
    }
    offset += block;
  }
}

}  // namespace espresso
