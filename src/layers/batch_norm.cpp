#include "layers/batch_norm.h"

#include <cmath>
#include <vector>

namespace espresso {

const LayerSchema& BatchNormLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "eps", .type = AttrType::number, .fallback = 1e-5, .min = 0},
              // Absent, it follows the net: batch statistics when training, the stored ones otherwise.
              {.name = "use_global_stats",
               .type = AttrType::integer,
               .min = 0,
               .max = 1,
               .default_text = "training: 0, else 1"},
              {.name = "moving_average_fraction",
               .type = AttrType::number,
               .fallback = 0.999,
               .min = 0,
               .max = 1},
          },
      .weights = "mean: C, variance: C, scale_factor: 1 (state, not learned: lr_mult 0)",
      .notes =
          "Caffe's form: statistics are mean/scale_factor, var/scale_factor (0 factor: zero statistics); "
          "channels are axis 1 (one channel for rank 1); in place. With batch statistics it normalizes by "
          "the batch's mean and biased variance and updates the blobs as Caffe: s = s·f + 1, mean = "
          "mean·f + μ, var = var·f + m/(m−1)·σ²",
  };
  return schema;
}

BatchNormLayer::BatchNormLayer(const LayerSpec& spec)
    : Layer(spec),
      eps_(static_cast<float>(spec.attrs.require_float("eps"))),
      moving_average_fraction_(static_cast<float>(spec.attrs.require_float("moving_average_fraction"))) {
  if (spec.attrs.has("use_global_stats")) use_global_stats_ = spec.attrs.require_int("use_global_stats") != 0;
}

bool BatchNormLayer::batch_statistics() const {
  // Caffe's default: stored statistics at test time, the batch's while training.
  return use_global_stats_ ? !*use_global_stats_ : training();
}

namespace {

// Per-channel mean and biased variance of an N x C x inner input.
void channel_statistics(const float* x, std::int64_t n, std::int64_t channels, std::int64_t inner,
                        std::vector<double>& mean, std::vector<double>& variance) {
  const auto count = static_cast<double>(n / channels);
  mean.assign(static_cast<std::size_t>(channels), 0.0);
  variance.assign(static_cast<std::size_t>(channels), 0.0);
  for (std::int64_t i = 0; i < n; ++i) mean[static_cast<std::size_t>((i / inner) % channels)] += x[i];
  for (double& m : mean) m /= count;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto c = static_cast<std::size_t>((i / inner) % channels);
    variance[c] += (x[i] - mean[c]) * (x[i] - mean[c]);
  }
  for (double& v : variance) v /= count;
}

}  // namespace

std::vector<Shape> BatchNormLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  if (inputs[0].rank() < 1) fail_shape("input must have at least one axis, got a scalar");
  return {inputs[0]};
}

std::int64_t BatchNormLayer::channels(const Shape& input) { return input.rank() < 2 ? 1 : input[1]; }

std::vector<Shape> BatchNormLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  return {Shape{channels(inputs[0])}, Shape{channels(inputs[0])}, Shape{1}};
}

void BatchNormLayer::affine(std::vector<float>& multiplier, std::vector<float>& offset) const {
  const Tensor& mean = weights()[0];
  const float stored_factor = weights()[2].data<float>()[0];
  const float factor = stored_factor == 0.0f ? 0.0f : 1.0f / stored_factor;
  const float* m = mean.data<float>();
  const float* v = weights()[1].data<float>();
  multiplier.resize(static_cast<std::size_t>(mean.numel()));
  offset.resize(multiplier.size());
  for (std::size_t c = 0; c < multiplier.size(); ++c) {
    multiplier[c] = 1.0f / std::sqrt(v[c] * factor + eps_);
    offset[c] = -m[c] * factor * multiplier[c];
  }
}

void BatchNormLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& shape = inputs[0].shape();
  const std::int64_t channel_count = channels(shape), inner = shape.count(2);
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  if (batch_statistics()) {
    std::vector<double> batch_mean, batch_variance;
    channel_statistics(x, shape.numel(), channel_count, inner, batch_mean, batch_variance);
    for (std::int64_t i = 0, n = shape.numel(); i < n; ++i) {
      const auto c = static_cast<std::size_t>((i / inner) % channel_count);
      y[i] = static_cast<float>((x[i] - batch_mean[c]) / std::sqrt(batch_variance[c] + eps_));
    }
    // The stored blobs are the layer's running state; Tensor handles share their memory.
    Tensor mean_blob = weights()[0], variance_blob = weights()[1], factor_blob = weights()[2];
    const double count = static_cast<double>(shape.numel() / channel_count);
    const double unbiased = count > 1 ? count / (count - 1) : 1.0;
    const float f = moving_average_fraction_;
    factor_blob.data<float>()[0] = factor_blob.data<float>()[0] * f + 1.0f;
    for (std::size_t c = 0; c < batch_mean.size(); ++c) {
      float& m = mean_blob.data<float>()[c];
      float& v = variance_blob.data<float>()[c];
      m = static_cast<float>(m * f + batch_mean[c]);
      v = static_cast<float>(v * f + unbiased * batch_variance[c]);
    }
    return;
  }
  const float stored_factor = weights()[2].data<float>()[0];
  const float factor = stored_factor == 0.0f ? 0.0f : 1.0f / stored_factor;
  const float* mean = weights()[0].data<float>();
  const float* variance = weights()[1].data<float>();
  for (std::int64_t i = 0, n = shape.numel(); i < n; ++i) {
    const std::int64_t c = (i / inner) % channel_count;
    y[i] = (x[i] - mean[c] * factor) / std::sqrt(variance[c] * factor + eps_);
  }
}

void BatchNormLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                              const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                              std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const Shape& shape = inputs[0].shape();
  const std::int64_t channel_count = channels(shape), inner = shape.count(2), n = shape.numel();
  const float* x = inputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  if (!batch_statistics()) {
    std::vector<float> multiplier, offset;
    affine(multiplier, offset);
    for (std::int64_t i = 0; i < n; ++i)
      dx[i] += dy[i] * multiplier[static_cast<std::size_t>((i / inner) % channel_count)];
    return;
  }
  // dx = (dy − mean(dy) − y · mean(dy · y)) / sqrt(σ² + eps), means over each channel's batch.
  const float* y = outputs[0].data<float>();
  std::vector<double> mean, variance;
  channel_statistics(x, n, channel_count, inner, mean, variance);
  std::vector<double> mean_dy(mean.size(), 0.0), mean_dy_y(mean.size(), 0.0);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto c = static_cast<std::size_t>((i / inner) % channel_count);
    mean_dy[c] += dy[i];
    mean_dy_y[c] += static_cast<double>(dy[i]) * y[i];
  }
  const auto count = static_cast<double>(n / channel_count);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto c = static_cast<std::size_t>((i / inner) % channel_count);
    dx[i] += static_cast<float>((dy[i] - mean_dy[c] / count - y[i] * mean_dy_y[c] / count) /
                                std::sqrt(variance[c] + eps_));
  }
}

}  // namespace espresso
