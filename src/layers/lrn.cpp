#include "layers/lrn.h"

#include <algorithm>
#include <cmath>

namespace espresso {

const LayerSchema& LRNLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "size", .type = AttrType::integer, .fallback = std::int64_t{5}, .min = 1},
              {.name = "alpha", .type = AttrType::number, .fallback = 1.0},
              {.name = "beta", .type = AttrType::number, .fallback = 0.75},
              {.name = "k", .type = AttrType::number, .fallback = 1.0},
              {.name = "region",
               .type = AttrType::text,
               .fallback = std::string("across"),
               .choices = {"across", "within"}},
          },
      .weights = "–",
      .notes =
          "across: x / (k + alpha/size · Σx²)^beta over channels [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉]; "
          "within (odd size): x / (1 + alpha/size² · Σx²)^beta over a zero-padded size x size window "
          "(Caffe ignores k here); backward as Caffe's: dx = dy·scale^−beta − 2·beta·(alpha/size or "
          "alpha/size²)·x·Σ dy·y/scale over the windows holding x",
  };
  return schema;
}

LRNLayer::LRNLayer(const LayerSpec& spec)
    : Layer(spec),
      size_(spec.attrs.require_int("size")),
      alpha_(static_cast<float>(spec.attrs.require_float("alpha"))),
      beta_(static_cast<float>(spec.attrs.require_float("beta"))),
      k_(static_cast<float>(spec.attrs.require_float("k"))),
      across_(spec.attrs.require_string("region") == "across") {
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

std::vector<float> LRNLayer::window_sums(const std::vector<float>& v, const Shape& shape,
                                         bool transposed) const {
  // The window of index i along a windowed axis is [i + low, i + low + size).
  const std::int64_t low = transposed ? before() - size_ + 1 : -before();
  std::vector<float> sums(v.size(), 0.0f);
  const std::int64_t batch = shape[0];
  const std::int64_t channels = shape[1];
  if (across_) {
    const std::int64_t spatial = shape.count(2);
    for (std::int64_t n = 0; n < batch; ++n) {
      for (std::int64_t c = 0; c < channels; ++c) {
        const std::int64_t first = std::max<std::int64_t>(c + low, 0);
        const std::int64_t last = std::min(c + low + size_, channels);
        for (std::int64_t i = 0; i < spatial; ++i) {
          float sum = 0.0f;
          for (std::int64_t j = first; j < last; ++j) {
            sum += v[static_cast<std::size_t>((n * channels + j) * spatial + i)];
          }
          sums[static_cast<std::size_t>((n * channels + c) * spatial + i)] = sum;
        }
      }
    }
    return sums;
  }
  const std::int64_t height = shape[2];
  const std::int64_t width = shape[3];
  for (std::int64_t plane = 0; plane < batch * channels; ++plane) {
    const float* in = v.data() + plane * height * width;
    float* out = sums.data() + plane * height * width;
    for (std::int64_t h = 0; h < height; ++h) {
      const std::int64_t top = std::max<std::int64_t>(h + low, 0);
      const std::int64_t bottom = std::min(h + low + size_, height);
      for (std::int64_t w = 0; w < width; ++w) {
        const std::int64_t left = std::max<std::int64_t>(w + low, 0);
        const std::int64_t right = std::min(w + low + size_, width);
        float sum = 0.0f;
        for (std::int64_t i = top; i < bottom; ++i) {
          for (std::int64_t j = left; j < right; ++j) sum += in[i * width + j];
        }
        out[h * width + w] = sum;
      }
    }
  }
  return sums;
}

std::vector<float> LRNLayer::scales(const Tensor& x) const {
  const float* in = x.data<float>();
  std::vector<float> squares(static_cast<std::size_t>(x.numel()));
  for (std::size_t i = 0; i < squares.size(); ++i) squares[i] = in[i] * in[i];
  std::vector<float> result = window_sums(squares, x.shape(), false);
  for (float& s : result) s = base() + norm() * s;
  return result;
}

void LRNLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  const std::vector<float> scale = scales(inputs[0]);
  for (std::size_t i = 0; i < scale.size(); ++i) y[i] = x[i] * std::pow(scale[i], -beta_);
}

void LRNLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                        const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                        std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* x = inputs[0].data<float>();
  const float* y = outputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  const std::vector<float> scale = scales(inputs[0]);
  std::vector<float> passed_back(scale.size());
  for (std::size_t i = 0; i < scale.size(); ++i) passed_back[i] = dy[i] * y[i] / scale[i];
  const std::vector<float> gathered = window_sums(passed_back, inputs[0].shape(), true);
  const float coefficient = 2.0f * beta_ * norm();
  for (std::size_t i = 0; i < scale.size(); ++i) {
    dx[i] += dy[i] * std::pow(scale[i], -beta_) - coefficient * x[i] * gathered[i];
  }
}

}  // namespace espresso
