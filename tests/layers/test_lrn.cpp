#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "harness/layer_harness.h"
#include "layers/registry.h"

namespace espresso::testing {
namespace {

LayerCase make_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "LRN";
  const bool within = rng.coin();
  if (within) c.spec.attrs.set("region", std::string("within"));
  c.spec.attrs.set("size", std::int64_t{within ? 2 * rng.integer(0, 3) + 1 : rng.integer(1, 7)});
  if (rng.coin()) c.spec.attrs.set("alpha", rng.uniform(0.1, 3.0));
  if (rng.coin()) c.spec.attrs.set("beta", rng.uniform(0.2, 1.5));
  if (rng.coin()) c.spec.attrs.set("k", rng.uniform(0.5, 2.0));
  std::vector<std::int64_t> dims{rng.integer(1, 3), rng.integer(1, 12)};
  const int spatial = within ? 2 : rng.integer(0, 3);
  for (int a = 0; a < spatial; ++a) dims.push_back(rng.integer(1, 13));
  c.input_shapes = {Shape(dims)};
  return c;
}

std::vector<Values> naive(const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
  const Shape& shape = c.input_shapes[0];
  const std::int64_t size = c.spec.attrs.get_int("size", 5);
  const double alpha = c.spec.attrs.get_float("alpha", 1.0);
  const double beta = c.spec.attrs.get_float("beta", 0.75);
  const double k = c.spec.attrs.get_float("k", 1.0);
  const std::int64_t half = (size - 1) / 2;  // window = [i − half, i − half + size)
  const auto& x = in[0];
  Values y(x.size());
  if (c.spec.attrs.get_string("region", "across") == "across") {
    const std::int64_t channels = shape[1], spatial = shape.count(2);
    for (std::int64_t n = 0; n < shape[0]; ++n) {
      for (std::int64_t ch = 0; ch < channels; ++ch) {
        for (std::int64_t i = 0; i < spatial; ++i) {
          double sum = 0;
          for (std::int64_t j = ch - half; j < ch - half + size; ++j) {
            if (j < 0 || j >= channels) continue;
            const double v = x[static_cast<std::size_t>((n * channels + j) * spatial + i)];
            sum += v * v;
          }
          const auto at = static_cast<std::size_t>((n * channels + ch) * spatial + i);
          y[at] = x[at] / std::pow(k + alpha / static_cast<double>(size) * sum, beta);
        }
      }
    }
    return {y};
  }
  // Caffe: square, average-pool with zero padding (the divisor stays size²), then
  // (1 + alpha · average)^−beta; k is not used.
  for (std::int64_t n = 0; n < shape[0]; ++n) {
    for (std::int64_t ch = 0; ch < shape[1]; ++ch) {
      for (std::int64_t h = 0; h < shape[2]; ++h) {
        for (std::int64_t w = 0; w < shape[3]; ++w) {
          double sum = 0;
          for (std::int64_t i = h - half; i < h - half + size; ++i) {
            for (std::int64_t j = w - half; j < w - half + size; ++j) {
              if (i < 0 || j < 0 || i >= shape[2] || j >= shape[3]) continue;
              const double v = x[at4(shape, n, ch, i, j)];
              sum += v * v;
            }
          }
          const double average = sum / static_cast<double>(size * size);
          y[at4(shape, n, ch, h, w)] = x[at4(shape, n, ch, h, w)] * std::pow(1.0 + alpha * average, -beta);
        }
      }
    }
  }
  return {y};
}

}  // namespace

TEST(Layers, LRN) { run_layer_test({.make_case = make_case, .naive = naive, .cases = 40}); }

TEST(Layers, LRNRejectsBadParameters) {
  LayerSpec spec;
  spec.name = "lrn_bad";
  spec.type = "LRN";
  spec.attrs.set("region", std::string("sideways"));
  try {
    create_layer(spec);
    ADD_FAILURE() << "no ModelError";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("lrn_bad"), std::string::npos) << e.what();
  }
  spec.attrs.set("region", std::string("within"));
  spec.attrs.set("size", std::int64_t{4});
  EXPECT_THROW(create_layer(spec), ModelError);
  spec.attrs.set("region", std::string("across"));
  spec.attrs.set("size", std::int64_t{0});
  EXPECT_THROW(create_layer(spec), ModelError);
  spec.attrs.set("region", std::string("within"));
  spec.attrs.set("size", std::int64_t{3});
  EXPECT_THROW(create_layer(spec)->output_shapes({Shape{1, 3, 5}}), ShapeError);
}

}  // namespace espresso::testing
