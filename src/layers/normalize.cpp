#include "layers/normalize.h"

#include <cmath>

namespace espresso {

const LayerSchema& NormalizeLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              flag("across_spatial", true),
              flag("channel_shared", true),
              {.name = "eps", .type = AttrType::number, .fallback = 1e-10, .min = 0},
          },
      .weights = "scale: C (a scalar if channel_shared)",
      .notes =
          "the SSD fork's L2 normalisation: y = scale · x / sqrt(Σx² + eps), the sum over C·H·W per sample "
          "(across_spatial) or over C per position; Caffe's `scale_filler` becomes `weight_filler` "
          "(constant 1)",
  };
  return schema;
}

NormalizeLayer::NormalizeLayer(const LayerSpec& spec)
    : Layer(spec),
      across_spatial_(spec.attrs.require_int("across_spatial") != 0),
      channel_shared_(spec.attrs.require_int("channel_shared") != 0),
      eps_(static_cast<float>(spec.attrs.require_float("eps"))) {}

std::vector<Shape> NormalizeLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  if (inputs[0].rank() < 2) fail_shape("needs an input of rank ≥ 2 (N x C x ...), found " + inputs[0].str());
  return {inputs[0]};
}

std::vector<Shape> NormalizeLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  // The fork stores a shared scale as a scalar blob.
  return {channel_shared_ ? Shape{} : Shape{inputs[0][1]}};
}

NormalizeExtent NormalizeLayer::extent(const Shape& input) const {
  return {input[0], input[1], input.count(2), across_spatial_, channel_shared_};
}

namespace {

float group_norm(const float* x, const NormalizeExtent& e, std::int64_t g, float eps) {
  float sum = 0;
  for (std::int64_t k = 0; k < e.group_size(); ++k) sum += x[e.offset(g, k)] * x[e.offset(g, k)];
  return std::sqrt(sum + eps);
}

}  // namespace

void NormalizeLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const NormalizeExtent e = extent(inputs[0].shape());
  const float* x = inputs[0].data<float>();
  const float* scale = weights()[0].data<float>();
  float* y = outputs[0].data<float>();
  for (std::int64_t g = 0; g < e.groups(); ++g) {
    const float norm = group_norm(x, e, g, eps_);
    for (std::int64_t k = 0; k < e.group_size(); ++k) {
      const std::int64_t at = e.offset(g, k);
      y[at] = scale[e.channel(k)] * x[at] / norm;
    }
  }
}

// With n = sqrt(Σ x² + eps) over the group: dx_j = s_j·dy_j / n − x_j / n³ · Σ_i s_i·dy_i·x_i, and
// ds_c = Σ dy·x / n over the elements scaled by s_c.
void NormalizeLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                              const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                              std::vector<Tensor>& weight_grads) const {
  const NormalizeExtent e = extent(inputs[0].shape());
  const float* x = inputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  const float* scale = weights()[0].data<float>();
  float* dx = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
  float* dscale = weight_grads[0].defined() ? weight_grads[0].data<float>() : nullptr;
  for (std::int64_t g = 0; g < e.groups(); ++g) {
    const float norm = group_norm(x, e, g, eps_);
    float dot = 0;
    for (std::int64_t k = 0; k < e.group_size(); ++k) {
      const std::int64_t at = e.offset(g, k);
      dot += scale[e.channel(k)] * dy[at] * x[at];
      if (dscale != nullptr) dscale[e.channel(k)] += dy[at] * x[at] / norm;
    }
    if (dx == nullptr) continue;
    const float norm3 = norm * norm * norm;
    for (std::int64_t k = 0; k < e.group_size(); ++k) {
      const std::int64_t at = e.offset(g, k);
      dx[at] += scale[e.channel(k)] * dy[at] / norm - x[at] * dot / norm3;
    }
  }
}

}  // namespace espresso
