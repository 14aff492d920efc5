// If, Loop and Scan in the layer harness: random shapes, small subgraphs, naive double-precision loops.
// Inference only (docs/control_flow.md): the harness checks that backward says so.
#include <gtest/gtest.h>

#include <cmath>

#include "harness/layer_harness.h"
#include "layers/control_flow.h"

namespace espresso::testing {
namespace {

LayerSpec step(const std::string& type, const std::string& name, std::vector<std::string> inputs,
               const std::string& output, const std::string& key, const std::string& value) {
  LayerSpec spec;
  spec.type = type;
  spec.name = name;
  spec.inputs = std::move(inputs);
  spec.outputs = {output};
  spec.attrs.set(key, value);
  return spec;
}

LayerSpec binary(const std::string& op, const std::string& name, std::vector<std::string> inputs, const std::string& out) {
  return step("Binary", name, std::move(inputs), out, "operation", op);
}

LayerSpec tanh_of(const std::string& name, const std::string& input, const std::string& out) {
  return step("Activation", name, {input}, out, "function", "tanh");
}

TEST(Layers, If) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "If";
            const Shape x{rng.integer(1, 4), rng.integer(1, 5)};
            Graph then_branch, else_branch;
            then_branch.inputs = else_branch.inputs = {{"x", x}};
            then_branch.layers = {binary("mul", "square", {"x", "x"}, "y")};
            else_branch.layers = {tanh_of("squash", "x", "y")};
            then_branch.outputs = else_branch.outputs = {"y"};
            c.spec.subgraphs = {{"then_branch", then_branch}, {"else_branch", else_branch}};
            c.input_shapes = {Shape{1}, x};
            c.inputs = {{rng.coin() ? 1.0 : 0.0}, rng.values(static_cast<std::size_t>(x.numel()))};
            c.non_differentiable_inputs = {0};
            return c;
          },
      .naive =
          [](const LayerCase&, const std::vector<Values>& in, const std::vector<Values>&) {
            Values y;
            for (double v : in[1]) y.push_back(in[0][0] != 0 ? v * v : std::tanh(v));
            return std::vector<Values>{y};
          },
      .gradient = Gradient::none,
  });
}

// y ← tanh(y + x) trip-count times, x read from outside the body.
TEST(Layers, Loop) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Loop";
            const Shape y{rng.integer(1, 3), rng.integer(1, 6)};
            Graph body;
            body.inputs = {{"i", Shape{}}, {"c", Shape{}}, {"y", y}, {"x", y}};
            body.layers = {binary("add", "sum", {"y", "x"}, "s"), tanh_of("squash", "s", "y_next")};
            body.outputs = {"c", "y_next"};
            c.spec.subgraphs = {{"body", body}};
            c.spec.attrs.set("carried", std::int64_t{1});
            c.input_shapes = {Shape{1}, Shape{1}, y, y};
            c.inputs = {{static_cast<double>(rng.integer(0, 4))}, {1.0}, rng.values(static_cast<std::size_t>(y.numel())),
                        rng.values(static_cast<std::size_t>(y.numel()))};
            c.non_differentiable_inputs = {0, 1};
            return c;
          },
      .naive =
          [](const LayerCase&, const std::vector<Values>& in, const std::vector<Values>&) {
            Values y = in[2];
            for (int t = 0; t < static_cast<int>(in[0][0]); ++t)
              for (std::size_t k = 0; k < y.size(); ++k) y[k] = std::tanh(y[k] + in[3][k]);
            return std::vector<Values>{y};
          },
      .gradient = Gradient::none,
  });
}

// s ← s + w·column, out_t = tanh(s), over axis 0 or 1 of X, forwards or backwards.
TEST(Layers, Scan) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Scan";
            c.spec.outputs = {"state", "sequence"};
            const std::int64_t width = rng.integer(1, 5), length = rng.integer(1, 6);
            const int axis = rng.integer(0, 1);
            Graph body;
            body.inputs = {{"s", Shape{width}}, {"column", Shape{width}}, {"w", Shape{width}}};
            body.layers = {binary("mul", "weigh", {"column", "w"}, "p"), binary("add", "sum", {"s", "p"}, "s_next"),
                           tanh_of("squash", "s_next", "out")};
            body.outputs = {"s_next", "out"};
            c.spec.subgraphs = {{"body", body}};
            c.spec.attrs.set("states", std::int64_t{1});
            c.spec.attrs.set("num_scan_inputs", std::int64_t{1});
            c.spec.attrs.set("scan_input_axes", std::vector<std::int64_t>{axis});
            c.spec.attrs.set("scan_input_directions", std::vector<std::int64_t>{rng.integer(0, 1)});
            c.spec.attrs.set("scan_output_directions", std::vector<std::int64_t>{rng.integer(0, 1)});
            c.input_shapes = {Shape{width}, axis == 0 ? Shape{length, width} : Shape{width, length}, Shape{width}};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const std::int64_t axis = c.spec.attrs.get_ints("scan_input_axes", {})[0];
            const bool in_reverse = c.spec.attrs.get_ints("scan_input_directions", {})[0] != 0;
            const bool out_reverse = c.spec.attrs.get_ints("scan_output_directions", {})[0] != 0;
            const Shape& x = c.input_shapes[1];
            const std::int64_t length = x[static_cast<int>(axis)], width = c.input_shapes[0][0];
            Values s = in[0], out(static_cast<std::size_t>(length * width));
            for (std::int64_t t = 0; t < length; ++t) {
              const std::int64_t at = in_reverse ? length - 1 - t : t;
              for (std::int64_t k = 0; k < width; ++k) {
                const double column = in[1][static_cast<std::size_t>(axis == 0 ? at * width + k : k * length + at)];
                s[static_cast<std::size_t>(k)] += column * in[2][static_cast<std::size_t>(k)];
                const std::int64_t row = out_reverse ? length - 1 - t : t;
                out[static_cast<std::size_t>(row * width + k)] = std::tanh(s[static_cast<std::size_t>(k)]);
              }
            }
            return std::vector<Values>{s, out};
          },
      .gradient = Gradient::none,
  });
}

}  // namespace
}  // namespace espresso::testing
