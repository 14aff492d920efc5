// Layers registered by an application: made from their LayerSpec, run by Net from hand-built graphs,
// Caffe prototxts and .esp packages, and refused when they clash with another type.
#include <gtest/gtest.h>

#include <mutex>
#include <span>

#include "espresso/custom_layer.h"
#include "espresso/import.h"
#include "espresso/net.h"
#include "espresso/package.h"
#include "harness/layer_harness.h"
#include "layers/registry.h"
#include "test_support.h"

namespace espresso::testing {
namespace {

// y = factor · x + b, with `factor` an attribute (default 2) and b a learned scalar.
class ScaleShift final : public CustomLayer {
 public:
  explicit ScaleShift(double factor) : factor_(static_cast<float>(factor)) {}
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override {
    if (inputs.size() != 1) throw ShapeError("ScaleShift takes one input");
    return inputs;
  }
  std::vector<Shape> weight_shapes(const std::vector<Shape>&) const override { return {Shape{1}}; }
  void forward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& weights,
               std::vector<Tensor>& outputs) const override {
    const float* x = inputs[0].data<float>();
    const float b = weights[0].data<float>()[0];
    float* y = outputs[0].data<float>();
    for (std::int64_t i = 0; i < inputs[0].numel(); ++i) y[i] = factor_ * x[i] + b;
  }

 private:
  float factor_;
};

void register_scale_shift() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_layer("ScaleShift", [](const LayerSpec& spec) {
      const double factor = spec.attrs.get_float("factor", 2.0);
      if (factor == 0.0) throw ModelError("attribute 'factor' must not be 0");
      return std::make_unique<ScaleShift>(factor);
    });
  });
}

Graph scale_shift_graph(double factor, float bias) {
  Graph graph;
  graph.name = "custom";
  graph.inputs.push_back({"x", Shape{2, 3}});
  LayerSpec spec = layer("shift", "ScaleShift", {"x"}, {"y"});
  spec.attrs.set("factor", factor);
  spec.weights.push_back(Tensor::from(Shape{1}, {bias}));
  graph.layers.push_back(spec);
  graph.layers.push_back(layer("relu", "ReLU", {"y"}, {"z"}));
  return graph;
}

const Tensor kInput = Tensor::from(Shape{2, 3}, {-3, -1, 0, 1, 2, 3});

TEST(CustomLayer, RunsInANetAndThroughAPackage) {
  register_scale_shift();
  EXPECT_TRUE(is_known_layer_type("ScaleShift"));
  Net net(scale_shift_graph(3.0, 1.0f));
  const std::vector<float> expected{0, 0, 1, 4, 7, 10};  // max(0, 3x + 1)
  EXPECT_EQ(net.forward({{"x", kInput}}).at("z").to_vector(), expected);
  EXPECT_EQ(net.summary()[0].kernel, "reference");

  TempDir dir;
  save_package(scale_shift_graph(3.0, 1.0f), dir.file("custom.esp"));
  Net from_package(load_model(dir.file("custom.esp")));
  EXPECT_EQ(from_package.forward({{"x", kInput}}).at("z").to_vector(), expected);
}

TEST(CustomLayer, ImportsFromACaffePrototxt) {
  register_scale_shift();
  const std::string prototxt = R"(
name: "custom"
input: "data"
input_shape { dim: 2 dim: 3 }
layer { name: "shift" type: "ScaleShift" bottom: "data" top: "shift" }
)";
  Graph graph = load_caffe(prototxt, {}, "custom.prototxt");
  graph.layers.at(0).weights.push_back(Tensor::from(Shape{1}, {-1.0f}));
  Net net(graph);
  EXPECT_EQ(net.forward({{"data", kInput}}).at("shift").to_vector(), (std::vector<float>{-7, -3, -1, 1, 3, 5}));
}

TEST(CustomLayer, ClashesAndBadAttributesAreErrors) {
  register_scale_shift();
  auto factory = [](const LayerSpec&) { return std::unique_ptr<CustomLayer>(); };
  try {
    register_layer("ReLU", factory);
    FAIL() << "a built-in type must not be replaced";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("'ReLU' is a built-in layer type"), std::string::npos) << e.what();
  }
  try {
    register_layer("ScaleShift", factory);
    FAIL() << "a type must not be registered twice";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("registered already"), std::string::npos) << e.what();
  }
  try {
    Net net(scale_shift_graph(0.0, 0.0f));
    FAIL() << "the factory's attribute check must reach the caller";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'shift' (ScaleShift): attribute 'factor'"), std::string::npos)
        << e.what();
  }
  Graph wrong_weights = scale_shift_graph(2.0, 0.0f);
  wrong_weights.layers[0].weights[0] = Tensor::from(Shape{2}, {0, 0});
  EXPECT_THROW(Net(wrong_weights).forward({{"x", kInput}}), ModelError);
}

// y = factor · x³ + b with a schema (factor: a number in [-4, 4], default 2; mode: "cube" only, required)
// and a backward, so that nets train through it.
class CubeShift final : public CustomLayer {
 public:
  explicit CubeShift(double factor) : factor_(static_cast<float>(factor)) {}
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override {
    if (inputs.size() != 1) throw ShapeError("CubeShift takes one input");
    return inputs;
  }
  std::vector<Shape> weight_shapes(const std::vector<Shape>&) const override { return {Shape{1}}; }
  void forward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& weights,
               std::vector<Tensor>& outputs) const override {
    const float* x = inputs[0].data<float>();
    const float b = weights[0].data<float>()[0];
    float* y = outputs[0].data<float>();
    for (std::int64_t i = 0; i < inputs[0].numel(); ++i) y[i] = factor_ * x[i] * x[i] * x[i] + b;
  }
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& /*weights*/,
                const std::vector<Tensor>& /*outputs*/, const std::vector<Tensor>& output_grads,
                std::vector<Tensor>& input_grads, std::vector<Tensor>& weight_grads) const override {
    const float* x = inputs[0].data<float>();
    const float* dy = output_grads[0].data<float>();
    float db = 0.0f;
    for (std::int64_t i = 0; i < inputs[0].numel(); ++i) db += dy[i];
    if (input_grads[0].defined()) {
      float* dx = input_grads[0].data<float>();
      for (std::int64_t i = 0; i < inputs[0].numel(); ++i) dx[i] += 3.0f * factor_ * x[i] * x[i] * dy[i];
    }
    if (!weight_grads.empty() && weight_grads[0].defined()) weight_grads[0].data<float>()[0] += db;
  }

 private:
  float factor_;
};

void register_cube_shift() {
  static std::once_flag once;
  std::call_once(once, [] {
    CustomLayerSchema schema;
    schema.attributes.push_back({.name = "factor", .kind = CustomAttribute::Kind::number,
                                 .fallback = AttrValue{2.0}, .min = -4.0, .max = 4.0});
    schema.attributes.push_back(
        {.name = "mode", .kind = CustomAttribute::Kind::text, .required = true, .choices = {"cube"}});
    schema.weights = "b (1)";
    schema.notes = "factor · x³ + b";
    register_layer(
        "CubeShift",
        [](const LayerSpec& spec) {
          // The schema filled in the default and checked the range before this runs.
          return std::make_unique<CubeShift>(spec.attrs.require_float("factor"));
        },
        schema);
  });
}

// The harness: reference (the custom forward) against a naive double computation written here, and its
// backward against numeric gradients of that computation, for the input and the learned b.
TEST(CustomLayer, SchemaAndBackwardPassTheLayerHarness) {
  register_cube_shift();
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "CubeShift";
            c.spec.attrs.set("mode", std::string("cube"));
            if (rng.coin()) c.spec.attrs.set("factor", rng.uniform(-4.0, 4.0));
            c.input_shapes = {Shape{rng.integer(1, 3), rng.integer(1, 7)}};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& inputs, const std::vector<Values>& weights) {
            const double factor = c.spec.attrs.get_float("factor", 2.0);
            Values y(inputs[0].size());
            for (std::size_t i = 0; i < y.size(); ++i) y[i] = factor * inputs[0][i] * inputs[0][i] * inputs[0][i] + weights[0][0];
            return std::vector<Values>{y};
          },
  });
}

TEST(CustomLayer, SchemaChecksAttributesAndIsDescribed) {
  register_cube_shift();
  auto make = [](const std::string& name, AttrValue value) {
    LayerSpec spec = layer("cube", "CubeShift", {"x"}, {"y"});
    spec.attrs.set("mode", std::string("cube"));
    spec.attrs.set(name, std::move(value));
    spec.weights.push_back(Tensor::from(Shape{1}, {0.0f}));
    return spec;
  };
  auto error_of = [](const LayerSpec& spec) -> std::string {
    try {
      create_layer(spec);
    } catch (const ModelError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of(make("factr", 1.0)).find("'factr'"), std::string::npos) << error_of(make("factr", 1.0));
  EXPECT_NE(error_of(make("factr", 1.0)).find("factor"), std::string::npos) << "a suggestion";
  EXPECT_NE(error_of(make("factor", 9.0)).find("layer 'cube' (CubeShift)"), std::string::npos) << error_of(make("factor", 9.0));
  EXPECT_NE(error_of(make("factor", std::string("big"))).find("factor"), std::string::npos);
  EXPECT_NE(error_of(make("mode", std::string("square"))).find("square"), std::string::npos);
  LayerSpec no_mode = layer("cube", "CubeShift", {"x"}, {"y"});
  EXPECT_NE(error_of(no_mode).find("mode"), std::string::npos) << error_of(no_mode);
  // The importer's check (check_layer_attributes) applies the schema too.
  Graph graph;
  graph.inputs.push_back({"x", Shape{1, 2}});
  graph.layers.push_back(make("factor", 9.0));
  EXPECT_THROW(check_layer_attributes(graph), ModelError);
  // The default reaches the factory: factor 2.
  Graph defaulted;
  defaulted.name = "cube";
  defaulted.inputs.push_back({"x", Shape{1, 2}});
  LayerSpec spec = layer("cube", "CubeShift", {"x"}, {"y"});
  spec.attrs.set("mode", std::string("cube"));
  spec.weights.push_back(Tensor::from(Shape{1}, {1.0f}));
  defaulted.layers.push_back(spec);
  EXPECT_EQ(Net(defaulted).forward({{"x", Tensor::from(Shape{1, 2}, {1, -2})}}).at("y").to_vector(),
            (std::vector<float>{3, -15}));  // 2·1 + 1, 2·(-8) + 1

  const std::string row = describe_layer_type("CubeShift");
  EXPECT_NE(row.find("CubeShift"), std::string::npos) << row;
  EXPECT_NE(row.find("factor"), std::string::npos) << row;
  EXPECT_NE(row.find("mode"), std::string::npos) << row;
  EXPECT_NE(row.find("b (1)"), std::string::npos) << row;
  EXPECT_NE(describe_layer_type("ReLU").find("ReLU"), std::string::npos);
  register_scale_shift();
  EXPECT_THROW(describe_layer_type("ScaleShift"), ModelError);  // registered without a schema
  EXPECT_THROW(describe_layer_type("NoSuchType"), ModelError);

  CustomLayerSchema bad;
  bad.attributes.push_back({.name = "k", .kind = CustomAttribute::Kind::integer, .fallback = AttrValue{std::int64_t{7}},
                            .min = 0, .max = 3});
  auto factory = [](const LayerSpec&) { return std::unique_ptr<CustomLayer>(); };
  try {
    register_layer("BadDefault", factory, bad);
    FAIL() << "a default outside its range must be refused";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("default"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(is_known_layer_type("BadDefault")) << "a refused registration leaves nothing behind";
  CustomLayerSchema twice;
  twice.attributes.push_back({.name = "k"});
  twice.attributes.push_back({.name = "k"});
  EXPECT_THROW(register_layer("Twice", factory, twice), ModelError);
  EXPECT_THROW(register_layer("CubeShift", factory, CustomLayerSchema{}), ModelError);  // registered already
}

// Training through custom layers: gradients reach the layers below (a learned InnerProduct) and the
// custom layer's own weight, and the loss falls; a custom layer without backward is refused by name.
TEST(CustomLayer, TrainsThroughItsBackward) {
  register_cube_shift();
  register_scale_shift();
  auto graph_with = [](const std::string& type) {
    Graph graph;
    graph.name = "train_custom";
    graph.inputs.push_back({"x", Shape{4, 3}});
    graph.inputs.push_back({"target", Shape{4, 2}});
    LayerSpec ip = layer("ip", "InnerProduct", {"x"}, {"h"});
    ip.attrs.set("num_output", std::int64_t{2});
    ip.weights = {Tensor::from(Shape{2, 3}, {0.1f, -0.2f, 0.3f, 0.05f, 0.1f, -0.1f}), Tensor::from(Shape{2}, {0, 0})};
    graph.layers.push_back(ip);
    LayerSpec custom = layer("custom", type, {"h"}, {"y"});
    if (type == "CubeShift") custom.attrs.set("mode", std::string("cube"));
    custom.weights.push_back(Tensor::from(Shape{1}, {0.0f}));
    graph.layers.push_back(custom);
    graph.layers.push_back(layer("loss", "EuclideanLoss", {"y", "target"}, {"loss"}));
    return graph;
  };
  const Tensor x = Tensor::from(Shape{4, 3}, {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1});
  const Tensor target = Tensor::from(Shape{4, 2}, {0.5f, 0.2f, 0.3f, 0.4f, 0.6f, 0.1f, 0.9f, 0.5f});
  Net net(graph_with("CubeShift"), {.training = true});
  std::vector<float> losses;
  for (int step = 0; step < 60; ++step) {
    losses.push_back(net.forward({{"x", x}, {"target", target}}).at("loss").to_vector()[0]);
    net.backward();
    for (Parameter& p : net.parameters()) {
      float* w = p.value.data<float>();
      const float* g = p.grad.data<float>();
      for (std::int64_t i = 0; i < p.value.numel(); ++i) w[i] -= 0.1f * g[i];
    }
  }
  EXPECT_LT(losses.back(), 0.25f * losses.front()) << losses.front() << " -> " << losses.back();
  bool custom_weight_moved = false;
  for (Parameter& p : net.parameters()) {
    if (p.layer == "custom") custom_weight_moved = p.value.data<float>()[0] != 0.0f;
  }
  EXPECT_TRUE(custom_weight_moved) << "the custom layer's own weight is learned";

  Net untrainable(graph_with("ScaleShift"), {.training = true});
  untrainable.forward({{"x", x}, {"target", target}});
  try {
    untrainable.backward();
    FAIL() << "a custom layer without backward cannot be trained through";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'custom' (ScaleShift)"), std::string::npos) << e.what();
  }
}

TEST(CustomLayer, RunsOnTheCpuInsideAGpuNet) {
  REQUIRE_GPU();
  register_scale_shift();
  Net net(scale_shift_graph(3.0, 1.0f), {.device = Device::cuda(0)});
  EXPECT_EQ(net.forward({{"x", kInput}}).at("z").to_vector(), (std::vector<float>{0, 0, 1, 4, 7, 10}));
  const std::vector<LayerSummary> layers = net.summary();
  EXPECT_TRUE(layers[0].device.is_cpu());
  EXPECT_EQ(layers[1].device, Device::cuda(0));
  EXPECT_EQ(layers[1].copied_in, std::vector<std::string>{"y"});
}

}  // namespace
}  // namespace espresso::testing
