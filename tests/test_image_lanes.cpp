// Image lanes (runtime/image_lanes.h): a CPU batch run as one lane of images per thread gives the outputs of
// the plan that spreads each layer over the threads, forced on small nets and chosen by timing on real ones;
// batches that do not share out evenly, and small nets by default, run as before.
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

// Runs `graph` at `batch` on two threads with ESPRESSO_IMAGE_LANES=`lanes` and returns the net's first output
// for `input`, with the schedule it ran.
std::vector<float> run(const Graph& graph, std::int64_t batch, const char* lanes, const Tensor& input,
                       Net::BatchSchedule& schedule) {
  const testing::ScopedEnv env("ESPRESSO_IMAGE_LANES", lanes);
  Net net(graph, {.threads = 2});
  net.set_batch(batch);
  const std::string in = net.input_names()[0], out = net.output_names()[0];
  std::vector<float> result = net.forward({{in, input}}).at(out).to_vector();
  schedule = net.batch_schedule();
  return result;
}

TEST(ImageLanes, ForcedLanesGiveTheWholeBatchsOutputs) {
  const Graph graph = testing::residual_block();
  for (unsigned seed : {1u, 2u}) {  // a second input: the lanes copy their images in at every forward
    const Tensor x = random_batch(Shape{4, 8, 13, 11}, seed);
    Net::BatchSchedule whole, lanes;
    const std::vector<float> expected = run(graph, 4, "0", x, whole);
    const std::vector<float> got = run(graph, 4, "1", x, lanes);
    EXPECT_EQ(whole.lanes, 0);
    EXPECT_EQ(lanes.lanes, 2);
    EXPECT_TRUE(lanes.micro_batch == 1 || lanes.micro_batch == 2) << lanes.micro_batch;
    ASSERT_EQ(got.size(), expected.size());
    EXPECT_LE(testing::normalized_error(std::vector<double>(expected.begin(), expected.end()), got), 1e-5);
  }
}

TEST(ImageLanes, UnevenBatchesAndSmallNetsRunAsBefore) {
  const Graph graph = testing::residual_block();
  Net::BatchSchedule schedule;
  const Tensor odd = random_batch(Shape{3, 8, 13, 11}, 3);
  Net::BatchSchedule whole;
  const std::vector<float> expected = run(graph, 3, "0", odd, whole);
  EXPECT_EQ(run(graph, 3, "1", odd, schedule), expected);  // three images do not share out over two threads
  EXPECT_EQ(schedule.lanes, 0);
  run(graph, 4, nullptr, random_batch(Shape{4, 8, 13, 11}, 4), schedule);
  EXPECT_EQ(schedule.lanes, 0) << "a net of under 20 M multiply-adds an image keeps the layer-wise plan";
}

class ImageLanesReal : public testing::SharedDataTest {};

// SqueezeNet at batch 4: whatever timing chose, and lanes forced, the outputs are the layer-wise plan's.
TEST_F(ImageLanesReal, SqueezeNetInLanesMatchesTheLayerWisePlan) {
  const Graph graph = load_model((testing::shared_data_dir() / "onnx/squeezenet1_1/model.onnx").string());
  const Tensor x = random_batch(Shape{4, 3, 224, 224}, 5);
  Net::BatchSchedule whole, timed, forced;
  const std::vector<float> expected = run(graph, 4, "0", x, whole);
  const std::vector<double> reference(expected.begin(), expected.end());
  EXPECT_LE(testing::normalized_error(reference, run(graph, 4, nullptr, x, timed)), 1e-5);
  std::printf("  timing chose %d lanes of %lld images\n", timed.lanes,
              static_cast<long long>(timed.micro_batch));
  EXPECT_LE(testing::normalized_error(reference, run(graph, 4, "1", x, forced)), 1e-5);
  EXPECT_EQ(forced.lanes, 2);
}

}  // namespace
}  // namespace espresso
