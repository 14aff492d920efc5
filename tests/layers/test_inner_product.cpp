#include <gtest/gtest.h>

#include "harness/layer_harness.h"
#include "layers/registry.h"

namespace espresso::testing {
namespace {

LayerCase make_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "InnerProduct";
  std::vector<std::int64_t> dims;
  const int rank = rng.integer(1, 4);
  for (int a = 0; a < rank; ++a) dims.push_back(rng.integer(1, a == 0 ? 4 : 9));
  c.spec.attrs.set("num_output", std::int64_t{rng.integer(1, 40)});
  const int axis = rng.integer(0, rank - 1);
  if (axis != 1 || rng.coin()) c.spec.attrs.set("axis", std::int64_t{rng.coin() ? axis : axis - rank});
  if (rng.coin()) c.spec.attrs.set("transpose", std::int64_t{1});
  if (rng.coin()) c.spec.attrs.set("bias", std::int64_t{0});
  c.input_shapes = {Shape(dims)};
  return c;
}

std::vector<Values> naive(const LayerCase& c, const std::vector<Values>& in,
                          const std::vector<Values>& weights) {
  const Shape& shape = c.input_shapes[0];
  std::int64_t axis = c.spec.attrs.get_int("axis", 1);
  if (axis < 0) axis += shape.rank();
  std::int64_t rows = 1, inner = 1;
  for (int a = 0; a < shape.rank(); ++a) (a < axis ? rows : inner) *= shape[a];
  const std::int64_t outputs = c.spec.attrs.get_int("num_output", 0);
  const bool transpose = c.spec.attrs.get_int("transpose", 0) != 0;
  const bool bias = c.spec.attrs.get_int("bias", 1) != 0;
  Values y;
  for (std::int64_t m = 0; m < rows; ++m) {
    for (std::int64_t n = 0; n < outputs; ++n) {
      double sum = bias ? weights[1][static_cast<std::size_t>(n)] : 0.0;
      for (std::int64_t k = 0; k < inner; ++k) {
        const std::int64_t w_at = transpose ? k * outputs + n : n * inner + k;
        sum += in[0][static_cast<std::size_t>(m * inner + k)] * weights[0][static_cast<std::size_t>(w_at)];
      }
      y.push_back(sum);
    }
  }
  return {y};
}

// As make_case, with the weights pruned to 2–40 % and the rest shared among a few values (Deep
// Compression's), so that the CPU kernel runs its sparse codebook product where the planner picks it.
LayerCase make_pruned_case(Rng& rng) {
  LayerCase c = make_case(rng);
  c.input_shapes[0] = Shape({rng.integer(1, 40), rng.integer(8, 60)});
  c.spec.attrs.set("axis", std::int64_t{1});
  const std::int64_t outputs = c.spec.attrs.get_int("num_output", 0);
  const Values codebook = rng.values(static_cast<std::size_t>(rng.integer(1, 20)));
  const double density = rng.uniform(0.02, 0.4);
  Values w(static_cast<std::size_t>(outputs * c.input_shapes[0][1]), 0.0);
  for (double& v : w) {
    if (rng.uniform(0, 1) < density) v = codebook[static_cast<std::size_t>(rng.integer(0, static_cast<int>(codebook.size()) - 1))];
  }
  c.weights = {w};
  if (c.spec.attrs.get_int("bias", 1) != 0) c.weights.push_back(rng.values(static_cast<std::size_t>(outputs)));
  return c;
}

}  // namespace

TEST(Layers, InnerProduct) {
  run_layer_test({.make_case = make_case, .naive = naive, .cases = 30, .gradient_cases = 30});
}

TEST(Layers, InnerProductPrunedSharedWeights) {
  run_layer_test({.make_case = make_pruned_case, .naive = naive, .cases = 40, .gradient_cases = 10});
}

TEST(Layers, InnerProductShapesWeightsAndMacs) {
  LayerSpec spec;
  spec.name = "ip";
  spec.type = "InnerProduct";
  spec.attrs.set("num_output", std::int64_t{10});
  const std::vector<Shape> in{Shape{64, 50, 4, 4}};
  const auto layer = create_layer(spec);
  EXPECT_EQ(layer->output_shapes(in)[0], (Shape{64, 10}));
  EXPECT_EQ(layer->weight_shapes(in), (std::vector<Shape>{Shape{10, 800}, Shape{10}}));
  EXPECT_EQ(layer->macs(in), 64 * 10 * 800);
  spec.attrs.set("axis", std::int64_t{2});
  spec.attrs.set("transpose", std::int64_t{1});
  spec.attrs.set("bias", std::int64_t{0});
  const auto later = create_layer(spec);
  EXPECT_EQ(later->output_shapes(in)[0], (Shape{64, 50, 10}));
  EXPECT_EQ(later->weight_shapes(in), (std::vector<Shape>{Shape{16, 10}}));
}

TEST(Layers, InnerProductRejectsBadParameters) {
  LayerSpec spec;
  spec.name = "ip_bad";
  spec.type = "InnerProduct";
  try {
    create_layer(spec);
    ADD_FAILURE() << "no ModelError";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("ip_bad"), std::string::npos) << e.what();
  }
  spec.attrs.set("num_output", std::int64_t{0});
  EXPECT_THROW(create_layer(spec), ModelError);
  spec.attrs.set("num_output", std::int64_t{4});
  spec.attrs.set("axis", std::int64_t{3});
  try {
    create_layer(spec)->output_shapes({Shape{2, 3, 4}});
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("ip_bad"), std::string::npos) << e.what();
  }
}

}  // namespace espresso::testing
