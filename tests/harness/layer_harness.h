// One harness for every layer: on random shapes it checks the reference kernel against a naive
// double-precision computation written in the test, and every fast kernel (CPU, and CUDA when a GPU is
// present) against the reference.
//
// It also checks every backward pass numerically. With random R_k, L = Σ_k <out_k, R_k>; its gradient
// with respect to each input and weight element is taken by central differences of the test's naive
// double-precision forward (exact to about 1e-9, as nothing is rounded to float), and compared with
// the layer's float backward given R_k as output gradients, and with the fast CPU backward where there
// is one and the CUDA backward when a GPU is present: normalized error ≤ 1e-4 (kGradientTolerance). The
// CUDA fp16 / bf16 kernels that train (mixed precision) are checked against the reference backward.
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
  // Inputs that take no gradient (labels, indices); the layer must agree (differentiable_input).
  std::vector<std::size_t> non_differentiable_inputs;
  // Off for cases built to probe float range (a saturated softmax), whose float gradients are
  // dominated by cancellation: they test the forward only.
  bool check_gradient = true;
};

// The naive computation: double precision, direct loops over the definitions.
using NaiveForward = std::function<std::vector<Values>(const LayerCase& c, const std::vector<Values>& inputs,
                                                       const std::vector<Values>& weights)>;

// Whether a layer has a backward pass; layers without one are named so in their test, and the harness
// checks that backward() says so (UnsupportedError) rather than skipping them silently.
enum class Gradient { checked, none };

inline constexpr double kGradientTolerance = 1e-4;
// CUDA kernels in fp16 and bf16 (Precision::fp16, bf16) against the fp32 reference: inputs and outputs
// rounded to the type (relative steps 2^-11 and 2^-8), products accumulated in fp32.
inline constexpr double kFp16Tolerance = 5e-3;
inline constexpr double kBf16Tolerance = 3e-2;
// Their backward (mixed precision training) against the fp32 reference backward on the same rounded
// values: gradients stored in the type, weight gradients summed into fp32.
inline constexpr double kFp16GradientTolerance = 1e-2;
inline constexpr double kBf16GradientTolerance = 5e-2;

struct LayerTest {
  std::function<LayerCase(Rng&)> make_case;
  NaiveForward naive;
  int cases = 20;
  double tolerance = 1e-5;  // max |a - b| / max |reference|
  Gradient gradient = Gradient::checked;
  // Run the layer in training mode (batch statistics); the naive computation must do the same.
  bool training = false;
  // The gradient check runs on this many of the cases, on up to `gradient_samples` elements of
  // each input and weight (all of them in smaller blobs), with central differences of this step.
  int gradient_cases = 8;
  int gradient_samples = 32;
  // Small, so that kinks (ReLU at 0, ties in max) are almost never straddled.
  double gradient_step = 1e-6;
};

void run_layer_test(const LayerTest& test);

// max |a - b| / max(max |reference|, tiny).
double normalized_error(const Values& reference, const Values& other);

// Row-major index helper for naive loops: offset of (n, c, h, w) in an NCHW tensor.
inline std::size_t at4(const Shape& s, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
  return static_cast<std::size_t>(((n * s[1] + c) * s[2] + h) * s[3] + w);
}

}  // namespace espresso::testing
