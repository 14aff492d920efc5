#include <gtest/gtest.h>

#include "layers/backward_run.h"
#include "layers/dropout_mask.h"

namespace espresso::testing {

TEST(Layers, Dropout) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Dropout";
            if (rng.coin()) c.spec.attrs.set("ratio", rng.uniform(0.0, 0.9));
            c.input_shapes = {random_shape(rng)};
            return c;
          },
      .naive = [](const LayerCase&, const std::vector<Values>& in,
                  const std::vector<Values>&) { return std::vector<Values>{in[0]}; },
  });
}

// Training, through the harness: the naive forward applies dropout_mask.h's mask for the harness's
// seed (0) and first draw, since the harness runs one forward before each check; the CUDA kernel
// must draw the same mask.
TEST(Layers, DropoutTrainingGradient) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Dropout";
            if (rng.coin()) c.spec.attrs.set("ratio", rng.uniform(0.0, 0.9));
            c.input_shapes = {random_shape(rng)};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const auto ratio = static_cast<float>(c.spec.attrs.get_float("ratio", 0.5));
            const std::uint64_t stream = dropout_stream(0, 1);
            Values y(in[0].size());
            for (std::size_t i = 0; i < y.size(); ++i) {
              y[i] = dropout_keeps(stream, i, ratio) ? in[0][i] / (1.0 - ratio) : 0.0;
            }
            return std::vector<Values>{y};
          },
      .training = true,
  });
}

// Training: units kept with probability 1 − ratio and scaled by 1 / (1 − ratio); backward applies the
// same mask; masks repeat with the seed and change between forwards.
TEST(Layers, DropoutTraining) {
  LayerSpec spec = spec_of("Dropout");
  spec.attrs.set("ratio", 0.3);
  std::unique_ptr<Layer> layer = create_layer(spec);
  layer->set_training(true);
  layer->set_seed(42);
  const Shape shape{100, 100};
  std::vector<float> ones(10000, 1.0f);
  const std::vector<Tensor> inputs{Tensor::from(shape, ones)};
  std::vector<Tensor> outputs{Tensor::empty(shape)};
  layer->forward(inputs, outputs);
  const std::vector<float> y = outputs[0].to_vector();
  int kept = 0;
  for (float v : y) {
    if (v != 0.0f) {
      ++kept;
      EXPECT_FLOAT_EQ(v, 1.0f / 0.7f);
    }
  }
  // 10000 draws of p = 0.7: the standard deviation of the count is about 46.
  EXPECT_NEAR(kept, 7000, 250);

  std::vector<float> grad_values(10000);
  for (std::size_t i = 0; i < grad_values.size(); ++i) grad_values[i] = static_cast<float>(i % 7) - 3.0f;
  const std::vector<Tensor> output_grads{Tensor::from(shape, grad_values)};
  std::vector<Tensor> input_grads{Tensor::zeros(shape)}, no_weights;
  layer->backward(inputs, outputs, output_grads, input_grads, no_weights);
  const std::vector<float> dx = input_grads[0].to_vector();
  for (std::size_t i = 0; i < dx.size(); ++i) EXPECT_FLOAT_EQ(dx[i], y[i] * grad_values[i]);

  std::unique_ptr<Layer> same_seed = create_layer(spec);
  same_seed->set_training(true);
  same_seed->set_seed(42);
  std::vector<Tensor> again{Tensor::empty(shape)};
  same_seed->forward(inputs, again);
  EXPECT_EQ(again[0].to_vector(), y);
  same_seed->forward(inputs, again);
  EXPECT_NE(again[0].to_vector(), y);

  std::unique_ptr<Layer> other_seed = create_layer(spec);
  other_seed->set_training(true);
  other_seed->set_seed(43);
  other_seed->forward(inputs, again);
  EXPECT_NE(again[0].to_vector(), y);
}

// The mask generator itself: the kept fraction follows 1 − ratio for any ratio, and its bits are
// pinned (checked against an independent implementation), since the CPU and the GPU draw them alike
// and runs must repeat across versions.
TEST(Layers, DropoutMask) {
  for (const float ratio : {0.0f, 0.1f, 0.5f, 0.9f}) {
    const std::uint64_t stream = dropout_stream(7, 1);
    int kept = 0;
    for (std::uint64_t i = 0; i < 100000; ++i) kept += dropout_keeps(stream, i, ratio) ? 1 : 0;
    // 100000 draws: the standard deviation of the count is at most 158.
    EXPECT_NEAR(kept, 100000 * (1.0 - ratio), 800) << "ratio " << ratio;
  }
  std::string bits;
  for (std::uint64_t draw = 1; draw <= 2; ++draw) {
    for (std::uint64_t i = 0; i < 16; ++i)
      bits += dropout_keeps(dropout_stream(42, draw), i, 0.5f) ? '1' : '0';
    bits += ' ';
  }
  EXPECT_EQ(bits, "1000100110101010 0011100011011000 ");
  // splitmix64's published first output from state 0.
  EXPECT_EQ(splitmix64(kGoldenGamma), 0xE220A8397B1DCDAFull);
}

// The CUDA kernel in training draws the CPU's masks, forward after forward, and applies them in
// backward. Without a GPU there is nothing to compare.
TEST(Layers, DropoutTrainingCudaMatchesCpu) {
  LayerSpec spec = spec_of("Dropout");
  spec.attrs.set("ratio", 0.4);
  const Shape shape{3, 1001};
  std::vector<float> x(static_cast<std::size_t>(shape.numel())), dy(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<float>(i % 13) - 6.0f;
    dy[i] = static_cast<float>(i % 5) - 2.5f;
  }
  auto make = [&] {
    std::unique_ptr<Layer> layer = create_layer(spec);
    layer->set_training(true);
    layer->set_seed(1234);
    return layer;
  };
  for (int forwards : {1, 3}) {
    SCOPED_TRACE("forwards " + std::to_string(forwards));
    const std::unique_ptr<Layer> cpu_layer = make(), gpu_layer = make();
    const BackwardRun cpu =
        run_backward_on_cpu(*cpu_layer, {Tensor::from(shape, x)}, {Tensor::from(shape, dy)}, forwards);
    const std::optional<BackwardRun> gpu =
        run_backward_on_gpu(*gpu_layer, {Tensor::from(shape, x)}, {Tensor::from(shape, dy)}, forwards);
    if (!gpu) GTEST_SKIP() << "no CUDA device: CUDA dropout not compared";
    EXPECT_EQ(gpu->outputs[0].to_vector(), cpu.outputs[0].to_vector());
    EXPECT_EQ(gpu->input_grads[0].to_vector(), cpu.input_grads[0].to_vector());
  }
}

TEST(Layers, DropoutErrors) {
  LayerSpec spec = spec_of("Dropout");
  spec.attrs.set("ratio", 1.0);
  expect_model_error(spec, "'ratio'");
  spec.attrs.set("ratio", -0.1);
  expect_model_error(spec, "'ratio'");
  spec.attrs.set("ratio", std::string("half"));
  expect_model_error(spec, "'ratio'");
  expect_shape_error(spec_of("Dropout", 0), {}, "input");
  EXPECT_TRUE(create_layer(spec_of("Dropout"))->in_place());
}

}  // namespace espresso::testing
