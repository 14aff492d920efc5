#include <gtest/gtest.h>

#include <cmath>

#include "test_support.h"
#include "layers/layer_test_util.h"

namespace espresso::testing {
namespace {

// Stored statistics, scaled by a random factor.
LayerCase stored_statistics_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "BatchNorm";
  if (rng.coin()) c.spec.attrs.set("eps", rng.uniform(1e-5, 1e-2));
  c.input_shapes = {random_shape(rng, 1, 5)};
  const Shape& s = c.input_shapes[0];
  const auto channels = static_cast<std::size_t>(s.rank() < 2 ? 1 : s[1]);
  // Caffe stores running sums scaled by a factor; 0 means no statistics were gathered.
  const double factor = rng.integer(0, 4) == 0 ? 0.0 : rng.uniform(0.5, 5.0);
  Values mean = rng.values(channels, -2.0, 2.0), variance = rng.values(channels, 0.05, 3.0);
  for (std::size_t k = 0; k < channels; ++k) {
    mean[k] *= factor;
    variance[k] *= factor;
  }
  c.weights = {mean, variance, {factor}};
  return c;
}

std::vector<Values> stored_statistics_naive(const LayerCase& c, const std::vector<Values>& in,
                                            const std::vector<Values>& w) {
  const Shape& s = c.input_shapes[0];
  const double eps = static_cast<float>(c.spec.attrs.get_float("eps", 1e-5));
  const std::int64_t channels = s.rank() < 2 ? 1 : s[1], inner = product(s, 2, s.rank());
  const double factor = w[2][0] == 0 ? 0.0 : 1.0 / w[2][0];
  Values y(in[0].size());
  for (std::int64_t n = 0; n < s[0]; ++n) {
    for (std::int64_t ch = 0; ch < channels; ++ch) {
      const auto k = static_cast<std::size_t>(ch);
      for (std::int64_t j = 0; j < inner; ++j) {
        const auto i = static_cast<std::size_t>((n * channels + ch) * inner + j);
        y[i] = (in[0][i] - w[0][k] * factor) / std::sqrt(w[1][k] * factor + eps);
      }
    }
  }
  return {y};
}

}  // namespace

TEST(Layers, BatchNorm) {
  run_layer_test({.make_case = stored_statistics_case, .naive = stored_statistics_naive});
}

// `use_global_stats` keeps the stored statistics while training (fine-tuning with frozen BatchNorm).
TEST(Layers, BatchNormTrainingWithGlobalStats) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c = stored_statistics_case(rng);
            c.spec.attrs.set("use_global_stats", std::int64_t{1});
            return c;
          },
      .naive = stored_statistics_naive,
      .training = true,
  });
}

// Training: each channel normalized by its own batch mean and biased variance, whatever is stored.
LayerCase batch_statistics_case(Rng& rng, const Shape& shape) {
  LayerCase c;
  c.spec.type = "BatchNorm";
  c.spec.attrs.set("eps", rng.uniform(1e-3, 1e-1));
  c.input_shapes = {shape};
  const auto channels = static_cast<std::size_t>(shape[1]);
  c.weights = {rng.values(channels), rng.values(channels, 0.1, 1.0), {1.0}};
  return c;
}

std::vector<Values> batch_statistics_naive(const LayerCase& c, const std::vector<Values>& in,
                                           const std::vector<Values>&) {
  const Shape& s = c.input_shapes[0];
  const double eps = static_cast<float>(c.spec.attrs.get_float("eps", 1e-5));
  const std::int64_t channels = s[1], inner = product(s, 2, s.rank());
  Values y(in[0].size());
  for (std::int64_t ch = 0; ch < channels; ++ch) {
    auto at = [&](std::int64_t n, std::int64_t j) {
      return static_cast<std::size_t>((n * channels + ch) * inner + j);
    };
    const auto count = static_cast<double>(s[0] * inner);
    double mean = 0, variance = 0;
    for (std::int64_t n = 0; n < s[0]; ++n) {
      for (std::int64_t j = 0; j < inner; ++j) mean += in[0][at(n, j)] / count;
    }
    for (std::int64_t n = 0; n < s[0]; ++n) {
      for (std::int64_t j = 0; j < inner; ++j) {
        variance += (in[0][at(n, j)] - mean) * (in[0][at(n, j)] - mean) / count;
      }
    }
    for (std::int64_t n = 0; n < s[0]; ++n) {
      for (std::int64_t j = 0; j < inner; ++j)
        y[at(n, j)] = (in[0][at(n, j)] - mean) / std::sqrt(variance + eps);
    }
  }
  return {y};
}

TEST(Layers, BatchNormTraining) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            Shape s = random_shape(rng, 2, 4, 6);
            s[0] = std::max<std::int64_t>(s[0], 2);
            return batch_statistics_case(rng, s);
          },
      .naive = batch_statistics_naive,
      .training = true,
  });
}

// Channels of ~38k elements: on the GPU several blocks sum each channel (channel_reduce.cuh), in runs
// that end inside an image's plane.
TEST(Layers, BatchNormTrainingOnFewWideChannels) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            return batch_statistics_case(rng, Shape{5, 2, 91, 83});
          },
      .naive = batch_statistics_naive,
      .cases = 2,
      .training = true,
      .gradient_cases = 1,
  });
}

// Caffe's moving averages: s = s·f + 1, mean = mean·f + μ, var = var·f + m/(m−1)·σ².
TEST(Layers, BatchNormTrainingUpdatesTheStoredStatistics) {
  LayerSpec spec = spec_of("BatchNorm");
  spec.attrs.set("moving_average_fraction", 0.5);
  spec.weights = {Tensor::from(Shape{2}, {1.0f, 2.0f}), Tensor::from(Shape{2}, {4.0f, 6.0f}),
                  Tensor::from(Shape{1}, {2.0f})};
  std::unique_ptr<Layer> layer = create_layer(spec);
  layer->set_training(true);
  // Channel 0 holds 1, 3 (mean 2, biased variance 1); channel 1 holds 0, 0.
  std::vector<Tensor> inputs{Tensor::from(Shape{2, 2}, {1.0f, 0.0f, 3.0f, 0.0f})};
  std::vector<Tensor> outputs{Tensor::empty(Shape{2, 2})};
  layer->forward(inputs, outputs);
  EXPECT_EQ(layer->weights()[2].to_vector(), (std::vector<float>{2.0f}));
  EXPECT_EQ(layer->weights()[0].to_vector(), (std::vector<float>{2.5f, 1.0f}));
  EXPECT_EQ(layer->weights()[1].to_vector(), (std::vector<float>{4.0f, 3.0f}));
  EXPECT_FALSE(layer->learned_weight(0));

  spec.attrs.set("use_global_stats", std::int64_t{1});
  std::unique_ptr<Layer> global = create_layer(spec);
  global->set_training(true);
  global->forward(inputs, outputs);
  // The blob is shared with the first layer: its update stands, and this one adds none.
  EXPECT_EQ(global->weights()[2].to_vector(), (std::vector<float>{2.0f}));
}

// A training net's blobs are device tensors: the CUDA kernel folds the batch statistics into them
// as the reference does on the CPU.
TEST(Layers, BatchNormTrainingUpdatesTheStoredStatisticsOnTheGpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA test not run";
  const Device gpu = Device::cuda(0);
  Rng rng(7);
  auto random_tensor = [&](const Shape& shape, double lo, double hi) {
    const Values values = rng.values(static_cast<std::size_t>(shape.numel()), lo, hi);
    return Tensor::from(shape, std::vector<float>(values.begin(), values.end()));
  };
  const Shape shape{5, 3, 4, 7};
  const Tensor x = random_tensor(shape, -1.0, 1.0);
  LayerSpec spec = spec_of("BatchNorm");
  spec.attrs.set("moving_average_fraction", 0.9);
  spec.weights = {random_tensor(Shape{3}, -1.0, 1.0), random_tensor(Shape{3}, 0.5, 2.0),
                  Tensor::from(Shape{1}, {1.5f})};
  LayerSpec device_spec = spec;
  for (Tensor& blob : device_spec.weights) blob = blob.to(gpu);
  std::unique_ptr<Layer> cpu_layer = create_layer(spec);
  std::unique_ptr<Layer> gpu_layer = create_layer(device_spec);
  cpu_layer->set_training(true);
  gpu_layer->set_training(true);

  std::unique_ptr<Stream> context = gpu_stream();
  std::unique_ptr<Kernel> kernel = make_kernel(*gpu_layer, {shape}, *context);
  ASSERT_TRUE(kernel);
  for (int step = 0; step < 2; ++step) {
    std::vector<Tensor> cpu_out{Tensor::empty(shape)};
    cpu_layer->forward({x}, cpu_out);
    std::vector<Tensor> gpu_out{Tensor::empty(shape, DType::f32, gpu)};
    kernel->forward({x.to(gpu)}, gpu_out);
    context->synchronize();
    const std::vector<float> expected_out = cpu_out[0].to_vector();
    const std::vector<float> actual_out = gpu_out[0].to(Device::cpu()).to_vector();
    for (std::size_t i = 0; i < expected_out.size(); ++i) EXPECT_NEAR(actual_out[i], expected_out[i], 1e-5);
    for (std::size_t k = 0; k < 3; ++k) {
      const std::vector<float> expected = cpu_layer->weights()[k].to_vector();
      const std::vector<float> actual = gpu_layer->weights()[k].to(Device::cpu()).to_vector();
      ASSERT_EQ(actual.size(), expected.size());
      for (std::size_t i = 0; i < expected.size(); ++i)
        EXPECT_FLOAT_EQ(actual[i], expected[i]) << "blob " << k << " element " << i << " after step " << step;
    }
  }
}

TEST(Layers, BatchNormErrors) {
  LayerSpec spec = spec_of("BatchNorm");
  spec.attrs.set("eps", -1.0);
  expect_model_error(spec, "'eps'");
  expect_shape_error(spec_of("BatchNorm"), {Shape{}}, "scalar");
  EXPECT_EQ(create_layer(spec_of("BatchNorm"))->weight_shapes({Shape{2, 5, 3, 3}}),
            (std::vector<Shape>{Shape{5}, Shape{5}, Shape{1}}));
  EXPECT_TRUE(create_layer(spec_of("BatchNorm"))->in_place());
}

}  // namespace espresso::testing
