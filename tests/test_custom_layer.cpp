// Layers registered by an application: made from their LayerSpec, run by Net from hand-built graphs,
// Caffe prototxts and .esp packages, and refused when they clash with another type.
#include <gtest/gtest.h>

#include <mutex>
#include <span>

#include "espresso/custom_layer.h"
#include "espresso/import.h"
#include "espresso/net.h"
#include "espresso/package.h"
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
