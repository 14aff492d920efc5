// The CUDA backend: device memory, transfers, the pool and nets on a GPU. Tests that need a GPU
// skip without one; the rest check that asking for a missing GPU fails clearly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>

#include "espresso/devices.h"
#include "espresso/host_staging.h"
#include "espresso/espresso.h"
#include "test_support.h"
#include "backends/registry.h"
#include "layers/registry.h"

namespace espresso {
namespace {

std::vector<float> ramp(std::size_t n, float start = -100.0f, float step = 0.37f) {
  std::vector<float> values(n);
  for (std::size_t i = 0; i < n; ++i) values[i] = start + step * static_cast<float>(i);
  return values;
}

LayerSpec relu(const std::string& name, const std::string& in, const std::string& out, double slope = 0.0) {
  LayerSpec s;
  s.name = name;
  s.type = "ReLU";
  s.inputs = {in};
  s.outputs = {out};
  if (slope != 0.0) s.attrs.set("negative_slope", slope);
  return s;
}

Graph relu_chain() {
  Graph g;
  g.name = "chain";
  g.inputs = {{"data", Shape{2, 3, 5, 7}}};
  g.layers = {relu("r1", "data", "a", 0.5), relu("r2", "a", "b", 0.5), relu("r3", "b", "c")};
  return g;
}

std::vector<float> relu_chain_expected(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = std::max(x[i] > 0 ? x[i] : 0.25f * x[i], 0.0f);
  return y;
}

void expect_message(const std::function<void()>& action, const std::vector<std::string>& fragments) {
  try {
    action();
    FAIL() << "expected DeviceError";
  } catch (const DeviceError& e) {
    for (const std::string& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Cuda, MissingGpuFailsClearly) {
  if (testing::have_gpu()) GTEST_SKIP() << "a CUDA device is present";
  for (const DeviceInfo& d : list_devices()) EXPECT_NE(d.device.type, DeviceType::cuda) << d.device.str();
  const std::string reason =
      testing::no_gpu_reason() == "no CUDA device" ? "no CUDA device found" : "CUDA backend not built";
  expect_message([] { Tensor::empty(Shape{4}, DType::f32, Device::cuda(0)); }, {reason, "cuda:0"});
  expect_message([] { Tensor::from(Shape{2}, {1, 2}).to(Device::cuda(1)); }, {reason, "cuda:1"});
  NetOptions options;
  options.device = Device::cuda(0);
  expect_message([&] { Net net(relu_chain(), options); }, {reason});
}

TEST(Cuda, ListsDevices) {
  REQUIRE_GPU();
  std::vector<DeviceInfo> devices = list_devices();
  ASSERT_FALSE(devices.empty());
  EXPECT_TRUE(devices.front().device.is_cpu());
  // The CUDA devices; Vulkan devices follow them where a Vulkan driver is installed.
  std::erase_if(devices, [](const DeviceInfo& d) { return d.device.type != DeviceType::cuda; });
  ASSERT_EQ(static_cast<int>(devices.size()), backend_for(DeviceType::cuda).device_count());
  for (const DeviceInfo& d : devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GT(d.total_memory, 0u);
    EXPECT_GE(d.compute_major, 7);
    EXPECT_GT(d.runtime_version, 0);
    EXPECT_GE(d.driver_version, d.runtime_version / 1000 * 1000);
  }
}

TEST(Cuda, CopiesBetweenHostAndDevices) {
  REQUIRE_GPU();
  // Larger than two staging chunks and not a multiple of one, so chunk reuse is exercised.
  const std::vector<float> values = ramp(5'000'003);
  const Tensor host = Tensor::from(Shape{static_cast<std::int64_t>(values.size())}, values);
  const Tensor on_gpu = host.to(Device::cuda(0));
  EXPECT_EQ(on_gpu.device(), Device::cuda(0));
  const Tensor copied = on_gpu.clone();
  EXPECT_NE(copied.raw(), on_gpu.raw());
  EXPECT_EQ(copied.to(Device::cpu()).to_vector(), values);

  Tensor zeros = Tensor::zeros(Shape{3, 5}, DType::f32, Device::cuda(0));
  EXPECT_EQ(zeros.to(Device::cpu()).to_vector(), std::vector<float>(15, 0.0f));
  EXPECT_THROW(on_gpu.to_vector(), UnsupportedError);
  EXPECT_THROW(zeros.copy_from(host), ShapeError);
}

// Page-locked host staging (allocate_host_staging, the batch memory of `espresso serve`): copies from
// and to it, whole or from an offset inside it (a request's rows), take the one-DMA path and carry the
// same values as pageable memory does.
TEST(Cuda, HostStagingCopiesLikePageableMemory) {
  REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  const std::vector<float> values = ramp(3'000'001);
  const std::size_t bytes = values.size() * sizeof(float);
  std::shared_ptr<void> staging = allocate_host_staging(bytes + 64, gpu);
  ASSERT_NE(staging, nullptr);
  float* pinned = static_cast<float*>(staging.get()) + 16;  // an offset inside the allocation
  std::memcpy(pinned, values.data(), bytes);
  const Shape shape{static_cast<std::int64_t>(values.size())};
  Tensor on_gpu = Tensor::empty(shape, DType::f32, gpu);
  on_gpu.copy_from(Tensor::wrap(pinned, shape, DType::f32, Device::cpu(), staging));
  EXPECT_EQ(on_gpu.to(Device::cpu()).to_vector(), values);
  std::shared_ptr<void> back = allocate_host_staging(bytes, gpu);
  Tensor into = Tensor::wrap(back.get(), shape, DType::f32, Device::cpu(), back);
  into.copy_from(on_gpu);
  EXPECT_EQ(into.to_vector(), values);
  // Host staging for the CPU is plain aligned memory.
  std::shared_ptr<void> host = allocate_host_staging(100, Device::cpu());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(host.get()) % 64, 0u);
}

TEST(Cuda, PoolReusesFreedBlocks) {
  REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  void* first = nullptr;
  {
    Tensor t = Tensor::empty(Shape{1000, 1000}, DType::f32, gpu);
    first = t.raw();
  }
  const MemoryStats cached = backend_for(gpu).memory_stats(gpu);
  EXPECT_GE(cached.cached_bytes, 4'000'000u);
  Tensor again = Tensor::empty(Shape{999, 1001}, DType::f32, gpu);
  EXPECT_EQ(again.raw(), first) << "a block of the same size class should come back from the cache";
}

// The peak is the most the allocator had in use at once (in its size classes, so at least what was
// asked), and starts again from what is in use at a reset.
TEST(Cuda, PeakMemoryCountsTheMostInUse) {
  REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  reset_peak_device_memory(gpu);
  const DeviceMemoryUse before = device_memory_use(gpu);
  EXPECT_EQ(before.peak_bytes, before.in_use_bytes);
  constexpr std::size_t kBig = std::size_t{48} << 20;
  {
    Tensor a = Tensor::empty(Shape{static_cast<std::int64_t>(kBig / 4)}, DType::f32, gpu);
    Tensor b = Tensor::empty(Shape{static_cast<std::int64_t>(kBig / 4)}, DType::f32, gpu);
    EXPECT_GE(device_memory_use(gpu).in_use_bytes, before.in_use_bytes + 2 * kBig);
  }
  Tensor small = Tensor::empty(Shape{1024}, DType::f32, gpu);
  const DeviceMemoryUse after = device_memory_use(gpu);
  EXPECT_GE(after.peak_bytes, before.in_use_bytes + 2 * kBig);
  EXPECT_LT(after.in_use_bytes, before.in_use_bytes + kBig);
  EXPECT_GE(after.cached_bytes, 2 * kBig);
  // Both big tensors were in use at the peak, under the purpose Tensor::empty gives them.
  std::size_t at_peak = 0, tensors_at_peak = 0;
  for (const auto& [purpose, bytes] : after.peak_by_purpose) {
    at_peak += bytes;
    if (purpose == "tensors") tensors_at_peak = bytes;
  }
  EXPECT_EQ(at_peak, after.peak_bytes);
  EXPECT_GE(tensors_at_peak, 2 * kBig);
  reset_peak_device_memory(gpu);
  EXPECT_EQ(device_memory_use(gpu).peak_bytes, device_memory_use(gpu).in_use_bytes);
}

// The host has no allocator count: zeros, no error.
TEST(Cuda, HostMemoryUseIsZero) {
  reset_peak_device_memory(Device::cpu());
  const DeviceMemoryUse use = device_memory_use(Device::cpu());
  EXPECT_EQ(use.in_use_bytes, 0u);
  EXPECT_EQ(use.peak_bytes, 0u);
}

TEST(Cuda, OutOfMemoryNamesTheRequest) {
  REQUIRE_GPU();
  const std::size_t huge = std::size_t{1} << 50;
  expect_message([&] { backend_for(Device::cuda(0)).allocate(huge, Device::cuda(0), "layer 'giant'"); },
                 {"out of memory", std::to_string(huge) + " bytes", "layer 'giant'"});
  // The failure leaves the device usable.
  EXPECT_EQ(Tensor::from(Shape{2}, {1, -1}).to(Device::cuda(0)).to(Device::cpu()).to_vector(),
            (std::vector<float>{1, -1}));
}

TEST(Cuda, RejectsMissingDeviceIndex) {
  REQUIRE_GPU();
  const int count = backend_for(DeviceType::cuda).device_count();
  expect_message([&] { Tensor::empty(Shape{1}, DType::f32, Device::cuda(count)); }, {"does not exist"});
}

class CudaNet : public ::testing::TestWithParam<bool> {};

TEST_P(CudaNet, MatchesTheCpu) {
  REQUIRE_GPU();
  NetOptions options;
  options.device = Device::cuda(0);
  options.cuda_graphs = GetParam();
  Net net(relu_chain(), options);

  // Filled through input() as a user would, then run again with new values: a replayed graph
  // must read the buffer's current contents.
  for (float start : {-100.0f, -3.0f}) {
    const std::vector<float> x = ramp(210, start, 0.9f);
    Tensor& input = net.input("data");
    ASSERT_EQ(input.device(), Device::cuda(0));
    input.copy_from(Tensor::from(Shape{2, 3, 5, 7}, x));
    net.forward();
    const Tensor& out = net.tensor("c");
    ASSERT_EQ(out.device(), Device::cuda(0));
    EXPECT_EQ(out.to(Device::cpu()).to_vector(), relu_chain_expected(x));
  }

  // A new shape plans again (and captures again).
  const std::vector<float> x = ramp(4 * 3 * 5 * 7 + 0, -50.0f, 0.3f);
  const auto results = net.forward({{"data", Tensor::from(Shape{4, 3, 5, 7}, x)}});
  const Tensor& c = results.at("c");
  EXPECT_TRUE(c.device().is_cpu());
  EXPECT_EQ(c.shape(), (Shape{4, 3, 5, 7}));
  EXPECT_EQ(c.to_vector(), relu_chain_expected(x));
  for (const LayerSummary& row : net.summary()) EXPECT_EQ(row.kernel, "cuda");
}

INSTANTIATE_TEST_SUITE_P(Graphs, CudaNet, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "WithGraphs" : "WithoutGraphs"; });

TEST(Cuda, NetOnOddSizedTensors) {
  REQUIRE_GPU();
  // 1x1x1x7 is not a multiple of four floats: the vectorised path must hand the tail over.
  Graph g;
  g.inputs = {{"data", Shape{1, 1, 1, 7}}};
  g.layers = {relu("r", "data", "y", 0.1)};
  NetOptions options;
  options.device = Device::cuda(0);
  Net net(g, options);
  const auto y =
      net.forward({{"data", Tensor::from(Shape{1, 1, 1, 7}, {-3, -2, -1, 0, 1, 2, 3})}}).at("y").to_vector();
  const std::vector<float> expected{-0.3f, -0.2f, -0.1f, 0, 1, 2, 3};
  for (std::size_t i = 0; i < expected.size(); ++i) EXPECT_FLOAT_EQ(y[i], expected[i]);
}

}  // namespace espresso
