#include <gtest/gtest.h>

#include "espresso/espresso.h"

namespace espresso {
namespace {

LayerSpec relu(const std::string& name, const std::string& in, const std::string& out) {
  LayerSpec s;
  s.name = name;
  s.type = "ReLU";
  s.inputs = {in};
  s.outputs = {out};
  return s;
}

}  // namespace

TEST(Net, RunsAChainAndReusesMemory) {
  Graph g;
  g.inputs = {{"data", Shape{2, 3, 4, 5}}};
  g.layers = {relu("r1", "data", "a"), relu("r2", "a", "b"), relu("r3", "b", "c")};
  Net net(g);
  std::vector<float> values(120);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) - 60.0f;
  auto out = net.forward({{"data", Tensor::from(Shape{2, 3, 4, 5}, values)}});
  ASSERT_EQ(out.size(), 1u);
  const std::vector<float> c = out.at("c").to_vector();
  for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(c[i], std::max(values[i], 0.0f));
  // In-place ReLUs share one buffer (480 bytes, aligned to 512).
  EXPECT_EQ(net.memory().planned_bytes, 512u);
  EXPECT_EQ(net.memory().naive_bytes, 3 * 512u);
}

TEST(Net, ListsEveryUnknownLayerAtOnce) {
  Graph g;
  g.inputs = {{"data", Shape{1, 1, 2, 2}}};
  LayerSpec a = relu("a", "data", "x");
  a.type = "Frobnicate";
  LayerSpec b = relu("b", "x", "y");
  b.type = "Quux";
  g.layers = {a, b};
  try {
    Net net(g);
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'Frobnicate' (layer 'a')"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'Quux' (layer 'b')"), std::string::npos) << msg;
  }
}

TEST(Net, RejectsDanglingInputs) {
  Graph g;
  g.inputs = {{"data", Shape{1}}};
  g.layers = {relu("a", "nothing", "x")};
  EXPECT_THROW(Net net(g), ModelError);
}

}  // namespace espresso
