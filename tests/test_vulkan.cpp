// The Vulkan backend: devices, memory, transfers, recorded and replayed command buffers, and whole nets
// against the CPU. CI runs them on lavapipe (Mesa's CPU Vulkan); without a Vulkan device they skip,
// and the missing device must fail with one clear message.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "backends/registry.h"
#include "espresso/devices.h"
#include "espresso/espresso.h"
#include "test_support.h"

#ifdef ESPRESSO_TEST_VULKAN_INTERNALS
#include "backends/vulkan/context.h"
#endif

namespace espresso {
namespace {

std::vector<float> random_values(std::size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 engine(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(engine);
  return v;
}

double relative_error(const std::vector<float>& got, const std::vector<float>& expected) {
  if (got.size() != expected.size()) return INFINITY;
  double diff = 0, scale = 1e-12;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(expected[i])) return INFINITY;
    diff = std::max(diff, static_cast<double>(std::abs(got[i] - expected[i])));
    scale = std::max(scale, static_cast<double>(std::abs(expected[i])));
  }
  return diff / scale;
}

template <typename Expected = DeviceError>
void expect_device_error(const std::function<void()>& action, const std::vector<std::string>& fragments) {
  try {
    action();
    ADD_FAILURE() << "expected a DeviceError";
  } catch (const Expected& e) {
    for (const std::string& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << "'" << f << "' not in: " << e.what();
  }
}

LayerSpec with_attrs(LayerSpec spec, const std::vector<std::pair<std::string, std::int64_t>>& attrs) {
  for (const auto& [name, value] : attrs) spec.attrs.set(name, value);
  return spec;
}

Tensor random_tensor(const Shape& shape, unsigned seed) {
  return Tensor::from(shape, random_values(static_cast<std::size_t>(shape.numel()), seed));
}

// Whether vulkan:0 lists `feature` ("fp16 storage", " (arithmetic)" of subgroups) as `espresso devices` does.
bool vulkan_has(const std::string& feature) {
  for (const DeviceInfo& d : list_devices()) {
    if (d.device == Device::vulkan(0)) return d.features.find(feature) != std::string::npos;
  }
  return false;
}

// A Convolution of stride 1 from `in_channels` to `outputs` channels, square window, random weights and
// bias (seeds `seed` and seed + 1).
LayerSpec random_conv(const std::string& name, const std::string& input, const std::string& output,
                      std::int64_t in_channels, std::int64_t outputs, std::int64_t kernel, std::int64_t pad,
                      unsigned seed) {
  LayerSpec conv = testing::conv_layer(name, input, output, outputs, kernel, pad, 1);
  conv.weights = {random_tensor(Shape{outputs, in_channels, kernel, kernel}, seed),
                  random_tensor(Shape{outputs}, seed + 1)};
  return conv;
}

// A small CNN of layers Vulkan runs (convolution, pooling, ReLU, LRN, concat, inner product, softmax).
Graph small_cnn() {
  Graph g;
  g.name = "small_cnn";
  g.inputs = {{"data", Shape{2, 3, 12, 12}}};
  LayerSpec conv = with_attrs(testing::layer("conv", "Convolution", {"data"}, {"c"}),
                              {{"num_output", 8}, {"kernel", 3}, {"pad", 1}});
  conv.weights = {random_tensor(Shape{8, 3, 3, 3}, 1), random_tensor(Shape{8}, 2)};
  LayerSpec relu = testing::layer("relu", "ReLU", {"c"}, {"r"});
  LayerSpec lrn = with_attrs(testing::layer("lrn", "LRN", {"r"}, {"n"}), {{"size", 3}});
  LayerSpec pool = with_attrs(testing::layer("pool", "Pooling", {"n"}, {"p"}), {{"kernel", 2}, {"stride", 2}});
  LayerSpec dw = with_attrs(testing::layer("dw", "Convolution", {"p"}, {"d"}),
                            {{"num_output", 8}, {"kernel", 3}, {"pad", 1}, {"group", 8}});
  dw.weights = {random_tensor(Shape{8, 1, 3, 3}, 3), random_tensor(Shape{8}, 4)};
  LayerSpec concat = testing::layer("concat", "Concat", {"p", "d"}, {"cat"});
  LayerSpec ip = with_attrs(testing::layer("ip", "InnerProduct", {"cat"}, {"logits"}), {{"num_output", 10}});
  ip.weights = {random_tensor(Shape{10, 16 * 6 * 6}, 5), random_tensor(Shape{10}, 6)};
  LayerSpec softmax = testing::layer("prob", "Softmax", {"logits"}, {"prob"});
  g.layers = {conv, relu, lrn, pool, dw, concat, ip, softmax};
  g.outputs = {"prob", "logits"};
  return g;
}

std::map<std::string, Tensor> run_net(const Graph& graph, Device device, const std::map<std::string, Tensor>& inputs,
                                      bool capture = true, int runs = 1) {
  NetOptions options;
  options.device = device;
  options.cuda_graphs = capture;
  Net net(graph, options);
  std::map<std::string, Tensor> outputs;
  for (int run = 0; run < runs; ++run) outputs = net.forward(inputs);
  for (auto& [name, t] : outputs) t = t.to(Device::cpu());
  return outputs;
}

}  // namespace

TEST(Vulkan, MissingDeviceFailsClearly) {
  if (testing::have_vulkan()) {
    // A device index past the last one.
    const int count = backend_for(DeviceType::vulkan).device_count();
    expect_device_error([&] { Tensor::empty(Shape{4}, DType::f32, Device::vulkan(count)); },
                        {"vulkan:" + std::to_string(count), "does not exist"});
    return;
  }
  const std::string reason = testing::no_vulkan_reason();
  std::printf("[ SKIPPED  ] no Vulkan device here (%s); checking the error instead\n", reason.c_str());
  EXPECT_FALSE(reason.empty());
  expect_device_error([] { Tensor::empty(Shape{4}, DType::f32, Device::vulkan(0)); }, {"vulkan:0"});
  NetOptions options;
  options.device = Device::vulkan(0);
  expect_device_error([&] { Net net(small_cnn(), options); }, {"vulkan:0"});
}

TEST(Vulkan, ParsesDeviceNames) {
  EXPECT_EQ(Device::parse("vulkan"), Device::vulkan(0));
  EXPECT_EQ(Device::parse("vulkan:2"), Device::vulkan(2));
  EXPECT_EQ(Device::vulkan(1).str(), "vulkan:1");
  EXPECT_THROW(Device::parse("vulkan:x"), UnsupportedError);
}

TEST(Vulkan, ListsDevices) {
  REQUIRE_VULKAN();
  int listed = 0;
  for (const DeviceInfo& d : list_devices()) {
    if (d.device.type != DeviceType::vulkan) continue;
    ++listed;
    EXPECT_FALSE(d.name.empty());
    EXPECT_FALSE(d.driver.empty());
    EXPECT_NE(d.features.find("subgroup"), std::string::npos) << d.features;
    EXPECT_GT(d.total_memory, 0u);
  }
  EXPECT_EQ(listed, backend_for(DeviceType::vulkan).device_count());
}

TEST(Vulkan, CopiesBetweenHostAndDevice) {
  REQUIRE_VULKAN();
  // Sizes around the staging buffer's 16 MiB, odd sizes and offsets inside one allocation.
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1000}, (std::size_t{16} << 20) / 4 + 3}) {
    const std::vector<float> values = random_values(n, static_cast<unsigned>(n));
    const Tensor host = Tensor::from(Shape{static_cast<std::int64_t>(n)}, values);
    const Tensor device = host.to(Device::vulkan(0));
    EXPECT_EQ(device.device(), Device::vulkan(0));
    Tensor again = Tensor::empty(host.shape(), DType::f32, Device::vulkan(0));
    again.copy_from(device);  // device to device
    EXPECT_EQ(again.to(Device::cpu()).to_vector(), values) << n;
  }
  const Tensor zeros = Tensor::zeros(Shape{3, 5}, DType::f32, Device::vulkan(0));
  EXPECT_EQ(zeros.to(Device::cpu()).to_vector(), std::vector<float>(15, 0.0f));
}

TEST(Vulkan, SubAllocatesAndReusesBlocks) {
  REQUIRE_VULKAN();
  Backend& backend = backend_for(DeviceType::vulkan);
  const MemoryStats before = backend.memory_stats(Device::vulkan(0));
  std::vector<Tensor> small;
  for (int i = 0; i < 64; ++i) small.push_back(Tensor::empty(Shape{1000}, DType::f32, Device::vulkan(0)));
  const MemoryStats during = backend.memory_stats(Device::vulkan(0));
  EXPECT_GE(during.in_use_bytes, before.in_use_bytes + 64 * 4000);
  // 64 small tensors come out of shared blocks: at most one new 64 MiB block.
  EXPECT_LE(during.in_use_bytes + during.cached_bytes, before.in_use_bytes + before.cached_bytes + (std::size_t{64} << 20));
  // Distinct, non-overlapping ranges.
  for (std::size_t i = 1; i < small.size(); ++i) EXPECT_NE(small[i].raw(), small[i - 1].raw());
  small.clear();
  EXPECT_EQ(backend.memory_stats(Device::vulkan(0)).in_use_bytes, before.in_use_bytes);
}

// Recorded once, replayed: the replay must read the inputs' current contents.
class VulkanNet : public ::testing::TestWithParam<bool> {};

TEST_P(VulkanNet, SmallCnnMatchesTheCpu) {
  REQUIRE_VULKAN();
  const Graph graph = small_cnn();
  NetOptions options;
  options.device = Device::vulkan(0);
  options.cuda_graphs = GetParam();
  Net net(graph, options);
  Net cpu(graph);
  for (unsigned seed : {10u, 11u, 12u}) {
    const Tensor x = random_tensor(Shape{2, 3, 12, 12}, seed);
    const auto want = cpu.forward({{"data", x}});
    const auto got = net.forward({{"data", x}});
    for (const auto& [name, expected] : want) {
      EXPECT_LE(relative_error(got.at(name).to(Device::cpu()).to_vector(), expected.to_vector()), 1e-5)
          << name << " seed " << seed;
    }
  }
  for (const LayerSummary& row : net.summary()) {
    EXPECT_TRUE(row.kernel.find("vulkan") != std::string::npos || row.kernel == "fused into conv")
        << row.name << ": " << row.kernel;
  }
  EXPECT_GT(net.last_forward_ms(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Replay, VulkanNet, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Recorded" : "Eager"; });

TEST(Vulkan, NetMixingVulkanAndCpuLayersMatches) {
  REQUIRE_VULKAN();
  // Gather has no Vulkan kernel: it runs on the CPU between Vulkan layers (its indices a Vulkan Constant).
  Graph g;
  g.name = "mixed";
  g.inputs = {{"data", Shape{1, 4, 6, 6}}};
  LayerSpec conv = with_attrs(testing::layer("conv", "Convolution", {"data"}, {"c"}), {{"num_output", 4}, {"kernel", 3}});
  conv.weights = {random_tensor(Shape{4, 4, 3, 3}, 7), random_tensor(Shape{4}, 8)};
  LayerSpec indices = testing::layer("indices", "Constant", {}, {"i"});
  indices.attrs.set("shape", std::vector<std::int64_t>{3});
  indices.weights = {Tensor::from(Shape{3}, {2.0f, 0.0f, -1.0f})};
  LayerSpec gather = with_attrs(testing::layer("cpu_only", "Gather", {"c", "i"}, {"u"}), {{"axis", 1}});
  LayerSpec deconv =
      with_attrs(testing::layer("deconv", "Deconvolution", {"u"}, {"d"}), {{"num_output", 2}, {"kernel", 2}, {"stride", 2}});
  deconv.weights = {random_tensor(Shape{3, 2, 2, 2}, 9), random_tensor(Shape{2}, 10)};
  LayerSpec relu = testing::layer("relu", "ReLU", {"d"}, {"y"});
  g.layers = {conv, indices, gather, deconv, relu};
  g.outputs = {"y"};
  const Tensor x = random_tensor(Shape{1, 4, 6, 6}, 11);
  NetOptions options;
  options.device = Device::vulkan(0);
  Net net(g, options);
  for (int run = 0; run < 2; ++run) {
    const auto got = net.forward({{"data", x}}).at("y").to(Device::cpu()).to_vector();
    const auto want = run_net(g, Device::cpu(), {{"data", x}}).at("y").to_vector();
    EXPECT_LE(relative_error(got, want), 1e-5);
  }
  int on_cpu = 0;
  for (const LayerSummary& row : net.summary()) {
    if (row.name == "cpu_only") {
      EXPECT_EQ(row.device, Device::cpu());
      ++on_cpu;
    } else {
      EXPECT_EQ(row.device, Device::vulkan(0)) << row.name;
    }
  }
  EXPECT_EQ(on_cpu, 1);
}

// Against the reference kernels: the packed weights' padding (250 channels of a group, 72-deep sums) and the
// columns beyond the last tile must read as zeros, groups kept apart; small images and long sums (deep layers
// at batch 1) split k over more work groups, whose partial sums must add up, bias included. The same with
// Winograd F(2x2, 3x3) forced: a partial 2 x 2 tile at the edge (39 x 39), its GEMMs' padding, 256-deep sums.
TEST(Vulkan, ConvolutionMatchesTheReference) {
  REQUIRE_VULKAN();
  for (const char* tactic : {"gemm", "winograd"}) {
    const testing::ScopedEnv forced("ESPRESSO_CONV_TACTIC", tactic);
    NetOptions reference_options;
    reference_options.reference_kernels = true;
    NetOptions options;
    options.device = Device::vulkan(0);
    auto graph = [](std::int64_t group, const Shape& input, std::int64_t outputs, unsigned seed) {
      Graph g;
      g.inputs = {{"data", input}};
      LayerSpec conv = with_attrs(testing::layer("conv", "Convolution", {"data"}, {"y"}),
                                  {{"num_output", outputs}, {"kernel", 3}, {"pad", 1}, {"group", group}});
      conv.weights = {random_tensor(Shape{outputs, input[1] / group, 3, 3}, seed),
                      random_tensor(Shape{outputs}, seed + 1)};
      g.layers = {conv};
      g.outputs = {"y"};
      return g;
    };
    for (std::int64_t group : {1, 2}) {
      SCOPED_TRACE("groups " + std::to_string(group));
      // 1,521 columns: the last 64-wide tile is partly empty.
      const Graph wide = graph(group, Shape{1, 8 * group, 39, 39}, 250 * group, 50);
      // 25 columns and sums 2,304 deep (1,152 per group of 2): split along k.
      const Graph deep = graph(group, Shape{1, 256, 5, 5}, 40, 60);
      for (const auto& [g, split] : {std::pair{wide, false}, std::pair{deep, true}}) {
        const Tensor x = random_tensor(g.inputs[0].shape, 70);
        Net net(g, options);
        const auto got = net.forward({{"data", x}}).at("y").to(Device::cpu()).to_vector();
        const auto want = Net(g, reference_options).forward({{"data", x}}).at("y").to_vector();
        EXPECT_LE(relative_error(got, want), 1e-5) << tactic;
        const bool winograd = tactic == std::string("winograd") && group == 1;
        EXPECT_EQ(net.summary().at(0).kernel, winograd ? "vulkan winograd F(2x2,3x3)"
                                              : split  ? "vulkan implicit-gemm split-k"
                                                       : "vulkan implicit-gemm");
      }
    }
  }
}

// Winograd layers of one net share their stream's workspace (the largest need, not the sum), also when
// the net replays its capture; the second layer's patches are the first's output, ReLU fused in between.
TEST(Vulkan, WinogradLayersShareTheStreamWorkspace) {
  REQUIRE_VULKAN();
  const testing::ScopedEnv forced("ESPRESSO_CONV_TACTIC", "winograd");
  Graph g;
  g.inputs = {{"data", Shape{2, 16, 20, 17}}};
  LayerSpec first = random_conv("first", "data", "a", 16, 32, 3, 1, 100);
  LayerSpec second = random_conv("second", "r", "y", 32, 64, 3, 0, 102);
  g.layers = {first, testing::layer("relu", "ReLU", {"a"}, {"r"}), second};
  g.outputs = {"y"};
  NetOptions options;
  options.device = Device::vulkan(0);
  NetOptions reference_options;
  reference_options.reference_kernels = true;
  const Tensor x = random_tensor(Shape{2, 16, 20, 17}, 104);
  Net net(g, options);
  const auto want = Net(g, reference_options).forward({{"data", x}}).at("y").to_vector();
  for (int run = 0; run < 3; ++run)
    EXPECT_LE(relative_error(net.forward({{"data", x}}).at("y").to(Device::cpu()).to_vector(), want), 1e-5);
  auto kernel = testing::kernels_by_layer(net.summary());
  EXPECT_EQ(kernel["first"], "vulkan winograd F(2x2,3x3)");
  EXPECT_EQ(kernel["relu"], "fused into first");
  EXPECT_EQ(kernel["second"], "vulkan winograd F(2x2,3x3)");
  // Patches and products of 2 x 10 x 9 tiles, 16 values each: 16 + 32 channels, then 32 + 64.
  const std::size_t tiles_first = 2 * 10 * 9, tiles_second = 2 * 9 * 8;
  EXPECT_EQ(net.memory().workspace_bytes,
            std::max(tiles_first * 16 * (16 + 32), tiles_second * 16 * (32 + 64)) * sizeof(float));
}

// The work-group reductions (an InnerProduct at batch 3 as a GEMV, a Softmax over rows of 1,000) match the
// reference with subgroup arithmetic, where the device has it, and without (ESPRESSO_VULKAN_SUBGROUPS=0):
// partial work groups along k, rows longer than a work group.
TEST(Vulkan, ReductionsMatchWithAndWithoutSubgroups) {
  REQUIRE_VULKAN();
  Graph g;
  g.inputs = {{"data", Shape{3, 1100}}};
  LayerSpec ip =
      with_attrs(testing::layer("ip", "InnerProduct", {"data"}, {"scores"}), {{"num_output", 1000}});
  ip.weights = {random_tensor(Shape{1000, 1100}, 120), random_tensor(Shape{1000}, 121)};
  g.layers = {ip, testing::layer("prob", "Softmax", {"scores"}, {"y"})};
  g.outputs = {"y"};
  NetOptions reference_options;
  reference_options.reference_kernels = true;
  NetOptions options;
  options.device = Device::vulkan(0);
  const Tensor x = random_tensor(Shape{3, 1100}, 122);
  const auto want = Net(g, reference_options).forward({{"data", x}}).at("y").to_vector();
  if (!vulkan_has(" (arithmetic)"))
    std::printf("[ SKIPPED  ] vulkan:0 has no subgroup arithmetic: the _subgroup variants not checked\n");
  for (const char* subgroups : {"1", "0"}) {
    const testing::ScopedEnv setting("ESPRESSO_VULKAN_SUBGROUPS", subgroups);
    Net net(g, options);
    EXPECT_LE(relative_error(net.forward({{"data", x}}).at("y").to(Device::cpu()).to_vector(), want), 1e-5)
        << "ESPRESSO_VULKAN_SUBGROUPS=" << subgroups;
    EXPECT_EQ(net.summary().at(0).kernel, "vulkan gemv");
  }
}

// An SSD head (Normalize on a feature map, a convolution predicting locations, PriorBox beside it) runs
// wholly on the device, no layer on the CPU, and matches the reference kernels; PriorBox's boxes made once.
TEST(Vulkan, SsdHeadStaysOnTheDevice) {
  REQUIRE_VULKAN();
  Graph g;
  g.inputs = {{"image", Shape{2, 3, 60, 50}}, {"features", Shape{2, 24, 8, 7}}};
  LayerSpec normalize = testing::layer("norm", "Normalize", {"features"}, {"normed"});
  normalize.attrs.set("across_spatial", std::int64_t{0});
  normalize.attrs.set("channel_shared", std::int64_t{0});
  normalize.weights = {random_tensor(Shape{24}, 130)};
  LayerSpec loc = random_conv("loc", "normed", "locations", 24, 16, 3, 1, 131);
  LayerSpec priors = testing::layer("priors", "PriorBox", {"normed", "image"}, {"boxes"});
  priors.attrs.set("min_size", std::vector<double>{12.0});
  priors.attrs.set("max_size", std::vector<double>{24.0});
  priors.attrs.set("aspect_ratio", std::vector<double>{2.0});
  priors.attrs.set("flip", std::int64_t{1});
  priors.attrs.set("clip", std::int64_t{1});
  priors.attrs.set("variance", std::vector<double>{0.1, 0.1, 0.2, 0.2});
  // And across the whole of each sample (1,344 values: several per invocation), one scale shared.
  LayerSpec whole = testing::layer("norm_whole", "Normalize", {"features"}, {"whole"});
  whole.weights = {Tensor::from(Shape{}, {3.0f})};
  g.layers = {normalize, loc, priors, whole};
  g.outputs = {"locations", "boxes", "whole"};
  NetOptions options;
  options.device = Device::vulkan(0);
  NetOptions reference_options;
  reference_options.reference_kernels = true;
  const std::map<std::string, Tensor> feeds{{"image", random_tensor(Shape{2, 3, 60, 50}, 132)},
                                            {"features", random_tensor(Shape{2, 24, 8, 7}, 133)}};
  Net net(g, options);
  const auto got = net.forward(feeds);
  const auto want = Net(g, reference_options).forward(feeds);
  for (const char* output : {"locations", "boxes", "whole"}) {
    EXPECT_LE(relative_error(got.at(output).to(Device::cpu()).to_vector(), want.at(output).to_vector()), 1e-5)
        << output;
  }
  for (const LayerSummary& row : net.summary()) EXPECT_EQ(row.device, Device::vulkan(0)) << row.name;
}

// A 3 x 3 convolution of stride 1 times Winograd and the implicit GEMM once per device and shape, runs the
// faster and writes the choice to the tactic cache; the same shape again is not timed, and a choice an
// earlier process wrote is taken as it is, whichever it is.
TEST(Vulkan, ThreeByThreeConvolutionsAreTimedOnceAndRemembered) {
  REQUIRE_VULKAN();
  const testing::ScopedEnv unforced("ESPRESSO_CONV_TACTIC", nullptr);
  testing::TempDir dir;
  const testing::ScopedEnv folder("ESPRESSO_TACTIC_CACHE", dir.path().c_str());
  const std::string cache = dir.file("vulkan-convolution-tactics.txt");
  const auto lines = [&] {
    std::ifstream in(cache);
    std::vector<std::string> all;
    for (std::string line; std::getline(in, line);) all.push_back(line);
    return all;
  };
  const auto conv_net = [](std::int64_t channels) {
    Graph g;
    g.inputs = {{"data", Shape{1, channels, 12, 10}}};
    LayerSpec conv = random_conv("conv", "data", "y", channels, channels, 3, 1, 110);
    g.layers = {conv};
    g.outputs = {"y"};
    return g;
  };
  // The tactic a net's convolution runs: "winograd" or "gemm" (split along k or not).
  const auto tactic_of = [](Net&& net) {
    const std::string kernel = net.summary().at(0).kernel;
    return kernel == "vulkan winograd F(2x2,3x3)"         ? "winograd"
           : kernel.rfind("vulkan implicit-gemm", 0) == 0 ? "gemm"
                                                          : kernel;
  };
  NetOptions options;
  options.device = Device::vulkan(0);
  const std::string first = tactic_of(Net(conv_net(24), options));  // planned: timed
  std::vector<std::string> written = lines();
  ASSERT_EQ(written.size(), 1u);
  EXPECT_NE(written[0].find("|f32|conv3x3s1|n1|c24|k24|12x10|pad1x1 "), std::string::npos) << written[0];
  EXPECT_EQ(first, written[0].substr(written[0].rfind(' ') + 1));
  EXPECT_EQ(tactic_of(Net(conv_net(24), options)), first);
  EXPECT_EQ(lines().size(), 1u);
  const std::string prefix = written[0].substr(0, written[0].find("|c24|"));
  for (const std::string forced : {"winograd", "gemm"}) {
    const std::int64_t channels = forced == "winograd" ? 25 : 26;
    std::ofstream(cache, std::ios::app)
        << prefix << "|c" << channels << "|k" << channels << "|12x10|pad1x1 " << forced << "\n";
    EXPECT_EQ(tactic_of(Net(conv_net(channels), options)), forced);
  }
  EXPECT_EQ(lines().size(), 3u);
  // A tactic no backend knows is an error, not a silent timing.
  const testing::ScopedEnv typo("ESPRESSO_CONV_TACTIC", "winogard");
  EXPECT_THROW(Net(conv_net(24), options).summary(), UnsupportedError);
}

#ifdef ESPRESSO_TEST_VULKAN_INTERNALS
// A convolution with more tiles of columns than the device's grid holds runs on the CPU, not partly.
TEST(Vulkan, ConvolutionBeyondTheGridRunsOnTheCpu) {
  REQUIRE_VULKAN();
  const std::uint32_t most =
      vulkan::device_context(0).physical().properties.limits.maxComputeWorkGroupCount[0];
  if (most > 200000)
    GTEST_SKIP() << "vulkan:0's grid holds " << most << " work groups: no such layer is small";
  const std::int64_t side = static_cast<std::int64_t>(std::sqrt(64.0 * most)) + 8;  // > 64 · most columns
  Graph g;
  g.inputs = {{"data", Shape{1, 1, side, side}}};
  LayerSpec conv = random_conv("conv", "data", "y", 1, 2, 1, 0, 90);
  g.layers = {conv};
  g.outputs = {"y"};
  const Tensor x = random_tensor(Shape{1, 1, side, side}, 92);
  NetOptions options;
  options.device = Device::vulkan(0);
  Net net(g, options);
  EXPECT_EQ(net.summary().at(0).device, Device::cpu());
  const auto got = net.forward({{"data", x}}).at("y").to(Device::cpu()).to_vector();
  EXPECT_LE(relative_error(got, run_net(g, Device::cpu(), {{"data", x}}).at("y").to_vector()), 1e-6);
}
#endif

// Nets made from the same weights (a model's sessions) share one device copy of each packed convolution
// weight, as they share resident weights.
TEST(Vulkan, NetsOfOneModelSharePackedConvolutionWeights) {
  REQUIRE_VULKAN();
  Graph g;
  g.inputs = {{"data", Shape{1, 256, 4, 4}}};
  LayerSpec conv = random_conv("conv", "data", "y", 256, 256, 3, 1, 80);  // 2.25 MiB packed
  g.layers = {conv};
  g.outputs = {"y"};
  NetOptions options;
  options.device = Device::vulkan(0);
  const Tensor x = random_tensor(Shape{1, 256, 4, 4}, 82);
  Net first(g, options);
  const auto one = first.forward({{"data", x}}).at("y").to(Device::cpu()).to_vector();
  const std::size_t before = backend_for(DeviceType::vulkan).memory_stats(Device::vulkan(0)).in_use_bytes;
  Net second(g, options);
  const auto two = second.forward({{"data", x}}).at("y").to(Device::cpu()).to_vector();
  const std::size_t after = backend_for(DeviceType::vulkan).memory_stats(Device::vulkan(0)).in_use_bytes;
  EXPECT_LT(after - before, std::size_t{1} << 20) << "the second net packed its own copy";
  EXPECT_EQ(one, two);
}

// At inference the convolutions take over the ReLUs, the residual Add and the clip after them; the
// split-k path adds the residual and clamps as it adds the partial sums up, Winograd as it transforms the
// products back, the depthwise kernel clamps.
TEST(Vulkan, ResidualAddAndClampsFuseIntoConvolutions) {
  REQUIRE_VULKAN();
  NetOptions reference_options;
  reference_options.reference_kernels = true;
  NetOptions vulkan_options;
  vulkan_options.device = Device::vulkan(0);

  const Graph block = testing::residual_block();
  const Tensor x = random_tensor(Shape{2, 8, 13, 11}, 40);
  Net net(block, vulkan_options);
  const auto want = Net(block, reference_options).forward({{"data", x}}).at("out").to_vector();
  for (int run = 0; run < 2; ++run)
    EXPECT_LE(relative_error(net.forward({{"data", x}}).at("out").to(Device::cpu()).to_vector(), want), 1e-5);
  testing::expect_residual_block_fused(net.summary());

  // The shortcut convolution comes after conv2: it adds its result into conv2's output, where the Add ran.
  const Graph shortcut = testing::shortcut_block();
  Net downsampling(shortcut, vulkan_options);
  const auto expected_sum = Net(shortcut, reference_options).forward({{"data", x}}).at("out").to_vector();
  for (int run = 0; run < 2; ++run) {
    EXPECT_LE(relative_error(downsampling.forward({{"data", x}}).at("out").to(Device::cpu()).to_vector(),
                             expected_sum),
              1e-5);
  }
  auto fused = testing::kernels_by_layer(downsampling.summary());
  EXPECT_EQ(fused["add"], "fused into shortcut");
  EXPECT_EQ(fused["relu2"], "fused into shortcut");

  // Batch 1, 256 channels of 5 x 5: the 3 x 3 convolution splits k; then a depthwise one and a ReLU6. The
  // Add runs in place on its first operand: with (c, s) the split convolution adds the residual as it sums
  // its partial sums up, with (s, c) it accumulates into s's memory.
  for (const bool residual_first : {false, true}) {
    for (const char* tactic : {"gemm", "winograd"}) {
      const testing::ScopedEnv forced("ESPRESSO_CONV_TACTIC", tactic);
      SCOPED_TRACE(std::string(residual_first ? "add(s, c), " : "add(c, s), ") + tactic);
      Graph g;
      g.inputs = {{"data", Shape{1, 256, 5, 5}}};
      LayerSpec skip = random_conv("skip", "data", "s", 256, 40, 1, 0, 41);
      LayerSpec conv = random_conv("conv", "data", "c", 256, 40, 3, 1, 43);
      LayerSpec add = testing::layer(
          "add", "Binary",
          residual_first ? std::vector<std::string>{"s", "c"} : std::vector<std::string>{"c", "s"}, {"sum"});
      add.attrs.set("operation", std::string("add"));
      LayerSpec depthwise =
          with_attrs(testing::conv_layer("depthwise", "r", "d", 40, 3, 1, 1), {{"group", 40}});
      depthwise.weights = {random_tensor(Shape{40, 1, 3, 3}, 45), random_tensor(Shape{40}, 46)};
      LayerSpec clip = testing::layer("clip", "Activation", {"d"}, {"out"});
      clip.attrs.set("function", std::string("clip"));
      clip.attrs.set("min", 0.0);
      clip.attrs.set("max", 6.0);
      g.layers = {skip, conv, add, testing::layer("relu", "ReLU", {"sum"}, {"r"}), depthwise, clip};
      g.outputs = {"out"};
      const Tensor deep = random_tensor(Shape{1, 256, 5, 5}, 47);
      Net split(g, vulkan_options);
      const auto expected = Net(g, reference_options).forward({{"data", deep}}).at("out").to_vector();
      // Sums of 2,304 products in another order than the reference's: about 1e-5 apart.
      for (int run = 0; run < 2; ++run) {
        EXPECT_LE(
            relative_error(split.forward({{"data", deep}}).at("out").to(Device::cpu()).to_vector(), expected),
            3e-5);
      }
      auto kernel = testing::kernels_by_layer(split.summary());
      EXPECT_EQ(kernel["conv"], tactic == std::string("winograd") ? "vulkan winograd F(2x2,3x3)"
                                                                  : "vulkan implicit-gemm split-k");
      EXPECT_EQ(kernel["add"], "fused into conv");
      EXPECT_EQ(kernel["relu"], "fused into conv");
      EXPECT_EQ(kernel["clip"], "fused into depthwise");
      // fp16 activations: the _f16 shaders' epilogues (the fused residual read as fp16).
      if (!vulkan_has("fp16 storage")) continue;
      NetOptions half_options = vulkan_options;
      half_options.precision = Precision::fp16;
      Net half(g, half_options);
      EXPECT_LE(
          relative_error(half.forward({{"data", deep}}).at("out").to(Device::cpu()).to_vector(), expected),
          1e-2);
      // (The in-place Add of add(s, c) is fp32 only.)
      if (!residual_first) {
        kernel = testing::kernels_by_layer(half.summary());
        EXPECT_EQ(kernel["add"], "fused into conv");
        EXPECT_EQ(kernel["relu"], "fused into conv");
      }
    }
  }
}

#ifdef ESPRESSO_TEST_VULKAN_INTERNALS
TEST(Vulkan, OutOfMemoryNamesTheLayerAndRecovers) {
  REQUIRE_VULKAN();
  vulkan::DeviceContext& context = vulkan::device_context(0);
  Graph g;
  g.name = "big";
  g.inputs = {{"data", Shape{1, 2048}}};
  LayerSpec ip = with_attrs(testing::layer("huge_fc", "InnerProduct", {"data"}, {"y"}), {{"num_output", 4096}});
  ip.weights = {random_tensor(Shape{4096, 2048}, 21), random_tensor(Shape{4096}, 22)};  // 32 MiB of weights
  g.layers = {ip};
  g.outputs = {"y"};
  NetOptions options;
  options.device = Device::vulkan(0);
  const MemoryStats stats = backend_for(DeviceType::vulkan).memory_stats(Device::vulkan(0));
  // Kernels are made (weights uploaded) before the activation arena is placed, so the weights fail first.
  // The allocator gives back cached empty blocks before it fails, so the limit counts what is in use.
  context.set_memory_limit(stats.in_use_bytes + (std::size_t{16} << 20));
  expect_device_error<OutOfMemoryError>(
      [&] {
        Net net(g, options);
        net.forward({{"data", Tensor::zeros(Shape{1, 2048})}});
      },
      {"huge_fc", "out of memory", "vulkan:0"});
  // The process keeps working: with the limit lifted the same net runs.
  context.set_memory_limit(0);
  Net net(g, options);
  const Tensor x = random_tensor(Shape{1, 2048}, 23);
  const auto y = net.forward({{"data", x}}).at("y").to(Device::cpu()).to_vector();
  EXPECT_LE(relative_error(y, run_net(g, Device::cpu(), {{"data", x}}).at("y").to_vector()), 1e-5);
}
#endif

class VulkanSharedData : public testing::SharedDataTest {};

TEST_F(VulkanSharedData, CaffeLeNetMatchesTheCpu) {
  REQUIRE_VULKAN();
  const std::string dir = testing::shared_data_dir().string() + "/caffe/lenet";
  const Graph graph = load_caffe(dir + "/lenet.prototxt", dir + "/lenet_iter_10000.caffemodel");
  const std::string input = graph.inputs.at(0).name;
  Shape shape = graph.inputs.at(0).shape;
  shape[0] = 8;
  const Tensor x = Tensor::from(shape, random_values(static_cast<std::size_t>(shape.numel()), 5, 0.0f, 1.0f));
  const auto want = run_net(graph, Device::cpu(), {{input, x}});
  const auto got = run_net(graph, Device::vulkan(0), {{input, x}}, true, 3);
  for (const auto& [name, expected] : want) {
    const double error = relative_error(got.at(name).to_vector(), expected.to_vector());
    std::printf("lenet on vulkan, %s: relative error %.3g\n", name.c_str(), error);
    EXPECT_LE(error, 1e-5) << name;
  }
}

class VulkanOnnx : public testing::SharedDataTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(VulkanOnnx, MatchesTheCpu) {
  REQUIRE_VULKAN();
  const std::string dir = testing::shared_data_dir().string() + "/onnx/" + GetParam();
  // A GPU machine may carry only some of the models (the device's transfer limit).
  if (!std::filesystem::exists(dir + "/model.onnx")) GTEST_SKIP() << dir << "/model.onnx not here";
  const Graph graph = load_onnx(dir + "/model.onnx");
  const Tensor input = read_onnx_tensor(dir + "/test_data_set_0/input_0.pb");
  const std::string name = graph.inputs.at(0).name;
  const auto want = run_net(graph, Device::cpu(), {{name, input}});
  // Twice: the first run records the command buffer, the second replays it.
  const auto got = run_net(graph, Device::vulkan(0), {{name, input}}, true, 2);
  for (const auto& [output, expected] : want) {
    const double error = relative_error(got.at(output).to_vector(), expected.to_vector());
    std::printf("%s on vulkan, %s: relative error %.3g\n", GetParam(), output.c_str(), error);
    EXPECT_LE(error, 1e-4) << output;
  }
}

// fp16 activations (the shaders' _f16 variants) against the CPU's fp32: within 1e-2 of the largest output.
TEST_P(VulkanOnnx, Fp16MatchesTheCpuFp32) {
  REQUIRE_VULKAN();
  const std::string dir = testing::shared_data_dir().string() + "/onnx/" + GetParam();
  if (!std::filesystem::exists(dir + "/model.onnx")) GTEST_SKIP() << dir << "/model.onnx not here";
  if (!vulkan_has("fp16 storage")) GTEST_SKIP() << "vulkan:0 has no 16-bit storage";
  const Graph graph = load_onnx(dir + "/model.onnx");
  const Tensor input = read_onnx_tensor(dir + "/test_data_set_0/input_0.pb");
  const std::string name = graph.inputs.at(0).name;
  const auto want = run_net(graph, Device::cpu(), {{name, input}});
  NetOptions options;
  options.device = Device::vulkan(0);
  options.precision = Precision::fp16;
  Net net(graph, options);
  // Every convolution runs in fp16.
  for (const auto& row : net.summary()) {
    if (row.type == "Convolution") {
      EXPECT_EQ(row.precision, "fp16") << row.name;
    }
  }
  // Eager, recorded, replayed.
  for (int run = 0; run < 3; ++run) {
    const auto got = net.forward({{name, input}});
    for (const auto& [output, expected] : want) {
      const double error = relative_error(got.at(output).to(Device::cpu()).to_vector(), expected.to_vector());
      std::printf("%s on vulkan in fp16, %s: relative error %.3g\n", GetParam(), output.c_str(), error);
      EXPECT_LE(error, 1e-2) << output;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Real, VulkanOnnx,
                         ::testing::Values("nin_cifar10", "squeezenet1_1", "mobilenet_v2", "resnet18"));

}  // namespace espresso
