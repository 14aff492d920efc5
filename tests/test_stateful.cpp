// Stateful sessions: recurrent layers carry their states between runs, so a sequence fed chunk by chunk
// gives what the whole sequence gives at once.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "espresso/espresso.h"
#include "test_support.h"

namespace espresso {
namespace {

constexpr std::int64_t kSteps = 12, kBatch = 2, kInput = 3, kHidden = 4;

Tensor random_tensor(const Shape& shape, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(shape.numel()));
  for (float& x : v) x = u(rng);
  return Tensor::from(shape, v);
}

LayerSpec recurrent(const std::string& type, const std::string& name, int gates, int outputs,
                    std::mt19937& rng) {
  LayerSpec spec;
  spec.name = name;
  spec.type = type;
  spec.inputs = {"x"};
  for (int k = 0; k < outputs; ++k) spec.outputs.push_back(name + (k == 0 ? "_y" : k == 1 ? "_h" : "_c"));
  spec.attrs.set("hidden_size", kHidden);
  spec.weights = {random_tensor(Shape{1, gates * kHidden, kInput}, rng),
                  random_tensor(Shape{1, gates * kHidden, kHidden}, rng),
                  random_tensor(Shape{1, 2 * gates * kHidden}, rng)};
  return spec;
}

// An LSTM (with Y, Y_h, Y_c) and a GRU (with Y only) reading the same input x [T, N, I].
std::shared_ptr<const Model> model(Device device = Device::cpu()) {
  std::mt19937 rng(7);
  Graph g;
  g.name = "streaming";
  g.inputs = {{"x", Shape{kSteps, kBatch, kInput}}};
  g.layers = {recurrent("LSTM", "lstm", 4, 3, rng), recurrent("GRU", "gru", 3, 1, rng)};
  g.outputs = {"lstm_y", "lstm_h", "lstm_c", "gru_y"};
  return std::make_shared<const Model>(g, device);
}

Tensor steps(const Tensor& x, std::int64_t begin, std::int64_t end) {
  const std::vector<float> all = x.to_vector();
  const std::int64_t per_step = x.numel() / x.shape()[0];
  std::vector<float> part(all.begin() + begin * per_step, all.begin() + end * per_step);
  Shape shape = x.shape();
  shape[0] = end - begin;
  return Tensor::from(shape, part);
}

void expect_near(const std::vector<float>& expected, const std::vector<float>& got, const std::string& what) {
  ASSERT_EQ(expected.size(), got.size()) << what;
  for (std::size_t i = 0; i < expected.size(); ++i)
    EXPECT_NEAR(expected[i], got[i], 1e-5) << what << " at " << i;
}

TEST(Stateful, ChunkByChunkEqualsTheWholeSequence) {
  const auto m = model();
  std::mt19937 rng(11);
  const Tensor x = random_tensor(Shape{kSteps, kBatch, kInput}, rng);
  Session whole(m);
  const auto all = whole.run({{"x", x}});

  Session streaming(m, {.stateful = true});
  std::vector<float> lstm_y, gru_y;
  std::map<std::string, Tensor> last;
  // Chunks of different lengths: each one replans, and the states must survive that.
  const std::int64_t bounds[] = {0, 5, 9, 10, kSteps};
  for (int chunk = 0; chunk + 1 < 5; ++chunk) {
    last = streaming.run({{"x", steps(x, bounds[chunk], bounds[chunk + 1])}});
    for (float v : last.at("lstm_y").to_vector()) lstm_y.push_back(v);
    for (float v : last.at("gru_y").to_vector()) gru_y.push_back(v);
  }
  expect_near(all.at("lstm_y").to_vector(), lstm_y, "LSTM Y");
  expect_near(all.at("gru_y").to_vector(), gru_y, "GRU Y");
  expect_near(all.at("lstm_h").to_vector(), last.at("lstm_h").to_vector(), "LSTM Y_h");
  expect_near(all.at("lstm_c").to_vector(), last.at("lstm_c").to_vector(), "LSTM Y_c");

  // A fresh start after reset_state(); without it the states carry on and the first chunk differs.
  const Tensor first = steps(x, 0, 5);
  const std::vector<float> from_zero = whole.run({{"x", first}}).at("lstm_y").to_vector();
  const std::vector<float> carried_on = streaming.run({{"x", first}}).at("lstm_y").to_vector();
  double difference = 0;
  for (std::size_t i = 0; i < from_zero.size(); ++i) difference += std::abs(from_zero[i] - carried_on[i]);
  EXPECT_GT(difference, 1e-3);
  streaming.reset_state();
  expect_near(from_zero, streaming.run({{"x", first}}).at("lstm_y").to_vector(), "after reset_state");
}

// The same on a GPU, where the layers run on their CUDA kernels (backends/cuda/recurrent.cu), which copy
// the carried states to and from the host around each run; the whole sequence on the CPU is the reference.
TEST(Stateful, ChunkByChunkOnTheGpuEqualsTheWholeSequenceOnTheCpu) {
  if (!testing::have_gpu()) GTEST_SKIP() << testing::no_gpu_reason() << ": GPU run not checked";
  std::mt19937 rng(11);
  const Tensor x = random_tensor(Shape{kSteps, kBatch, kInput}, rng);
  Session whole(model());
  const auto all = whole.run({{"x", x}});
  Session streaming(model(Device::cuda(0)), {.stateful = true});
  std::vector<float> lstm_y;
  std::map<std::string, Tensor> last;
  const std::int64_t bounds[] = {0, 5, 9, 10, kSteps};
  for (int chunk = 0; chunk + 1 < 5; ++chunk) {
    last = streaming.run({{"x", steps(x, bounds[chunk], bounds[chunk + 1])}});
    for (float v : last.at("lstm_y").to_vector()) lstm_y.push_back(v);
  }
  expect_near(all.at("lstm_y").to_vector(), lstm_y, "LSTM Y");
  expect_near(all.at("lstm_c").to_vector(), last.at("lstm_c").to_vector(), "LSTM Y_c");
  streaming.reset_state();
  expect_near(whole.run({{"x", steps(x, 0, 5)}}).at("lstm_y").to_vector(),
              streaming.run({{"x", steps(x, 0, 5)}}).at("lstm_y").to_vector(), "after reset_state");
}

TEST(Stateful, TrainingIsRefused) {
  NetOptions options;
  options.stateful = true;
  options.training = true;
  Graph g = model()->graph();
  EXPECT_THROW(Net(g, options), UnsupportedError);
}

}  // namespace
}  // namespace espresso
