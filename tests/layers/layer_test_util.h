// Helpers shared by the layer tests: random shapes and axes, and checks of typed errors.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "harness/layer_harness.h"
#include "layers/registry.h"

namespace espresso::testing {

// Rank in [min_rank, max_rank] with sizes in [1, max_dim]; one case in four is large instead
// (up to about 200k elements), so that the threaded kernels split the work.
inline Shape random_shape(Rng& rng, int min_rank = 2, int max_rank = 5, int max_dim = 7) {
  std::vector<std::int64_t> dims(static_cast<std::size_t>(rng.integer(min_rank, max_rank)));
  const bool large = rng.integer(0, 3) == 0;
  const int limit = large ? static_cast<int>(std::pow(2e5, 1.0 / static_cast<double>(dims.size()))) : max_dim;
  for (auto& d : dims) d = rng.integer(large ? limit / 2 : 1, limit);
  return Shape(std::move(dims));
}

// An axis in [0, rank), written as a negative index half of the time.
inline int random_axis(Rng& rng, int rank, int& resolved) {
  resolved = rng.integer(0, rank - 1);
  return rng.coin() ? resolved - rank : resolved;
}

inline std::int64_t product(const Shape& s, int begin, int end) {
  std::int64_t n = 1;
  for (int i = begin; i < end; ++i) n *= s[i];
  return n;
}

inline LayerSpec spec_of(const std::string& type, int inputs = 1, int outputs = 1) {
  LayerSpec spec;
  spec.name = "bad_layer";
  spec.type = type;
  for (int i = 0; i < inputs; ++i) spec.inputs.push_back("in" + std::to_string(i));
  for (int i = 0; i < outputs; ++i) spec.outputs.push_back("out" + std::to_string(i));
  return spec;
}

// Runs `body` and expects an error of type E whose message names the layer and contains `needle`.
template <class E, class Body>
void expect_error(Body body, const std::string& needle) {
  try {
    body();
    ADD_FAILURE() << "no error thrown; expected one mentioning '" << needle << "'";
  } catch (const E& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("bad_layer"), std::string::npos) << message;
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong error type: " << e.what();
  }
}

// Expects ModelError from creating the layer.
inline void expect_model_error(const LayerSpec& spec, const std::string& needle) {
  expect_error<ModelError>([&] { create_layer(spec); }, needle);
}

// Expects ShapeError from shape inference.
inline void expect_shape_error(const LayerSpec& spec, const std::vector<Shape>& inputs,
                               const std::string& needle) {
  expect_error<ShapeError>([&] { create_layer(spec)->output_shapes(inputs); }, needle);
}

}  // namespace espresso::testing
