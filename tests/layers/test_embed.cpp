#include <gtest/gtest.h>

#include "harness/layer_harness.h"
#include "layers/registry.h"

namespace espresso::testing {
namespace {

LayerCase make_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "Embed";
  const int input_dim = rng.integer(1, 12);
  c.spec.attrs.set("num_output", std::int64_t{rng.integer(1, 9)});
  c.spec.attrs.set("input_dim", std::int64_t{input_dim});
  if (rng.coin()) c.spec.attrs.set("bias_term", std::int64_t{0});
  std::vector<std::int64_t> dims;
  for (int a = rng.integer(1, 3); a > 0; --a) dims.push_back(rng.integer(1, 6));
  c.input_shapes = {Shape(dims)};
  Values indices;
  for (std::int64_t i = 0; i < c.input_shapes[0].numel(); ++i)
    indices.push_back(rng.integer(0, input_dim - 1));
  c.inputs = {indices};
  c.non_differentiable_inputs = {0};
  return c;
}

std::vector<Values> naive(const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>& w) {
  const auto outputs = static_cast<std::size_t>(c.spec.attrs.get_int("num_output", 0));
  const bool bias = c.spec.attrs.get_int("bias_term", 1) != 0;
  Values y;
  for (double index : in[0]) {
    for (std::size_t k = 0; k < outputs; ++k) {
      y.push_back(w[0][static_cast<std::size_t>(index) * outputs + k] + (bias ? w[1][k] : 0.0));
    }
  }
  return {y};
}

}  // namespace

TEST(Layers, Embed) {
  run_layer_test({.make_case = make_case, .naive = naive, .cases = 30, .gradient_cases = 20});
}

TEST(Layers, EmbedRejectsValuesOutsideTheTable) {
  LayerSpec spec;
  spec.name = "chars";
  spec.type = "Embed";
  spec.inputs = {"x"};
  spec.outputs = {"y"};
  spec.attrs.set("num_output", std::int64_t{2});
  spec.attrs.set("input_dim", std::int64_t{3});
  spec.weights = {Tensor::zeros(Shape{3, 2}), Tensor::zeros(Shape{2})};
  auto layer = create_layer(spec);
  std::vector<Tensor> in{Tensor::from(Shape{2}, {1.0f, 3.0f})};
  std::vector<Tensor> out{Tensor::zeros(Shape{2, 2})};
  try {
    layer->forward(in, out);
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("chars"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("position 1"), std::string::npos) << e.what();
  }
}

}  // namespace espresso::testing
