// Small training nets and the side-by-side training check that the training tests share: Caffe's
// LeNet, a branchy net and a ResNet block, with random weights, trained on random batches.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "espresso/espresso.h"
#include "espresso/solver.h"
#include "test_support.h"

namespace espresso::testing {

inline Tensor random_tensor(const Shape& shape, std::mt19937& rng, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(static_cast<std::size_t>(shape.numel()));
  for (float& v : values) v = normal(rng);
  return Tensor::from(shape, values);
}

inline LayerSpec convolution(const std::string& name, const std::string& input, std::int64_t in,
                             std::int64_t out, std::int64_t kernel, std::mt19937& rng) {
  LayerSpec conv = layer(name, "Convolution", {input}, {name});
  conv.attrs.set("num_output", out);
  conv.attrs.set("kernel", kernel);
  conv.attrs.set("pad", kernel / 2);
  conv.weights = {random_tensor(Shape{out, in, kernel, kernel}, rng, 0.3f),
                  random_tensor(Shape{out}, rng, 0.1f)};
  return conv;
}

inline LayerSpec inner_product(const std::string& name, const std::string& input, std::int64_t in,
                               std::int64_t out, std::mt19937& rng) {
  LayerSpec ip = layer(name, "InnerProduct", {input}, {name});
  ip.attrs.set("num_output", out);
  ip.weights = {random_tensor(Shape{out, in}, rng, 0.1f), random_tensor(Shape{out}, rng, 0.1f)};
  return ip;
}

inline LayerSpec pooling(const std::string& name, const std::string& input) {
  LayerSpec pool = layer(name, "Pooling", {input}, {name});
  pool.attrs.set("kernel", std::int64_t{2});
  pool.attrs.set("stride", std::int64_t{2});
  return pool;
}

// Caffe's LeNet, ReLU in place as Caffe's prototxt has it.
inline Graph lenet(std::int64_t batch, std::mt19937& rng) {
  Graph g;
  g.name = "lenet";
  g.inputs = {{"data", Shape{batch, 1, 28, 28}}, {"label", Shape{batch}}};
  LayerSpec conv1 = convolution("conv1", "data", 1, 20, 5, rng),
            conv2 = convolution("conv2", "pool1", 20, 50, 5, rng);
  conv1.attrs.set("pad", std::int64_t{0});
  conv2.attrs.set("pad", std::int64_t{0});
  g.layers = {conv1,
              pooling("pool1", "conv1"),
              conv2,
              pooling("pool2", "conv2"),
              inner_product("ip1", "pool2", 800, 500, rng),
              layer("relu1", "ReLU", {"ip1"}, {"relu1"}),
              inner_product("ip2", "relu1", 500, 10, rng),
              layer("loss", "SoftmaxWithLoss", {"ip2", "label"}, {"loss"})};
  return g;
}

// Branches: a tensor read by three layers, a Concat, a residual Add, BatchNorm, Dropout, and an
// accuracy output that takes no gradient.
inline Graph branchy(std::int64_t batch, std::mt19937& rng) {
  Graph g;
  g.name = "branchy";
  g.inputs = {{"data", Shape{batch, 3, 12, 12}}, {"label", Shape{batch}}};
  LayerSpec add = layer("add", "Binary", {"d", "ra"}, {"sum"});
  add.attrs.set("operation", std::string("add"));
  LayerSpec concat = layer("concat", "Concat", {"rb", "c"}, {"cat"});
  LayerSpec dropout = layer("drop", "Dropout", {"rs"}, {"dropped"});
  dropout.attrs.set("ratio", 0.3);
  LayerSpec accuracy = layer("accuracy", "Accuracy", {"ip", "label"}, {"accuracy"});
  g.layers = {convolution("a", "data", 3, 8, 3, rng),
              layer("relu_a", "ReLU", {"a"}, {"ra"}),
              convolution("b", "ra", 8, 8, 3, rng),
              layer("bn_b", "BatchNorm", {"b"}, {"nb"}),
              layer("relu_b", "ReLU", {"nb"}, {"rb"}),
              convolution("c", "ra", 8, 4, 1, rng),
              concat,
              convolution("d", "cat", 12, 8, 1, rng),
              add,
              layer("relu_s", "ReLU", {"sum"}, {"rs"}),
              dropout,
              pooling("pool", "dropped"),
              inner_product("ip", "pool", 8 * 6 * 6, 10, rng),
              layer("loss", "SoftmaxWithLoss", {"ip", "label"}, {"loss"}),
              accuracy};
  g.outputs = {"loss", "accuracy"};
  return g;
}

// A residual block as Caffe's ResNets write it: BatchNorm, Scale and ReLU after each convolution
// (in place there; the importer names each result apart, as here), the shortcut through a 1x1 convolution
// with its BatchNorm and Scale (no ReLU), the Add before the last ReLU. On a GPU the planned net runs each
// BatchNorm + Scale (+ ReLU) as one kernel (Net::Impl::fuse_training_steps); the naive plan fuses nothing.
inline Graph residual(std::int64_t batch, std::mt19937& rng) {
  Graph g;
  g.name = "residual";
  g.inputs = {{"data", Shape{batch, 3, 12, 12}}, {"label", Shape{batch}}};
  std::uniform_real_distribution<float> gamma(0.5f, 1.5f);
  // name → name_bn → name_scale (→ name_relu).
  const auto normalised = [&](const std::string& name, std::int64_t channels, bool relu) {
    LayerSpec bn = layer(name + "_bn", "BatchNorm", {name}, {name + "_bn"});
    bn.weights = {Tensor::zeros(Shape{channels}), Tensor::zeros(Shape{channels}), Tensor::zeros(Shape{1})};
    LayerSpec scale = layer(name + "_scale", "Scale", {name + "_bn"}, {name + "_scale"});
    scale.attrs.set("bias", std::int64_t{1});
    std::vector<float> factors(static_cast<std::size_t>(channels));
    for (float& f : factors) f = gamma(rng);
    scale.weights = {Tensor::from(Shape{channels}, factors), random_tensor(Shape{channels}, rng, 0.2f)};
    std::vector<LayerSpec> chain{bn, scale};
    if (relu) chain.push_back(layer(name + "_relu", "ReLU", {name + "_scale"}, {name + "_relu"}));
    return chain;
  };
  LayerSpec add = layer("sum", "Binary", {"b_scale", "down_scale"}, {"sum"});
  add.attrs.set("operation", std::string("add"));
  std::vector<LayerSpec> layers{convolution("a", "data", 3, 8, 3, rng)};
  for (const auto& part :
       {normalised("a", 8, true), std::vector<LayerSpec>{convolution("b", "a_relu", 8, 8, 3, rng)},
        normalised("b", 8, false), std::vector<LayerSpec>{convolution("down", "data", 3, 8, 1, rng)},
        normalised("down", 8, false)}) {
    layers.insert(layers.end(), part.begin(), part.end());
  }
  layers.insert(layers.end(), {add, layer("relu_sum", "ReLU", {"sum"}, {"relu_sum"}),
                               pooling("pool", "relu_sum"), inner_product("ip", "pool", 8 * 6 * 6, 10, rng),
                               layer("loss", "SoftmaxWithLoss", {"ip", "label"}, {"loss"})});
  g.layers = layers;
  return g;
}

// A copy whose weights are its own: Nets train the graph's blobs in place.
inline Graph with_own_weights(Graph g) {
  for (LayerSpec& spec : g.layers) {
    for (Tensor& w : spec.weights) w = w.clone();
  }
  return g;
}

inline void fill_batch(Net& net, const Shape& data_shape, std::mt19937& rng) {
  std::uniform_real_distribution<float> pixel(-1.0f, 1.0f);
  std::vector<float> data(static_cast<std::size_t>(data_shape.numel()));
  for (float& v : data) v = pixel(rng);
  net.input("data").copy_from(Tensor::from(data_shape, data));
  std::vector<float> labels(static_cast<std::size_t>(data_shape[0]));
  for (float& l : labels) l = static_cast<float>(rng() % 10);
  net.input("label").copy_from(Tensor::from(Shape{data_shape[0]}, labels));
}

// The largest difference between two tensors' values relative to the largest value; 0 when they are
// the same bit for bit.
inline double relative_difference(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to(Device::cpu()).to_vector(), y = b.to(Device::cpu()).to_vector();
  if (x.size() != y.size()) return 1.0;
  if (std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0) return 0.0;
  double diff = 0, scale = 1e-30;
  for (std::size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(x[i] - y[i])));
    scale = std::max(scale, static_cast<double>(std::abs(x[i])));
  }
  return diff == 0 ? 1e-30 : diff / scale;  // equal values, other bits (a zero's sign): not identical
}

// Trains two nets of one graph side by side with Caffe's SGD (momentum, weight decay) on the same
// batches, one step each through `step` (forward and backward), and compares every loss and, at the
// end, every weight: bit for bit (tolerance 0), or within `tolerance` where the two may round
// differently (cuDNN's algorithms, timed per net; other kernels; another precision). Each solver
// divides its net's loss scale out.
inline void expect_same_training(
    Net& a, Net& b, const Shape& data_shape, int iterations, double tolerance,
    const std::function<void(Net&)>& step = [](Net& net) {
      net.forward();
      net.backward();
    }) {
  train::SolverConfig config;
  config.base_lr = 0.05;
  config.momentum = 0.9;
  config.weight_decay = 5e-4;
  train::Solver a_solver(config), b_solver(config);
  std::vector<Parameter> a_params = a.parameters(), b_params = b.parameters();
  ASSERT_EQ(a_params.size(), b_params.size());
  const Tensor initial = a_params[0].value.to(Device::cpu()).clone();
  std::mt19937 a_data(3), b_data(3);
  for (int iteration = 0; iteration < iterations; ++iteration) {
    fill_batch(a, data_shape, a_data);
    fill_batch(b, data_shape, b_data);
    step(a);
    step(b);
    const float a_loss = a.loss(), b_loss = b.loss();
    if (tolerance == 0.0) {
      EXPECT_EQ(std::memcmp(&a_loss, &b_loss, sizeof(float)), 0)
          << "step " << iteration << ": " << a_loss << " vs " << b_loss;
    } else {
      EXPECT_NEAR(a_loss, b_loss, tolerance * std::abs(b_loss)) << "step " << iteration;
    }
    a_solver.update(a_params, iteration, a.loss_scale());
    b_solver.update(b_params, iteration, b.loss_scale());
  }
  for (std::size_t i = 0; i < a_params.size(); ++i) {
    EXPECT_LE(relative_difference(a_params[i].value, b_params[i].value), tolerance)
        << a_params[i].layer << " blob " << a_params[i].index;
  }
  EXPECT_GT(relative_difference(a_params[0].value, initial), 0.0) << "the weights moved";
}

}  // namespace espresso::testing
