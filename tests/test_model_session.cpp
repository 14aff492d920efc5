// Model and Session: one immutable model shared by sessions on several threads, each with its own
// state and thread count, giving what a Net of the same graph gives.
#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <thread>

#include "espresso/model.h"
#include "test_support.h"

namespace espresso::testing {
namespace {

class ModelSession : public SharedDataTest {
 protected:
  std::string lenet(const std::string& file) const {
    return (shared_data_dir() / "caffe" / "lenet" / file).string();
  }
};

Tensor random_digits(std::int64_t batch, unsigned seed) {
  std::mt19937 engine(seed);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::vector<float> values(static_cast<std::size_t>(batch * 28 * 28));
  for (float& v : values) v = pixel(engine);
  return Tensor::from(Shape{batch, 1, 28, 28}, values);
}

TEST_F(ModelSession, SessionsShareOneModelAcrossThreads) {
  const auto model = Model::load(lenet("v2_format/lenet.prototxt"), lenet("lenet_iter_10000.caffemodel"));
  EXPECT_EQ(model->bytes(), 431080u * sizeof(float));

  Net reference(model->graph());
  std::vector<Tensor> inputs;
  std::vector<std::vector<float>> expected;
  for (unsigned k = 0; k < 4; ++k) {
    inputs.push_back(random_digits(3, k));
    expected.push_back(reference.forward({{"data", inputs.back()}}).at("prob").to_vector());
  }

  // Two sessions with their own thread counts run all inputs concurrently.
  std::vector<std::vector<std::vector<float>>> got(2);
  std::vector<std::thread> threads;
  for (int s = 0; s < 2; ++s) {
    threads.emplace_back([&, s] {
      Session session(model, {.threads = s + 1});
      for (const Tensor& input : inputs) got[static_cast<std::size_t>(s)].push_back(session.run({{"data", input}}).at("prob").to_vector());
    });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& per_session : got) {
    ASSERT_EQ(per_session.size(), expected.size());
    for (std::size_t k = 0; k < expected.size(); ++k) {
      ASSERT_EQ(per_session[k].size(), expected[k].size());
      for (std::size_t i = 0; i < expected[k].size(); ++i) EXPECT_NEAR(per_session[k][i], expected[k][i], 1e-6f);
    }
  }
}

TEST_F(ModelSession, SessionRunsThroughInputAndOutput) {
  const auto model = Model::load(lenet("v2_format/lenet.prototxt"), lenet("lenet_iter_10000.caffemodel"));
  Session session(model);
  EXPECT_EQ(session.input_names(), std::vector<std::string>{"data"});
  session.set_batch(2);
  EXPECT_EQ(session.input_shape("data"), (Shape{2, 1, 28, 28}));
  session.input("data").copy_from(random_digits(2, 9));
  session.forward();
  const Tensor& prob = session.output("prob");
  EXPECT_EQ(prob.shape(), (Shape{2, 10}));
  const std::vector<float> p = prob.to_vector();
  EXPECT_NEAR(std::accumulate(p.begin(), p.begin() + 10, 0.0), 1.0, 1e-5);
}

TEST(ModelSessionErrors, BadThreadCountAndMissingModel) {
  Graph graph;
  graph.name = "tiny";
  graph.inputs.push_back({"x", Shape{1, 4}});
  graph.layers.push_back(layer("relu", "ReLU", {"x"}, {"y"}));
  const auto model = std::make_shared<const Model>(graph);
  EXPECT_THROW(Session(model, {.threads = -1}), UnsupportedError);
  EXPECT_THROW(Session(nullptr), ModelError);
  graph.layers[0].attrs.set("negative_slop", 0.1);
  EXPECT_THROW(Model{graph}, ModelError);
}

}  // namespace
}  // namespace espresso::testing
