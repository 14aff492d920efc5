// Image lanes (runtime/image_lanes.h): a CPU batch run as one lane of images per thread gives the outputs of
// the plan that spreads each layer over the threads, forced on small nets and chosen by timing on real ones;
// batches that do not share out evenly, small nets by default, and nets with a layer that mixes images run as
// before.
#include <gtest/gtest.h>

#include <random>

#include "espresso/import.h"
#include "espresso/net.h"
#include "test_support.h"

namespace espresso {
namespace {

Tensor random_batch(const Shape& shape, unsigned seed) {
  std::mt19937 rng(seed);
  return Tensor::from(shape, testing::random_values(rng, static_cast<std::size_t>(shape.numel())));
}

struct Runs {
  std::vector<std::vector<float>> outputs;  // the first graph output, per input
  Net::BatchSchedule schedule;
};

// One net of `graph` at `batch` on two threads with ESPRESSO_IMAGE_LANES=`lanes` (unset: nullptr), its first
// output for each of `inputs` in turn; the lanes' choice timed afresh (a tactic cache of the test's own).
Runs run(const Graph& graph, std::int64_t batch, const char* lanes, const std::vector<Tensor>& inputs) {
  const testing::TempDir cache;
  const testing::ScopedEnv fresh("ESPRESSO_TACTIC_CACHE", cache.path().c_str());
  const testing::ScopedEnv env("ESPRESSO_IMAGE_LANES", lanes);
  Net net(graph, {.threads = 2});
  net.set_batch(batch);
  const std::string in = net.input_names()[0], out = net.output_names()[0];
  Runs runs;
  for (const Tensor& x : inputs) runs.outputs.push_back(net.forward({{in, x}}).at(out).to_vector());
  runs.schedule = net.batch_schedule();
  return runs;
}

double error(const std::vector<float>& expected, const std::vector<float>& got) {
  if (got.size() != expected.size()) return 1e30;
  return testing::normalized_error(std::vector<double>(expected.begin(), expected.end()), got);
}

TEST(ImageLanes, ForcedLanesGiveTheWholeBatchsOutputs) {
  const Graph graph = testing::residual_block();
  // Two inputs through one net: the second forward, after the timing, runs the chosen lanes alone.
  const std::vector<Tensor> inputs = {random_batch(Shape{4, 8, 13, 11}, 1),
                                      random_batch(Shape{4, 8, 13, 11}, 2)};
  const Runs whole = run(graph, 4, "0", inputs);
  const Runs lanes = run(graph, 4, "1", inputs);
  EXPECT_EQ(whole.schedule.lanes, 0);
  EXPECT_EQ(lanes.schedule.lanes, 2);
  EXPECT_TRUE(lanes.schedule.micro_batch == 1 || lanes.schedule.micro_batch == 2)
      << lanes.schedule.micro_batch;
  for (std::size_t i = 0; i < inputs.size(); ++i)
    EXPECT_LE(error(whole.outputs[i], lanes.outputs[i]), 1e-5) << i;
  EXPECT_GT(error(lanes.outputs[0], lanes.outputs[1]), 1e-3) << "the inputs differ, so must the outputs";
}

TEST(ImageLanes, UnevenBatchesSmallNetsAndMixingLayersRunAsBefore) {
  Graph graph = testing::residual_block();
  const std::vector<Tensor> odd = {random_batch(Shape{3, 8, 13, 11}, 3)};
  const Runs three = run(graph, 3, "1", odd);
  EXPECT_EQ(three.schedule.lanes, 0) << "three images do not share out over two threads";
  EXPECT_EQ(three.outputs, run(graph, 3, "0", odd).outputs);
  const std::vector<Tensor> four = {random_batch(Shape{4, 8, 13, 11}, 4)};
  EXPECT_EQ(run(graph, 4, nullptr, four).schedule.lanes, 0)
      << "a net of under 20 M multiply-adds an image keeps the layer-wise plan";
  // A softmax across the batch (axis 0) mixes images: never in lanes, even forced.
  LayerSpec softmax = testing::layer("across", "Softmax", {"out"}, {"p"});
  softmax.attrs.set("axis", std::int64_t{0});
  graph.layers.push_back(softmax);
  graph.outputs = {"p"};
  EXPECT_EQ(run(graph, 4, "1", four).schedule.lanes, 0);
}

class ImageLanesReal : public testing::SharedDataTest {};

// SqueezeNet at batch 4: whatever timing chose, and lanes forced, the outputs are the layer-wise plan's.
TEST_F(ImageLanesReal, SqueezeNetInLanesMatchesTheLayerWisePlan) {
  const Graph graph = load_model((testing::shared_data_dir() / "onnx/squeezenet1_1/model.onnx").string());
  const std::vector<Tensor> inputs = {random_batch(Shape{4, 3, 224, 224}, 5),
                                      random_batch(Shape{4, 3, 224, 224}, 6)};
  const Runs whole = run(graph, 4, "0", inputs);
  const Runs timed = run(graph, 4, nullptr, inputs);
  const Runs forced = run(graph, 4, "1", inputs);
  std::printf("  timing chose %d lanes of %lld images\n", timed.schedule.lanes,
              static_cast<long long>(timed.schedule.micro_batch));
  EXPECT_EQ(forced.schedule.lanes, 2);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_LE(error(whole.outputs[i], timed.outputs[i]), 1e-5) << i;
    EXPECT_LE(error(whole.outputs[i], forced.outputs[i]), 1e-5) << i;
  }
}

}  // namespace
}  // namespace espresso
