// Mixed precision (NetOptions::precision, docs/precision.md): the host conversions, the per-layer
// fallback to fp32 where a device has no kernel in the asked type (all of the CPU), --strict, the CLI
// option, and on a GPU the shared models in fp16, bf16 and TF32 against fp32.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>

#include "core/half.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/net.h"
#include "test_support.h"

namespace espresso {
namespace {

using testing::layer;
using testing::normalized_error;

float bits_to_float(std::uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

TEST(Precision, ParsesNamesAndRejectsOthers) {
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::fp16, Precision::bf16})
    EXPECT_EQ(parse_precision(precision_name(p)), p);
  try {
    parse_precision("fp8");
    FAIL() << "fp8 was accepted";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("'fp8'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
  }
}

// Every finite half survives a round trip, and each value halfway between two neighbours rounds to
// the one with an even mantissa: the definition of round-to-nearest-even, checked exhaustively.
TEST(Precision, HalfConversionRoundsToNearestEven) {
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    if ((bits & 0x7c00u) == 0x7c00u) continue;  // inf, NaN
    const float value = half_to_float(bits);
    ASSERT_EQ(float_to_half(value), bits) << "half 0x" << std::hex << h;
    const auto next = static_cast<std::uint16_t>(bits + 1);
    if ((next & 0x7c00u) == 0x7c00u || (bits & 0x7fffu) == 0x7fffu) continue;
    const double midpoint = (static_cast<double>(value) + half_to_float(next)) / 2.0;
    const std::uint16_t even = (bits & 1u) == 0 ? bits : next;
    ASSERT_EQ(float_to_half(static_cast<float>(midpoint)), even) << "midpoint above half 0x" << std::hex << h;
  }
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00u);  // rounds past the largest half, 65504
  EXPECT_EQ(float_to_half(65519.0f), 0x7bffu);
  EXPECT_EQ(float_to_half(bits_to_float(0x33000000u)), 0x0000u);  // 2^-25, a tie, rounds to even zero
  EXPECT_EQ(float_to_half(bits_to_float(0x33000001u)), 0x0001u);
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::nanf("")))));
}

TEST(Precision, Bf16ConversionRoundsToNearestEven) {
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    if ((bits & 0x7f80u) == 0x7f80u) continue;
    ASSERT_EQ(float_to_bf16(bf16_to_float(bits)), bits);
    // Halfway to the next bf16: the float with only bit 15 set below the kept bits.
    const float midpoint = bits_to_float((static_cast<std::uint32_t>(bits) << 16) | 0x8000u);
    const std::uint16_t even = (bits & 1u) == 0 ? bits : static_cast<std::uint16_t>(bits + 1);
    if ((bits & 0x7fffu) == 0x7f7fu) continue;  // the next one up is infinity
    ASSERT_EQ(float_to_bf16(midpoint), even) << "bf16 0x" << std::hex << h;
  }
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
}

// conv → relu → pool → ip → softmax with random weights.
Graph small_net() {
  Graph g;
  g.name = "small";
  g.inputs.push_back({"data", Shape{2, 3, 9, 9}});
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-0.5f, 0.5f);
  auto random = [&](const Shape& shape) {
    Tensor t = Tensor::empty(shape);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = uniform(rng);
    return t;
  };
  LayerSpec conv = layer("conv", "Convolution", {"data"}, {"conv"});
  conv.attrs.set("num_output", std::int64_t{4});
  conv.attrs.set("kernel", std::int64_t{3});
  conv.weights = {random(Shape{4, 3, 3, 3}), random(Shape{4})};
  LayerSpec relu = layer("relu", "ReLU", {"conv"}, {"relu"});
  LayerSpec pool = layer("pool", "Pooling", {"relu"}, {"pool"});
  pool.attrs.set("kernel", std::int64_t{2});
  pool.attrs.set("stride", std::int64_t{2});
  LayerSpec ip = layer("ip", "InnerProduct", {"pool"}, {"ip"});
  ip.attrs.set("num_output", std::int64_t{5});
  ip.weights = {random(Shape{5, 64}), random(Shape{5})};
  LayerSpec softmax = layer("prob", "Softmax", {"ip"}, {"prob"});
  g.layers = {conv, relu, pool, ip, softmax};
  g.outputs = {"prob"};
  return g;
}

Tensor random_input(const Shape& shape, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  Tensor t = Tensor::empty(shape);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = uniform(rng);
  return t;
}

// On the CPU a low precision runs every layer in fp32 and says so per layer: softmax is kept by design,
// the others fell back; the results are the fp32 net's exactly.
TEST(Precision, CpuFallsBackToFp32PerLayer) {
  for (Precision precision : {Precision::tf32, Precision::fp16, Precision::bf16}) {
    Net low(small_net(), {.precision = precision});
    Net full(small_net());
    const Tensor x = random_input(Shape{2, 3, 9, 9}, 1);
    const std::vector<float> a = low.forward({{"data", x}}).at("prob").to_vector();
    const std::vector<float> b = full.forward({{"data", x}}).at("prob").to_vector();
    EXPECT_EQ(a, b);
    for (const LayerSummary& row : low.summary()) {
      EXPECT_EQ(row.precision, "fp32") << row.name;
      const bool tf32_layer = row.type == "Convolution" || row.type == "InnerProduct";
      const std::string expected = row.type == "Softmax" && precision != Precision::tf32 ? "kept"
                                   : precision == Precision::tf32 && !tf32_layer         ? ""
                                                                                         : "fallback";
      EXPECT_EQ(row.precision_note, expected) << precision_name(precision) << " " << row.name;
    }
    EXPECT_EQ(low.memory().planned_bytes, full.memory().planned_bytes);
  }
}

TEST(Precision, StrictTurnsTheFallbackIntoAnError) {
  Net net(small_net(), {.precision = Precision::fp16, .strict_precision = true});
  try {
    net.summary();
    FAIL() << "strict fp16 on the CPU planned";
  } catch (const UnsupportedError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("fp16"), std::string::npos) << message;
    EXPECT_NE(message.find("'conv' (Convolution)"), std::string::npos) << message;
    EXPECT_NE(message.find("'ip' (InnerProduct)"), std::string::npos) << message;
    EXPECT_EQ(message.find("'prob'"), std::string::npos) << "softmax stays fp32 by design: " << message;
  }
  // fp32 is never a fallback.
  Net fp32(small_net(), {.strict_precision = true});
  EXPECT_NO_THROW(fp32.summary());
}

TEST(Precision, LowPrecisionIsForInference) {
  EXPECT_THROW(Net(small_net(), {.training = true, .precision = Precision::fp16}), UnsupportedError);
}

// --- The command line -------------------------------------------------------------------------------

struct CliResult {
  int code = -1;
  std::string out, err;
};

CliResult run_cli(const std::string& args) {
  testing::TempDir dir;
  const std::string err_path = dir.file("stderr");
  const std::string command = testing::espresso_cli() + " " + args + " 2>" + err_path;
  CliResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(err_path);
  result.err.assign(std::istreambuf_iterator<char>(err), std::istreambuf_iterator<char>());
  return result;
}

class PrecisionCli : public testing::SharedDataTest {};

std::string lenet() {
  return (testing::shared_data_dir() / "caffe/lenet/v2_format/lenet.prototxt").string() + " -w " +
         (testing::shared_data_dir() / "caffe/lenet/lenet_iter_10000.caffemodel").string();
}

TEST_F(PrecisionCli, InfoShowsEachLayersPrecision) {
  const CliResult r = run_cli("info " + lenet() + " --precision fp16");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("precision"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fp32 (fallback: no fp16 kernel)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fp32 (kept fp32)"), std::string::npos) << r.out;  // the final Softmax
  EXPECT_NE(r.out.find("fell back to fp32"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("--strict"), std::string::npos) << r.err;
}

TEST_F(PrecisionCli, StrictAndUnknownPrecisionsFail) {
  const CliResult strict = run_cli("info " + lenet() + " --precision bf16 --strict");
  EXPECT_NE(strict.code, 0);
  EXPECT_NE(strict.err.find("no bf16 kernel"), std::string::npos) << strict.err;
  EXPECT_NE(strict.err.find("conv1"), std::string::npos) << strict.err;
  const CliResult unknown = run_cli("classify " + lenet() + " --precision fp8 x.png");
  EXPECT_NE(unknown.code, 0);
  EXPECT_NE(unknown.err.find("--precision"), std::string::npos) << unknown.err;
  for (const char* verb : {"eval", "bench", "classify"}) {
    const CliResult help = run_cli(std::string(verb) + " --help");
    EXPECT_NE(help.out.find("--precision"), std::string::npos) << verb;
    EXPECT_NE(help.out.find("--strict"), std::string::npos) << verb;
  }
}

// --- On a GPU: the shared models ---------------------------------------------------------------------

// The models' folder: $ESPRESSO_PRECISION_MODELS (bench/run_precision_bench.sh exports torchvision's models
// there on the GPU machine, where the shared ResNet-18 and MobileNetV2 files are not carried), else the
// shared data.
std::filesystem::path precision_models_dir() {
  const char* env = std::getenv("ESPRESSO_PRECISION_MODELS");
  return env != nullptr && *env != '\0' ? std::filesystem::path(env) : testing::shared_data_dir();
}

// The four ONNX models found there, loaded, by name; a visible line for each one missing.
std::vector<std::pair<std::string, Graph>> precision_models() {
  std::vector<std::pair<std::string, Graph>> found;
  for (const char* model : {"resnet18", "squeezenet1_1", "mobilenet_v2", "nin_cifar10"}) {
    const std::filesystem::path path = precision_models_dir() / "onnx" / model / "model.onnx";
    if (!std::filesystem::exists(path)) {
      std::printf("[ SKIPPED  ] %s not found: %s not checked\n", path.string().c_str(), model);
      continue;
    }
    found.emplace_back(model, load_model(path.string()));
  }
  return found;
}

TEST(PrecisionModels, LowPrecisionOutputsMatchFp32OnTheGpu) {
  REQUIRE_GPU();
  const auto models = precision_models();
  if (models.empty()) GTEST_SKIP() << "none of the models found under " << precision_models_dir();
  for (const auto& [model, graph] : models) {
    Net reference(graph, {.device = Device::cuda()});
    const std::string input = reference.input_names()[0];
    Shape shape = reference.input_shape(input);
    shape[0] = 4;
    const Tensor x = random_input(shape, 3);
    const std::string output = reference.output_names()[0];
    const std::vector<float> expected = reference.forward({{input, x}}).at(output).to_vector();
    // The default plan: channels-last unless a net with grouped convolutions runs at batch 1 or in bf16.
    const bool grouped = std::any_of(graph.layers.begin(), graph.layers.end(), [](const LayerSpec& spec) {
      return spec.type == "Convolution" && spec.attrs.get_int("group", 1) > 1;
    });
    EXPECT_EQ(grouped, model == "mobilenet_v2");
    {
      const testing::ScopedEnv unset("ESPRESSO_CHANNELS_LAST", nullptr);
      for (Precision precision : {Precision::fp16, Precision::bf16}) {
        for (const std::int64_t batch : {std::int64_t{1}, std::int64_t{4}}) {
          Shape at = shape;
          at[0] = batch;
          Net planned(graph, {.device = Device::cuda(), .precision = precision});
          planned.set_batch(batch);
          planned.forward({{input, random_input(at, 4)}});
          const bool want = !grouped || (batch > 1 && precision == Precision::fp16);
          for (const LayerSummary& row : planned.summary()) {
            if (row.type == "Convolution") {
              EXPECT_EQ(row.channels_last, want)
                  << model << " " << precision_name(precision) << " batch " << batch;
            }
          }
        }
      }
    }
    const testing::ScopedEnv nchw("ESPRESSO_CHANNELS_LAST", "0");
    for (Precision precision : {Precision::tf32, Precision::fp16, Precision::bf16}) {
      Net net(graph, {.device = Device::cuda(), .precision = precision});
      const std::vector<float> got = net.forward({{input, x}}).at(output).to_vector();
      ASSERT_EQ(got.size(), expected.size());
      const double error = normalized_error(expected, got);
      std::printf("  %s %s: max |d| / max |fp32| = %.2e\n", model.c_str(), precision_name(precision), error);
      EXPECT_LE(error, 1e-2) << model << " in " << precision_name(precision);
      int converted = 0;
      for (const LayerSummary& row : net.summary()) {
        if (row.type == "Convolution") {
          EXPECT_EQ(row.precision, precision_name(precision)) << model << " layer " << row.name;
          EXPECT_FALSE(row.channels_last) << model << " layer " << row.name;
          ++converted;
        }
      }
      EXPECT_GT(converted, 0) << model;
    }
    // Channels-last plans (ESPRESSO_CHANNELS_LAST=1): every convolution here is 2-D, so each runs so.
    const testing::ScopedEnv on("ESPRESSO_CHANNELS_LAST", "1");
    for (Precision precision : {Precision::fp16, Precision::bf16}) {
      Net nhwc(graph, {.device = Device::cuda(), .precision = precision});
      const double error = normalized_error(expected, nhwc.forward({{input, x}}).at(output).to_vector());
      std::printf("  %s %s channels-last: max |d| / max |fp32| = %.2e\n", model.c_str(),
                  precision_name(precision), error);
      EXPECT_LE(error, 1e-2) << model << " in " << precision_name(precision) << " channels-last";
      for (const LayerSummary& row : nhwc.summary()) {
        if (row.type == "Convolution") {
          EXPECT_TRUE(row.channels_last) << model << " " << row.name;
        }
      }
    }
  }
}

// Precision::int8 on the GPU computes what the CPU's int8 kernels compute: each image quantized by the
// same rules, the same integer sums, the epilogue's float operations in the same order.
TEST(PrecisionModels, Int8OnTheGpuMatchesTheCpuInt8) {
  REQUIRE_GPU();
  const auto models = precision_models();
  if (models.empty()) GTEST_SKIP() << "none of the models found under " << precision_models_dir();
  for (const auto& [model, graph] : models) {
    Net fp32(graph);
    Net cpu(graph, {.precision = Precision::int8});
    Net gpu(graph, {.device = Device::cuda(), .precision = Precision::int8});
    const std::string input = gpu.input_names()[0], output = gpu.output_names()[0];
    Shape shape = gpu.input_shape(input);
    shape[0] = 2;
    const Tensor x = random_input(shape, 5);
    const std::vector<float> expected = cpu.forward({{input, x}}).at(output).to_vector();
    const std::vector<float> got = gpu.forward({{input, x}}).at(output).to_vector();
    const double error = normalized_error(expected, got);
    const double from_fp32 = normalized_error(fp32.forward({{input, x}}).at(output).to_vector(), got);
    std::printf("  %s int8: GPU against CPU int8 %.2e, against fp32 %.2e\n", model.c_str(), error, from_fp32);
    EXPECT_LE(error, 1e-5) << model;
    int int8 = 0;
    for (const LayerSummary& row : gpu.summary())
      int8 += row.precision == "int8" && row.device == Device::cuda();
    EXPECT_GT(int8, 0) << model;
  }
}

// The memory planner sizes fp16 activations at two bytes.
TEST(PrecisionGpu, Fp16ActivationsTakeHalfTheMemory) {
  REQUIRE_GPU();
  Graph g = small_net();
  g.layers.pop_back();  // no softmax: every layer has an fp16 kernel
  g.outputs = {"ip"};
  Net full(g, {.device = Device::cuda()});
  Net half(g, {.device = Device::cuda(), .precision = Precision::fp16, .strict_precision = true});
  EXPECT_LT(half.memory().naive_bytes, full.memory().naive_bytes);
  const Tensor x = random_input(Shape{2, 3, 9, 9}, 5);
  const std::vector<float> a = full.forward({{"data", x}}).at("ip").to_vector();
  const Tensor out = half.forward({{"data", x}}).at("ip");  // forward() returns its outputs by value
  EXPECT_EQ(out.dtype(), DType::f32);
  EXPECT_LE(normalized_error(a, out.to_vector()), 1e-2);
}

// A channels-last plan converts where it meets N, C, H, W: the input, the InnerProduct reading a 3x3 map
// (no channels-last kernel), a 4-D graph output; and a CPU step reading one of its tensors makes the net
// plan again without channels-last kernels. Each is checked against the fp32 net.
TEST(PrecisionGpu, ChannelsLastPlansConvertAtTheirEdges) {
  REQUIRE_GPU();
  const testing::ScopedEnv on("ESPRESSO_CHANNELS_LAST", "1");
  Graph g = small_net();
  g.outputs = {"pool", "prob"};
  const Tensor x = random_input(Shape{2, 3, 9, 9}, 9);
  Net full(g, {.device = Device::cuda()});
  auto expected = full.forward({{"data", x}});
  Net half(g, {.device = Device::cuda(), .precision = Precision::fp16});
  auto got = half.forward({{"data", x}});
  for (const char* name : {"pool", "prob"}) {
    EXPECT_LE(normalized_error(expected.at(name).to_vector(), got.at(name).to_vector()), 1e-2) << name;
  }
  for (const LayerSummary& row : half.summary()) {
    const bool spatial = row.type == "Convolution" || row.type == "ReLU" || row.type == "Pooling";
    EXPECT_EQ(row.channels_last, spatial) << row.name;
    EXPECT_EQ(row.device, Device::cuda()) << row.name;
  }

  LayerSpec priors = layer("priors", "PriorBox", {"relu", "data"}, {"boxes"});
  priors.attrs.set("min_size", std::vector<double>{4.0});
  priors.attrs.set("clip", std::int64_t{1});
  priors.attrs.set("offset", 0.5);
  priors.attrs.set("variance", std::vector<double>{0.1, 0.1, 0.2, 0.2});
  g.layers.push_back(priors);
  g.outputs.push_back("boxes");
  Net with_cpu_step(g, {.device = Device::cuda(), .precision = Precision::fp16});
  got = with_cpu_step.forward({{"data", x}});
  EXPECT_LE(normalized_error(expected.at("prob").to_vector(), got.at("prob").to_vector()), 1e-2);
  for (const LayerSummary& row : with_cpu_step.summary()) {
    EXPECT_FALSE(row.channels_last) << row.name;
    EXPECT_EQ(row.device, row.type == "PriorBox" ? Device::cpu() : Device::cuda()) << row.name;
  }
}

// Channels-last pooling of channels in whole 16-byte packs (a kernel of its own): max windows with ceil
// rounding, average windows with padding counted in the divisor and not, against the CPU's fp32 net.
TEST(PrecisionGpu, ChannelsLastPoolingInPacks) {
  REQUIRE_GPU();
  const testing::ScopedEnv on("ESPRESSO_CHANNELS_LAST", "1");
  Graph g;
  g.name = "pools";
  g.inputs.push_back({"data", Shape{3, 16, 13, 11}});
  std::mt19937 rng(11);
  LayerSpec conv = testing::conv_layer("conv", "data", "conv", 16, 1, 0, 1);
  testing::set_random_conv_weights(conv, 16, rng);
  g.layers = {conv};
  const auto pool = [&](const std::string& name, const std::string& method, std::int64_t pad, bool include) {
    LayerSpec p = layer(name, "Pooling", {"conv"}, {name});
    p.attrs.set("method", method);
    p.attrs.set("kernel", std::int64_t{3});
    p.attrs.set("stride", std::int64_t{2});
    p.attrs.set("pad", pad);
    p.attrs.set("count_include_pad", std::int64_t{include});
    g.layers.push_back(p);
    g.outputs.push_back(name);
  };
  pool("max", "max", 0, true);
  pool("ave_in", "ave", 1, true);
  pool("ave_out", "ave", 1, false);
  const Tensor x = random_input(Shape{3, 16, 13, 11}, 4);
  Net reference(g);  // on the CPU
  auto expected = reference.forward({{"data", x}});
  Net half(g, {.device = Device::cuda(), .precision = Precision::fp16});
  auto got = half.forward({{"data", x}});
  for (const char* name : {"max", "ave_in", "ave_out"}) {
    EXPECT_LE(normalized_error(expected.at(name).to_vector(), got.at(name).to_vector()), 1e-2) << name;
  }
  for (const LayerSummary& row : half.summary()) EXPECT_TRUE(row.channels_last) << row.name;
}

// MobileNet's ReLU6: a clip of `input` to [0, 6].
LayerSpec relu6_layer(const std::string& name, const std::string& input) {
  LayerSpec clip = layer(name, "Activation", {input}, {name});
  clip.attrs.set("function", std::string("clip"));
  clip.attrs.set("min", 0.0);
  clip.attrs.set("max", 6.0);
  return clip;
}

// Runs `g` on `x` channels-last on the GPU in fp16 (the fused epilogues forced on, off, and chosen by timing)
// and in bf16, each output against the CPU's fp32 net, then hands `check` the kernel names by layer of each
// run that forced fusing on or off, and which.
void expect_channels_last_variants(
    const Graph& g, const Tensor& x,
    const std::function<void(std::map<std::string, std::string>&, bool)>& check) {
  const testing::ScopedEnv on("ESPRESSO_CHANNELS_LAST", "1");
  Net reference(g);  // on the CPU
  auto expected = reference.forward({{"data", x}});
  for (const auto& [precision, fused] : {std::pair{Precision::fp16, "1"}, std::pair{Precision::fp16, "0"},
                                         std::pair{Precision::fp16, ""}, std::pair{Precision::bf16, "1"}}) {
    SCOPED_TRACE(std::string(precision == Precision::fp16 ? "fp16" : "bf16") +
                 ", ESPRESSO_CUDNN_FUSED=" + fused);
    const testing::ScopedEnv epilogue("ESPRESSO_CUDNN_FUSED", fused);
    Net low(g, {.device = Device::cuda(), .precision = precision});
    auto got = low.forward({{"data", x}});
    for (const std::string& name : g.outputs) {
      EXPECT_LE(normalized_error(expected.at(name).to_vector(), got.at(name).to_vector()),
                precision == Precision::fp16 ? 1e-2 : 3e-2)
          << name;
    }
    auto kernel = testing::kernels_by_layer(low.summary());
    if (*fused != '\0') check(kernel, std::string(fused) == "1");
  }
}

// Channels-last depthwise convolutions in fp16 and bf16 run our own kernel (depthwise_nhwc.cu): 3x3 at
// strides 1 and 2 with MobileNet's ReLU6 fused, 5x5 dilated, one without bias, one whose residual Add is
// fused, one whose channels do not come in eights (cuDNN's), with the epilogue in the kernel (fused) and as
// its own pass, against the CPU's fp32 net.
TEST(PrecisionGpu, ChannelsLastDepthwiseConvolutions) {
  REQUIRE_GPU();
  Graph g;
  g.name = "depthwise";
  g.inputs.push_back({"data", Shape{3, 16, 13, 11}});
  std::mt19937 rng(5);
  LayerSpec expand = testing::conv_layer("expand", "data", "wide", 24, 1, 0, 1);
  testing::set_random_conv_weights(expand, 16, rng);
  LayerSpec narrow = testing::conv_layer("narrow", "data", "narrow", 12, 1, 0, 1);
  testing::set_random_conv_weights(narrow, 16, rng);
  g.layers = {expand, narrow};
  const auto depthwise = [&](const std::string& name, const std::string& input, std::int64_t channels,
                             std::int64_t kernel, std::int64_t pad, std::int64_t stride,
                             std::int64_t dilation) {
    LayerSpec d = testing::conv_layer(name, input, name, channels, kernel, pad, stride);
    d.attrs.set("group", channels);
    d.attrs.set("dilation", dilation);
    testing::set_random_conv_weights(d, 1, rng);
    g.layers.push_back(d);
  };
  depthwise("dw3", "wide", 24, 3, 1, 1, 1);
  g.layers.push_back(relu6_layer("relu6", "dw3"));
  depthwise("dw3s2", "wide", 24, 3, 1, 2, 1);
  depthwise("dw5d2", "wide", 24, 5, 4, 1, 2);
  depthwise("dw_nobias", "wide", 24, 3, 0, 1, 1);
  g.layers.back().attrs.set("bias", std::int64_t{0});
  g.layers.back().weights.pop_back();
  depthwise("dw_residual", "wide", 24, 3, 1, 1, 1);
  LayerSpec add = layer("add", "Binary", {"dw_residual", "wide"}, {"sum"});
  add.attrs.set("operation", std::string("add"));
  g.layers.push_back(add);
  depthwise("dw_narrow", "narrow", 12, 3, 1, 1, 1);
  g.outputs = {"relu6", "dw3s2", "dw5d2", "dw_nobias", "sum", "dw_narrow"};
  expect_channels_last_variants(g, random_input(Shape{3, 16, 13, 11}, 6), [](auto& kernel, bool fused) {
    for (const char* name : {"dw3", "dw3s2", "dw5d2", "dw_nobias", "dw_residual"})
      EXPECT_NE(kernel[name].find("depthwise-nhwc"), std::string::npos) << name << ": " << kernel[name];
    for (const char* name : {"dw3", "dw_residual"}) {
      EXPECT_EQ(kernel[name].find("+epilogue") != std::string::npos, fused) << name << ": " << kernel[name];
    }
    EXPECT_EQ(kernel["dw_narrow"].find("depthwise-nhwc"), std::string::npos) << kernel["dw_narrow"];
  });
}

// Channels-last pointwise convolutions in fp16 and bf16 run cuBLASLt's GEMM (pointwise_nhwc.cpp) with the
// bias, a ReLU and a residual Add in its epilogue (fused) — the residual another layer's output, or the Add
// in place on that output's memory — or with the epilogue as its own pass (a ReLU6, no bias, the Add in place
// on the layer's own input, ESPRESSO_CUDNN_FUSED=0); one whose output channels do not come in eights stays
// with cuDNN; a ReLU6 that only a depthwise convolution reads is clamped by it; against the CPU's fp32 net.
TEST(PrecisionGpu, ChannelsLastPointwiseConvolutions) {
  REQUIRE_GPU();
  Graph g;
  g.name = "pointwise";
  g.inputs.push_back({"data", Shape{3, 16, 13, 11}});
  std::mt19937 rng(7);
  const auto pointwise = [&](const std::string& name, const std::string& input, std::int64_t channels,
                             std::int64_t in_channels) {
    LayerSpec c = testing::conv_layer(name, input, name, channels, 1, 0, 1);
    testing::set_random_conv_weights(c, in_channels, rng);
    g.layers.push_back(c);
  };
  const auto then = [&](const std::string& type, const std::vector<std::string>& inputs,
                        const std::string& out) {
    g.layers.push_back(layer(out, type, inputs, {out}));
    return &g.layers.back();
  };
  pointwise("wide", "data", 24, 16);
  pointwise("pw_bias", "wide", 16, 24);
  pointwise("pw_relu", "wide", 16, 24);
  then("ReLU", {"pw_relu"}, "relu");
  pointwise("pw_relu6", "wide", 16, 24);
  g.layers.push_back(relu6_layer("relu6", "pw_relu6"));
  // Residuals: `base` is a net output, so the Add runs in place on the convolution's output and hands it
  // `base` (the C operand); `inner`, read by the Add alone, takes the Add in place on its memory (C = D);
  // `self` is the convolution's own input, which the GEMM must not write over (sum4 checks that).
  pointwise("base", "data", 16, 16);
  pointwise("inner", "data", 16, 16);
  pointwise("self", "data", 16, 16);
  pointwise("pw_residual", "wide", 16, 24);
  then("Binary", {"pw_residual", "base"}, "sum")->attrs.set("operation", std::string("add"));
  pointwise("pw_residual_relu", "wide", 16, 24);
  then("Binary", {"pw_residual_relu", "base"}, "sum2")->attrs.set("operation", std::string("add"));
  then("ReLU", {"sum2"}, "sum_relu");
  pointwise("pw_in_place", "wide", 16, 24);
  then("Binary", {"inner", "pw_in_place"}, "sum3")->attrs.set("operation", std::string("add"));
  pointwise("pw_own_input", "self", 16, 16);
  then("Binary", {"self", "pw_own_input"}, "sum4")->attrs.set("operation", std::string("add"));
  pointwise("pw_nobias", "wide", 16, 24);
  g.layers.back().attrs.set("bias", std::int64_t{0});
  g.layers.back().weights.pop_back();
  pointwise("pw_narrow", "wide", 12, 24);
  // MobileNet's expansion: the ReLU6 between it and the depthwise convolution is clamped as the depthwise
  // kernel reads its input.
  pointwise("pw_expand", "wide", 24, 24);
  g.layers.push_back(relu6_layer("expand6", "pw_expand"));
  LayerSpec dw = testing::conv_layer("dw", "expand6", "dw", 24, 3, 1, 1);
  dw.attrs.set("group", std::int64_t{24});
  testing::set_random_conv_weights(dw, 1, rng);
  g.layers.push_back(dw);
  g.outputs = {"pw_bias", "relu", "relu6",     "base",      "sum", "sum_relu",
               "sum3",    "sum4", "pw_nobias", "pw_narrow", "dw"};
  expect_channels_last_variants(g, random_input(Shape{3, 16, 13, 11}, 8), [](auto& kernel, bool fused) {
    for (const char* name : {"wide", "pw_bias", "pw_relu", "pw_relu6", "pw_residual", "pw_residual_relu",
                             "pw_in_place", "pw_own_input", "pw_nobias"})
      EXPECT_NE(kernel[name].find("pointwise-nhwc"), std::string::npos) << name << ": " << kernel[name];
    EXPECT_EQ(kernel["expand6"], "fused into dw");
    EXPECT_EQ(kernel["sum"], "fused into pw_residual");
    EXPECT_EQ(kernel["sum_relu"], "fused into pw_residual_relu");
    EXPECT_EQ(kernel["sum3"], "fused into pw_in_place");
    for (const char* name :
         {"pw_bias", "pw_relu", "pw_residual", "pw_residual_relu", "pw_in_place", "pw_expand"}) {
      EXPECT_EQ(kernel[name].find("+epilogue") != std::string::npos, fused) << name << ": " << kernel[name];
    }
    for (const char* name : {"pw_relu6", "pw_nobias"})
      EXPECT_EQ(kernel[name].find("+epilogue"), std::string::npos) << name << ": " << kernel[name];
    EXPECT_EQ(kernel["pw_narrow"].find("pointwise-nhwc"), std::string::npos) << kernel["pw_narrow"];
  });
}

}  // namespace
}  // namespace espresso
