#include "layers/flatten.h"

#include <algorithm>

#include "layers/axis.h"

namespace espresso {

const LayerSchema& FlattenLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{1}},
              {.name = "end_axis", .type = AttrType::integer, .fallback = std::int64_t{-1}},
          },
      .weights = "–",
      .notes = "",
  };
  return schema;
}

FlattenLayer::FlattenLayer(const LayerSpec& spec)
    : Layer(spec), axis_(spec.attrs.require_int("axis")), end_axis_(spec.attrs.require_int("end_axis")) {}

std::vector<Shape> FlattenLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const Shape& x = inputs[0];
  const std::optional<int> first = resolve_axis(axis_, x.rank());
  const std::optional<int> last = resolve_axis(end_axis_, x.rank());
  if (!first || !last || *last < *first) {
    fail_shape("axes " + std::to_string(axis_) + " to " + std::to_string(end_axis_) +
               " are not an ordered range of input shape " + x.str());
  }
  std::vector<std::int64_t> dims(x.dims().begin(), x.dims().begin() + *first);
  dims.push_back(x.count(*first, *last + 1));
  dims.insert(dims.end(), x.dims().begin() + *last + 1, x.dims().end());
  return {Shape(std::move(dims))};
}

void FlattenLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  std::copy(x, x + inputs[0].numel(), outputs[0].data<float>());
}

void FlattenLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                            const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                            std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) dx[i] += dy[i];
}

}  // namespace espresso
