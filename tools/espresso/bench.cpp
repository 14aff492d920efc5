// `espresso bench MODEL`: inference latency and throughput per batch size on one device, with
// --compare the inference and training throughput and energy per image of several devices, or with
// --train the training throughput and peak device memory on one device.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <sstream>

#include "common.h"
#include "energy.h"
#include "espresso/devices.h"
#include "espresso/espresso.h"
#include "espresso/solver.h"
#include "memory_report.h"

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
  std::string compare;  // "cpu,cuda": devices to compare, training included
  bool train = false;   // training steps only, on --device
  bool report_memory = false;  // --train: the training net's memory, planned vs naive
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

std::vector<Device> parse_devices(const std::string& text) {
  std::vector<Device> devices;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) devices.push_back(Device::parse(item));
  if (devices.size() < 2) throw UnsupportedError("--compare: name at least two devices, e.g. cpu,cuda");
  return devices;
}

// The size of the table an Embed layer looks `input` up in (its values must be row indices), or 0.
std::int64_t embed_rows(const Graph& graph, const std::string& input) {
  for (const LayerSpec& layer : graph.layers) {
    if (layer.type == "Embed" && !layer.inputs.empty() && layer.inputs[0] == input)
      return layer.attrs.get_int("input_dim", 0);
  }
  return 0;
}

// Uniform values in [-1, 1), or random row indices for inputs an Embed layer reads (a character
// model's text).
void fill_random(Net& net, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const std::string& name : net.input_names()) {
    Tensor staging;
    Tensor& host = host_input(net, name, staging);
    float* values = host.data<float>();
    const std::int64_t rows = embed_rows(net.graph(), name);
    std::uniform_int_distribution<std::int64_t> index(0, std::max<std::int64_t>(rows, 1) - 1);
    for (std::int64_t k = 0; k < host.numel(); ++k)
      values[k] = rows > 0 ? static_cast<float>(index(rng)) : uniform(rng);
    upload_input(net, name, staging);
  }
}

struct Timing {
  double median_ms = 0.0;
  double p90_ms = 0.0;
  double seconds = 0.0;  // of the timed loop
  std::int64_t runs = 0;
};

// Runs `step` (which returns its own duration in ms) at least `iterations` times and for at least
// `min_seconds`, after `warmup` untimed runs.
Timing time_runs(const std::function<double()>& step, int warmup, int iterations, double min_seconds) {
  for (int i = 0; i < warmup; ++i) step();
  std::vector<double> ms;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0.0;
  while (static_cast<int>(ms.size()) < iterations || (elapsed < min_seconds && ms.size() < 100000)) {
    ms.push_back(step());
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[std::min(ms.size() - 1, ms.size() * 9 / 10)], elapsed,
          static_cast<std::int64_t>(ms.size())};
}

int run_latency(const BenchOptions& options) {
  const std::vector<std::int64_t> batches = parse_batches(options.batches);
  NetOptions net_options;
  net_options.cuda_graphs = !options.no_cuda_graphs;
  Net net = open_net(options.model, net_options);
  std::mt19937 rng(1);
  if (!options.json) {
    std::printf("%s on %s (%d CPU threads)\n", options.model.model.c_str(), options.model.device.c_str(),
                num_threads());
    std::printf("%8s %12s %12s %14s\n", "batch", "median ms", "p90 ms", "images/s");
  }
  for (std::int64_t batch : batches) {
    net.set_batch(batch);
    fill_random(net, rng);
    // On a GPU, CUDA events around the forward's queued work; on the CPU, its wall time.
    const Timing t = time_runs(
        [&] {
          net.forward();
          return net.last_forward_ms();
        },
        options.warmup, options.iterations, 0.0);
    const double rate = static_cast<double>(batch) * 1000.0 / t.median_ms;
    const Net::BatchSchedule schedule = net.batch_schedule();
    if (options.json) {
      std::printf(
          "{\"framework\": \"espresso\", \"mode\": \"%s\", \"model\": \"%s\", \"device\": \"%s\", "
          "\"precision\": \"%s\", \"batch\": %lld, \"median_ms\": %.4f, \"p90_ms\": %.4f, \"images_per_s\": "
          "%.1f, \"lanes\": %d, \"micro_batch\": %lld}\n",
          options.model.device == "cpu" || options.no_cuda_graphs ? "eager"
          : options.model.device.rfind("vulkan", 0) == 0          ? "recorded"
                                                                  : "cuda_graph",
          options.model.model.c_str(), options.model.device.c_str(), options.model.precision.c_str(),
          static_cast<long long>(batch), t.median_ms, t.p90_ms, rate, schedule.lanes,
          static_cast<long long>(schedule.micro_batch));
    } else {
      std::printf("%8lld %12.4f %12.4f %14.1f\n", static_cast<long long>(batch), t.median_ms, t.p90_ms, rate);
    }
    std::fflush(stdout);
  }
  return 0;
}

// The model made trainable: a final Softmax becomes SoftmaxWithLoss against random labels, any other
// output gets a EuclideanLoss against random targets, except that with `logits_are_scores` an output
// of shape (batch, classes) (a classifier without its Softmax, as ONNX exports have) gets the
// SoftmaxWithLoss too, like PyTorch's cross-entropy.
Graph training_graph(const Graph& inference, const Net& planned, std::int64_t batch,
                     bool logits_are_scores = false) {
  Graph g = inference;
  if (g.outputs.size() != 1) throw UnsupportedError("bench --compare: the model needs exactly one output");
  for (InputSpec& input : g.inputs) {
    if (input.shape.rank() > 0) input.shape[0] = batch;
  }
  const std::string output = g.outputs[0];
  auto producer = std::find_if(g.layers.begin(), g.layers.end(), [&](const LayerSpec& l) {
    return std::find(l.outputs.begin(), l.outputs.end(), output) != l.outputs.end();
  });
  if (producer == g.layers.end()) throw UnsupportedError("bench --compare: the model's output is an input");
  LayerSpec loss;
  loss.name = "bench_loss";
  loss.outputs = {"bench_loss"};
  if (producer->type == "Softmax" && producer->attrs.get_int("axis", 1) == 1) {
    const std::string scores = producer->inputs[0];
    // One label per position outside the class axis.
    std::vector<std::int64_t> labels{batch};
    const Shape shape = planned.tensor(output).shape();
    for (int axis = 2; axis < shape.rank(); ++axis) labels.push_back(shape[axis]);
    g.layers.erase(producer);
    loss.type = "SoftmaxWithLoss";
    loss.inputs = {scores, "bench_label"};
    g.inputs.push_back({"bench_label", Shape(labels)});
  } else if (logits_are_scores && planned.tensor(output).shape().rank() == 2) {
    loss.type = "SoftmaxWithLoss";
    loss.inputs = {output, "bench_label"};
    g.inputs.push_back({"bench_label", Shape({batch})});
  } else {
    loss.type = "EuclideanLoss";
    loss.inputs = {output, "bench_target"};
    Shape target = planned.tensor(output).shape();
    if (target.rank() > 0) target[0] = batch;
    g.inputs.push_back({"bench_target", target});
  }
  g.layers.push_back(loss);
  g.outputs = {"bench_loss"};
  return g;
}

struct CompareRow {
  std::string phase;
  Device device;
  std::int64_t batch = 0;
  Timing timing;
  std::optional<double> joules_per_image;
  std::string energy_note;  // the source, or why there is none
  std::string failure;      // set when the phase could not run on the device
};

std::optional<double> per_image(EnergyMeter* meter, double before, std::int64_t images) {
  if (meter == nullptr || images == 0) return std::nullopt;
  return (meter->joules() - before) / static_cast<double>(images);
}

// Random inputs and labels (sample i has class i mod classes), then training steps (forward, backward
// and an SGD update with momentum 0.9) timed by their wall time: the update returns once the device
// is done, so each step's time includes the device's work and the host's launching alike.
Timing time_training(Net& trainee, const Net& planned, std::mt19937& rng, int warmup, int iterations,
                     double min_seconds, Precision precision = Precision::fp32) {
  fill_random(trainee, rng);
  for (const std::string& name : trainee.input_names()) {
    if (name != "bench_label") continue;
    const Shape shape = trainee.input_shape(name);
    const std::int64_t classes = planned.tensor(planned.output_names()[0]).shape()[1];
    std::vector<float> labels(static_cast<std::size_t>(shape.numel()));
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<float>(static_cast<std::int64_t>(i) % classes);
    trainee.input(name).copy_from(Tensor::from(shape, labels));
  }
  train::SolverConfig config;
  config.base_lr = 1e-4;
  config.momentum = 0.9;
  train::Solver solver(config);
  std::vector<Parameter> params = trainee.parameters();
  std::int64_t iteration = 0;
  // fp16: dynamic loss scaling, as `espresso train` does it (and PyTorch's GradScaler in the peer).
  std::optional<train::LossScaler> scaler;
  if (precision == Precision::fp16) {
    scaler.emplace();
    trainee.set_loss_scale(scaler->scale());
  }
  return time_runs(
      [&] {
        const auto start = std::chrono::steady_clock::now();
        trainee.forward_backward();
        const float scale = trainee.loss_scale();
        if (!scaler || scaler->update(trainee.non_finite_gradient(), iteration)) {
          solver.update(params, iteration, scale);  // returns once the device is done
        }
        if (scaler) trainee.set_loss_scale(scaler->scale());
        ++iteration;
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      },
      warmup, iterations, min_seconds);
}

void compare_on(const BenchOptions& options, Device device, std::int64_t batch, std::vector<CompareRow>& rows) {
  std::string why_not;
  std::unique_ptr<EnergyMeter> meter = open_energy_meter(device, why_not);
  const std::string note = meter ? meter->source() : why_not;
  constexpr double kMinSeconds = 2.0;  // NVML's counter advances in steps of tens of milliseconds
  std::mt19937 rng(1);
  ModelOptions model = options.model;
  model.device = device.str();
  Net net = open_net(model);
  net.set_batch(batch);
  fill_random(net, rng);
  {
    const double before = meter ? meter->joules() : 0.0;
    const Timing t = time_runs(
        [&] {
          const auto start = std::chrono::steady_clock::now();
          net.forward();
          return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        },
        options.warmup, options.iterations, kMinSeconds);
    rows.push_back({"inference", device, batch, t, per_image(meter.get(), before, t.runs * batch), note, ""});
  }
  CompareRow training{"training", device, batch, {}, std::nullopt, note, ""};
  try {
    Net trainee(training_graph(net.graph(), net, batch), {.device = device, .training = true});
    const double before = meter ? meter->joules() : 0.0;
    training.timing = time_training(trainee, net, rng, std::min(options.warmup, 3),
                                    std::max(options.iterations / 4, 5), kMinSeconds);
    training.joules_per_image = per_image(meter.get(), before, training.timing.runs * batch);
  } catch (const Error& e) {
    training.failure = e.what();
  }
  rows.push_back(training);
}

std::string energy_text(const CompareRow& row) {
  if (!row.joules_per_image) return "n/a (" + row.energy_note + ")";
  char text[64];
  std::snprintf(text, sizeof(text), "%.4g J (%s)", *row.joules_per_image, row.energy_note.c_str());
  return text;
}

int run_compare(const BenchOptions& options) {
  const std::vector<Device> devices = parse_devices(options.compare);
  const std::vector<std::int64_t> batches = parse_batches(options.batches);
  std::vector<CompareRow> rows;
  for (std::int64_t batch : batches) {
    for (Device device : devices) compare_on(options, device, batch, rows);
  }
  if (!options.json) {
    std::printf("%s: %s, %d CPU threads; median wall time per batch (training: forward, backward and an SGD "
                "update)\n",
                options.model.model.c_str(), options.compare.c_str(), num_threads());
    std::printf("%-10s %-8s %6s %12s %12s %10s  %s\n", "phase", "device", "batch", "ms/batch", "images/s",
                "speed-up", "energy/image");
  }
  for (const CompareRow& row : rows) {
    // Speed-up against the first device on the list, same phase and batch.
    const auto base = std::find_if(rows.begin(), rows.end(), [&](const CompareRow& r) {
      return r.phase == row.phase && r.batch == row.batch && r.device == devices[0];
    });
    const double rate = row.failure.empty() ? static_cast<double>(row.batch) * 1000.0 / row.timing.median_ms : 0.0;
    const double speedup = base->failure.empty() && row.failure.empty() ? base->timing.median_ms / row.timing.median_ms : 0.0;
    if (options.json) {
      std::printf("{\"framework\": \"espresso\", \"phase\": \"%s\", \"model\": \"%s\", \"device\": \"%s\", "
                  "\"batch\": %lld, \"median_ms\": %.4f, \"images_per_s\": %.1f, \"speedup\": %.3f, "
                  "\"joules_per_image\": %s, \"energy_source\": \"%s\", \"error\": \"%s\"}\n",
                  row.phase.c_str(), options.model.model.c_str(), row.device.str().c_str(),
                  static_cast<long long>(row.batch), row.timing.median_ms, rate, speedup,
                  row.joules_per_image ? std::to_string(*row.joules_per_image).c_str() : "null",
                  row.energy_note.c_str(), row.failure.c_str());
    } else if (!row.failure.empty()) {
      std::printf("%-10s %-8s %6lld  not run: %s\n", row.phase.c_str(), row.device.str().c_str(),
                  static_cast<long long>(row.batch), row.failure.c_str());
    } else {
      std::printf("%-10s %-8s %6lld %12.3f %12.1f %9.2fx  %s\n", row.phase.c_str(), row.device.str().c_str(),
                  static_cast<long long>(row.batch), row.timing.median_ms, rate, speedup, energy_text(row).c_str());
    }
  }
  std::fflush(stdout);
  return 0;
}

// --train: per batch size, a training net of the model on --device, its steps timed (time_training)
// and the most device memory in use at once meanwhile (espresso's allocator: weights, gradients,
// solver history, activations and workspaces), from before the net was made.
int run_train(const BenchOptions& options) {
  const std::vector<std::int64_t> batches = parse_batches(options.batches);
  const Device device = Device::parse(options.model.device);
  const bool counts_memory = device.type != DeviceType::cpu;
  // The graph and its shapes come from the model planned on the CPU for one image (the training
  // graph sets the batch size; planning there at the full batch could time CPU convolution tactics
  // on it), so that nothing but the training net occupies the device.
  ModelOptions model = options.model;
  model.device = "cpu";
  model.precision = "fp32";
  const Precision precision = parse_precision(options.model.precision);
  Net planned = open_net(model);
  planned.set_batch(1);
  planned.summary();  // plans it, for its output's shape
  if (!options.json) {
    std::printf("%s training on %s (forward, backward, SGD with momentum; wall time per step, device "
                "synchronised)\n",
                options.model.model.c_str(), device.str().c_str());
    std::printf("%8s %12s %12s %14s %16s\n", "batch", "median ms", "p90 ms", "images/s", "peak device MiB");
  }
  for (std::int64_t batch : batches) {
    std::mt19937 rng(1);
    if (counts_memory) reset_peak_device_memory(device);
    Timing t;
    train::TrainingMemory memory;
    {
      Net trainee(training_graph(planned.graph(), planned, batch, true),
                  {.device = device, .training = true, .precision = precision});
      t = time_training(trainee, planned, rng, options.warmup, options.iterations, 0.0, precision);
      memory.train = trainee.memory();
      memory.solver_history_bytes = memory.train.weight_bytes;  // SGD's momentum: one blob per weight
    }
    const DeviceMemoryUse use = counts_memory ? device_memory_use(device) : DeviceMemoryUse{};
    const double peak_mib = static_cast<double>(use.peak_bytes) / (1 << 20);
    const double rate = static_cast<double>(batch) * 1000.0 / t.median_ms;
    if (options.json) {
      std::printf(
          "{\"framework\": \"espresso\", \"phase\": \"training\", \"model\": \"%s\", \"device\": "
          "\"%s\", \"precision\": \"%s\", \"batch\": %lld, \"median_ms\": %.4f, \"p90_ms\": %.4f, "
          "\"images_per_s\": %.1f, \"peak_device_mib\": %s}\n",
          options.model.model.c_str(), device.str().c_str(), precision_name(precision),
          static_cast<long long>(batch), t.median_ms, t.p90_ms, rate,
          counts_memory ? std::to_string(peak_mib).c_str() : "null");
    } else {
      std::printf("%8lld %12.4f %12.4f %14.1f %16s\n", static_cast<long long>(batch), t.median_ms, t.p90_ms, rate,
                  counts_memory ? std::to_string(static_cast<long long>(peak_mib + 0.5)).c_str() : "n/a");
      if (options.report_memory) {
        std::ostringstream report;
        print_training_memory(memory, report);
        if (counts_memory) print_peak_by_purpose(use, report);
        std::fputs(report.str().c_str(), stdout);
      }
    }
    std::fflush(stdout);
  }
  return 0;
}

int run_bench(const BenchOptions& options) {
  apply_threads(options.threads);
  if (options.train) return run_train(options);
  return options.compare.empty() ? run_latency(options) : run_compare(options);
}

}  // namespace

Verb add_bench_verb(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* command =
      app.add_subcommand("bench", "Measure inference latency and throughput per batch size, or compare devices");
  add_model_options(*command, options->model);
  add_device_option(*command, options->model);
  add_precision_option(*command, options->model);
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
  command->add_option("--compare", options->compare,
                      "Devices to compare (e.g. cpu,cuda): inference and training throughput, speed-up and "
                      "energy per image")
      ->excludes("--device");
  command->add_flag("--train", options->train,
                    "Time training steps (forward, backward, SGD update) on --device instead, with the peak "
                    "device memory")
      ->excludes("--compare");
  command->add_flag("--report-memory", options->report_memory,
                    "With --train: the training net's memory by category, planned vs naive");
  return {command, [options] { return run_bench(*options); }};
}

}  // namespace espresso::cli
