// Caffe's Eltwise as the chain of Binary layers the importers build (eltwise_as_binary): what the former
// Eltwise layer's tests checked, through the chain's reference forward and backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "layers/backward_run.h"
#include "layers/binary.h"

namespace espresso::testing {
namespace {

std::vector<LayerSpec> chain(std::size_t inputs, const std::string& operation,
                             const std::vector<double>& coeffs) {
  LayerSpec eltwise = spec_of("Eltwise", static_cast<int>(inputs));
  int parts = 0;
  return eltwise_as_binary(eltwise, operation, coeffs,
                           [&](const std::string& base) { return base + "#" + std::to_string(++parts); });
}

struct ChainRun {
  Tensor output;
  std::vector<Tensor> input_grads;
};

// The chain's layers in order, then their backward in reverse, each through its reference.
ChainRun run_chain(const std::vector<LayerSpec>& layers, const std::vector<Tensor>& inputs,
                   const Tensor& dy) {
  std::map<std::string, Tensor> values, grads;
  for (std::size_t i = 0; i < inputs.size(); ++i) values["in" + std::to_string(i)] = inputs[i];
  std::vector<std::unique_ptr<Layer>> made;
  for (const LayerSpec& spec : layers) {
    made.push_back(create_layer(spec));
    std::vector<Tensor> in;
    for (const std::string& name : spec.inputs) in.push_back(values.at(name));
    values[spec.outputs[0]] = run_backward_on_cpu(*made.back(), in, {Tensor::zeros(dy.shape())}).outputs[0];
  }
  grads["out0"] = dy;
  for (std::size_t l = layers.size(); l-- > 0;) {
    const LayerSpec& spec = layers[l];
    if (!grads.count(spec.outputs[0])) continue;
    std::vector<Tensor> in;
    for (const std::string& name : spec.inputs) in.push_back(values.at(name));
    const BackwardRun run = run_backward_on_cpu(*made[l], in, {grads.at(spec.outputs[0])});
    for (std::size_t i = 0; i < in.size(); ++i) {
      if (!run.input_grads[i].defined()) continue;
      std::vector<float> sum = run.input_grads[i].to_vector();
      if (grads.count(spec.inputs[i])) {
        const std::vector<float> earlier = grads.at(spec.inputs[i]).to_vector();
        for (std::size_t k = 0; k < sum.size(); ++k) sum[k] += earlier[k];
      }
      grads[spec.inputs[i]] = Tensor::from(in[i].shape(), sum);
    }
  }
  ChainRun run{values.at("out0"), {}};
  for (std::size_t i = 0; i < inputs.size(); ++i)
    run.input_grads.push_back(grads.at("in" + std::to_string(i)));
  return run;
}

}  // namespace

// Forward against a naive double sum, product and maximum; backward against their derivatives.
TEST(Layers, EltwiseAsBinary) {
  Rng rng(11);
  for (int round = 0; round < 24; ++round) {
    const char* operations[] = {"sum", "prod", "max"};
    const std::string operation = operations[round % 3];
    const std::size_t count = static_cast<std::size_t>(rng.integer(2, 4));
    const std::vector<double> coeffs =
        operation == "sum" && rng.coin() ? rng.values(count, -2.0, 2.0) : std::vector<double>{};
    SCOPED_TRACE(operation + " of " + std::to_string(count));
    const Shape shape = random_shape(rng);
    std::vector<Tensor> inputs;
    std::vector<std::vector<float>> x;
    for (std::size_t k = 0; k < count; ++k) {
      std::vector<float> v;
      for (double d : rng.values(static_cast<std::size_t>(shape.numel()), -2.0, 2.0))
        v.push_back(static_cast<float>(d));
      x.push_back(v);
      inputs.push_back(Tensor::from(shape, v));
    }
    std::vector<float> dy;
    for (double d : rng.values(static_cast<std::size_t>(shape.numel()), -1.0, 1.0))
      dy.push_back(static_cast<float>(d));
    const ChainRun run = run_chain(chain(count, operation, coeffs), inputs, Tensor::from(shape, dy));
    const std::vector<float> y = run.output.to_vector();
    for (std::size_t i = 0; i < y.size(); ++i) {
      double want = operation == "sum" ? 0.0 : operation == "prod" ? 1.0 : -INFINITY;
      std::size_t best = 0;
      for (std::size_t k = 0; k < count; ++k) {
        const double c = coeffs.empty() ? 1.0 : static_cast<float>(coeffs[k]);
        if (operation == "sum") want += c * x[k][i];
        if (operation == "prod") want *= x[k][i];
        if (operation == "max" && x[k][i] > want) {
          want = x[k][i];
          best = k;
        }
      }
      EXPECT_NEAR(y[i], want, 1e-5 * std::max(1.0, std::abs(want))) << i;
      for (std::size_t k = 0; k < count; ++k) {
        double slope = 0;
        if (operation == "sum") slope = coeffs.empty() ? 1.0 : static_cast<float>(coeffs[k]);
        if (operation == "max") slope = k == best ? 1.0 : 0.0;
        if (operation == "prod") {
          slope = 1;
          for (std::size_t j = 0; j < count; ++j) slope *= j == k ? 1.0 : x[j][i];
        }
        EXPECT_NEAR(run.input_grads[k].to_vector()[i], dy[i] * slope, 1e-5 * std::max(1.0, std::abs(slope)))
            << k << " " << i;
      }
    }
  }
}

// Ties, which a numeric gradient cannot judge: the first input holding the maximum takes the whole
// gradient, as Caffe's Eltwise gives it.
TEST(Layers, EltwiseAsBinaryMaxTies) {
  const Shape shape{4};
  const std::vector<Tensor> inputs{Tensor::from(shape, {1.0f, 2.0f, 0.0f, -1.0f}),
                                   Tensor::from(shape, {1.0f, 3.0f, -0.0f, -2.0f}),
                                   Tensor::from(shape, {0.0f, 3.0f, 0.0f, -1.0f})};
  const ChainRun run =
      run_chain(chain(3, "max", {}), inputs, Tensor::from(shape, {10.0f, 20.0f, 30.0f, 40.0f}));
  const std::vector<std::vector<float>> expected{
      {10.0f, 0.0f, 30.0f, 40.0f}, {0.0f, 20.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
  for (std::size_t k = 0; k < expected.size(); ++k)
    EXPECT_EQ(run.input_grads[k].to_vector(), expected[k]) << k;
}

// Products of three inputs with zeros among them: each gradient is the product of the other inputs.
TEST(Layers, EltwiseAsBinaryProdWithZeros) {
  const Shape shape{3};
  const std::vector<Tensor> inputs{Tensor::from(shape, {2.0f, 0.0f, 1.0f}),
                                   Tensor::from(shape, {3.0f, 4.0f, 0.0f}),
                                   Tensor::from(shape, {5.0f, 6.0f, 0.0f})};
  const ChainRun run = run_chain(chain(3, "prod", {}), inputs, Tensor::from(shape, {1.0f, 2.0f, 3.0f}));
  const std::vector<std::vector<float>> expected{
      {15.0f, 48.0f, 0.0f}, {10.0f, 0.0f, 0.0f}, {6.0f, 0.0f, 0.0f}};
  for (std::size_t k = 0; k < expected.size(); ++k)
    EXPECT_EQ(run.input_grads[k].to_vector(), expected[k]) << k;
}

// The last layer keeps the Eltwise's name and output; the others get the names `fresh` gives.
TEST(Layers, EltwiseAsBinaryNames) {
  const std::vector<LayerSpec> layers = chain(3, "sum", {2.0, 1.0, -1.0});
  ASSERT_EQ(layers.size(), 6u);  // two Constant + mul pairs, one step, the last add
  EXPECT_EQ(layers.back().name, "bad_layer");
  EXPECT_EQ(layers.back().outputs, std::vector<std::string>{"out0"});
  EXPECT_EQ(layers.back().attrs.get_string("operation", ""), "add");
  for (std::size_t i = 0; i + 1 < layers.size(); ++i) {
    EXPECT_EQ(layers[i].outputs, std::vector<std::string>{layers[i].name});
    EXPECT_NE(layers[i].name.find('#'), std::string::npos) << layers[i].name;
  }
}

TEST(Layers, EltwiseAsBinaryErrors) {
  auto expect = [](std::size_t inputs, const std::string& operation, const std::vector<double>& coeffs,
                   const std::string& needle) {
    expect_error<ModelError>([&] { chain(inputs, operation, coeffs); }, needle);
  };
  expect(2, "min", {}, "'operation'");
  expect(2, "max", {1.0, 2.0}, "'coeffs'");
  expect(3, "sum", {1.0, 2.0}, "'coeffs'");
  expect(1, "sum", {}, "input");
  // Inputs that do not broadcast are still a shape error, now of the Binary layer.
  expect_shape_error(chain(2, "sum", {}).back(), {Shape{2, 3}, Shape{3, 2}}, "do not broadcast");
}

}  // namespace espresso::testing
