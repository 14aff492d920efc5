// `espresso bench MODEL`: inference latency and throughput per batch size on one device.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <sstream>

#include "common.h"
#include "espresso/espresso.h"

namespace espresso::cli {
namespace {

struct BenchOptions {
  ModelOptions model;
  std::string batches = "1,64,256";
  int iterations = 100;
  int warmup = 10;
  int threads = 0;
  bool json = false;
  bool no_cuda_graphs = false;
};

std::vector<std::int64_t> parse_batches(const std::string& text) {
  std::vector<std::int64_t> batches;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 6 ||
        std::stoll(item) == 0) {
      throw UnsupportedError("--batch: '" + text + "' is not a comma-separated list of positive sizes");
    }
    batches.push_back(std::stoll(item));
  }
  return batches;
}

int run_bench(const BenchOptions& options) {
  apply_threads(options.threads);
  const std::vector<std::int64_t> batches = parse_batches(options.batches);
  NetOptions net_options;
  net_options.cuda_graphs = !options.no_cuda_graphs;
  Net net = open_net(options.model, net_options);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  if (!options.json) {
    std::printf("%s on %s (%d CPU threads)\n", options.model.model.c_str(), options.model.device.c_str(),
                num_threads());
    std::printf("%8s %12s %12s %14s\n", "batch", "median ms", "p90 ms", "images/s");
  }
  for (std::int64_t batch : batches) {
    net.set_batch(batch);
    const std::vector<std::string> inputs = net.input_names();
    std::vector<Tensor> staging(inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const std::string& name = inputs[i];
      Tensor& host = host_input(net, name, staging[i]);
      float* values = host.data<float>();
      for (std::int64_t k = 0; k < host.numel(); ++k) values[k] = uniform(rng);
      upload_input(net, name, staging[i]);
    }
    for (int i = 0; i < options.warmup; ++i) net.forward();
    std::vector<double> ms;
    for (int i = 0; i < options.iterations; ++i) {
      const auto start = std::chrono::steady_clock::now();
      net.forward();  // returns once the device is done
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    const double p90 = ms[std::min(ms.size() - 1, ms.size() * 9 / 10)];
    const double rate = static_cast<double>(batch) * 1000.0 / median;
    if (options.json) {
      std::printf(
          "{\"framework\": \"espresso\", \"mode\": \"%s\", \"model\": \"%s\", \"device\": \"%s\", "
          "\"batch\": %lld, \"median_ms\": %.4f, \"p90_ms\": %.4f, \"images_per_s\": %.1f}\n",
          options.model.device == "cpu" || options.no_cuda_graphs ? "eager" : "cuda_graph", options.model.model.c_str(),
          options.model.device.c_str(), static_cast<long long>(batch), median, p90, rate);
    } else {
      std::printf("%8lld %12.4f %12.4f %14.1f\n", static_cast<long long>(batch), median, p90, rate);
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

Verb add_bench_verb(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* command = app.add_subcommand("bench", "Measure inference latency and throughput per batch size");
  add_model_options(*command, options->model);
  add_device_option(*command, options->model);
  command->add_option("--batch", options->batches, "Comma-separated batch sizes")->capture_default_str();
  command->add_option("--iterations", options->iterations, "Timed forward passes per batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--warmup", options->warmup, "Untimed forward passes first")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  add_threads_option(*command, options->threads);
  command->add_flag("--json", options->json, "One JSON object per batch size");
  command->add_flag("--no-cuda-graphs", options->no_cuda_graphs, "On a GPU, launch every kernel each time");
  return {command, [options] { return run_bench(*options); }};
}

}  // namespace espresso::cli
