// One harness for every layer: on random shapes it checks the reference kernel against a naive
// double-precision computation written in the test, and every fast kernel (CPU, and CUDA when a GPU is
// present) against the reference.
#pragma once

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "espresso/graph.h"

namespace espresso::testing {

using Values = std::vector<double>;

class Rng {
 public:
  explicit Rng(unsigned seed) : engine_(seed) {}
  int integer(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(engine_); }
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(engine_); }
  bool coin() { return integer(0, 1) == 1; }
  Values values(std::size_t n, double lo = -1.0, double hi = 1.0);

 private:
  std::mt19937 engine_;
};

struct LayerCase {
  LayerSpec spec;  // type and attrs; names of inputs/outputs default to in0.., out0
  std::vector<Shape> input_shapes;
  std::vector<Values> inputs;   // optional: values per input; random in [-1, 1] otherwise
  std::vector<Values> weights;  // optional: values per weight blob; random otherwise
};

// The naive computation: double precision, direct loops over the definitions.
using NaiveForward = std::function<std::vector<Values>(const LayerCase& c, const std::vector<Values>& inputs,
                                                       const std::vector<Values>& weights)>;

struct LayerTest {
  std::function<LayerCase(Rng&)> make_case;
  NaiveForward naive;
  int cases = 20;
  double tolerance = 1e-5;  // max |a - b| / max |reference|
};

void run_layer_test(const LayerTest& test);

// max |a - b| / max(max |reference|, tiny).
double normalized_error(const Values& reference, const Values& other);

// Row-major index helper for naive loops: offset of (n, c, h, w) in an NCHW tensor.
inline std::size_t at4(const Shape& s, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
  return static_cast<std::size_t>(((n * s[1] + c) * s[2] + h) * s[3] + w);
}

}  // namespace espresso::testing
