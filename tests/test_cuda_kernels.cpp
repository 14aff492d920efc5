// The CUDA kernels beyond the per-layer harness: every convolution tactic over random
// configurations, and a LeNet-like net on the GPU against the CPU, with and without CUDA graphs.
// Tests that need a GPU skip without one.
#include <gtest/gtest.h>

#include <set>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <random>
#include <string>

#include "espresso/espresso.h"
#include "test_support.h"
#include "layers/registry.h"

namespace espresso {
namespace {

using testing::layer;
using testing::normalized_error;

std::vector<float> random_values(std::mt19937& engine, std::int64_t n) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = uniform(engine);
  return v;
}

Tensor random_tensor(std::mt19937& engine, const Shape& shape) {
  return Tensor::from(shape, random_values(engine, shape.numel()));
}

// Sets ESPRESSO_CONV_TACTIC for the scope of one test.
class TacticOverride {
 public:
  explicit TacticOverride(const char* tactic) { setenv("ESPRESSO_CONV_TACTIC", tactic, 1); }
  ~TacticOverride() { unsetenv("ESPRESSO_CONV_TACTIC"); }
  TacticOverride(const TacticOverride&) = delete;
  TacticOverride& operator=(const TacticOverride&) = delete;
};

struct ConvCase {
  LayerSpec spec;
  Shape input;
  int axes = 2;
};

// Random convolutions over 1 to 3 spatial axes with groups, strides, padding, dilation and
// optional bias, sized so that every kernel extent fits its padded input.
ConvCase random_conv(std::mt19937& engine, int index) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(engine); };
  ConvCase c;
  c.axes = index % 7 == 6 ? 3 : 1 + index % 2;
  const int group = pick(1, 3);
  std::vector<std::int64_t> dims{pick(1, 3), group * pick(1, 5)}, kernel, stride, pad, dilation;
  for (int a = 0; a < c.axes; ++a) {
    kernel.push_back(pick(1, c.axes == 3 ? 3 : 5));
    stride.push_back(pick(1, 3));
    pad.push_back(pick(0, 2));
    dilation.push_back(pick(1, 2));
    const std::int64_t extent = dilation.back() * (kernel.back() - 1) + 1;
    dims.push_back(std::max<std::int64_t>(1, extent - 2 * pad.back()) + pick(0, c.axes == 3 ? 4 : 12));
  }
  c.spec.name = "conv" + std::to_string(index);
  c.spec.type = "Convolution";
  c.spec.inputs = {"x"};
  c.spec.outputs = {"y"};
  c.spec.attrs.set("num_output", std::int64_t{group * pick(1, 5)});
  c.spec.attrs.set("group", std::int64_t{group});
  c.spec.attrs.set("kernel", kernel);
  c.spec.attrs.set("stride", stride);
  c.spec.attrs.set("pad", pad);
  c.spec.attrs.set("dilation", dilation);
  if (pick(0, 1) == 1) c.spec.attrs.set("bias", std::int64_t{0});
  c.input = Shape(dims);
  return c;
}

// Runs `layer` through its CUDA kernel on `input` and returns the kernel's name and output.
std::pair<std::string, std::vector<float>> run_cuda_kernel(Stream& context, const Layer& layer,
                                                           const Tensor& input) {
  const Shape out_shape = layer.output_shapes({input.shape()})[0];
  std::unique_ptr<Kernel> kernel = testing::make_kernel(layer, {input.shape()}, context);
  if (!kernel) return {"none", {}};
  std::vector<Tensor> inputs{input.to(context.device())};
  std::vector<Tensor> outputs{Tensor::empty(out_shape, DType::f32, context.device())};
  kernel->forward(inputs, outputs);
  context.synchronize();
  return {kernel->name(), outputs[0].to(Device::cpu()).to_vector()};
}

struct TacticCase {
  const char* tactic;
  const char* kernel_name;
};

class ConvTactics : public ::testing::TestWithParam<TacticCase> {};

TEST_P(ConvTactics, MatchTheReference) {
  REQUIRE_GPU();
  const TacticCase tactic = GetParam();
  TacticOverride forced(tactic.tactic);
  const std::unique_ptr<Stream> context = testing::gpu_stream();
  std::mt19937 engine(7);
  int forced_cases = 0;
  for (int index = 0; index < 42; ++index) {
    ConvCase c = random_conv(engine, index);
    const std::unique_ptr<Layer> probe = create_layer(c.spec);
    for (const Shape& s : probe->weight_shapes({c.input})) c.spec.weights.push_back(random_tensor(engine, s));
    const std::unique_ptr<Layer> layer = create_layer(c.spec);
    const Tensor input = random_tensor(engine, c.input);
    Tensor reference = Tensor::empty(layer->output_shapes({c.input})[0]);
    std::vector<Tensor> outputs{reference};
    layer->forward({input}, outputs);

    const auto [name, values] = run_cuda_kernel(*context, *layer, input);
    SCOPED_TRACE("case " + std::to_string(index) + ": input " + c.input.str() + ", kernel " + name);
    ASSERT_NE(name, "none");
    // Our own tactics cover every configuration up to three spatial axes; cuDNN may decline 3D ones.
    if (c.axes < 3 || std::string(tactic.tactic) != "cudnn") {
      EXPECT_EQ(name, tactic.kernel_name);
    }
    forced_cases += name == tactic.kernel_name ? 1 : 0;
    EXPECT_LE(normalized_error(reference.to_vector(), values), 1e-5);
  }
  ::testing::Test::RecordProperty("forced_tactic_cases", forced_cases);
}

INSTANTIATE_TEST_SUITE_P(Cuda, ConvTactics,
                         ::testing::Values(TacticCase{"cudnn", "cudnn"}, TacticCase{"im2col", "im2col+gemm"},
                                           TacticCase{"implicit", "implicit-gemm"}),
                         [](const auto& info) { return std::string(info.param.tactic); });

TEST(CudaConvTactics, RejectsAnUnknownTactic) {
  REQUIRE_GPU();
  TacticOverride forced("fourier");  // no tactic of any backend ("winograd" is a CPU one)
  const std::unique_ptr<Stream> context = testing::gpu_stream();
  std::mt19937 engine(3);
  ConvCase c = random_conv(engine, 0);
  const std::unique_ptr<Layer> probe = create_layer(c.spec);
  for (const Shape& s : probe->weight_shapes({c.input})) c.spec.weights.push_back(random_tensor(engine, s));
  const std::unique_ptr<Layer> layer = create_layer(c.spec);
  EXPECT_THROW(testing::make_kernel(*layer, {c.input}, *context), UnsupportedError);
}

// At inference the convolutions take over the ReLUs, the residual Add and the clip after them, for
// every tactic and in fp16 (where the Add's fp32 operand keeps it apart; cuDNN's fp16 convolutions with their
// epilogue fused into cuDNN's call, ESPRESSO_CUDNN_FUSED=1, and as a pass of its own, =0); the fused net
// matches the CPU's reference kernels.
TEST(CudaFusion, ResidualAddAndClampsFuseIntoConvolutions) {
  REQUIRE_GPU();
  const Graph g = testing::residual_block();
  std::mt19937 engine(5);
  const Tensor input = random_tensor(engine, Shape{2, 8, 13, 11});
  NetOptions reference_options;
  reference_options.reference_kernels = true;
  const std::vector<float> want = Net(g, reference_options).forward({{"data", input}}).at("out").to_vector();
  const Graph shortcut = testing::shortcut_block();
  const std::vector<float> expected =
      Net(shortcut, reference_options).forward({{"data", input}}).at("out").to_vector();
  for (const char* tactic : {"cudnn", "im2col", "implicit"}) {
    TacticOverride forced(tactic);
    for (const Precision precision : {Precision::fp32, Precision::fp16}) {
      for (const std::string fused : {"1", "0"}) {
        if (precision == Precision::fp32 && fused == "0") continue;  // fp32 has no fused call
        const testing::ScopedEnv fusing("ESPRESSO_CUDNN_FUSED", fused.c_str());
        SCOPED_TRACE(std::string(tactic) + " " + precision_name(precision) +
                     " ESPRESSO_CUDNN_FUSED=" + fused);
        const double tolerance = precision == Precision::fp32 ? 1e-5 : 1e-2;
        Net net(g, {.device = Device::cuda(0), .precision = precision});
        for (int run = 0; run < 2; ++run) {  // the second replays the recorded graph
          const Tensor out = net.forward({{"data", input}}).at("out").to(Device::cpu());
          EXPECT_LE(normalized_error(want, out.to_vector()), tolerance);
        }
        auto kernel = testing::kernels_by_layer(net.summary());
        if (precision == Precision::fp32) {
          testing::expect_residual_block_fused(net.summary());
        } else {  // the Add's other operand, the net's input, stays fp32: only the clamps fuse
          EXPECT_EQ(kernel["relu1"], "fused into conv1");
          EXPECT_EQ(kernel["clip"], "fused into conv3");
          // (channels-last plans run cuDNN whatever the tactic asked for)
          const bool on_cudnn = kernel["conv1"].rfind("cudnn", 0) == 0;
          EXPECT_EQ(kernel["conv1"].find("+epilogue") != std::string::npos, on_cudnn && fused == "1")
              << kernel["conv1"];
        }
        // The shortcut convolution comes after conv2: it adds its result into conv2's output.
        Net second(shortcut, {.device = Device::cuda(0), .precision = precision});
        for (int run = 0; run < 2; ++run) {
          const Tensor out = second.forward({{"data", input}}).at("out").to(Device::cpu());
          EXPECT_LE(normalized_error(expected, out.to_vector()), tolerance);
        }
        auto taken = testing::kernels_by_layer(second.summary());
        EXPECT_EQ(taken["add"], "fused into shortcut");
        EXPECT_EQ(taken["relu2"], "fused into shortcut");
      }
    }
  }
}

// A SqueezeNet fire module at inference: both expand convolutions write their slices of the Concat's
// output and the Concat does nothing. With the net's input as a third part no convolution writes its
// slice (on a GPU all parts are written or none) and the Concat copies them all.
TEST(CudaFusion, ConvolutionsWriteTheirConcatSlices) {
  REQUIRE_GPU();
  for (const bool with_input : {false, true}) {
    SCOPED_TRACE(with_input ? "the input as a third part" : "two expand convolutions");
    Graph g;
    g.inputs = {{"data", Shape{2, 8, 13, 11}}};
    std::vector<std::string> parts{"r1", "r3"};
    if (with_input) parts.push_back("data");
    g.layers = {testing::conv_layer("squeeze", "data", "s", 4, 1, 0, 1),
                layer("squeeze_relu", "ReLU", {"s"}, {"rs"}),
                testing::conv_layer("e1", "rs", "c1", 6, 1, 0, 1),
                layer("e1_relu", "ReLU", {"c1"}, {"r1"}),
                testing::conv_layer("e3", "rs", "c3", 5, 3, 1, 1),
                layer("e3_relu", "ReLU", {"c3"}, {"r3"}),
                layer("concat", "Concat", parts, {"cat"}),
                testing::conv_layer("next", "cat", "out", 3, 1, 0, 1)};
    std::mt19937 rng(13);
    const std::map<std::string, std::int64_t> in_channels{
        {"squeeze", 8}, {"e1", 4}, {"e3", 4}, {"next", with_input ? 19 : 11}};
    for (LayerSpec& spec : g.layers) {
      if (spec.type == "Convolution") testing::set_random_conv_weights(spec, in_channels.at(spec.name), rng);
    }
    g.outputs = {"out"};
    std::mt19937 engine(5);
    const Tensor input = random_tensor(engine, Shape{2, 8, 13, 11});
    NetOptions reference_options;
    reference_options.reference_kernels = true;
    const std::vector<float> want =
        Net(g, reference_options).forward({{"data", input}}).at("out").to_vector();
    Net net(g, {.device = Device::cuda(0)});
    for (int run = 0; run < 2; ++run) {  // the second replays the recorded graph
      const Tensor out = net.forward({{"data", input}}).at("out").to(Device::cpu());
      EXPECT_LE(normalized_error(want, out.to_vector()), 1e-5);
    }
    auto kernel = testing::kernels_by_layer(net.summary());
    if (with_input) {
      EXPECT_EQ(kernel["concat"].rfind("fused", 0), std::string::npos) << kernel["concat"];
    } else {
      EXPECT_EQ(kernel["concat"], "fused into e1, e3");
    }
  }
}

// LeNet with random weights, plus the layers a classifier head commonly adds.
Graph lenet(std::int64_t batch) {
  Graph g;
  g.name = "lenet";
  g.inputs = {{"data", Shape{batch, 1, 28, 28}}};
  LayerSpec conv1 = layer("conv1", "Convolution", {"data"}, {"conv1"});
  conv1.attrs.set("num_output", std::int64_t{20});
  conv1.attrs.set("kernel", std::int64_t{5});
  LayerSpec pool1 = layer("pool1", "Pooling", {"conv1"}, {"pool1"});
  pool1.attrs.set("kernel", std::int64_t{2});
  pool1.attrs.set("stride", std::int64_t{2});
  LayerSpec conv2 = layer("conv2", "Convolution", {"pool1"}, {"conv2"});
  conv2.attrs.set("num_output", std::int64_t{50});
  conv2.attrs.set("kernel", std::int64_t{5});
  LayerSpec pool2 = layer("pool2", "Pooling", {"conv2"}, {"pool2"});
  pool2.attrs.set("kernel", std::int64_t{2});
  pool2.attrs.set("stride", std::int64_t{2});
  LayerSpec ip1 = layer("ip1", "InnerProduct", {"pool2"}, {"ip1"});
  ip1.attrs.set("num_output", std::int64_t{500});
  LayerSpec relu1 = layer("relu1", "ReLU", {"ip1"}, {"relu1"});
  LayerSpec ip2 = layer("ip2", "InnerProduct", {"relu1"}, {"ip2"});
  ip2.attrs.set("num_output", std::int64_t{10});
  LayerSpec prob = layer("prob", "Softmax", {"ip2"}, {"prob"});
  g.layers = {conv1, pool1, conv2, pool2, ip1, relu1, ip2, prob};

  std::mt19937 engine(11);
  std::map<std::string, Shape> shapes{{"data", g.inputs[0].shape}};
  for (LayerSpec& spec : g.layers) {
    const std::unique_ptr<Layer> probe = create_layer(spec);
    const Shape in = shapes.at(spec.inputs[0]);
    shapes[spec.outputs[0]] = probe->output_shapes({in})[0];
    for (const Shape& s : probe->weight_shapes({in})) {
      std::vector<float> v = random_values(engine, s.numel());
      // Fan-in scaling keeps activations of order one through the net.
      const float scale = 1.0f / std::sqrt(static_cast<float>(std::max<std::int64_t>(1, s.count(1))));
      for (float& x : v) x *= scale;
      spec.weights.push_back(Tensor::from(s, v));
    }
  }
  return g;
}

class CudaLeNet : public ::testing::TestWithParam<bool> {};

TEST_P(CudaLeNet, MatchesTheCpu) {
  REQUIRE_GPU();
  // One image runs im2col + cuBLAS, a batch of 64 runs cuDNN (the heuristic in convolution.cpp).
  for (std::int64_t batch : {1, 64}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    const Graph graph = lenet(batch);
    std::mt19937 engine(static_cast<unsigned>(batch));
    const Tensor data = random_tensor(engine, Shape{batch, 1, 28, 28});

    NetOptions cpu_options;
    cpu_options.keep_intermediates = true;
    Net cpu(graph, cpu_options);
    cpu.forward({{"data", data}});

    NetOptions gpu_options;
    gpu_options.device = Device::cuda(0);
    gpu_options.cuda_graphs = GetParam();
    gpu_options.keep_intermediates = true;
    Net gpu(graph, gpu_options);
    // Twice: with graphs, the second forward replays the captured graph.
    for (int run = 0; run < 2; ++run) {
      gpu.forward({{"data", data}});
      for (const char* name : {"conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"}) {
        EXPECT_LE(
            normalized_error(cpu.tensor(name).to_vector(), gpu.tensor(name).to(Device::cpu()).to_vector()),
            1e-4)
            << name << ", run " << run;
      }
    }
    for (const LayerSummary& row : gpu.summary()) {
      if (row.type == "Convolution") {
        EXPECT_EQ(row.kernel, batch == 1 ? "im2col+gemm" : "cudnn") << row.name;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Graphs, CudaLeNet, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "WithGraphs" : "WithoutGraphs"; });

}  // namespace
}  // namespace espresso
