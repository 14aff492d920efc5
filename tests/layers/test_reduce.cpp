#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "harness/layer_harness.h"
#include "layers/registry.h"

namespace espresso::testing {
namespace {

const char* const kOps[] = {"mean",       "sum", "max", "min",     "prod",
                            "sum_square", "l1",  "l2",  "log_sum", "log_sum_exp"};

LayerCase make_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "Reduce";
  const std::string op = kOps[rng.integer(0, 9)];
  c.spec.attrs.set("operation", op);
  std::vector<std::int64_t> dims;
  for (int a = 0, rank = rng.integer(1, 4); a < rank; ++a) dims.push_back(rng.integer(1, 5));
  const auto rank = static_cast<std::int64_t>(dims.size());
  // No `axes` (all of them) a quarter of the time, else a non-empty subset, each axis counted
  // from the front or the back.
  if (rng.integer(0, 3) != 0) {
    std::vector<std::int64_t> axes;
    for (std::int64_t a = 0; a < rank; ++a) {
      if (rng.coin()) axes.push_back(rng.coin() ? a : a - rank);
    }
    if (axes.empty()) axes.push_back(rng.integer(0, static_cast<int>(rank) - 1));
    c.spec.attrs.set("axes", axes);
  }
  c.spec.attrs.set("keepdims", static_cast<std::int64_t>(rng.coin()));
  c.input_shapes = {Shape(dims)};
  const auto count = static_cast<std::size_t>(c.input_shapes[0].numel());
  // Magnitudes in [0.5, 1.5], away from l1's kink at 0; positive for the logarithms.
  Values& x = c.inputs.emplace_back(rng.values(count, 0.5, 1.5));
  if (op == "max" || op == "min") {
    // Distinct values, so that no tie is straddled by the numeric gradient.
    std::vector<std::size_t> order(count);
    std::iota(order.begin(), order.end(), 0);
    for (std::size_t i = count; i > 1; --i)
      std::swap(order[i - 1], order[static_cast<std::size_t>(rng.integer(0, static_cast<int>(i) - 1))]);
    for (std::size_t i = 0; i < count; ++i) {
      x[i] = 0.5 + (static_cast<double>(order[i]) + rng.uniform(0.1, 0.9)) / static_cast<double>(count);
    }
  } else if (op != "log_sum" && op != "log_sum_exp") {
    for (double& v : x) v = rng.coin() ? v : -v;
  }
  // Zeros make prod's gradient the product of the others without a division.
  if (op == "prod") {
    for (double& v : x) v = rng.integer(0, 5) == 0 ? 0 : v;
  }
  return c;
}

std::vector<Values> naive(const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
  const std::string op = c.spec.attrs.get_string("operation", "");
  const Shape& s = c.input_shapes[0];
  std::vector<bool> reduced(static_cast<std::size_t>(s.rank()), !c.spec.attrs.has("axes"));
  for (std::int64_t a : c.spec.attrs.get_ints("axes", {}))
    reduced[static_cast<std::size_t>(a < 0 ? a + s.rank() : a)] = true;
  // The elements of each output: its position over the kept axes, row-major.
  std::int64_t outputs = 1;
  for (int a = 0; a < s.rank(); ++a) outputs *= reduced[static_cast<std::size_t>(a)] ? 1 : s[a];
  std::vector<Values> groups(static_cast<std::size_t>(outputs));
  for (std::int64_t i = 0; i < s.numel(); ++i) {
    std::int64_t o = 0, rest = i, stride = 1;
    for (int a = s.rank() - 1; a >= 0; --a) {
      const std::int64_t index = rest % s[a];
      rest /= s[a];
      if (reduced[static_cast<std::size_t>(a)]) continue;
      o += index * stride;
      stride *= s[a];
    }
    groups[static_cast<std::size_t>(o)].push_back(in[0][static_cast<std::size_t>(i)]);
  }
  Values y;
  for (const Values& v : groups) {
    double r = op == "prod" ? 1 : op == "max" ? -1e300 : op == "min" ? 1e300 : 0;
    for (double x : v) {
      if (op == "mean" || op == "sum" || op == "log_sum") r += x;
      if (op == "max") r = std::max(r, x);
      if (op == "min") r = std::min(r, x);
      if (op == "prod") r *= x;
      if (op == "sum_square" || op == "l2") r += x * x;
      if (op == "l1") r += std::abs(x);
      if (op == "log_sum_exp") r += std::exp(x);
    }
    if (op == "mean") r /= static_cast<double>(v.size());
    if (op == "l2") r = std::sqrt(r);
    if (op == "log_sum" || op == "log_sum_exp") r = std::log(r);
    y.push_back(r);
  }
  return {y};
}

}  // namespace

TEST(Layers, Reduce) {
  run_layer_test({.make_case = make_case, .naive = naive, .cases = 60, .gradient_cases = 60});
}

// Ties have no numeric gradient: the whole gradient goes to the first extreme element in row-major
// order, as the reference backward (and every kernel checked against it) says.
TEST(Layers, ReduceMaxMinGradientGoesToFirstExtreme) {
  const std::vector<float> x = {3, 1, 3,  //
                                2, 2, 0};
  struct Expectation {
    const char* op;
    std::int64_t axis;
    std::vector<float> dx;
  };
  const Expectation expectations[] = {
      {"max", 1, {1, 0, 0, 1, 0, 0}},
      {"min", 1, {0, 1, 0, 0, 0, 1}},
      {"max", 0, {1, 0, 1, 0, 1, 0}},
      {"min", 0, {0, 1, 0, 1, 0, 1}},
  };
  for (const Expectation& e : expectations) {
    SCOPED_TRACE(std::string(e.op) + " over axis " + std::to_string(e.axis));
    LayerSpec spec;
    spec.name = "reduce";
    spec.type = "Reduce";
    spec.attrs.set("operation", std::string(e.op));
    spec.attrs.set("axes", std::vector<std::int64_t>{e.axis});
    std::unique_ptr<Layer> layer = create_layer(spec);
    const Tensor input = Tensor::from(Shape{2, 3}, x);
    const Shape out_shape = layer->output_shapes({input.shape()})[0];
    std::vector<Tensor> outputs{Tensor::empty(out_shape)};
    layer->forward({input}, outputs);
    std::vector<Tensor> input_grads{Tensor::zeros(input.shape())}, weight_grads;
    layer->backward(
        {input}, outputs,
        {Tensor::from(out_shape, std::vector<float>(static_cast<std::size_t>(out_shape.numel()), 1.0f))},
        input_grads, weight_grads);
    EXPECT_EQ(input_grads[0].to_vector(), e.dx);
  }
}

}  // namespace espresso::testing
