// Mixed precision training (NetOptions::precision fp16 / bf16 with training, docs/training-throughput.md):
// activations and their gradients in the low type, fp32 master weights, the loss scaled and divided out
// again by the solver, overflow found and named, and the dynamic loss scale's policy.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "espresso/espresso.h"
#include "espresso/solver.h"
#include "test_support.h"
#include "training_nets.h"

namespace espresso {
namespace {

using namespace testing;  // training_nets.h

NetOptions mixed(Precision precision, bool cuda_graphs = true) {
  return {.device = Device::cuda(0),
          .cuda_graphs = cuda_graphs,
          .training = true,
          .seed = 7,
          .precision = precision};
}

std::string precision_of(Net& net, const std::string& name) {
  for (const LayerSummary& layer : net.summary()) {
    if (layer.name == name) return layer.precision;
  }
  return "no layer '" + name + "'";
}

TEST(MixedPrecisionTraining, NeedsAGpu) {
  std::mt19937 rng(1);
  try {
    Net net(lenet(2, rng), {.training = true, .precision = Precision::fp16});
    FAIL() << "fp16 training on the CPU was accepted";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("GPU"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Net(lenet(2, rng), {.training = true, .precision = Precision::int8}), UnsupportedError);
}

// The solver divides the loss scale out: gradients 2^k times larger with loss scale 2^k step exactly as
// the plain ones do.
TEST(MixedPrecisionTraining, TheSolverDividesTheLossScaleOut) {
  std::mt19937 rng(2);
  train::SolverConfig config;
  config.base_lr = 0.1;
  config.momentum = 0.9;
  config.weight_decay = 1e-3;
  config.clip_gradients = 0.5;
  const Tensor value = random_tensor(Shape{64}, rng, 1.0f), grad = random_tensor(Shape{64}, rng, 1.0f);
  std::vector<float> scaled_grad = grad.to_vector();
  for (float& g : scaled_grad) g *= 1024.0f;
  std::vector<Parameter> plain{{"ip", 0, value.clone(), grad.clone(), {}}};
  std::vector<Parameter> scaled{{"ip", 0, value.clone(), Tensor::from(Shape{64}, scaled_grad), {}}};
  train::Solver a(config), b(config);
  a.update(plain, 0);
  b.update(scaled, 0, 1024.0f);
  EXPECT_EQ(plain[0].value.to_vector(), scaled[0].value.to_vector());
}

TEST(MixedPrecisionTraining, TheLossScaleGrowsHalvesAndCollapsesWithAClearError) {
  train::LossScaler scaler({.initial = 8.0f, .growth_interval = 3, .minimum = 1.0f});
  EXPECT_TRUE(scaler.update("", 0));
  EXPECT_TRUE(scaler.update("", 1));
  EXPECT_EQ(scaler.scale(), 8.0f);
  EXPECT_TRUE(scaler.update("", 2));
  EXPECT_EQ(scaler.scale(), 16.0f) << "doubles after growth_interval clean steps";
  EXPECT_FALSE(scaler.update("conv2", 3)) << "an overflow skips the step";
  EXPECT_EQ(scaler.scale(), 8.0f);
  EXPECT_TRUE(scaler.update("", 4));
  EXPECT_TRUE(scaler.update("", 5));
  EXPECT_EQ(scaler.scale(), 8.0f) << "an overflow starts the clean count again";
  EXPECT_FALSE(scaler.update("conv2", 6));
  EXPECT_FALSE(scaler.update("conv2", 7));
  EXPECT_FALSE(scaler.update("conv2", 8));
  EXPECT_EQ(scaler.scale(), 1.0f);
  try {
    scaler.update("conv2", 9);
    FAIL() << "the collapse was not reported";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("Iteration 9"), std::string::npos) << message;
    EXPECT_NE(message.find("'conv2'"), std::string::npos) << message;
    EXPECT_NE(message.find("4 times in a row"), std::string::npos) << message;
  }
  EXPECT_THROW(train::LossScaler({.initial = 0.5f, .minimum = 1.0f}), UnsupportedError);
}

// A snapshot's scale and clean steps: the count towards the next doubling goes on (cut to the growth
// interval); nonsense is refused.
TEST(MixedPrecisionTraining, TheLossScaleResumesFromASnapshot) {
  train::LossScaler scaler({.initial = 8.0f, .growth_interval = 3, .minimum = 1.0f});
  scaler.resume(64.0f, 2);
  EXPECT_EQ(scaler.scale(), 64.0f);
  EXPECT_EQ(scaler.clean_steps(), 2);
  EXPECT_TRUE(scaler.update("", 0));
  EXPECT_EQ(scaler.scale(), 128.0f) << "the third clean step doubles";
  EXPECT_THROW(scaler.resume(0.5f, 0), UnsupportedError);
  EXPECT_THROW(scaler.resume(INFINITY, 0), UnsupportedError);
  EXPECT_THROW(scaler.resume(NAN, 0), UnsupportedError);
  EXPECT_THROW(scaler.resume(8.0f, -1), UnsupportedError);
  scaler.resume(8.0f, 2000);  // saved under a longer growth interval
  EXPECT_EQ(scaler.clean_steps(), 2);
  EXPECT_TRUE(scaler.update("", 1));
  EXPECT_EQ(scaler.scale(), 16.0f);
}

// A ResNet block (convolutions, BatchNorm + Scale + ReLU fused, residual Add, pooling, InnerProduct)
// trains in fp16 and bf16 like in fp32: the same losses and weights after five steps, within what the
// type's rounding allows; its layers do run in that type.
TEST(MixedPrecisionTraining, AResidualNetTrainsLikeFp32) {
  REQUIRE_GPU();
  std::mt19937 rng(3);
  const Graph graph = residual(6, rng);
  // Five SGD steps with momentum on six images amplify the type's rounding of the gradients (the weights'
  // steps are most of their values here): a few percent, where a wrong gradient is off by its size.
  for (const auto& [precision, tolerance] :
       {std::pair{Precision::fp16, 5e-2}, std::pair{Precision::bf16, 1e-1}}) {
    SCOPED_TRACE(precision_name(precision));
    Net low(with_own_weights(graph), mixed(precision));
    // Every layer but the loss (and the convolutions reading the three-channel data, which train in
    // whichever type cuDNN times faster).
    for (const char* name :
         {"b", "a_bn", "a_scale", "a_relu", "b_bn", "down_bn", "sum", "relu_sum", "pool", "ip"})
      EXPECT_EQ(precision_of(low, name), precision_name(precision)) << name;
    EXPECT_EQ(precision_of(low, "loss"), "fp32");
    int fused = 0;
    for (const LayerSummary& layer : low.summary())
      fused += layer.kernel.rfind("fused into ", 0) == 0 ? 1 : 0;
    EXPECT_EQ(fused, 4) << "BatchNorm + Scale (+ ReLU) fused in the low type too";
    if (precision == Precision::fp16) low.set_loss_scale(1024.0f);
    Net full(with_own_weights(graph), {.device = Device::cuda(0), .training = true, .seed = 7});
    expect_same_training(low, full, Shape{6, 3, 12, 12}, 5, tolerance,
                         [](Net& net) { net.forward_backward(); });
    EXPECT_EQ(low.non_finite_gradient(), "");
  }
}

// A layer that stays fp32 inside a low-precision net reads a converted copy of its input, and the layers
// after it a low-precision copy of its output (the ReLU in place over that copy); the planned net keeps the
// copies in the arena only as long as their readers need them, forward and backward, and lends each
// convolution its workspace there. It trains bit for bit like the naive plan (keep_intermediates: every
// tensor and copy in a buffer of its own, one workspace for the stream), deterministic algorithms on both.
TEST(MixedPrecisionTraining, CopiesAroundAnFp32LayerTrainLikeTheNaivePlan) {
  REQUIRE_GPU();
  const testing::ScopedEnv deterministic("ESPRESSO_CONV_DETERMINISTIC", "1");
  std::mt19937 rng(6);
  Graph graph;
  graph.name = "kept_fp32";
  graph.inputs = {{"data", Shape{6, 3, 12, 12}}, {"label", Shape{6}}};
  LayerSpec lrn = layer("norm", "LRN", {"a"}, {"norm"});
  lrn.attrs.set("size", std::int64_t{3});
  graph.layers = {convolution("a", "data", 3, 8, 3, rng),
                  lrn,
                  layer("norm_relu", "ReLU", {"norm"}, {"norm_relu"}),
                  convolution("b", "norm_relu", 8, 8, 3, rng),
                  layer("b_relu", "ReLU", {"b"}, {"b_relu"}),
                  pooling("pool", "b_relu"),
                  inner_product("ip", "pool", 8 * 6 * 6, 10, rng),
                  layer("loss", "SoftmaxWithLoss", {"ip", "label"}, {"loss"})};
  for (const Precision precision : {Precision::fp16, Precision::bf16}) {
    SCOPED_TRACE(precision_name(precision));
    Net planned(with_own_weights(graph), mixed(precision));
    EXPECT_EQ(precision_of(planned, "norm"), "fp32");
    for (const char* name : {"norm_relu", "b", "b_relu", "pool", "ip"})
      EXPECT_EQ(precision_of(planned, name), precision_name(precision)) << name;
    NetOptions naive_options = mixed(precision);
    naive_options.keep_intermediates = true;
    Net naive(with_own_weights(graph), naive_options);
    for (Net* net : {&planned, &naive}) net->set_loss_scale(64.0f);
    expect_same_training(planned, naive, Shape{6, 3, 12, 12}, 5, 0.0,
                         [](Net& net) { net.forward_backward(); });
    // The convolutions' workspaces (at least the low-precision filter gradients' scratch) are in the arena,
    // lent for the moments they run; the planned net's stream holds no more than the naive one's (at most
    // the partial sums a kernel reserves as it runs, beyond what it was lent).
    EXPECT_GT(planned.memory().arena_workspace_bytes, 0u);
    EXPECT_EQ(naive.memory().arena_workspace_bytes, 0u);
    EXPECT_LE(planned.memory().workspace_bytes, naive.memory().workspace_bytes);
  }
}

// Recorded steps replay the low-precision weight copies' refresh and the loss scale: a recorded fp16 net
// trains to the bit like an unrecorded one, also after the loss scale changed (which records again).
TEST(MixedPrecisionTraining, RecordedStepsTrainLikeUnrecordedOnes) {
  REQUIRE_GPU();
  const testing::ScopedEnv deterministic("ESPRESSO_CONV_DETERMINISTIC", "1");
  std::mt19937 rng(4);
  const Graph graph = lenet(8, rng);
  Net recorded(with_own_weights(graph), mixed(Precision::fp16));
  Net unrecorded(with_own_weights(graph), mixed(Precision::fp16, false));
  ::testing::internal::CaptureStderr();
  int steps = 0;
  expect_same_training(recorded, unrecorded, Shape{8, 1, 28, 28}, 6, 0.0, [&](Net& net) {
    if (steps++ / 2 == 3) net.set_loss_scale(256.0f);
    net.forward_backward();
  });
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "") << "the recording failed";
}

// fp16 gradients that overflow are found after the step, naming the last layer (in forward order) whose
// parameter gradient is not finite, and a sane scale makes them finite again.
TEST(MixedPrecisionTraining, OverflowingGradientsAreFoundAndNamed) {
  REQUIRE_GPU();
  std::mt19937 rng(5);
  Net net(with_own_weights(lenet(8, rng)), mixed(Precision::fp16));
  std::mt19937 data(1);
  fill_batch(net, Shape{8, 1, 28, 28}, data);
  net.set_loss_scale(1e30f);
  net.forward_backward();
  EXPECT_TRUE(std::isfinite(net.loss())) << "the forward is untouched by the scale";
  EXPECT_EQ(net.non_finite_gradient(), "ip2");
  net.set_loss_scale(1.0f);
  net.forward_backward();
  EXPECT_EQ(net.non_finite_gradient(), "");
  EXPECT_THROW(net.set_loss_scale(0.0f), UnsupportedError);
  EXPECT_THROW(net.set_loss_scale(std::nanf("")), UnsupportedError);
}

}  // namespace
}  // namespace espresso
