// Attribute schemas: every layer's attributes are checked against what its type declares, before the
// layer is made and when a model file is loaded.
#include <gtest/gtest.h>

#include <fstream>

#include "espresso/import.h"
#include "layers/registry.h"
#include "test_support.h"

namespace espresso::testing {
namespace {

LayerSpec convolution() {
  LayerSpec spec = layer("conv1", "Convolution", {"x"}, {"y"});
  spec.attrs.set("num_output", std::int64_t{4});
  spec.attrs.set("kernel", std::vector<std::int64_t>{3});
  return spec;
}

std::string model_error(const LayerSpec& spec) {
  try {
    create_layer(spec);
  } catch (const ModelError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ModelError for layer '" << spec.name << "'";
  return {};
}

TEST(Schema, AcceptsAValidLayerAndFillsItsDefaults) {
  const std::unique_ptr<Layer> conv = create_layer(convolution());
  EXPECT_EQ(conv->spec().attrs.require_int("group"), 1);
  EXPECT_EQ(conv->spec().attrs.require_ints("stride"), std::vector<std::int64_t>{1});
  EXPECT_EQ(conv->output_shapes({Shape{1, 2, 5, 5}})[0], (Shape{1, 4, 3, 3}));
}

TEST(Schema, UnknownAttributeIsNamedWithASuggestion) {
  LayerSpec spec = convolution();
  spec.attrs.set("grop", std::int64_t{2});
  const std::string message = model_error(spec);
  EXPECT_NE(message.find("layer 'conv1' (Convolution)"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown attribute 'grop'; did you mean 'group'?"), std::string::npos) << message;
}

TEST(Schema, OutOfRangeWrongKindAndMissingAreNamed) {
  LayerSpec zero_group = convolution();
  zero_group.attrs.set("group", std::int64_t{0});
  EXPECT_NE(model_error(zero_group).find("attribute 'group' is 0, outside [1, inf]"), std::string::npos)
      << model_error(zero_group);

  LayerSpec text_kernel = convolution();
  text_kernel.attrs.set("kernel", std::string("three"));
  EXPECT_NE(model_error(text_kernel).find("attribute 'kernel' must be a list of integers"), std::string::npos);

  LayerSpec no_outputs = convolution();
  no_outputs.attrs = Attributes{};
  no_outputs.attrs.set("kernel", std::vector<std::int64_t>{3});
  EXPECT_NE(model_error(no_outputs).find("attribute 'num_output' is required"), std::string::npos);

  LayerSpec negative_slope_text = layer("relu", "ReLU", {"x"}, {"y"});
  negative_slope_text.attrs.set("negative_slope", std::string("0.1"));
  EXPECT_NE(model_error(negative_slope_text).find("attribute 'negative_slope' must be a number"), std::string::npos);
}

TEST(Schema, TrainingAttributesAreAcceptedOnAnyLayer) {
  LayerSpec spec = convolution();
  spec.attrs.set("loss_weight", std::vector<double>{1.0});
  spec.attrs.set("weight_filler.type", std::string("xavier"));
  EXPECT_NO_THROW(create_layer(spec));
}

TEST(Schema, LoadingAModelNamesFileLayerAndAttribute) {
  TempDir dir;
  const std::string path = dir.write("bad.prototxt", R"(
name: "bad"
input: "data"
input_shape { dim: 1 dim: 1 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 2 kernel_size: 3 group: 0 } }
)");
  try {
    load_model(path, "");
    FAIL() << "expected a ModelError";
  } catch (const ModelError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("layer 'conv1' (Convolution): attribute 'group' is 0"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace espresso::testing
