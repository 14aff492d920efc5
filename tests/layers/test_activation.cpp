#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "layers/backward_run.h"
#include "test_support.h"

namespace espresso::testing {
namespace {

// Moves samples 1e-3 away from the points where the function's derivative jumps, so that the
// numeric gradient's central differences never straddle one.
void keep_off_kinks(const LayerCase& c, Values& values) {
  const std::string f = c.spec.attrs.get_string("function", "");
  std::vector<double> kinks;
  if (f == "clip") kinks = {c.spec.attrs.get_float("min", 0), c.spec.attrs.get_float("max", 0)};
  if (f == "hard_sigmoid") {
    const double alpha = c.spec.attrs.get_float("alpha", 0.2);
    kinks = {-0.5 / alpha, 0.5 / alpha};
  }
  if (f == "hard_swish") kinks = {-3.0, 3.0};
  if (f == "elu" || f == "selu" || f == "abs") kinks = {0.0};
  for (double& x : values) {
    if (f == "floor" || f == "ceil") kinks = {std::round(x)};
    for (double k : kinks) {
      if (std::abs(x - k) < 1e-3) x = k + (x < k ? -1e-3 : 1e-3);
    }
  }
}

}  // namespace

// Each function in its own run, so that every derivative is checked.
TEST(Layers, Activation) {
  static const char* const kFunctions[] = {"clip",     "hard_sigmoid", "hard_swish", "elu",    "selu",
                                           "softplus", "softsign",     "sigmoid",    "tanh",   "power",
                                           "exp",      "neg",          "floor",      "ceil",   "abs",
                                           "log",      "sqrt",         "reciprocal", "float16"};
  for (const char* function : kFunctions) {
    SCOPED_TRACE(function);
    run_layer_test({
        .make_case =
            [function](Rng& rng) {
              LayerCase c;
              const std::string f = function;
              c.spec.type = "Activation";
              c.spec.attrs.set("function", f);
              if (f == "clip") {
                c.spec.attrs.set("min", rng.uniform(-1.0, 0.0));
                c.spec.attrs.set("max", rng.uniform(0.0, 1.0));
              }
              if (f == "hard_sigmoid" || f == "elu") c.spec.attrs.set("alpha", rng.uniform(0.1, 1.0));
              // Caffe's Power: the exponents it treats apart (1, 2), others, and a constant (0).
              const double powers[] = {1.0, 2.0, 3.0, 0.5, -1.0, 1.7, 0.0};
              const double gamma = powers[rng.integer(0, 6)];
              const bool integral = gamma == std::floor(gamma) && gamma >= 0;
              if (f == "power") {
                if (gamma != 1.0 || rng.coin()) c.spec.attrs.set("gamma", gamma);
                c.spec.attrs.set("alpha", rng.uniform(-1.0, 1.0));
                // Integer powers take any base; others need a positive one to stay real.
                c.spec.attrs.set("beta", integral ? rng.uniform(-1.0, 1.0) : rng.uniform(1.5, 2.5));
              }
              c.input_shapes = {Shape{rng.integer(1, 3), rng.integer(1, 9), rng.integer(1, 13)}};
              const bool positive = f == "log" || f == "sqrt" || f == "reciprocal";
              // float16 sees values near its largest (65504) and below its smallest normal (2^-14).
              const double range = f == "float16" ? (rng.coin() ? 6e4 : 1e-4) : f == "power" ? 1.0 : 8.0;
              c.inputs = {rng.values(static_cast<std::size_t>(c.input_shapes[0].numel()),
                                     positive ? 0.1 : -range, range)};
              keep_off_kinks(c, c.inputs[0]);
              // float16 passes the gradient straight through, unlike its numeric derivative (0 between
              // float16 values): ActivationStraightThrough checks it.
              c.check_gradient = f != "float16";
              return c;
            },
        .naive =
            [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
              const std::string f = c.spec.attrs.get_string("function", "");
              const double alpha = c.spec.attrs.get_float("alpha", f == "hard_sigmoid" ? 0.2 : 1.0);
              Values y;
              for (double x : in[0]) {
                double r = 0;
                if (f == "clip")
                  r = std::min(std::max(x, c.spec.attrs.get_float("min", 0)),
                               c.spec.attrs.get_float("max", 0));
                if (f == "hard_sigmoid") r = std::max(0.0, std::min(1.0, alpha * x + 0.5));
                if (f == "hard_swish") r = x * std::max(0.0, std::min(1.0, x / 6 + 0.5));
                if (f == "elu") r = x > 0 ? x : alpha * (std::exp(x) - 1);
                if (f == "selu")
                  r = 1.0507009873554805 * (x > 0 ? x : 1.6732632423543772 * (std::exp(x) - 1));
                if (f == "softplus") r = std::log(1 + std::exp(x));
                if (f == "softsign") r = x / (1 + std::abs(x));
                if (f == "sigmoid") r = 1 / (1 + std::exp(-x));
                if (f == "tanh") r = std::tanh(x);
                if (f == "power") {
                  // The layer computes in float; use the float-rounded parameters.
                  const double scale = static_cast<float>(c.spec.attrs.get_float("alpha", 1.0));
                  const double shift = static_cast<float>(c.spec.attrs.get_float("beta", 0.0));
                  r = std::pow(shift + scale * x, c.spec.attrs.get_float("gamma", 1.0));
                }
                if (f == "exp") r = std::exp(x);
                if (f == "neg") r = -x;
                if (f == "floor") r = std::floor(x);
                if (f == "ceil") r = std::ceil(x);
                if (f == "abs") r = std::abs(x);
                if (f == "log") r = std::log(x);
                if (f == "sqrt") r = std::sqrt(x);
                if (f == "reciprocal") r = 1 / x;
                if (f == "float16") {
                  // Spacing of float16 values near x: 2^(e−10) for |x| in [2^e, 2^(e+1)), at least 2^-24.
                  const double spacing =
                      std::pow(2.0, std::max(std::floor(std::log2(std::abs(x))), -14.0) - 10);
                  const double q = x / spacing, below = std::floor(q);
                  const bool up = q - below > 0.5 || (q - below == 0.5 && std::fmod(below, 2.0) != 0);
                  r = (up ? below + 1 : below) * spacing;
                  if (std::abs(r) > 65504) r = x > 0 ? INFINITY : -INFINITY;
                }
                y.push_back(r);
              }
              return std::vector<Values>{y};
            },
        .cases = 6,
        .gradient_cases = 6,
    });
  }
}

// The conventions without a numeric counterpart: float16 passes the gradient straight through, floor
// and ceil pass none, abs none at 0; on the GPU too when there is one.
TEST(Layers, ActivationStraightThrough) {
  const Shape shape{2, 3};
  const std::vector<float> x{-1.5f, 0.0f, 0.25f, 2.0f, 70000.0f, 1e-6f};
  const std::vector<float> dy{1.0f, -2.0f, 3.0f, -4.0f, 5.0f, -6.0f};
  const std::vector<std::pair<std::string, std::vector<float>>> expected{
      {"float16", dy},
      {"floor", std::vector<float>(6, 0.0f)},
      {"ceil", std::vector<float>(6, 0.0f)},
      {"abs", {-1.0f, 0.0f, 3.0f, -4.0f, 5.0f, -6.0f}},
  };
  for (const auto& [function, dx] : expected) {
    SCOPED_TRACE(function);
    LayerSpec spec = spec_of("Activation");
    spec.attrs.set("function", function);
    const std::unique_ptr<Layer> layer = create_layer(spec);
    const BackwardRun cpu = run_backward_on_cpu(*layer, {Tensor::from(shape, x)}, {Tensor::from(shape, dy)});
    EXPECT_EQ(cpu.input_grads[0].to_vector(), dx);
    if (const std::optional<BackwardRun> gpu =
            run_backward_on_gpu(*layer, {Tensor::from(shape, x)}, {Tensor::from(shape, dy)})) {
      EXPECT_EQ(gpu->input_grads[0].to_vector(), dx);
    }
  }
}

// The fast CPU kernel run in place (output aliasing input, as the executor plans it) on a tensor
// large enough to be split over threads, with an odd tail for the vector loops and NaN and infinities
// among the values, gives the reference's results bit for bit.
TEST(Layers, ActivationFastInPlace) {
  static const char* const kFunctions[] = {"clip",    "hard_sigmoid", "hard_swish", "elu",  "softsign",
                                           "sigmoid", "tanh",         "abs",        "power"};
  const Shape shape{2, 131, 129};
  Rng rng(7);
  std::vector<float> x;
  for (double v : rng.values(static_cast<std::size_t>(shape.numel()), -8.0, 8.0))
    x.push_back(static_cast<float>(v));
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[x.size() - 2] = std::numeric_limits<float>::infinity();
  x[x.size() / 2] = -std::numeric_limits<float>::infinity();
  for (const char* function : kFunctions) {
    SCOPED_TRACE(function);
    LayerSpec spec = spec_of("Activation");
    spec.attrs.set("function", std::string(function));
    spec.attrs.set("min", 0.0);
    spec.attrs.set("max", 6.0);
    if (std::string(function) == "power") {
      spec.attrs.set("alpha", 0.5);
      spec.attrs.set("beta", 3.0);
      spec.attrs.set("gamma", 2.0);
    }
    const std::unique_ptr<Layer> layer = create_layer(spec);
    std::vector<Tensor> reference{Tensor::empty(shape)};
    layer->forward({Tensor::from(shape, x)}, reference);
    const std::unique_ptr<Kernel> fast = fast_cpu_kernel(*layer, {shape});
    ASSERT_NE(fast, nullptr);
    std::vector<Tensor> data{Tensor::from(shape, x)};
    fast->forward(data, data);
    const std::vector<float> expected = reference[0].to_vector(), got = data[0].to_vector();
    EXPECT_EQ(std::memcmp(expected.data(), got.data(), expected.size() * sizeof(float)), 0)
        << "CPU kernel '" << fast->name() << "'";
  }
}

// What the former Sigmoid, TanH, AbsVal and Power layers checked of their attributes and inputs.
TEST(Layers, ActivationErrors) {
  LayerSpec spec = spec_of("Activation", 2);
  spec.attrs.set("function", std::string("sigmoid"));
  expect_shape_error(spec, {Shape{2, 3}, Shape{2, 3}}, "input");
  spec = spec_of("Activation");
  spec.attrs.set("function", std::string("tanh"));
  EXPECT_TRUE(create_layer(spec)->in_place());
  spec.attrs.set("function", std::string("swish"));
  expect_model_error(spec, "'function'");
  spec.attrs.set("function", std::string("power"));
  spec.attrs.set("gamma", std::string("two"));
  expect_model_error(spec, "'gamma'");
  spec.attrs.set("gamma", 2.0);
  spec.attrs.set("alpha", INFINITY);
  expect_model_error(spec, "finite");
  expect_model_error(spec_of("Activation"), "'function' is required");
}

}  // namespace espresso::testing
