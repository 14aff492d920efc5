// espresso_bench_load: how fast .esp models become usable and how the ModelPool serves them.
//
//   espresso_bench_load [--device cuda:0] [--repeats 7] [--iterations 100] NAME=PATH...
//
// Prints one JSON object per line:
//   cold:       a fresh pool opens the file, puts the weights on the device and finishes the first
//               inference (median over repeats), with the same steps timed one by one through the
//               direct API (read+verify, upload, context+first inference);
//   switch:     acquire() of another resident model, that acquire plus an inference, and an inference
//               on a held context, round robin over the models;
//   concurrent: every model on its own thread at once against the same work one model after another.
// Cold loads run twice: with the file in the page cache, and with it dropped from the page cache
// first (posix_fadvise), so that it is read from disk. The process's CUDA, cuBLAS and cuDNN
// start-up happens once before any timing, since it is no model's cost.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "espresso/espresso.h"
#include "espresso/model_pool.h"
#include "espresso/package.h"

namespace espresso {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[index];
}

double median(std::vector<double> values) { return percentile(std::move(values), 0.5); }

struct ModelFile {
  std::string name;
  std::string path;
};

struct Options {
  Device device = Device::cuda(0);
  int repeats = 7;
  int iterations = 100;
  std::vector<ModelFile> models;
};

[[noreturn]] void usage(const std::string& problem) {
  throw UnsupportedError(problem +
                         "\nusage: espresso_bench_load [--device cuda:0] [--repeats N] [--iterations N] "
                         "NAME=PATH...");
}

int positive(const std::string& flag, const char* text) {
  const int value = std::atoi(text);
  if (value <= 0) usage(flag + " needs a positive number, not '" + text + "'");
  return value;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--device" && has_value) {
      options.device = Device::parse(argv[++i]);
    } else if (arg == "--repeats" && has_value) {
      options.repeats = positive(arg, argv[++i]);
    } else if (arg == "--iterations" && has_value) {
      options.iterations = positive(arg, argv[++i]);
    } else if (const auto eq = arg.find('='); eq != std::string::npos && eq > 0 && arg[0] != '-') {
      options.models.push_back({arg.substr(0, eq), arg.substr(eq + 1)});
    } else {
      usage("unknown argument '" + arg + "'");
    }
  }
  if (options.models.empty()) usage("no models given");
  return options;
}

void drop_from_page_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw FileError(path + ": cannot open (" + std::strerror(errno) + ")");
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void fill_inputs(Session& net, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const std::string& name : net.input_names()) {
    Tensor host = Tensor::empty(net.input_shape(name));
    float* values = host.data<float>();
    for (std::int64_t k = 0; k < host.numel(); ++k) values[k] = uniform(rng);
    net.input(name).copy_from(host);
  }
}

ModelPoolOptions pool_options(const Options& options) {
  ModelPoolOptions pool;
  pool.device = options.device;
  pool.budget_bytes = std::size_t{1} << 40;
  return pool;
}

// One untimed inference of the first model: process start-up (driver, libraries, lazily loaded kernels
// shared by all models) is not a model's cost.
void warm_up_process(const Options& options) {
  ModelPool pool(pool_options(options));
  pool.add("warm-up", options.models.front().path);
  ModelRequest request = pool.acquire("warm-up");
  std::mt19937 rng(1);
  fill_inputs(request.session(), rng);
  request.forward();
}

void bench_cold(const Options& options, const ModelFile& model, bool evict) {
  std::mt19937 rng(2);
  std::vector<double> total, read, upload, first_inference;
  std::size_t weight_bytes = 0;
  for (int r = 0; r < options.repeats; ++r) {
    if (evict) drop_from_page_cache(model.path);
    const auto start = Clock::now();
    ModelPool pool(pool_options(options));
    pool.add(model.name, model.path);
    ModelRequest request = pool.acquire(model.name);
    fill_inputs(request.session(), rng);
    request.forward();
    total.push_back(ms_since(start));
    weight_bytes = pool.stats().resident_bytes;
  }
  for (int r = 0; r < options.repeats; ++r) {
    if (evict) drop_from_page_cache(model.path);
    auto start = Clock::now();
    const Graph graph = load_package(model.path);
    read.push_back(ms_since(start));
    start = Clock::now();
    auto resident = std::make_shared<const Model>(graph, options.device);
    upload.push_back(ms_since(start));
    start = Clock::now();
    Session session(resident);
    fill_inputs(session, rng);
    session.forward();
    first_inference.push_back(ms_since(start));
  }
  std::printf(
      "{\"bench\": \"cold\", \"model\": \"%s\", \"page_cache\": \"%s\", \"weight_bytes\": %zu, "
      "\"median_ms\": %.3f, "
      "\"min_ms\": %.3f, \"read_verify_ms\": %.3f, \"upload_ms\": %.3f, \"first_inference_ms\": %.3f}\n",
      model.name.c_str(), evict ? "evicted" : "cached", weight_bytes, median(total), percentile(total, 0.0),
      median(read), median(upload), median(first_inference));
}

void bench_switch(const Options& options) {
  ModelPool pool(pool_options(options));
  std::mt19937 rng(3);
  for (const ModelFile& m : options.models) {
    pool.add(m.name, m.path);
    ModelRequest request = pool.acquire(m.name);
    fill_inputs(request.session(), rng);
    request.forward();
  }
  const ModelPoolStats before = pool.stats();
  std::vector<double> acquire_ms, switch_and_run_ms;
  for (int i = 0; i < options.iterations * static_cast<int>(options.models.size()); ++i) {
    const ModelFile& m = options.models[static_cast<std::size_t>(i) % options.models.size()];
    const auto start = Clock::now();
    ModelRequest request = pool.acquire(m.name);
    acquire_ms.push_back(ms_since(start));
    request.forward();
    switch_and_run_ms.push_back(ms_since(start));
  }
  const ModelPoolStats after = pool.stats();
  for (const ModelFile& m : options.models) {
    ModelRequest request = pool.acquire(m.name);
    std::vector<double> run_ms;
    for (int i = 0; i < options.iterations; ++i) {
      const auto start = Clock::now();
      request.forward();
      run_ms.push_back(ms_since(start));
    }
    std::printf("{\"bench\": \"held\", \"model\": \"%s\", \"median_ms\": %.4f}\n", m.name.c_str(),
                median(run_ms));
  }
  std::printf(
      "{\"bench\": \"switch\", \"models\": %zu, \"switches\": %zu, \"acquire_median_ms\": %.4f, "
      "\"acquire_p99_ms\": "
      "%.4f, \"switch_and_run_median_ms\": %.4f, \"loads_during_switching\": %lld, \"contexts_created\": "
      "%lld}\n",
      options.models.size(), acquire_ms.size(), median(acquire_ms), percentile(acquire_ms, 0.99),
      median(switch_and_run_ms), static_cast<long long>(after.loads - before.loads),
      static_cast<long long>(after.contexts_created - before.contexts_created));
}

void bench_concurrent(const Options& options) {
  ModelPool pool(pool_options(options));
  std::mt19937 rng(4);
  for (const ModelFile& m : options.models) {
    pool.add(m.name, m.path);
    ModelRequest request = pool.acquire(m.name);
    fill_inputs(request.session(), rng);
    request.forward();
  }
  auto run_model = [&](const ModelFile& m) {
    ModelRequest request = pool.acquire(m.name);
    for (int i = 0; i < options.iterations; ++i) request.forward();
  };
  auto start = Clock::now();
  for (const ModelFile& m : options.models) run_model(m);
  const double sequential_ms = ms_since(start);
  start = Clock::now();
  std::vector<std::thread> threads;
  for (const ModelFile& m : options.models) threads.emplace_back(run_model, std::cref(m));
  for (std::thread& t : threads) t.join();
  const double concurrent_ms = ms_since(start);
  const double inferences =
      static_cast<double>(options.iterations) * static_cast<double>(options.models.size());
  std::printf(
      "{\"bench\": \"concurrent\", \"models\": %zu, \"inferences\": %.0f, \"sequential_ms\": %.2f, "
      "\"concurrent_ms\": %.2f, \"sequential_per_s\": %.1f, \"concurrent_per_s\": %.1f}\n",
      options.models.size(), inferences, sequential_ms, concurrent_ms, inferences / sequential_ms * 1000.0,
      inferences / concurrent_ms * 1000.0);
}

int run(int argc, char** argv) {
  const Options options = parse(argc, argv);
  warm_up_process(options);
  for (const bool evict : {false, true}) {
    for (const ModelFile& m : options.models) bench_cold(options, m, evict);
  }
  bench_switch(options);
  bench_concurrent(options);
  return 0;
}

}  // namespace
}  // namespace espresso

int main(int argc, char** argv) {
  try {
    return espresso::run(argc, argv);
  } catch (const espresso::Error& e) {
    std::cerr << "espresso_bench_load: " << e.what() << "\n";
    return 1;
  }
}
