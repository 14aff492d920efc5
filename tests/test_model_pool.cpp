#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <future>
#include <optional>
#include <random>
#include <thread>

#include "espresso/espresso.h"
#include "espresso/model_pool.h"
#include "espresso/onnx.h"
#include "espresso/package.h"
#include "test_support.h"

namespace espresso {
namespace {

using testing::layer;

constexpr int kModels = 8;
constexpr int kInputsPerModel = 3;
const Shape kInputShape{2, 3, 10, 10};

Tensor random_tensor(const Shape& shape, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> uniform(-scale, scale);
  std::vector<float> values(static_cast<std::size_t>(shape.numel()));
  for (float& v : values) v = uniform(rng);
  return Tensor::from(shape, values);
}

// Conv -> activation -> pooling -> fully connected -> softmax, varied per model. Channels grow slowly
// with the variant so that the weights of any four models exceed those of the three largest.
Graph small_net(int variant) {
  std::mt19937 rng(static_cast<unsigned>(100 + variant));
  const std::int64_t channels = 12 + variant / 2;
  Graph g;
  g.name = "net" + std::to_string(variant);
  g.inputs = {{"data", kInputShape}};
  LayerSpec conv = layer("conv", "Convolution", {"data"}, {"conv"});
  conv.attrs.set("num_output", channels);
  conv.attrs.set("kernel", std::int64_t{3});
  conv.weights = {random_tensor(Shape{channels, 3, 3, 3}, rng, 0.3f),
                  random_tensor(Shape{channels}, rng, 0.1f)};
  const char* activations[] = {"relu", "tanh", "sigmoid"};
  LayerSpec act = layer("act", variant % 3 == 0 ? "ReLU" : "Activation", {"conv"}, {"act"});
  if (variant % 3 != 0) act.attrs.set("function", std::string(activations[variant % 3]));
  LayerSpec pool = layer("pool", "Pooling", {"act"}, {"pool"});
  pool.attrs.set("method", std::string(variant % 2 == 0 ? "max" : "ave"));
  pool.attrs.set("kernel", std::int64_t{2});
  pool.attrs.set("stride", std::int64_t{2});
  LayerSpec fc = layer("fc", "InnerProduct", {"pool"}, {"fc"});
  fc.attrs.set("num_output", std::int64_t{10});
  fc.weights = {random_tensor(Shape{10, channels * 16}, rng, 0.2f), random_tensor(Shape{10}, rng, 0.1f)};
  LayerSpec prob = layer("prob", "Softmax", {"fc"}, {"prob"});
  g.layers = {conv, act, pool, fc, prob};
  g.outputs = {"prob"};
  return g;
}

std::size_t weight_bytes(const Graph& g) {
  std::size_t bytes = 0;
  for (const LayerSpec& l : g.layers) {
    for (const Tensor& w : l.weights) bytes += w.bytes();
  }
  return bytes;
}

bool close(const Tensor& got, const Tensor& want) {
  if (got.shape() != want.shape()) return false;
  const std::vector<float> a = got.to_vector(), b = want.to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!(std::fabs(a[i] - b[i]) <= 1e-5f * std::max(1.0f, std::fabs(b[i])))) return false;
  }
  return true;
}

// Eight models on disk (seven packages and one ONNX file), with inputs and the outputs of a plain
// Net for each.
class ModelFiles {
 public:
  explicit ModelFiles(Device device) {
    std::mt19937 rng(7);
    for (int m = 0; m < kModels; ++m) {
      const Graph g = small_net(m);
      const std::string path = dir_.file(g.name + (m == kModels - 1 ? ".onnx" : ".esp"));
      if (m == kModels - 1) {
        export_onnx(g, path);
      } else {
        save_package(g, path);
      }
      names.push_back(g.name);
      paths.push_back(path);
      max_weight_bytes = std::max(max_weight_bytes, weight_bytes(g));
      NetOptions options;
      options.device = device;
      Net reference(load_model(path), options);
      std::vector<Tensor> model_inputs, model_outputs;
      for (int k = 0; k < kInputsPerModel; ++k) {
        model_inputs.push_back(random_tensor(kInputShape, rng, 1.0f));
        model_outputs.push_back(reference.forward({{"data", model_inputs.back()}}).at("prob"));
      }
      inputs.push_back(std::move(model_inputs));
      outputs.push_back(std::move(model_outputs));
    }
  }

  void add_all(ModelPool& pool) const {
    for (int m = 0; m < kModels; ++m)
      pool.add(names[static_cast<std::size_t>(m)], paths[static_cast<std::size_t>(m)]);
  }

  std::vector<std::string> names, paths;
  std::vector<std::vector<Tensor>> inputs, outputs;
  std::size_t max_weight_bytes = 0;

 private:
  testing::TempDir dir_;
};

// 4 threads switch at random among 8 models in a pool that holds 3; every output must match the
// plain Net's and the budget must hold throughout.
void run_switching_threads(Device device, std::size_t budget) {
  const ModelFiles files(device);
  ModelPoolOptions options;
  options.device = device;
  options.budget_bytes = budget;
  ModelPool pool(options);
  files.add_all(pool);

  constexpr int kThreads = 4, kRequestsPerThread = 100;
  std::atomic<int> mismatches{0}, over_budget{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(1000 + t));
      for (int r = 0; r < kRequestsPerThread; ++r) {
        const auto m = static_cast<std::size_t>(rng() % kModels);
        const auto k = static_cast<std::size_t>(rng() % kInputsPerModel);
        try {
          ModelRequest request = pool.acquire(files.names[m]);
          const Tensor out = request.forward({{"data", files.inputs[m][k]}}).at("prob");
          if (!close(out, files.outputs[m][k])) ++mismatches;
          if (pool.stats().resident_bytes > budget) ++over_budget;
        } catch (const std::exception& e) {
          ADD_FAILURE() << "thread " << t << " request " << r << ": " << e.what();
          ++errors;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  const ModelPoolStats stats = pool.stats();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(over_budget.load(), 0);
  EXPECT_LE(stats.peak_resident_bytes, budget);
  EXPECT_LE(stats.resident_bytes, budget);
  EXPECT_LE(stats.resident_models, 3);
  EXPECT_EQ(stats.requests, kThreads * kRequestsPerThread);
  EXPECT_GT(stats.evictions, 0);
  EXPECT_GT(stats.reloads, 0);
  EXPECT_GT(stats.hits, 0);
  EXPECT_EQ(stats.loads, kModels + stats.reloads);
  EXPECT_EQ(stats.hits + stats.loads, stats.requests);
  std::cout << "[ ModelPool ] " << stats.requests << " requests: " << stats.hits << " hits, " << stats.loads
            << " loads (" << stats.reloads << " reloads), " << stats.evictions << " evictions, "
            << stats.contexts_created << " contexts, peak " << stats.peak_resident_bytes << " of " << budget
            << " bytes\n";
}

TEST(ModelPool, FourThreadsSwitchAmongEightModelsWithinBudget) {
  // Three of the largest model fit; four of the smallest do not.
  const std::size_t budget = 3 * weight_bytes(small_net(kModels - 1));
  ASSERT_GT(4 * weight_bytes(small_net(0)), budget);
  run_switching_threads(Device::cpu(), budget);
}

TEST(ModelPool, ResidentModelIsReusedWithoutLoadingOrPlanning) {
  const ModelFiles files(Device::cpu());
  ModelPoolOptions options;
  options.budget_bytes = files.max_weight_bytes * 2;
  ModelPool pool(options);
  files.add_all(pool);
  EXPECT_FALSE(pool.resident("net0"));
  {
    ModelRequest first = pool.acquire("net0");
    EXPECT_TRUE(close(first.forward({{"data", files.inputs[0][0]}}).at("prob"), files.outputs[0][0]));
    // A second request of the same model at the same time gets its own context, not a second copy.
    ModelRequest second = pool.acquire("net0");
    EXPECT_NE(&first.session(), &second.session());
    EXPECT_TRUE(close(second.forward({{"data", files.inputs[0][1]}}).at("prob"), files.outputs[0][1]));
    EXPECT_TRUE(close(first.output("prob").to(Device::cpu()), files.outputs[0][0]));
  }
  ModelRequest again = pool.acquire("net0");
  again.session().input("data").copy_from(files.inputs[0][2]);
  again.forward();
  EXPECT_TRUE(close(again.output("prob"), files.outputs[0][2]));
  const ModelPoolStats stats = pool.stats();
  EXPECT_TRUE(pool.resident("net0"));
  EXPECT_EQ(stats.loads, 1);
  EXPECT_EQ(stats.hits, 2);
  EXPECT_EQ(stats.contexts_created, 2);
  EXPECT_EQ(stats.resident_bytes, weight_bytes(small_net(0)));
}

TEST(ModelPool, EvictsTheLeastRecentlyUsedIdleModel) {
  const ModelFiles files(Device::cpu());
  ModelPoolOptions options;
  options.budget_bytes = 2 * files.max_weight_bytes;
  ModelPool pool(options);
  files.add_all(pool);
  pool.acquire("net0").release();
  pool.acquire("net1").release();
  pool.acquire("net0").release();
  pool.acquire("net2").release();  // net1 is the least recently used
  EXPECT_TRUE(pool.resident("net0"));
  EXPECT_FALSE(pool.resident("net1"));
  EXPECT_TRUE(pool.resident("net2"));
  EXPECT_EQ(pool.stats().evictions, 1);
  ModelRequest reloaded = pool.acquire("net1");
  EXPECT_TRUE(close(reloaded.forward({{"data", files.inputs[1][0]}}).at("prob"), files.outputs[1][0]));
  EXPECT_EQ(pool.stats().reloads, 1);
}

TEST(ModelPool, EvictIdleFreesOnlyModelsNoRequestHolds) {
  const ModelFiles files(Device::cpu());
  ModelPoolOptions options;
  options.budget_bytes = 4 * files.max_weight_bytes;
  ModelPool pool(options);
  files.add_all(pool);
  pool.acquire("net0").release();
  pool.acquire("net1").release();
  ModelRequest held = pool.acquire("net2");
  EXPECT_EQ(pool.evict_idle(), 2);
  EXPECT_FALSE(pool.resident("net0"));
  EXPECT_FALSE(pool.resident("net1"));
  EXPECT_TRUE(pool.resident("net2"));
  EXPECT_EQ(pool.stats().resident_bytes, weight_bytes(small_net(2)));
  EXPECT_EQ(pool.stats().evictions, 2);
  EXPECT_TRUE(close(held.forward({{"data", files.inputs[2][0]}}).at("prob"), files.outputs[2][0]));
}

TEST(ModelPool, BatchHintPicksTheContextPlannedForThatBatch) {
  const ModelFiles files(Device::cpu());
  ModelPoolOptions options;
  options.budget_bytes = 2 * files.max_weight_bytes;
  ModelPool pool(options);
  files.add_all(pool);
  const Tensor& one = files.inputs[0][0];
  std::vector<std::int64_t> dims = one.shape().dims();
  dims[0] *= 4;
  Tensor four = Tensor::zeros(Shape(dims));
  {
    ModelRequest a = pool.acquire("net0");
    ModelRequest b = pool.acquire("net0");
    a.forward({{"data", one}});
    b.forward({{"data", four}});
  }  // a is released last, so a plain acquire would take a's context (planned for one)
  ModelRequest hinted = pool.acquire("net0", dims[0]);
  EXPECT_EQ(hinted.session().input_shape("data")[0], dims[0]);
  ModelRequest other = pool.acquire("net0", one.shape()[0]);
  EXPECT_EQ(other.session().input_shape("data"), one.shape());
  EXPECT_EQ(pool.stats().contexts_created, 2);
}

// A batch size no idle context was planned for gets a new context while the idle ones leave room
// (max_idle_contexts), so switching among a few batch sizes stops replanning; past the limit an idle
// context is replanned.
TEST(ModelPool, BatchHintBuildsOneContextPerBatchSize) {
  const ModelFiles files(Device::cpu());
  ModelPoolOptions options;
  options.budget_bytes = 2 * files.max_weight_bytes;
  options.max_idle_contexts = 3;
  ModelPool pool(options);
  files.add_all(pool);
  const Tensor& one = files.inputs[0][0];
  const auto batch_of = [&](std::int64_t n) {
    std::vector<std::int64_t> dims = one.shape().dims();
    dims[0] = n;
    return Tensor::zeros(Shape(dims));
  };
  for (std::int64_t n : {1, 2, 4}) {
    ModelRequest request = pool.acquire("net0", n);
    request.forward({{"data", batch_of(n)}});
  }
  EXPECT_EQ(pool.stats().contexts_created, 3);
  for (std::int64_t n : {4, 1, 2, 1, 4}) {
    ModelRequest request = pool.acquire("net0", n);
    EXPECT_EQ(request.session().input_shape("data")[0], n) << "a context planned for batch " << n << " was idle";
    request.forward({{"data", batch_of(n)}});
  }
  EXPECT_EQ(pool.stats().contexts_created, 3);
  {
    ModelRequest request = pool.acquire("net0", 8);  // three idle, the limit: one of them is replanned
    request.forward({{"data", batch_of(8)}});
  }
  EXPECT_EQ(pool.stats().contexts_created, 3);
  // The answers stay the model's: a context planned for 4 runs one sample as the reference does.
  ModelRequest request = pool.acquire("net0", 1);
  EXPECT_TRUE(close(request.forward({{"data", one}}).at("prob"), files.outputs[0][0]));
}

TEST(ModelPool, WaitsWhileHeldModelsFillTheBudget) {
  const ModelFiles files(Device::cpu());
  ModelPoolOptions options;
  options.budget_bytes = files.max_weight_bytes;
  ModelPool pool(options);
  files.add_all(pool);
  ModelRequest held = pool.acquire("net0");
  std::atomic<bool> released{false};
  auto waiter = std::async(std::launch::async, [&] {
    ModelRequest next = pool.acquire("net1");
    return released.load();
  });
  EXPECT_EQ(waiter.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  released = true;
  held.release();
  EXPECT_TRUE(waiter.get());
  EXPECT_LE(pool.stats().peak_resident_bytes, options.budget_bytes);
}

TEST(ModelPool, ReportsBadNamesFilesAndBudgets) {
  const ModelFiles files(Device::cpu());
  ModelPoolOptions options;
  options.budget_bytes = files.max_weight_bytes;
  ModelPool pool(options);
  files.add_all(pool);
  EXPECT_THROW(pool.add("net0", files.paths[1]), ModelError);
  EXPECT_THROW(pool.add("missing", files.paths[0] + ".nothing"), FileError);
  try {
    pool.acquire("nobody");
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("'nobody'"), std::string::npos) << e.what();
  }
  options.budget_bytes = 100;
  ModelPool tiny(options);
  files.add_all(tiny);
  try {
    tiny.acquire("net3");
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("net3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("budget"), std::string::npos) << e.what();
  }
  EXPECT_EQ(tiny.stats().resident_bytes, 0u);
  EXPECT_FALSE(tiny.resident("net3"));
  EXPECT_THROW(ModelPool(ModelPoolOptions{}), ModelError);
}

TEST(ModelPool, CorruptPackageFailsCleanlyAndLaterRequestsRetry) {
  testing::TempDir dir;
  const std::string path = dir.file("model.esp");
  save_package(small_net(0), path);
  const std::string good = testing::read_bytes(path);
  std::string bad = good;
  // The last tensor (the 40-byte fc bias) fills the start of the last 64-byte block.
  const std::size_t inside_last_tensor = bad.size() - 64 + 3;
  bad[inside_last_tensor] = static_cast<char>(bad[inside_last_tensor] ^ 0x40);
  dir.write("model.esp", bad);
  ModelPoolOptions options;
  options.budget_bytes = 1 << 20;
  ModelPool pool(options);
  pool.add("m", path);
  EXPECT_THROW(pool.acquire("m"), ParseError);
  EXPECT_EQ(pool.stats().resident_bytes, 0u);
  dir.write("model.esp", good);
  EXPECT_NO_THROW(pool.acquire("m"));
  EXPECT_EQ(pool.stats().loads, 1);
}

TEST(ModelPool, RequestsMayOutliveThePool) {
  const ModelFiles files(Device::cpu());
  std::optional<ModelRequest> request;
  {
    ModelPoolOptions options;
    options.budget_bytes = files.max_weight_bytes;
    ModelPool pool(options);
    files.add_all(pool);
    request.emplace(pool.acquire("net4"));
  }
  EXPECT_TRUE(close(request->forward({{"data", files.inputs[4][0]}}).at("prob"), files.outputs[4][0]));
  request->release();
  EXPECT_THROW(request->forward(), ModelError);
}

// ---- on a GPU ---------------------------------------------------------------------------------

class ModelPoolGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::have_gpu()) GTEST_SKIP() << "no CUDA device (or CUDA not built): GPU pool tests skipped";
  }
};

TEST_F(ModelPoolGpu, FourThreadsSwitchAmongEightModelsWithinBudget) {
  const std::size_t budget = 3 * DeviceWeights::bytes_needed(small_net(kModels - 1));
  ASSERT_GT(4 * DeviceWeights::bytes_needed(small_net(0)), budget);
  run_switching_threads(Device::cuda(0), budget);
}

TEST_F(ModelPoolGpu, NetsShareOneUploadOfTheWeights) {
  const Graph graph = small_net(3);
  const std::shared_ptr<const DeviceWeights> resident = DeviceWeights::upload(graph, Device::cuda(0));
  EXPECT_EQ(resident->tensor_count(), 4u);
  EXPECT_EQ(resident->bytes(), DeviceWeights::bytes_needed(graph));
  for (const LayerSpec& l : graph.layers) {
    for (const Tensor& w : l.weights) {
      const Tensor* copy = resident->find(w);
      ASSERT_NE(copy, nullptr);
      EXPECT_EQ(copy->to(Device::cpu()).to_vector(), w.to_vector());
    }
  }
  NetOptions plain;
  plain.device = Device::cuda(0);
  NetOptions shared = plain;
  shared.device_weights = resident;
  Net reference(graph, plain), first(graph, shared), second(graph, shared);
  std::mt19937 rng(1);
  const Tensor input = random_tensor(kInputShape, rng, 1.0f);
  const Tensor want = reference.forward({{"data", input}}).at("prob");
  EXPECT_TRUE(close(first.forward({{"data", input}}).at("prob"), want));
  EXPECT_TRUE(close(second.forward({{"data", input}}).at("prob"), want));
  EXPECT_THROW(DeviceWeights::upload(graph, Device::cpu()), UnsupportedError);
}

}  // namespace
}  // namespace espresso
