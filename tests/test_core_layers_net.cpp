// The core layers inside a Net: in-place planning and the fast kernels must give what the
// reference kernels give, including through shared buffers.
#include <gtest/gtest.h>

#include <random>

#include "espresso/espresso.h"
#include "layers/binary.h"
#include "test_support.h"

namespace espresso {
namespace {

using testing::layer;

Tensor random_tensor(const Shape& shape, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> values(static_cast<std::size_t>(shape.numel()));
  for (float& v : values) v = dist(rng);
  return Tensor::from(shape, values);
}

Graph classifier_graph(std::mt19937& rng) {
  const std::int64_t channels = 6;
  Graph g;
  g.inputs = {{"data", Shape{3, channels, 5, 7}}, {"label", Shape{3}}};
  LayerSpec bn = layer("bn", "BatchNorm", {"data"}, {"bn"});
  bn.weights = {random_tensor(Shape{channels}, rng, -1, 1), random_tensor(Shape{channels}, rng, 0.5f, 2),
                Tensor::from(Shape{1}, {0.9f})};
  LayerSpec scale = layer("scale", "Scale", {"bn"}, {"scaled"});
  scale.attrs.set("bias", std::int64_t{1});
  LayerSpec prelu = layer("prelu", "PReLU", {"scaled"}, {"act"});
  auto activation = [](const std::string& name, const std::string& function, const std::string& input,
                       const std::string& output) {
    LayerSpec spec = layer(name, "Activation", {input}, {output});
    spec.attrs.set("function", function);
    return spec;
  };
  LayerSpec power = activation("power", "power", "b", "squared");
  power.attrs.set("gamma", 2.0);
  // Caffe's Eltwise SUM with coefficients, as the importer builds it.
  int parts = 0;
  const std::vector<LayerSpec> sum =
      eltwise_as_binary(layer("sum", "Eltwise", {"a", "squared", "c"}, {"sum"}), "sum", {0.5, -1.0, 2.0},
                        [&](const std::string& base) { return base + "_" + std::to_string(++parts); });
  LayerSpec slice = layer("slice", "Slice", {"sum"}, {"left", "right"});
  slice.attrs.set("slice_points", std::vector<std::int64_t>{2});
  LayerSpec concat = layer("concat", "Concat", {"right", "left"}, {"joined"});
  LayerSpec reshape = layer("reshape", "Reshape", {"flat"}, {"scores"});
  reshape.attrs.set("shape", std::vector<std::int64_t>{0, 10, -1});
  LayerSpec softmax = layer("softmax", "Softmax", {"scores"}, {"prob"});
  softmax.attrs.set("axis", std::int64_t{-2});
  LayerSpec pool = layer("pool", "Reshape", {"scores"}, {"logits"});
  pool.attrs.set("shape", std::vector<std::int64_t>{0, -1});
  LayerSpec logits = layer("narrow", "Slice", {"logits"}, {"top", "rest"});
  logits.attrs.set("slice_points", std::vector<std::int64_t>{4});
  LayerSpec accuracy = layer("accuracy", "Accuracy", {"top", "label"}, {"accuracy"});
  accuracy.attrs.set("top_k", std::int64_t{2});
  g.layers = {bn,
              scale,
              prelu,
              layer("split", "Split", {"act"}, {"s1", "s2", "s3"}),
              activation("sigmoid", "sigmoid", "s1", "a"),
              activation("tanh", "tanh", "s2", "b"),
              power,
              activation("abs", "abs", "s3", "c"),
              slice,
              concat,
              layer("dropout", "Dropout", {"joined"}, {"dropped"}),
              layer("bias", "Bias", {"dropped"}, {"biased"}),
              layer("flatten", "Flatten", {"biased"}, {"flat"}),
              reshape,
              softmax,
              pool,
              logits,
              accuracy,
              layer("loss", "SoftmaxWithLoss", {"top", "label"}, {"loss"})};
  g.layers.insert(g.layers.begin() + 8, sum.begin(), sum.end());
  g.outputs = {"prob", "accuracy", "loss"};
  return g;
}

TEST(CoreLayersNet, FastKernelsMatchReferenceThroughThePlan) {
  std::mt19937 rng(7);
  Graph g = classifier_graph(rng);
  for (LayerSpec& spec : g.layers) {
    if (spec.type == "Scale")
      spec.weights = {random_tensor(Shape{6}, rng, -2, 2), random_tensor(Shape{6}, rng, -1, 1)};
    if (spec.type == "PReLU") spec.weights = {random_tensor(Shape{6}, rng, 0, 0.5f)};
    if (spec.type == "Bias") spec.weights = {random_tensor(Shape{6}, rng, -1, 1)};
  }
  const std::map<std::string, Tensor> inputs{{"data", random_tensor(Shape{3, 6, 5, 7}, rng, -3, 3)},
                                             {"label", Tensor::from(Shape{3}, {0.0f, 3.0f, 1.0f})}};
  Net fast(g);
  Net reference(g, NetOptions{.reference_kernels = true});
  const auto expected = reference.forward(inputs);
  const auto got = fast.forward(inputs);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got.at("prob").shape(), Shape({3, 10, 21}));
  EXPECT_EQ(got.at("loss").shape(), Shape{});
  for (const auto& [name, tensor] : expected) {
    const std::vector<float> want = tensor.to_vector(), have = got.at(name).to_vector();
    ASSERT_EQ(want.size(), have.size()) << name;
    for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(want[i], have[i], 1e-5f) << name << " " << i;
  }
  EXPECT_LT(fast.memory().planned_bytes, fast.memory().naive_bytes);
  for (const LayerSummary& row : reference.summary()) EXPECT_EQ(row.kernel, "reference") << row.name;
  for (const LayerSummary& row : fast.summary()) {
    const bool has_fast_kernel = row.type == "BatchNorm" || row.type == "Softmax" || row.type == "Activation";
    if (has_fast_kernel) {
      EXPECT_NE(row.kernel, "reference") << row.name;
    }
  }
}

}  // namespace
}  // namespace espresso
