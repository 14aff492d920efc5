#include "layers/lrn.h"

#include <algorithm>
#include <cmath>

namespace espresso {

LRNLayer::LRNLayer(const LayerSpec& spec)
    : Layer(spec),
      size_(spec.attrs.get_int("size", 5)),
      alpha_(static_cast<float>(spec.attrs.get_float("alpha", 1.0))),
      beta_(static_cast<float>(spec.attrs.get_float("beta", 0.75))),
      k_(static_cast<float>(spec.attrs.get_float("k", 1.0))),
      across_(true) {
  const std::string region = spec.attrs.get_string("region", "across");
  if (region == "within") {
    across_ = false;
  } else if (region != "across") {
    fail_model("attribute 'region' must be \"across\" or \"within\", got \"" + region + "\"");
  }
  if (size_ < 1) fail_model("attribute 'size' must be positive, got " + std::to_string(size_));
  // The within-channel window is centred through padding of (size - 1) / 2 on each side.
  if (!across_ && size_ % 2 == 0)
    fail_model("within-channel LRN needs an odd 'size', got " + std::to_string(size_));
}

std::vector<Shape> LRNLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const Shape& in = inputs[0];
  if (across_ && in.rank() < 2) fail_shape("expects N x C x ..., got " + in.str());
  if (!across_ && in.rank() != 4) fail_shape("within-channel LRN expects N x C x H x W, got " + in.str());
  return {in};
}

void LRNLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& shape = inputs[0].shape();
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  const std::int64_t batch = shape[0];
  const std::int64_t channels = shape[1];
  if (across_) {
    const std::int64_t spatial = shape.count(2);
    for (std::int64_t n = 0; n < batch; ++n) {
      for (std::int64_t c = 0; c < channels; ++c) {
        const std::int64_t first = std::max<std::int64_t>(c - before(), 0);
        const std::int64_t last = std::min(c - before() + size_, channels);
        for (std::int64_t i = 0; i < spatial; ++i) {
          float sum = 0.0f;
          for (std::int64_t j = first; j < last; ++j) {
            const float v = x[(n * channels + j) * spatial + i];
            sum += v * v;
          }
          const std::int64_t at = (n * channels + c) * spatial + i;
          y[at] = x[at] * std::pow(k_ + alpha_ / static_cast<float>(size_) * sum, -beta_);
        }
      }
    }
    return;
  }
  const std::int64_t height = shape[2];
  const std::int64_t width = shape[3];
  const float scale = alpha_ / static_cast<float>(size_ * size_);
  for (std::int64_t plane = 0; plane < batch * channels; ++plane) {
    const float* in = x + plane * height * width;
    float* out = y + plane * height * width;
    for (std::int64_t h = 0; h < height; ++h) {
      for (std::int64_t w = 0; w < width; ++w) {
        float sum = 0.0f;
        for (std::int64_t i = std::max<std::int64_t>(h - before(), 0);
             i < std::min(h - before() + size_, height); ++i) {
          for (std::int64_t j = std::max<std::int64_t>(w - before(), 0);
               j < std::min(w - before() + size_, width); ++j) {
            sum += in[i * width + j] * in[i * width + j];
          }
        }
        out[h * width + w] = in[h * width + w] * std::pow(1.0f + scale * sum, -beta_);
      }
    }
  }
}

}  // namespace espresso
