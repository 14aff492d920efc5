#include <gtest/gtest.h>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, Reshape) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Reshape";
            const Shape s = random_shape(rng);
            const int rank = s.rank();
            const int start = rng.integer(0, rank), end = rng.integer(start, rank);
            // The replaced axes become a random factorisation of their element count.
            std::int64_t remaining = product(s, start, end);
            std::vector<std::int64_t> target;
            for (int k = rng.integer(0, 2); k > 0; --k) {
              std::vector<std::int64_t> divisors;
              for (std::int64_t d = 1; d <= remaining; ++d) {
                if (remaining % d == 0) divisors.push_back(d);
              }
              target.push_back(
                  divisors[static_cast<std::size_t>(rng.integer(0, static_cast<int>(divisors.size()) - 1))]);
              remaining /= target.back();
            }
            target.push_back(remaining);
            std::vector<std::int64_t> written = target;
            if (rng.coin())
              written[static_cast<std::size_t>(rng.integer(0, static_cast<int>(written.size()) - 1))] = -1;
            for (std::size_t i = 0; i < written.size(); ++i) {
              const int source = start + static_cast<int>(i);
              if (written[i] > 0 && source < rank && s[source] == written[i] && rng.coin()) written[i] = 0;
            }
            c.spec.attrs.set("shape", written);
            if (start != 0 || rng.coin())
              c.spec.attrs.set("axis", std::int64_t{rng.coin() ? start : start - rank - 1});
            if (end != rank || rng.coin()) c.spec.attrs.set("num_axes", std::int64_t{end - start});
            c.input_shapes = {s};
            std::vector<std::int64_t> expected(s.dims().begin(), s.dims().begin() + start);
            expected.insert(expected.end(), target.begin(), target.end());
            expected.insert(expected.end(), s.dims().begin() + end, s.dims().end());
            EXPECT_EQ(create_layer(c.spec)->output_shapes(c.input_shapes),
                      std::vector<Shape>{Shape(expected)});
            return c;
          },
      .naive = [](const LayerCase&, const std::vector<Values>& in,
                  const std::vector<Values>&) { return std::vector<Values>{in[0]}; },
  });
}

TEST(Layers, ReshapeCaffeExamples) {
  LayerSpec spec = spec_of("Reshape");
  spec.attrs.set("shape", std::vector<std::int64_t>{0, -1});
  EXPECT_EQ(create_layer(spec)->output_shapes({Shape{2, 3, 4, 5}}), std::vector<Shape>{Shape({2, 60})});
  spec.attrs.set("shape", std::vector<std::int64_t>{2, 2});
  spec.attrs.set("axis", std::int64_t{1});
  spec.attrs.set("num_axes", std::int64_t{1});
  EXPECT_EQ(create_layer(spec)->output_shapes({Shape{2, 4, 5}}), std::vector<Shape>{Shape({2, 2, 2, 5})});
  spec.attrs.set("shape", std::vector<std::int64_t>{1});
  spec.attrs.set("axis", std::int64_t{-1});
  spec.attrs.set("num_axes", std::int64_t{0});
  EXPECT_EQ(create_layer(spec)->output_shapes({Shape{2, 4}}), std::vector<Shape>{Shape({2, 4, 1})});
}

TEST(Layers, ReshapeErrors) {
  expect_model_error(spec_of("Reshape"), "'shape' is required");
  LayerSpec spec = spec_of("Reshape");
  spec.attrs.set("shape", std::vector<std::int64_t>{-1, -1});
  expect_model_error(spec, "at most one -1");
  spec.attrs.set("shape", std::vector<std::int64_t>{-2, 3});
  expect_model_error(spec, "'shape'");
  spec.attrs.set("shape", std::vector<std::int64_t>{5, -1});
  expect_shape_error(spec, {Shape{2, 3}}, "infer");
  spec.attrs.set("shape", std::vector<std::int64_t>{4, 2});
  expect_shape_error(spec, {Shape{2, 3}}, "cannot become");
  spec.attrs.set("shape", std::vector<std::int64_t>{0, 0, 0});
  expect_shape_error(spec, {Shape{2, 3}}, "no axis 2");
  spec.attrs.set("shape", std::vector<std::int64_t>{6});
  spec.attrs.set("axis", std::int64_t{4});
  expect_shape_error(spec, {Shape{2, 3}}, "axis 4");
  spec.attrs.set("axis", std::int64_t{1});
  spec.attrs.set("num_axes", std::int64_t{2});
  expect_shape_error(spec, {Shape{2, 3}}, "runs past the end");
}

}  // namespace espresso::testing
