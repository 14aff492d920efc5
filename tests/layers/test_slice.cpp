#include <gtest/gtest.h>

#include <algorithm>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, Slice) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Slice";
            Shape s = random_shape(rng);
            int axis = 1;
            if (rng.integer(0, 3) != 0)
              c.spec.attrs.set("axis", std::int64_t{random_axis(rng, s.rank(), axis)});
            const int parts = rng.integer(1, 4);
            if (rng.coin()) {
              s[axis] = parts * rng.integer(1, 3);
            } else {
              s[axis] = parts + rng.integer(0, 5);
              std::vector<std::int64_t> points;
              for (std::int64_t p = 1; p < s[axis]; ++p) points.push_back(p);
              std::shuffle(points.begin(), points.end(),
                           std::mt19937(static_cast<unsigned>(rng.integer(0, 1 << 20))));
              points.resize(static_cast<std::size_t>(parts - 1));
              std::sort(points.begin(), points.end());
              c.spec.attrs.set("slice_points", points);
            }
            for (int p = 0; p < parts; ++p) c.spec.outputs.push_back("out" + std::to_string(p));
            c.input_shapes = {s};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const Shape& s = c.input_shapes[0];
            const int axis = s.canonical_axis(static_cast<int>(c.spec.attrs.get_int("axis", 1)));
            const auto parts = static_cast<std::int64_t>(c.spec.outputs.size());
            std::vector<std::int64_t> bounds{0};
            for (std::int64_t p : c.spec.attrs.get_ints("slice_points", {})) bounds.push_back(p);
            if (bounds.size() == 1) {
              for (std::int64_t p = 1; p < parts; ++p) bounds.push_back(p * s[axis] / parts);
            }
            bounds.push_back(s[axis]);
            const std::int64_t outer = product(s, 0, axis), inner = product(s, axis + 1, s.rank());
            std::vector<Values> out(static_cast<std::size_t>(parts));
            for (std::size_t p = 0; p < out.size(); ++p) {
              for (std::int64_t o = 0; o < outer; ++o) {
                for (std::int64_t a = bounds[p]; a < bounds[p + 1]; ++a) {
                  for (std::int64_t i = 0; i < inner; ++i) {
                    out[p].push_back(in[0][static_cast<std::size_t>((o * s[axis] + a) * inner + i)]);
                  }
                }
              }
            }
            return out;
          },
  });
}

TEST(Layers, SliceErrors) {
  LayerSpec spec = spec_of("Slice", 1, 3);
  spec.attrs.set("slice_points", std::vector<std::int64_t>{2});
  expect_model_error(spec, "'slice_points'");
  spec.attrs.set("slice_points", std::vector<std::int64_t>{3, 2});
  expect_model_error(spec, "strictly increasing");
  spec.attrs.set("slice_points", std::vector<std::int64_t>{0, 2});
  expect_model_error(spec, "attribute 'slice_points' is 0, 2, outside [1, inf]");
  spec.attrs.set("slice_points", std::vector<std::int64_t>{1, 4});
  expect_shape_error(spec, {Shape{2, 4}}, "past the end");
  expect_shape_error(spec_of("Slice", 1, 3), {Shape{2, 4}}, "equal parts");
  expect_model_error(spec_of("Slice", 1, 0), "output");
  LayerSpec axis = spec_of("Slice", 1, 2);
  axis.attrs.set("axis", std::int64_t{-3});
  expect_shape_error(axis, {Shape{2, 4}}, "axis -3");
}

}  // namespace espresso::testing
