#include <gtest/gtest.h>

#include "layers/layer_test_util.h"

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
