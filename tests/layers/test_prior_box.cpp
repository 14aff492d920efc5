#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "harness/layer_harness.h"
#include "layers/layer_test_util.h"
#include "layers/registry.h"
#include "test_support.h"

namespace espresso::testing {
namespace {

// The fork's box list for one cell, written out directly.
std::vector<Values> naive_prior_box(const LayerCase& c, const std::vector<Values>&, const std::vector<Values>&) {
  const Attributes& a = c.spec.attrs;
  const Values min_sizes = a.get_floats("min_size", {});
  const Values max_sizes = a.get_floats("max_size", {});
  const Values variances = a.get_floats("variance", {0.1});
  const bool flip = a.get_int("flip", 1) != 0, clip = a.get_int("clip", 0) != 0;
  Values ratios = {1.0};
  for (double r : a.get_floats("aspect_ratio", {})) {
    bool seen = false;
    for (double q : ratios) seen = seen || std::fabs(q - r) < 1e-6;
    if (seen) continue;
    ratios.push_back(r);
    if (flip) ratios.push_back(1 / r);
  }
  const Shape& map = c.input_shapes[0];
  const Shape& image = c.input_shapes[1];
  const double img_h = a.get_float("img_h", static_cast<double>(image[2]));
  const double img_w = a.get_float("img_w", static_cast<double>(image[3]));
  const double step_h = a.get_float("step", img_h / static_cast<double>(map[2]));
  const double step_w = a.get_float("step", img_w / static_cast<double>(map[3]));
  const double offset = a.get_float("offset", 0.5);
  Values boxes;
  auto add = [&](double cx, double cy, double w, double h) {
    for (double v : {(cx - w / 2) / img_w, (cy - h / 2) / img_h, (cx + w / 2) / img_w, (cy + h / 2) / img_h})
      boxes.push_back(clip ? std::min(std::max(v, 0.0), 1.0) : v);
  };
  for (std::int64_t y = 0; y < map[2]; ++y) {
    for (std::int64_t x = 0; x < map[3]; ++x) {
      const double cx = (static_cast<double>(x) + offset) * step_w, cy = (static_cast<double>(y) + offset) * step_h;
      for (std::size_t s = 0; s < min_sizes.size(); ++s) {
        add(cx, cy, min_sizes[s], min_sizes[s]);
        if (!max_sizes.empty()) add(cx, cy, std::sqrt(min_sizes[s] * max_sizes[s]), std::sqrt(min_sizes[s] * max_sizes[s]));
        for (double r : ratios) {
          if (r != 1.0) add(cx, cy, min_sizes[s] * std::sqrt(r), min_sizes[s] / std::sqrt(r));
        }
      }
    }
  }
  Values out = boxes;
  for (std::size_t i = 0; i < boxes.size(); ++i) out.push_back(variances[variances.size() == 1 ? 0 : i % 4]);
  return {out};
}

}  // namespace

TEST(Layers, PriorBox) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "PriorBox";
            Attributes& a = c.spec.attrs;
            const int sizes = rng.integer(1, 2);
            Values min_sizes, max_sizes;
            for (int s = 0; s < sizes; ++s) {
              min_sizes.push_back(rng.uniform(10, 60));
              max_sizes.push_back(min_sizes.back() + rng.uniform(5, 40));
            }
            a.set("min_size", min_sizes);
            if (rng.coin()) a.set("max_size", max_sizes);
            if (rng.coin()) a.set("aspect_ratio", Values{2.0, rng.coin() ? 3.0 : 2.0});
            a.set("flip", std::int64_t{rng.coin()});
            a.set("clip", std::int64_t{rng.coin()});
            a.set("variance", rng.coin() ? Values{0.1} : Values{0.1, 0.1, 0.2, 0.2});
            if (rng.coin()) {
              a.set("img_h", 300.0);
              a.set("img_w", 200.0);
            }
            if (rng.coin()) a.set("step", rng.uniform(4, 32));
            if (rng.coin()) a.set("offset", rng.uniform(0, 1));
            c.input_shapes = {Shape{rng.integer(1, 2), rng.integer(1, 3), rng.integer(1, 5), rng.integer(1, 5)},
                              Shape{1, 3, rng.integer(20, 100), rng.integer(20, 100)}};
            c.non_differentiable_inputs = {0, 1};
            return c;
          },
      .naive = naive_prior_box,
  });
}

// One 1x1 cell of a 100x100 image: the min box, the sqrt(30·60) box, then ratio 2 and its flip.
TEST(Layers, PriorBoxOneCellByHand) {
  LayerSpec spec = layer("prior", "PriorBox", {"map", "image"}, {"out"});
  spec.attrs.set("min_size", Values{30});
  spec.attrs.set("max_size", Values{60});
  spec.attrs.set("aspect_ratio", Values{2});
  const auto prior = create_layer(spec);
  const std::vector<Shape> shapes = {Shape{1, 8, 1, 1}, Shape{1, 3, 100, 100}};
  ASSERT_EQ(prior->output_shapes(shapes).at(0), (Shape{1, 2, 16}));
  std::vector<Tensor> in = {Tensor::zeros(shapes[0]), Tensor::zeros(shapes[1])};
  std::vector<Tensor> out = {Tensor::zeros(Shape{1, 2, 16})};
  prior->forward(in, out);
  const std::vector<float> v = out[0].to_vector();
  const double s = std::sqrt(1800.0) / 200, w = 30 * std::sqrt(2.0) / 200, h = 30 / std::sqrt(2.0) / 200;
  const double expected[16] = {0.35, 0.35, 0.65, 0.65, 0.5 - s, 0.5 - s, 0.5 + s, 0.5 + s,
                               0.5 - w, 0.5 - h, 0.5 + w, 0.5 + h, 0.5 - h, 0.5 - w, 0.5 + h, 0.5 + w};
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(v[static_cast<std::size_t>(i)], expected[i], 1e-6) << i;
  for (int i = 16; i < 32; ++i) EXPECT_FLOAT_EQ(v[static_cast<std::size_t>(i)], 0.1f);
}

TEST(Layers, PriorBoxRejectsBadSettings) {
  LayerSpec spec = layer("bad_layer", "PriorBox", {"map", "image"}, {"out"});
  expect_model_error(spec, "min_size");
  spec.attrs.set("min_size", Values{30, 60});
  spec.attrs.set("max_size", Values{60});
  expect_model_error(spec, "max_size");
  spec.attrs.set("max_size", Values{60, 90});
  spec.attrs.set("variance", Values{0.1, 0.2});
  expect_model_error(spec, "variance");
  spec.attrs.set("variance", Values{0.1});
  spec.attrs.set("step", 8.0);
  spec.attrs.set("step_h", 8.0);
  expect_model_error(spec, "step");
  LayerSpec good = layer("prior", "PriorBox", {"map", "image"}, {"out"});
  good.attrs.set("min_size", Values{30});
  EXPECT_THROW(create_layer(good)->output_shapes({Shape{1, 8, 2, 2}}), ShapeError);
  EXPECT_THROW(create_layer(good)->output_shapes({Shape{1, 8, 2}, Shape{1, 3, 10, 10}}), ShapeError);
}

}  // namespace espresso::testing
