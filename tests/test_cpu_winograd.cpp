// Winograd F(4×4, 3×3) and F(2×2, 5×5) on the CPU (src/backends/cpu/winograd.h) against a direct
// double-precision convolution on random shapes, inside nets with fused steps against the reference kernels,
// the measured tactic choice and its cache file (conv_tactics.h), and per-storage weight versions: packed
// weights are packed again when their own memory is written, not when another net trains.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "backends/cpu/conv_tactics.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/winograd.h"
#include "core/parallel.h"
#include "espresso/espresso.h"
#include "test_support.h"

namespace espresso {
namespace {

using espresso::testing::normalized_error;
using espresso::testing::pick;
using espresso::testing::random_values;
using espresso::testing::ScopedEnv;

// Winograd's rounding: the transforms scale values by up to ~100, so about 10× the error of a direct
// sum; 1e-4 of the output's largest magnitude leaves room for depths of a few hundred channels.
constexpr double kWinogradTolerance = 1e-4;

TEST(CpuWinograd, MatchesADirectDoubleConvolution) {
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "no AVX2+FMA: Winograd runs on the fast GEMM only";
  std::mt19937 rng(2024);
  double worst[2] = {0.0, 0.0};
  for (int trial = 0; trial < 60; ++trial) {
    cpu::WinogradGeometry g;
    g.kernel = trial % 4 < 2 ? 3 : 5;  // each filter size threaded and inside a parallel region (below)
    const std::int64_t r = g.kernel;
    g.batch = pick(rng, 1, 3);
    // Channels cross the GEMM's depth block (256) and its row panels.
    g.in_channels = trial % 7 == 3 ? pick(rng, 250, 300) : pick(rng, 1, 40);
    g.out_channels = trial % 5 == 1 ? pick(rng, 30, 70) : pick(rng, 1, 20);
    g.height = pick(rng, 1, 23);
    g.width = pick(rng, 1, 37);
    g.pad_h = pick(rng, 0, static_cast<int>(r) - 1);
    g.pad_w = pick(rng, 0, static_cast<int>(r) - 1);
    g.out_height = g.height + 2 * g.pad_h - r + 1;
    g.out_width = g.width + 2 * g.pad_w - r + 1;
    if (g.out_height < 1 || g.out_width < 1) continue;
    const auto in_size = static_cast<std::size_t>(g.batch * g.in_channels * g.height * g.width);
    const std::int64_t out_plane = g.out_height * g.out_width;
    const auto out_size = static_cast<std::size_t>(g.batch * g.out_channels * out_plane);
    const std::vector<float> x = random_values(rng, in_size);
    const std::vector<float> w =
        random_values(rng, static_cast<std::size_t>(g.out_channels * g.in_channels * r * r));
    const std::vector<float> bias = random_values(rng, static_cast<std::size_t>(g.out_channels));
    const std::vector<float> residual = random_values(rng, out_size);
    const bool with_residual = rng() % 2 == 0, with_clamp = rng() % 2 == 0;
    // Some trials write into a wider buffer (a Concat's slice): image n at n·image_stride.
    const std::int64_t extra_channels = rng() % 3 == 0 ? 2 : 0;
    const std::int64_t image_stride = (g.out_channels + extra_channels) * out_plane;
    std::vector<float> got(static_cast<std::size_t>(g.batch * image_stride), 12345.0f);

    cpu::WinogradConvolution wino(g);
    wino.set_weights(w.data());
    cpu::WinogradOutput out;
    out.out = got.data();
    out.image_stride = image_stride;
    out.bias = bias.data();
    out.residual = with_residual ? residual.data() : nullptr;
    if (with_clamp) {
      out.lo = 0.0f;
      out.hi = 1.5f;
    }
    if (trial % 2 == 0) {
      wino.forward(x.data(), out);
    } else {
      // Inside a parallel region (the first chunk of two, which the caller runs): one thread, no
      // nested pool.
      parallel_for(2, [&](std::int64_t begin, std::int64_t) {
        if (begin == 0) {
          EXPECT_TRUE(in_parallel_region() || num_threads() == 1);
          wino.forward(x.data(), out);
        }
      });
    }

    std::vector<double> expect;
    std::vector<float> actual;
    double scale = 1e-30;  // of the sums before the clamp, which would hide the error's scale
    for (std::int64_t n = 0; n < g.batch; ++n) {
      for (std::int64_t k = 0; k < g.out_channels; ++k) {
        for (std::int64_t oy = 0; oy < g.out_height; ++oy) {
          for (std::int64_t ox = 0; ox < g.out_width; ++ox) {
            double sum = bias[static_cast<std::size_t>(k)];
            for (std::int64_t c = 0; c < g.in_channels; ++c) {
              for (std::int64_t ky = 0; ky < r; ++ky) {
                for (std::int64_t kx = 0; kx < r; ++kx) {
                  const std::int64_t y = oy - g.pad_h + ky, xx = ox - g.pad_w + kx;
                  if (y < 0 || y >= g.height || xx < 0 || xx >= g.width) continue;
                  sum += static_cast<double>(x[static_cast<std::size_t>(
                             ((n * g.in_channels + c) * g.height + y) * g.width + xx)]) *
                         w[static_cast<std::size_t>(((k * g.in_channels + c) * r + ky) * r + kx)];
                }
              }
            }
            const std::int64_t at = (n * g.out_channels + k) * out_plane + oy * g.out_width + ox;
            if (with_residual) sum += residual[static_cast<std::size_t>(at)];
            scale = std::max(scale, std::abs(sum));
            if (with_clamp) sum = std::min(std::max(sum, 0.0), 1.5);
            expect.push_back(sum);
            actual.push_back(got[static_cast<std::size_t>(n * image_stride + k * out_plane + oy * g.out_width + ox)]);
          }
        }
      }
      // The slice past this image's channels is not written.
      for (std::int64_t i = g.out_channels * out_plane; i < image_stride; ++i)
        ASSERT_EQ(got[static_cast<std::size_t>(n * image_stride + i)], 12345.0f);
    }
    double error = 0.0;
    for (std::size_t i = 0; i < expect.size(); ++i)
      error = std::max(error, std::abs(expect[i] - static_cast<double>(actual[i])) / scale);
    worst[r == 5] = std::max(worst[r == 5], error);
    EXPECT_LE(error, kWinogradTolerance)
        << r << "x" << r << " batch " << g.batch << " channels " << g.in_channels << "->" << g.out_channels
        << " image " << g.height << "x" << g.width << " pad " << g.pad_h << "," << g.pad_w;
  }
  std::printf("Winograd vs direct double (%s): worst normalized error %.3g F(4x4,3x3), %.3g F(2x2,5x5)\n",
              cpu::fast_gemm_isa(), worst[0], worst[1]);
}

// conv1 (3×3, pad 1) → BatchNorm → ReLU → conv2 (3×3, pad 1) → Add(input) → ReLU: every fusion a
// Winograd kernel takes, on a shape of its own (`channels`) so that tests do not share cached choices.
Graph winograd_block(std::int64_t channels, std::uint32_t seed) {
  Graph g;
  g.inputs = {{"data", Shape{2, channels, 13, 11}}};
  LayerSpec add = testing::layer("add", "Binary", {"c2", "data"}, {"sum"});
  add.attrs.set("operation", std::string("add"));
  g.layers = {testing::conv_layer("conv1", "data", "c1", channels, 3, 1, 1), testing::layer("bn", "BatchNorm", {"c1"}, {"b1"}),
              testing::layer("relu1", "ReLU", {"b1"}, {"r1"}),            testing::conv_layer("conv2", "r1", "c2", channels, 3, 1, 1),
              add,                                              testing::layer("relu2", "ReLU", {"sum"}, {"out"})};
  std::mt19937 rng(seed);
  for (LayerSpec& layer : g.layers) {
    if (layer.type != "Convolution") continue;
    const auto n = static_cast<std::size_t>(channels * channels * 9);
    std::vector<float> w = random_values(rng, n);
    for (float& v : w) v *= 0.3f;
    layer.weights = {Tensor::from(Shape{channels, channels, 3, 3}, w),
                     Tensor::from(Shape{channels}, random_values(rng, static_cast<std::size_t>(channels)))};
  }
  const auto c = static_cast<std::size_t>(channels);
  std::vector<float> variance = random_values(rng, c);
  for (float& v : variance) v = v * v + 0.5f;
  g.layers[1].weights = {Tensor::from(Shape{channels}, random_values(rng, c)), Tensor::from(Shape{channels}, variance),
                         Tensor::from(Shape{1}, std::vector<float>{1.0f})};
  return g;
}

std::vector<float> run_net(Net& net, const Tensor& input) { return net.forward({{"data", input}}).at("out").to_vector(); }

std::vector<float> reference_output(const Graph& g, const Tensor& input) {
  NetOptions options;
  options.reference_kernels = true;
  Net reference(g, options);
  return run_net(reference, input);
}

double error_against(const std::vector<float>& want, const std::vector<float>& got) {
  return normalized_error(std::vector<double>(want.begin(), want.end()), got);
}

TEST(CpuWinograd, ForcedInNetsWithFusedStepsMatchesTheReference) {
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "no AVX2+FMA: Winograd runs on the fast GEMM only";
  const ScopedEnv force("ESPRESSO_CONV_TACTIC", "winograd");
  const Graph g = winograd_block(9, 1);
  Net fast(g);
  std::mt19937 rng(4);
  const Tensor input = Tensor::from(Shape{2, 9, 13, 11}, random_values(rng, 2 * 9 * 13 * 11));
  EXPECT_LE(error_against(reference_output(g, input), run_net(fast, input)), kWinogradTolerance);
  auto kernel = testing::kernels_by_layer(fast.summary());
  EXPECT_EQ(kernel["conv1"].rfind("winograd-f4x4-", 0), 0u) << kernel["conv1"];
  EXPECT_NE(kernel["conv1"].find("+batchnorm+relu"), std::string::npos) << kernel["conv1"];
  EXPECT_NE(kernel["conv2"].find("+add+relu"), std::string::npos) << kernel["conv2"];
  EXPECT_EQ(kernel["bn"], "fused into conv1");
  EXPECT_EQ(kernel["add"], "fused into conv2");
}

TEST(CpuWinograd, ForcedGemmKeepsTheWindowsGemm) {
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "no AVX2+FMA: the packed GEMM is not used";
  const ScopedEnv force("ESPRESSO_CONV_TACTIC", "gemm");
  Net net(winograd_block(10, 2));
  auto kernel = testing::kernels_by_layer(net.summary());
  EXPECT_EQ(kernel["conv1"].rfind("window-packed-gemm-", 0), 0u) << kernel["conv1"];
}

TEST(CpuWinograd, UnknownForcedTacticIsATypedError) {
  const ScopedEnv force("ESPRESSO_CONV_TACTIC", "fft");
  EXPECT_THROW(cpu::forced_conv_tactic(), UnsupportedError);
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(CpuWinograd, TacticIsMeasuredOnceAndCachedInTheFile) {
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "no AVX2+FMA: no tactic to choose";
  const ScopedEnv unforced("ESPRESSO_CONV_TACTIC", nullptr);
  testing::TempDir dir;
  const std::string cache = dir.file("cpu-convolution-tactics.txt");
  const ScopedEnv folder("ESPRESSO_TACTIC_CACHE", dir.path().c_str());
  // A shape no other test uses: measured, and written to the file (both convolutions share it).
  Net first(winograd_block(11, 3));
  first.summary();
  std::vector<std::string> lines = lines_of(cache);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find(cpu::tactic_context() + "|conv3x3s1|n2|c11|k11|13x11|pad1x1 "), std::string::npos)
      << lines[0];
  const std::string chosen = lines[0].substr(lines[0].rfind(' ') + 1);
  EXPECT_TRUE(chosen == "gemm" || chosen == "winograd" || chosen == "direct" || chosen == "channel-gemm")
      << chosen;
  auto kernel = testing::kernels_by_layer(first.summary());
  EXPECT_EQ(kernel["conv1"].rfind(testing::cpu_conv_kernel_prefix(chosen), 0), 0u) << kernel["conv1"];
  // The same shape again: no new measurement.
  Net second(winograd_block(11, 4));
  second.summary();
  EXPECT_EQ(lines_of(cache).size(), 1u);
  // Choices written by an earlier process are taken as they are, whichever they are.
  std::int64_t channels = 12;
  const bool avx512 = cpu::fast_gemm_uses_avx512();  // the channel GEMM's
  for (const std::string forced : {"winograd", "gemm", "direct", avx512 ? "channel-gemm" : "gemm"}) {
    std::ofstream(cache, std::ios::app) << cpu::tactic_context() << "|conv3x3s1|n2|c" << channels << "|k" << channels
                                        << "|13x11|pad1x1 " << forced << "\n";
    Net net(winograd_block(channels++, 5));
    kernel = testing::kernels_by_layer(net.summary());
    EXPECT_EQ(kernel["conv2"].rfind(testing::cpu_conv_kernel_prefix(forced), 0), 0u) << kernel["conv2"];
  }
  EXPECT_EQ(lines_of(cache).size(), 5u);
}

// A Winograd or direct convolution whose outputs disagree with the GEMM's (ESPRESSO_CPU_SELF_CHECK_FAULT
// spoils them during the measurement) is turned off for the shape with a warning naming the layer, remembered
// so, and the net still computes the right outputs through another tactic. Without the fault the same check
// passes.
TEST(CpuWinograd, ATacticFailingItsSelfCheckIsTurnedOffWithAWarning) {
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "no AVX2+FMA: no tactic to choose";
  const ScopedEnv unforced("ESPRESSO_CONV_TACTIC", nullptr);
  testing::TempDir dir;
  const ScopedEnv folder("ESPRESSO_TACTIC_CACHE", dir.path().c_str());
  std::mt19937 rng(6);
  // Shapes of their own (choices are remembered for the process too): 14 and 16 channels.
  std::int64_t channels = 14;
  for (const std::string spoiled : {"winograd", "direct"}) {
    const ScopedEnv fault("ESPRESSO_CPU_SELF_CHECK_FAULT", spoiled.c_str());
    const Graph g = winograd_block(channels, 7);
    const Tensor input = Tensor::from(Shape{2, channels, 13, 11},
                                      random_values(rng, static_cast<std::size_t>(2 * channels * 13 * 11)));
    const std::string shape = "|c" + std::to_string(channels) + "|k";
    channels += 2;
    ::testing::internal::CaptureStderr();
    Net net(g);
    const std::vector<float> got = run_net(net, input);
    const std::string warnings = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(warnings.find("layer 'conv1': the " + spoiled + " convolution failed its self-check"),
              std::string::npos)
        << warnings;
    auto kernel = testing::kernels_by_layer(net.summary());
    for (const char* conv : {"conv1", "conv2"})
      EXPECT_NE(kernel[conv].rfind(testing::cpu_conv_kernel_prefix(spoiled), 0), 0u) << kernel[conv];
    EXPECT_LE(error_against(reference_output(g, input), got), 1e-4);
    int remembered = 0;
    for (const std::string& line : lines_of(dir.file("cpu-convolution-tactics.txt"))) {
      if (line.find(shape) == std::string::npos) continue;
      ++remembered;
      EXPECT_NE(line.substr(line.rfind(' ') + 1), spoiled) << line;
    }
    EXPECT_EQ(remembered, 1);
  }
  // A shape of its own, no fault: no warning.
  ::testing::internal::CaptureStderr();
  Net healthy(winograd_block(15, 8));
  healthy.summary();
  EXPECT_EQ(::testing::internal::GetCapturedStderr().find("self-check"), std::string::npos);
}

// A small training net of its own: conv (3×3) → EuclideanLoss against a target.
Graph training_graph(std::uint32_t seed) {
  Graph g;
  g.inputs = {{"data", Shape{2, 6, 9, 9}}, {"target", Shape{2, 6, 9, 9}}};
  LayerSpec c = testing::conv_layer("conv", "data", "y", 6, 3, 1, 1);
  std::mt19937 rng(seed);
  c.weights = {Tensor::from(Shape{6, 6, 3, 3}, random_values(rng, 6 * 6 * 9)),
               Tensor::from(Shape{6}, random_values(rng, 6))};
  LayerSpec loss = testing::layer("loss", "EuclideanLoss", {"y", "target"}, {"loss"});
  g.layers = {c, loss};
  return g;
}

// What a solver does: forward, backward, then an SGD step on parameters fetched once.
void train_steps(Net& net, std::vector<Parameter>& params, int steps) {
  std::mt19937 rng(9);
  for (int step = 0; step < steps; ++step) {
    net.input("data").copy_from(Tensor::from(Shape{2, 6, 9, 9}, random_values(rng, 2 * 6 * 81)));
    net.input("target").copy_from(Tensor::from(Shape{2, 6, 9, 9}, random_values(rng, 2 * 6 * 81)));
    net.forward();
    net.backward();
    for (Parameter& p : params) {
      float* value = p.value.data<float>();
      const std::vector<float> grad = p.grad.to_vector();
      for (std::size_t i = 0; i < grad.size(); ++i) value[i] -= 0.01f * grad[i];
    }
  }
}

TEST(CpuWeightVersions, PackedWeightsStayWhileAnotherNetTrains) {
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "no AVX2+FMA: weights are not packed";
  const Graph ga = winograd_block(8, 6);
  Net a(ga);
  std::mt19937 rng(10);
  const Tensor input = Tensor::from(Shape{2, 8, 13, 11}, random_values(rng, 2 * 8 * 13 * 11));
  const std::vector<float> before = run_net(a, input);

  Net b(training_graph(11), {.training = true});
  std::vector<Parameter> params = b.parameters();
  const float loss_before = [&] {
    train_steps(b, params, 1);
    return b.loss();
  }();
  const std::uint64_t packs = cpu::convolution_weight_packs();
  train_steps(b, params, 3);
  EXPECT_NE(b.loss(), loss_before);  // b did train
  const std::vector<float> after = run_net(a, input);
  EXPECT_EQ(cpu::convolution_weight_packs(), packs) << "net a packed its weights again while net b trained";
  EXPECT_EQ(before, after);

  // a's own weights written through its views: packed again, and the output follows.
  for (Tensor w : a.weights("conv2")) {
    float* data = w.data<float>();
    for (std::int64_t i = 0; i < w.numel(); ++i) data[i] *= -0.5f;
  }
  const std::vector<float> changed = run_net(a, input);
  EXPECT_GT(cpu::convolution_weight_packs(), packs);
  Graph scaled = winograd_block(8, 6);
  for (LayerSpec& layer : scaled.layers) {
    if (layer.name != "conv2") continue;
    for (Tensor& w : layer.weights) {
      std::vector<float> v = w.to_vector();
      for (float& x : v) x *= -0.5f;
      w = Tensor::from(w.shape(), v);
    }
  }
  EXPECT_LE(error_against(reference_output(scaled, input), changed), kWinogradTolerance);
  // Nothing written since: nothing packed.
  const std::uint64_t settled = cpu::convolution_weight_packs();
  run_net(a, input);
  EXPECT_EQ(cpu::convolution_weight_packs(), settled);
}

TEST(CpuWeightVersions, AnInferenceNetSharingATrainingNetsWeightsFollowsItsUpdates) {
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "no AVX2+FMA: weights are not packed";
  const Graph g = training_graph(12);
  Net train(g, {.training = true});
  Graph deploy = g;  // the same weight memory, without the loss
  deploy.inputs.pop_back();
  deploy.layers.pop_back();
  deploy.layers[0].outputs = {"out"};
  Net test(deploy);
  std::mt19937 rng(13);
  const Tensor input = Tensor::from(Shape{2, 6, 9, 9}, random_values(rng, 2 * 6 * 81));
  const std::vector<float> before = run_net(test, input);
  std::vector<Parameter> params = train.parameters();
  train_steps(train, params, 2);
  const std::uint64_t packs = cpu::convolution_weight_packs();
  const std::vector<float> after = run_net(test, input);
  EXPECT_GT(cpu::convolution_weight_packs(), packs);
  EXPECT_NE(before, after);
  // The reference reads the trained values.
  Graph trained = deploy;
  for (Tensor& w : trained.layers[0].weights) w = Tensor::from(w.shape(), w.to_vector());
  EXPECT_LE(error_against(reference_output(trained, input), after), kWinogradTolerance);
}

}  // namespace
}  // namespace espresso
