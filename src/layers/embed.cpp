#include "layers/embed.h"

#include <cmath>

namespace espresso {

const LayerSchema& EmbedLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "num_output", .type = AttrType::integer, .required = true, .min = 1},
              {.name = "input_dim", .type = AttrType::integer, .required = true, .min = 1},
              flag("bias_term", true),
          },
      .weights = "W: input_dim x num_output, b: num_output",
      .notes = "Caffe's Embed: input values are row indices of W; output = input shape + [num_output]",
  };
  return schema;
}

EmbedLayer::EmbedLayer(const LayerSpec& spec)
    : Layer(spec),
      num_output_(spec.attrs.require_int("num_output")),
      input_dim_(spec.attrs.require_int("input_dim")),
      bias_(spec.attrs.require_int("bias_term") != 0) {}

std::vector<Shape> EmbedLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  std::vector<std::int64_t> dims = inputs[0].dims();
  dims.push_back(num_output_);
  return {Shape(dims)};
}

std::vector<Shape> EmbedLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  std::vector<Shape> shapes{Shape{input_dim_, num_output_}};
  if (bias_) shapes.push_back(Shape{num_output_});
  return shapes;
}

std::int64_t EmbedLayer::index_at(const float* indices, std::int64_t position) const {
  const float v = indices[position];
  if (!(v >= 0 && v < static_cast<float>(input_dim_)) || v != std::floor(v)) {
    fail_shape("input value " + std::to_string(v) + " at position " + std::to_string(position) +
               " is no index in 0.." + std::to_string(input_dim_ - 1));
  }
  return static_cast<std::int64_t>(v);
}

void EmbedLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* indices = inputs[0].data<float>();
  const float* w = weights()[0].data<float>();
  const float* b = bias_ ? weights()[1].data<float>() : nullptr;
  float* y = outputs[0].data<float>();
  for (std::int64_t i = 0; i < inputs[0].numel(); ++i) {
    const float* row = w + index_at(indices, i) * num_output_;
    for (std::int64_t k = 0; k < num_output_; ++k) y[i * num_output_ + k] = row[k] + (b ? b[k] : 0.0f);
  }
}

void EmbedLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                          const std::vector<Tensor>& output_grads, std::vector<Tensor>&,
                          std::vector<Tensor>& weight_grads) const {
  const float* indices = inputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dw = weight_grads[0].data<float>();
  float* db = bias_ ? weight_grads[1].data<float>() : nullptr;
  for (std::int64_t i = 0; i < inputs[0].numel(); ++i) {
    float* row = dw + index_at(indices, i) * num_output_;
    for (std::int64_t k = 0; k < num_output_; ++k) {
      row[k] += dy[i * num_output_ + k];
      if (db) db[k] += dy[i * num_output_ + k];
    }
  }
}

}  // namespace espresso
