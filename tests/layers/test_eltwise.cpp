#include <gtest/gtest.h>

#include <algorithm>

#include "layers/backward_run.h"

namespace espresso::testing {

TEST(Layers, Eltwise) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Eltwise";
            const char* operations[] = {"sum", "prod", "max"};
            const std::string operation = operations[rng.integer(0, 2)];
            if (operation != "sum" || rng.coin()) c.spec.attrs.set("operation", operation);
            const Shape shape = random_shape(rng);
            c.input_shapes.assign(static_cast<std::size_t>(rng.integer(2, 4)), shape);
            if (operation == "sum" && rng.coin()) {
              c.spec.attrs.set("coeffs", rng.values(c.input_shapes.size(), -2.0, 2.0));
            }
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const std::string operation = c.spec.attrs.get_string("operation", "sum");
            std::vector<double> coeffs =
                c.spec.attrs.get_floats("coeffs", std::vector<double>(in.size(), 1.0));
            for (double& k : coeffs) k = static_cast<float>(k);
            Values y(in[0].size());
            for (std::size_t i = 0; i < y.size(); ++i) {
              double value = operation == "sum" ? 0.0 : operation == "prod" ? 1.0 : -INFINITY;
              for (std::size_t k = 0; k < in.size(); ++k) {
                if (operation == "sum") value += coeffs[k] * in[k][i];
                if (operation == "prod") value *= in[k][i];
                if (operation == "max") value = std::max(value, in[k][i]);
              }
              y[i] = value;
            }
            return std::vector<Values>{y};
          },
  });
}

// Ties, which the numeric gradient cannot judge: the first input holding the maximum takes the whole
// gradient, on the CPU and on the GPU.
TEST(Layers, EltwiseMaxTies) {
  LayerSpec spec = spec_of("Eltwise", 3);
  spec.attrs.set("operation", std::string("max"));
  const std::unique_ptr<Layer> layer = create_layer(spec);
  const Shape shape{4};
  const std::vector<Tensor> inputs{Tensor::from(shape, {1.0f, 2.0f, 0.0f, -1.0f}),
                                   Tensor::from(shape, {1.0f, 3.0f, -0.0f, -2.0f}),
                                   Tensor::from(shape, {0.0f, 3.0f, 0.0f, -1.0f})};
  const std::vector<Tensor> output_grads{Tensor::from(shape, {10.0f, 20.0f, 30.0f, 40.0f})};
  const std::vector<std::vector<float>> expected{
      {10.0f, 0.0f, 30.0f, 40.0f}, {0.0f, 20.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
  const BackwardRun cpu = run_backward_on_cpu(*layer, inputs, output_grads);
  for (std::size_t k = 0; k < expected.size(); ++k)
    EXPECT_EQ(cpu.input_grads[k].to_vector(), expected[k]) << k;
  if (const std::optional<BackwardRun> gpu = run_backward_on_gpu(*layer, inputs, output_grads)) {
    for (std::size_t k = 0; k < expected.size(); ++k)
      EXPECT_EQ(gpu->input_grads[k].to_vector(), expected[k]) << k;
  }
}

// Products of three inputs with zeros among them: each gradient is the product of the other inputs,
// which y / x_k would get wrong at x_k = 0.
TEST(Layers, EltwiseProdWithZeros) {
  LayerSpec spec = spec_of("Eltwise", 3);
  spec.attrs.set("operation", std::string("prod"));
  const std::unique_ptr<Layer> layer = create_layer(spec);
  const Shape shape{3};
  const std::vector<Tensor> inputs{Tensor::from(shape, {2.0f, 0.0f, 1.0f}),
                                   Tensor::from(shape, {3.0f, 4.0f, 0.0f}),
                                   Tensor::from(shape, {5.0f, 6.0f, 0.0f})};
  const std::vector<Tensor> output_grads{Tensor::from(shape, {1.0f, 2.0f, 3.0f})};
  const std::vector<std::vector<float>> expected{
      {15.0f, 48.0f, 0.0f}, {10.0f, 0.0f, 0.0f}, {6.0f, 0.0f, 0.0f}};
  const BackwardRun cpu = run_backward_on_cpu(*layer, inputs, output_grads);
  for (std::size_t k = 0; k < expected.size(); ++k)
    EXPECT_EQ(cpu.input_grads[k].to_vector(), expected[k]) << k;
  if (const std::optional<BackwardRun> gpu = run_backward_on_gpu(*layer, inputs, output_grads)) {
    for (std::size_t k = 0; k < expected.size(); ++k)
      EXPECT_EQ(gpu->input_grads[k].to_vector(), expected[k]) << k;
  }
}

TEST(Layers, EltwiseErrors) {
  LayerSpec spec = spec_of("Eltwise", 2);
  spec.attrs.set("operation", std::string("min"));
  expect_model_error(spec, "'operation'");
  spec.attrs.set("operation", std::string("max"));
  spec.attrs.set("coeffs", std::vector<double>{1.0, 2.0});
  expect_model_error(spec, "'coeffs'");
  spec = spec_of("Eltwise", 3);
  spec.attrs.set("coeffs", std::vector<double>{1.0, 2.0});
  expect_model_error(spec, "'coeffs'");
  expect_shape_error(spec_of("Eltwise", 1), {Shape{2, 3}}, "input");
  expect_shape_error(spec_of("Eltwise", 2), {Shape{2, 3}, Shape{3, 2}}, "shape 3x2");
}

}  // namespace espresso::testing
