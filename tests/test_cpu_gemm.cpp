// espresso's own CPU GEMM (src/backends/cpu/gemm.h) against naive double-precision loops, on random
// shapes large enough to cross its depth and column blocks, threaded and not; convolution windows
// against a direct convolution; and the net's fusion of Add and ReLU into convolutions, and re-packing
// after weights change, against the reference kernels.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <random>
#include <span>

#include "backends/cpu/gemm.h"
#include "core/parallel.h"
#include "espresso/espresso.h"
#include "test_support.h"

namespace espresso {
namespace {

using cpu::GemmEpilogue;

using espresso::testing::normalized_error;
using espresso::testing::pick;
using espresso::testing::random_values;

TEST(CpuGemm, MatchesNaiveDoubleOnRandomShapes) {
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "this processor has no AVX2+FMA: the fast GEMM is not used";
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 60; ++trial) {
    // Odd sizes on both sides of the 6-row panels, the 16/32-column tiles, the 256-deep blocks and the
    // 384-column blocks; k = 0 included.
    const std::int64_t m = pick(rng, 1, 75), n = pick(rng, 1, 900), k = trial == 0 ? 0 : pick(rng, 1, 700);
    const bool ta = pick(rng, 0, 1) == 1, tb = pick(rng, 0, 1) == 1;
    const float alpha = pick(rng, 0, 1) ? 1.0f : 0.75f;
    const float beta = pick(rng, 0, 2) == 0 ? 0.5f : 0.0f;
    const std::int64_t lda = (ta ? m : k) + pick(rng, 0, 3), ldb = (tb ? k : n) + pick(rng, 0, 3);
    // Streaming stores (bypass_cache) need 64-byte aligned rows: C in a Tensor's aligned memory, its
    // rows padded to 16 floats.
    const bool bypass_cache = pick(rng, 0, 1) == 1;
    const std::int64_t ldc = bypass_cache ? (n + 15) / 16 * 16 : n + pick(rng, 0, 3);
    const std::vector<float> a = random_values(rng, static_cast<std::size_t>((ta ? k : m) * lda + 1));
    const std::vector<float> b = random_values(rng, static_cast<std::size_t>((tb ? n : k) * ldb + 1));
    Tensor c_memory = Tensor::from(Shape{m * ldc}, random_values(rng, static_cast<std::size_t>(m * ldc)));
    const std::span<float> c(c_memory.data<float>(), static_cast<std::size_t>(m * ldc));
    const std::vector<float> row_bias = random_values(rng, static_cast<std::size_t>(m));
    const std::vector<float> col_bias = random_values(rng, static_cast<std::size_t>(n));
    const std::vector<float> residual = random_values(rng, static_cast<std::size_t>(m * n));
    GemmEpilogue e;
    e.bypass_cache = bypass_cache;
    if (pick(rng, 0, 1)) e.row_bias = row_bias.data();
    if (pick(rng, 0, 3) == 0) e.col_bias = col_bias.data();
    if (pick(rng, 0, 1)) {
      e.residual = residual.data();
      e.ldr = n;
    }
    if (pick(rng, 0, 1)) {
      e.lo = 0.0f;
      if (pick(rng, 0, 1)) e.hi = 6.0f * static_cast<float>(std::sqrt(static_cast<double>(k))) / 8.0f;
    }
    std::vector<double> expect(static_cast<std::size_t>(m * n));
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < n; ++j) {
        double sum = 0.0;
        for (std::int64_t p = 0; p < k; ++p) {
          const double av = a[static_cast<std::size_t>(ta ? p * lda + i : i * lda + p)];
          const double bv = b[static_cast<std::size_t>(tb ? j * ldb + p : p * ldb + j)];
          sum += av * bv;
        }
        double v = alpha * sum + beta * c[static_cast<std::size_t>(i * ldc + j)];
        if (e.row_bias) v += row_bias[static_cast<std::size_t>(i)];
        if (e.col_bias) v += col_bias[static_cast<std::size_t>(j)];
        if (e.residual) v += residual[static_cast<std::size_t>(i * n + j)];
        v = std::min(std::max(v, static_cast<double>(e.lo)), static_cast<double>(e.hi));
        expect[static_cast<std::size_t>(i * n + j)] = v;
      }
    }
    // Alternate the threaded path (2, 3 or 4 threads) and the one-thread path.
    const auto call = [&] {
      cpu::gemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc, e);
    };
    ThreadGroup group(trial % 2 == 0 ? 2 + trial / 2 % 3 : 1);
    const ScopedThreads use(&group);
    call();
    std::vector<float> got(static_cast<std::size_t>(m * n));
    for (std::int64_t i = 0; i < m; ++i)
      std::copy_n(c.begin() + i * ldc, n, got.begin() + i * n);
    EXPECT_LE(normalized_error(expect, got), 1e-5)
        << "m " << m << " n " << n << " k " << k << " ta " << ta << " tb " << tb << " beta " << beta
        << " isa " << cpu::fast_gemm_isa() << " bypass_cache " << bypass_cache;
  }
}

// The threads' shares of a product (runs of C's tiles that split a column panel between two threads, as
// 13 x 13 and 14 x 14 images at batch 1 do; panels of A's rows for few columns, as ResNet-18's 7 x 7 layers
// have, or for large weights, SqueezeNet's classifier; B read in place for a short A) sum exactly as one
// thread does.
TEST(CpuGemm, ThreadSharesSumAsOneThread) {
  if (!cpu::fast_gemm_available())
    GTEST_SKIP() << "this processor has no AVX2+FMA: the fast GEMM is not used";
  std::mt19937 rng(99);
  for (const auto [m, n, k] : {std::array<std::int64_t, 3>{1000, 169, 512},
                               {256, 196, 576},
                               {64, 169, 384},
                               {512, 49, 4608},
                               {30, 900, 40},
                               {20, 300, 50}}) {
    const std::vector<float> a = random_values(rng, static_cast<std::size_t>(m * k));
    const std::vector<float> b = random_values(rng, static_cast<std::size_t>(k * n));
    const std::vector<float> bias = random_values(rng, static_cast<std::size_t>(m));
    GemmEpilogue e;
    e.row_bias = bias.data();
    e.lo = 0.0f;
    const cpu::PackedMatrix packed(a.data(), k, false, m, k);
    std::vector<float> one(static_cast<std::size_t>(m * n));
    {
      ThreadGroup single(1);
      const ScopedThreads use(&single);
      cpu::gemm_packed(packed, false, n, b.data(), n, 0.0f, one.data(), n, e);
    }
    for (const int threads : {2, 3}) {
      ThreadGroup group(threads);
      const ScopedThreads use(&group);
      std::vector<float> shared(one.size(), -1.0f);
      cpu::gemm_packed(packed, false, n, b.data(), n, 0.0f, shared.data(), n, e);
      EXPECT_EQ(shared, one) << "m " << m << " n " << n << " k " << k << " threads " << threads;
    }
  }
}

TEST(CpuGemm, ConvolutionWindowsMatchADirectConvolution) {
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "this processor has no AVX2+FMA: the fast GEMM is not used";
  std::mt19937 rng(99);
  for (int trial = 0; trial < 40; ++trial) {
    cpu::ConvWindows w;
    const std::int64_t channels = pick(rng, 1, 40), outputs = pick(rng, 1, 20);
    w.kernel_h = pick(rng, 1, 5);
    w.kernel_w = pick(rng, 1, 5);
    w.stride_h = pick(rng, 1, 3);
    w.stride_w = pick(rng, 1, 3);
    w.pad_h = pick(rng, 0, 2);
    w.pad_w = pick(rng, 0, 2);
    w.dilation_h = pick(rng, 1, 2);
    w.dilation_w = pick(rng, 1, 2);
    const std::int64_t span_h = w.dilation_h * (w.kernel_h - 1) + 1, span_w = w.dilation_w * (w.kernel_w - 1) + 1;
    w.height = std::max<std::int64_t>(span_h - 2 * w.pad_h, 1) + pick(rng, 0, 40);
    w.width = std::max<std::int64_t>(span_w - 2 * w.pad_w, 1) + pick(rng, 0, 70);
    w.out_height = (w.height + 2 * w.pad_h - span_h) / w.stride_h + 1;
    w.out_width = (w.width + 2 * w.pad_w - span_w) / w.stride_w + 1;
    const std::int64_t depth = channels * w.kernel_h * w.kernel_w, columns = w.out_height * w.out_width;
    const std::vector<float> image = random_values(rng, static_cast<std::size_t>(channels * w.height * w.width));
    const std::vector<float> weights = random_values(rng, static_cast<std::size_t>(outputs * depth));
    const std::vector<float> bias = random_values(rng, static_cast<std::size_t>(outputs));
    w.image = image.data();
    const cpu::PackedMatrix packed(weights.data(), depth, false, outputs, depth);
    GemmEpilogue e;
    e.row_bias = bias.data();
    e.lo = 0.0f;
    // Every third trial adds to what C holds (beta 1: a residual fused in place), across depth blocks.
    const bool accumulate = trial % 3 == 2;
    const auto size = static_cast<std::size_t>(outputs * columns);
    std::vector<float> got = accumulate ? random_values(rng, size) : std::vector<float>(size);
    const std::vector<float> before = got;
    const float beta = accumulate ? 1.0f : 0.0f;
    {
      ThreadGroup group(trial % 2 == 0 ? 2 : 1);  // the threaded path and the one-thread path
      const ScopedThreads use(&group);
      cpu::gemm_windows(packed, w, got.data(), columns, e, beta);
    }
    std::vector<double> expect(got.size());
    for (std::int64_t o = 0; o < outputs; ++o) {
      for (std::int64_t oy = 0; oy < w.out_height; ++oy) {
        for (std::int64_t ox = 0; ox < w.out_width; ++ox) {
          double sum = bias[static_cast<std::size_t>(o)] +
                       before[static_cast<std::size_t>((o * w.out_height + oy) * w.out_width + ox)];
          for (std::int64_t ch = 0; ch < channels; ++ch) {
            for (std::int64_t ky = 0; ky < w.kernel_h; ++ky) {
              for (std::int64_t kx = 0; kx < w.kernel_w; ++kx) {
                const std::int64_t y = oy * w.stride_h - w.pad_h + ky * w.dilation_h;
                const std::int64_t x = ox * w.stride_w - w.pad_w + kx * w.dilation_w;
                if (y < 0 || y >= w.height || x < 0 || x >= w.width) continue;
                sum += static_cast<double>(weights[static_cast<std::size_t>(((o * channels + ch) * w.kernel_h + ky) *
                                                                                w.kernel_w +
                                                                            kx)]) *
                       image[static_cast<std::size_t>((ch * w.height + y) * w.width + x)];
              }
            }
          }
          expect[static_cast<std::size_t>((o * w.out_height + oy) * w.out_width + ox)] = std::max(sum, 0.0);
        }
      }
    }
    EXPECT_LE(normalized_error(expect, got), 1e-5)
        << "channels " << channels << " image " << w.height << "x" << w.width << " kernel " << w.kernel_h << "x"
        << w.kernel_w << " stride " << w.stride_h << "," << w.stride_w << " pad " << w.pad_h << "," << w.pad_w
        << " dilation " << w.dilation_h << "," << w.dilation_w << " beta " << beta;
  }
}

// The fusions under each exact CPU tactic, forced (the planner would measure and pick one): the windows'
// GEMM and the direct convolution. Winograd's (less exact) are checked in test_cpu_winograd.cpp.
class CpuFusion : public ::testing::TestWithParam<const char*> {
 protected:
  const espresso::testing::ScopedEnv tactic_{"ESPRESSO_CONV_TACTIC", GetParam()};
};
INSTANTIATE_TEST_SUITE_P(Tactics, CpuFusion, ::testing::Values("gemm", "direct"));

TEST_P(CpuFusion, ResidualAddAndClampsFuseIntoConvolutionsAndMatchTheReference) {
  const Graph g = testing::residual_block();
  Net fast(g);
  NetOptions reference_options;
  reference_options.reference_kernels = true;
  Net reference(g, reference_options);
  std::mt19937 rng(3);
  const Tensor input = Tensor::from(Shape{2, 8, 13, 11}, random_values(rng, 2 * 8 * 13 * 11));
  const std::vector<float> want = reference.forward({{"data", input}}).at("out").to_vector();
  const std::vector<float> got = fast.forward({{"data", input}}).at("out").to_vector();
  ASSERT_EQ(want.size(), got.size());
  std::vector<double> expect(want.begin(), want.end());
  EXPECT_LE(normalized_error(expect, got), 1e-5);
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "no AVX2+FMA: the fused GEMM path is not used";
  testing::expect_residual_block_fused(fast.summary());
  auto kernel = testing::kernels_by_layer(fast.summary());
  EXPECT_NE(kernel["conv2"].find("+add+relu"), std::string::npos) << kernel["conv2"];
  EXPECT_EQ(kernel["conv2"].rfind(testing::cpu_conv_kernel_prefix(GetParam()), 0), 0u) << kernel["conv2"];
}

// MobileNetV2's inverted residual: x + project(clip(depthwise(clip(expand(x))))), the Add taking x
// first, so that it runs in place on x's memory and the projection adds into it (300 channels in
// the middle: the projection's depth spans two of the GEMM's depth blocks), then a ReLU. Under the
// direct tactic the middle has 24 channels and the projection a 3x3 window (depth 216, so that the
// direct convolution takes it and adds into x).
TEST_P(CpuFusion, ResidualAddInPlaceOnTheOtherOperandFusesIntoTheConvolution) {
  const bool direct = GetParam() == std::string("direct");
  const std::int64_t middle = direct ? 24 : 300, project_side = direct ? 3 : 1;
  Graph g;
  g.inputs = {{"data", Shape{2, 8, 9, 7}}};
  LayerSpec clip1 = testing::layer("clip1", "Activation", {"e"}, {"e6"});
  clip1.attrs.set("function", std::string("clip"));
  clip1.attrs.set("min", 0.0);
  clip1.attrs.set("max", 6.0);
  LayerSpec clip2 = clip1;
  clip2.name = "clip2";
  clip2.inputs = {"d"};
  clip2.outputs = {"d6"};
  LayerSpec depthwise = testing::conv_layer("depthwise", "e6", "d", middle, 3, 1, 1);
  depthwise.attrs.set("group", middle);
  LayerSpec add = testing::layer("add", "Binary", {"x", "p"}, {"sum"});
  add.attrs.set("operation", std::string("add"));
  g.layers = {testing::conv_layer("stem", "data", "x", 8, 1, 0, 1),
              testing::conv_layer("expand", "x", "e", middle, 1, 0, 1),
              clip1,
              depthwise,
              clip2,
              testing::conv_layer("project", "d6", "p", 8, project_side, project_side / 2, 1),
              add,
              testing::layer("relu", "ReLU", {"sum"}, {"out"})};
  std::mt19937 rng(11);
  for (LayerSpec& layer : g.layers) {
    if (layer.type != "Convolution") continue;
    const std::int64_t outputs = layer.attrs.get_int("num_output", 0);
    const std::int64_t in = layer.name == "expand" || layer.name == "stem" ? 8
                            : layer.name == "depthwise"                    ? 1
                                                                           : middle;
    const std::int64_t side = layer.name == "depthwise" ? 3 : layer.name == "project" ? project_side : 1;
    const std::int64_t taps = side * side;
    layer.weights = {Tensor::from(Shape{outputs, in, side, side},
                                  random_values(rng, static_cast<std::size_t>(outputs * in * taps))),
                     Tensor::from(Shape{outputs}, random_values(rng, static_cast<std::size_t>(outputs)))};
  }
  Net fast(g);
  NetOptions reference_options;
  reference_options.reference_kernels = true;
  Net reference(g, reference_options);
  const Tensor input = Tensor::from(Shape{2, 8, 9, 7}, random_values(rng, 2 * 8 * 9 * 7));
  const std::vector<float> want = reference.forward({{"data", input}}).at("out").to_vector();
  const std::vector<float> got = fast.forward({{"data", input}}).at("out").to_vector();
  ASSERT_EQ(want.size(), got.size());
  std::vector<double> expect(want.begin(), want.end());
  EXPECT_LE(normalized_error(expect, got), 1e-5);
  // A second forward: the residual is read from x's memory again, not from the last result.
  const std::vector<float> again = fast.forward({{"data", input}}).at("out").to_vector();
  EXPECT_EQ(again, got);
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "no AVX2+FMA: the fused GEMM path is not used";
  auto kernel = testing::kernels_by_layer(fast.summary());
  EXPECT_EQ(kernel["add"], "fused into project");
  EXPECT_EQ(kernel["relu"], "fused into project");
  EXPECT_NE(kernel["project"].find("+add+relu"), std::string::npos) << kernel["project"];
  EXPECT_EQ(kernel["project"].find("concat"), std::string::npos) << kernel["project"];
  EXPECT_EQ(kernel["project"].rfind(direct ? "direct-" : "packed-gemm-", 0), 0u) << kernel["project"];
}

// The channel GEMM (output channels along the vectors, positions as rows), forced: a residual block (ReLU,
// residual add + ReLU, a stride-2 3x3 with a clip), a fire module writing into its concat, a residual added
// in place into the other operand's memory, a 5x5 window at stride 2 with dilation 2 and a one-column
// output at stride 3; batch 2 and 1,
// against the reference kernels.
TEST(CpuChannelGemm, ForcedInNetsWithFusedStepsMatchesTheReference) {
  if (!cpu::fast_gemm_uses_avx512()) GTEST_SKIP() << "the channel GEMM runs on AVX-512 only";
  const espresso::testing::ScopedEnv tactic("ESPRESSO_CONV_TACTIC", "channel-gemm");
  std::mt19937 rng(21);
  Graph fire;
  fire.inputs = {{"data", Shape{2, 6, 9, 10}}};
  fire.layers = {testing::conv_layer("squeeze", "data", "s", 4, 1, 0, 1),
                 testing::layer("relu_s", "ReLU", {"s"}, {"sr"}),
                 testing::conv_layer("e1", "sr", "a", 16, 1, 0, 1),
                 testing::conv_layer("e3", "sr", "b", 40, 3, 1, 1),
                 testing::layer("cat", "Concat", {"a", "b"}, {"out"})};
  Graph in_place;
  in_place.inputs = {{"data", Shape{2, 8, 7, 7}}};
  LayerSpec add = testing::layer("add", "Binary", {"x", "p"}, {"sum"});
  add.attrs.set("operation", std::string("add"));
  in_place.layers = {testing::conv_layer("stem", "data", "x", 8, 1, 0, 1),
                     testing::conv_layer("project", "x", "p", 8, 3, 1, 1), add,
                     testing::layer("relu", "ReLU", {"sum"}, {"out"})};
  Graph dilated;
  dilated.inputs = {{"data", Shape{2, 5, 17, 14}}};
  LayerSpec wide = testing::conv_layer("wide", "data", "out", 33, 5, 3, 2);
  wide.attrs.set("dilation", std::int64_t{2});
  dilated.layers = {wide};
  Graph column;  // one output column, stride 3
  column.inputs = {{"data", Shape{2, 3, 10, 3}}};
  column.layers = {testing::conv_layer("narrow", "data", "out", 20, 3, 1, 3)};
  for (Graph* g : {&fire, &in_place, &dilated, &column}) {
    for (LayerSpec& spec : g->layers) {
      if (spec.type == "Convolution")
        testing::set_random_conv_weights(
            spec, g == &fire && spec.name != "squeeze" ? 4 : g->inputs[0].shape[1], rng);
    }
    g->outputs = {"out"};
  }
  for (const Graph& g : {testing::residual_block(), fire, in_place, dilated, column}) {
    for (const std::int64_t batch : {std::int64_t{2}, std::int64_t{1}}) {
      Net fast(g);
      NetOptions reference_options;
      reference_options.reference_kernels = true;
      Net reference(g, reference_options);
      Shape shape = g.inputs[0].shape;
      shape[0] = batch;
      fast.set_batch(batch);
      reference.set_batch(batch);
      const Tensor input = Tensor::from(shape, random_values(rng, static_cast<std::size_t>(shape.numel())));
      const std::vector<float> want = reference.forward({{"data", input}}).at("out").to_vector();
      const std::vector<float> got = fast.forward({{"data", input}}).at("out").to_vector();
      ASSERT_EQ(want.size(), got.size());
      EXPECT_LE(normalized_error(std::vector<double>(want.begin(), want.end()), got), 1e-5)
          << g.layers[0].name << " batch " << batch;
      const auto kernel = testing::kernels_by_layer(fast.summary());
      for (const auto& [name, used] : kernel) {
        const bool windows = name == "conv1" || name == "conv2" || name == "conv3" || name == "e3" ||
                             name == "project" || name == "wide" || name == "narrow";
        if (windows) {
          EXPECT_EQ(used.rfind("channel-gemm-", 0), 0u) << name << ": " << used;
        }
      }
      const std::map<std::string, std::pair<std::string, std::string>> fused = {
          {"conv1", {"conv2", "+add+relu"}},
          {"squeeze", {"e3", "into concat"}},
          {"stem", {"project", "+add"}}};
      if (const auto it = fused.find(g.layers[0].name); it != fused.end()) {
        EXPECT_NE(kernel.at(it->second.first).find(it->second.second), std::string::npos)
            << kernel.at(it->second.first);
      }
    }
  }
}

TEST_P(CpuFusion, PackedWeightsFollowChangesMadeThroughTheNet) {
  const Graph g = testing::residual_block();
  Net fast(g);
  std::mt19937 rng(5);
  const Tensor input = Tensor::from(Shape{2, 8, 13, 11}, random_values(rng, 2 * 8 * 13 * 11));
  fast.forward({{"data", input}});
  // Scale conv1's weights in place through the net's views, as a solver or a user would.
  for (const Tensor& w : fast.weights("conv1")) {
    Tensor view = w;
    float* data = view.data<float>();
    for (std::int64_t i = 0; i < view.numel(); ++i) data[i] *= -2.0f;
  }
  const std::vector<float> got = fast.forward({{"data", input}}).at("out").to_vector();
  Graph changed = testing::residual_block();  // g shares its weight memory with the net
  for (LayerSpec& layer : changed.layers) {
    if (layer.name != "conv1") continue;
    for (Tensor& w : layer.weights) {
      std::vector<float> v = w.to_vector();
      for (float& x : v) x *= -2.0f;
      w = Tensor::from(w.shape(), v);
    }
  }
  NetOptions reference_options;
  reference_options.reference_kernels = true;
  Net reference(changed, reference_options);
  const std::vector<float> want = reference.forward({{"data", input}}).at("out").to_vector();
  std::vector<double> expect(want.begin(), want.end());
  EXPECT_LE(normalized_error(expect, got), 1e-5);
}

}  // namespace
}  // namespace espresso

namespace espresso {
namespace {

TEST_P(CpuFusion, BatchNormFoldsIntoTheConvolutionAndMatchesTheReference) {
  Graph g;
  g.inputs = {{"data", Shape{3, 5, 9, 12}}};
  g.layers = {testing::conv_layer("conv", "data", "c", 7, 3, 1, 2), testing::layer("bn", "BatchNorm", {"c"}, {"b"}),
              testing::layer("relu", "ReLU", {"b"}, {"out"})};
  std::mt19937 rng(11);
  g.layers[0].weights = {Tensor::from(Shape{7, 5, 3, 3}, random_values(rng, 7 * 5 * 9)),
                         Tensor::from(Shape{7}, random_values(rng, 7))};
  std::vector<float> variance = random_values(rng, 7);
  for (float& v : variance) v = v * v + 0.1f;
  g.layers[1].weights = {Tensor::from(Shape{7}, random_values(rng, 7)), Tensor::from(Shape{7}, variance),
                         Tensor::from(Shape{1}, std::vector<float>{0.8f})};
  Net fast(g);
  NetOptions reference_options;
  reference_options.reference_kernels = true;
  Net reference(g, reference_options);
  const Tensor input = Tensor::from(Shape{3, 5, 9, 12}, random_values(rng, 3 * 5 * 9 * 12));
  const std::vector<float> want = reference.forward({{"data", input}}).at("out").to_vector();
  const std::vector<float> got = fast.forward({{"data", input}}).at("out").to_vector();
  std::vector<double> expect(want.begin(), want.end());
  EXPECT_LE(normalized_error(expect, got), 1e-5);
  if (!cpu::fast_gemm_available()) GTEST_SKIP() << "no AVX2+FMA: the fused GEMM path is not used";
  auto kernel = testing::kernels_by_layer(fast.summary());
  EXPECT_EQ(kernel["bn"], "fused into conv");
  EXPECT_EQ(kernel["relu"], "fused into conv");
  EXPECT_NE(kernel["conv"].find("+batchnorm+relu"), std::string::npos) << kernel["conv"];
}

// SqueezeNet's and ResNet's stem: convolution (+ BatchNorm) + ReLU + 3x3/2 max pooling, the pooling
// made by the convolution band by band; and NIN's 1x1 convolution + ReLU + pooling. Odd sizes, pads,
// Caffe's ceil rounding, two images; against the reference kernels.
TEST_P(CpuFusion, MaxPoolingFusesIntoTheConvolutionBeforeIt) {
  struct Case {
    std::int64_t channels, height, width, kernel, pad, stride, pool_pad;
    bool ceil;
  };
  for (const Case& k : {Case{3, 37, 41, 3, 0, 2, 0, false}, Case{3, 45, 33, 7, 3, 2, 1, false},
                        Case{5, 29, 30, 1, 0, 1, 0, true}, Case{4, 70, 9, 3, 1, 1, 1, true}}) {
    SCOPED_TRACE(std::to_string(k.kernel) + "x" + std::to_string(k.kernel) + " on " + std::to_string(k.height) +
                 "x" + std::to_string(k.width));
    Graph g;
    g.inputs = {{"data", Shape{2, k.channels, k.height, k.width}}};
    LayerSpec conv = testing::conv_layer("conv", "data", "c", 24, k.kernel, k.pad, k.stride);
    std::mt19937 rng(static_cast<unsigned>(k.height));
    conv.weights = {Tensor::from(Shape{24, k.channels, k.kernel, k.kernel},
                                 random_values(rng, static_cast<std::size_t>(24 * k.channels * k.kernel * k.kernel))),
                    Tensor::from(Shape{24}, random_values(rng, 24))};
    LayerSpec pool = testing::layer("pool", "Pooling", {"r"}, {"out"});
    pool.attrs.set("method", std::string("max"));
    pool.attrs.set("kernel", std::int64_t{3});
    pool.attrs.set("stride", std::int64_t{2});
    pool.attrs.set("pad", k.pool_pad);
    pool.attrs.set("round", std::string(k.ceil ? "ceil" : "floor"));
    g.layers = {conv, testing::layer("relu", "ReLU", {"c"}, {"r"}), pool};
    Net fast(g);
    NetOptions reference_options;
    reference_options.reference_kernels = true;
    Net reference(g, reference_options);
    const Tensor input = Tensor::from(g.inputs[0].shape, random_values(rng, static_cast<std::size_t>(g.inputs[0].shape.numel())));
    const std::vector<float> want = reference.forward({{"data", input}}).at("out").to_vector();
    const std::vector<float> got = fast.forward({{"data", input}}).at("out").to_vector();
    ASSERT_EQ(want.size(), got.size());
    EXPECT_LE(normalized_error(std::vector<double>(want.begin(), want.end()), got), 1e-5);
    if (!cpu::fast_gemm_available()) continue;
    auto kernel = testing::kernels_by_layer(fast.summary());
    EXPECT_EQ(kernel["pool"], "fused into conv");
    EXPECT_NE(kernel["conv"].find("+relu+maxpool"), std::string::npos) << kernel["conv"];
    if (k.kernel > 1) {
      EXPECT_EQ(kernel["conv"].rfind(testing::cpu_conv_kernel_prefix(GetParam()), 0), 0u) << kernel["conv"];
    }
  }
}

}  // namespace
}  // namespace espresso
