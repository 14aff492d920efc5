// espresso_bench_context_replay: the context model's preloader against plain LRU (docs/context_model.md).
//
//   python3 scripts/simulate_requests.py --out /tmp/requests          # SIMULATED users, not real ones
//   espresso_bench_context_replay --train /tmp/requests/train.jsonl --test /tmp/requests/test.jsonl
//       [--data ../shared/data] [--budget-mb 64] [--device cpu] [--real-limit N] [--save context.esp]
//
// Trains the context model on the training days, saves it as .esp and loads it back, then replays the
// test days against a cache of real models under one byte budget:
//   LRU           plain least-recently-used (ModelPool's rule);
//   LRU+context   the same plus the Preloader: after each request the top-ranked models for that
//                 request's context that fit the budget are loaded ahead of the next requests;
//   LRU+popular   the same preloading from one fixed ranking (request counts of the training days),
//                 which shows what the context adds over popularity;
//   LRU+random    the same from a random ranking (a control that must not help).
// Each simulated model name stands for a real model file from ../shared/data (table kModels). Their
// sizes are ModelPool's byte counts; the load time of a miss and the inference time are measured on
// the device. The exact replay runs on the cache simulation (replay_cache); then the first
// --real-limit test requests run again through a real ModelPool under both LRU and LRU+context, where
// each miss really loads the file, to measure time-to-first-result and check the hit counts.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "espresso/context_model.h"
#include "espresso/espresso.h"
#include "espresso/model_pool.h"

namespace espresso {
namespace {

using Clock = std::chrono::steady_clock;
using serve::ContextModel;
using serve::Observation;
using serve::Preloader;
using serve::ReplayResult;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  return values[static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5)];
}

double mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return values.empty() ? 0.0 : sum / static_cast<double>(values.size());
}

// The real model file behind each simulated model name (several names share an architecture; each is
// a separate resident model in the pool).
struct ModelFile {
  const char* name;
  const char* model;
  const char* weights;
};
constexpr ModelFile kModels[] = {
    {"landmarks", "onnx/resnet18/model.onnx", ""},
    {"products", "onnx/resnet18/model.onnx", ""},
    {"plants", "onnx/mobilenet_v2/model.onnx", ""},
    {"food", "onnx/mobilenet_v2/model.onnx", ""},
    {"birds", "onnx/squeezenet1_1/model.onnx", ""},
    {"pets", "onnx/squeezenet1_1/model.onnx", ""},
    {"cars", "onnx/nin_cifar10/model.onnx", ""},
    {"faces", "onnx/nin_cifar10/model.onnx", ""},
    {"documents", "caffe/lenet/lenet.prototxt", "caffe/lenet/lenet_iter_10000.caffemodel"},
    {"digits", "onnx/mnist-1/model.onnx", ""},
};

struct Measured {
  std::size_t bytes = 0;
  double load_ms = 0;   // acquire() of an absent model in a fresh pool (median)
  double infer_ms = 0;  // one batch-1 inference on a held context (median)
};

struct Args {
  std::string train, test, data = "../shared/data", save;
  double budget_mb = 64;
  Device device = Device::cpu();
  std::size_t real_limit = 600;
  int repeats = 3;
  std::int64_t window_seconds = 600;
  serve::PreloaderOptions preload;
};

void run_inference(ModelRequest& request) {
  Session& session = request.session();
  for (const std::string& input : session.input_names()) {
    session.set_batch(1);
    session.input(input).copy_from(Tensor::zeros(session.input_shape(input)));
  }
  session.forward();
}

std::map<std::string, Measured> measure(
    const Args& args, const std::map<std::string, std::pair<std::string, std::string>>& files) {
  std::map<std::string, Measured> measured;
  for (const auto& [name, file] : files) {
    std::vector<double> loads, infers;
    Measured m;
    for (int r = 0; r < args.repeats; ++r) {
      ModelPool pool({.device = args.device, .budget_bytes = std::size_t{1} << 40});
      pool.add(name, file.first, file.second);
      const auto start = Clock::now();
      ModelRequest request = pool.acquire(name);
      loads.push_back(ms_since(start));
      run_inference(request);  // the first inference plans the context
      const auto infer_start = Clock::now();
      run_inference(request);
      infers.push_back(ms_since(infer_start));
      m.bytes = pool.stats().resident_bytes;
    }
    m.load_ms = percentile(loads, 0.5);
    m.infer_ms = percentile(infers, 0.5);
    measured[name] = m;
  }
  return measured;
}

struct Row {
  std::string policy;
  ReplayResult replay;
  std::vector<double> ttfr_ms;  // per request: the load it waited for (if any) plus inference
};

Row estimated_row(const std::string& policy, ReplayResult replay, const std::vector<Observation>& test,
                  const std::map<std::string, Measured>& measured) {
  Row row{policy, std::move(replay), {}};
  for (std::size_t i = 0; i < test.size(); ++i) {
    const Measured& m = measured.at(test[i].model);
    row.ttfr_ms.push_back((row.replay.hit[i] ? 0.0 : m.load_ms) + m.infer_ms);
  }
  return row;
}

struct RealRun {
  std::size_t hits = 0, preloads = 0;
  std::vector<double> wait_ms, ttfr_ms;
  double preload_ms = 0;
};

RealRun real_replay(const Args& args, const std::map<std::string, std::pair<std::string, std::string>>& files,
                    const std::vector<Observation>& requests, std::size_t budget,
                    const Preloader* preloader) {
  ModelPool pool({.device = args.device, .budget_bytes = budget});
  for (const auto& [name, file] : files) pool.add(name, file.first, file.second);
  RealRun run;
  std::optional<serve::PreloadWindow> window;
  if (preloader) window.emplace(*preloader, args.window_seconds);
  for (const Observation& request : requests) {
    const bool hit = pool.resident(request.model);
    const auto start = Clock::now();
    ModelRequest held = pool.acquire(request.model);
    const double wait = ms_since(start);
    run_inference(held);
    run.ttfr_ms.push_back(ms_since(start));
    held.release();
    run.wait_ms.push_back(wait);
    if (hit) ++run.hits;
    if (preloader) {
      const std::vector<std::string> plan = window->after_request(request.context);
      const auto preload_start = Clock::now();
      for (auto it = plan.rbegin(); it != plan.rend(); ++it) {
        if (!pool.resident(*it)) ++run.preloads;
        pool.acquire(*it).release();
      }
      run.preload_ms += ms_since(preload_start);
    }
  }
  return run;
}

int run(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error("missing value after " + flag);
      return argv[++i];
    };
    if (flag == "--train")
      args.train = value();
    else if (flag == "--test")
      args.test = value();
    else if (flag == "--data")
      args.data = value();
    else if (flag == "--save")
      args.save = value();
    else if (flag == "--budget-mb")
      args.budget_mb = std::stod(value());
    else if (flag == "--device")
      args.device = Device::parse(value());
    else if (flag == "--real-limit")
      args.real_limit = std::stoul(value());
    else if (flag == "--repeats")
      args.repeats = std::stoi(value());
    else if (flag == "--window")
      args.window_seconds = std::stoll(value());
    else if (flag == "--min-score")
      args.preload.min_score = std::stod(value());
    else if (flag == "--budget-fraction")
      args.preload.budget_fraction = std::stod(value());
    else
      throw Error("unknown option " + flag);
  }
  if (args.train.empty() || args.test.empty()) throw Error("--train and --test are required");

  std::map<std::string, std::pair<std::string, std::string>> files;
  for (const ModelFile& f : kModels) {
    const std::string model = args.data + "/" + f.model;
    const std::string weights = *f.weights ? args.data + "/" + f.weights : "";
    if (!std::filesystem::exists(model)) {
      std::cerr << "skipped: " << model << " is missing (set --data to the shared data folder)\n";
      return 77;
    }
    files[f.name] = {model, weights};
  }

  const std::vector<Observation> train = serve::read_request_log(args.train);
  const std::vector<Observation> test = serve::read_request_log(args.test);
  for (const auto* log : {&train, &test}) {
    for (const Observation& o : *log) {
      if (!files.count(o.model))
        throw Error("the log names model '" + o.model + "', which has no model file");
    }
  }

  ContextModel trained;
  const serve::TrainReport report = trained.train(train);
  const std::string saved =
      args.save.empty() ? (std::filesystem::temp_directory_path() / "espresso_context_model.esp").string()
                        : args.save;
  trained.save(saved);
  auto model = std::make_shared<const ContextModel>(ContextModel::load(saved));
  std::printf(
      "context model: %zu training requests, %zu models, %lld iterations in %.2f s, loss %.3f -> %.3f, "
      "train top-1 %.3f; saved to %s (%zu bytes)\n",
      report.examples, report.models, static_cast<long long>(report.iterations), report.seconds,
      report.first_loss, report.final_loss, report.train_accuracy, saved.c_str(),
      static_cast<std::size_t>(std::filesystem::file_size(saved)));
  std::size_t test_top1 = 0;
  for (const Observation& o : test) test_top1 += model->rank(o.context).front().model == o.model ? 1 : 0;
  std::printf("test top-1 of the ranking: %.3f over %zu requests\n",
              static_cast<double>(test_top1) / static_cast<double>(test.size()), test.size());

  const auto measured = measure(args, files);
  std::map<std::string, std::size_t> sizes;
  std::size_t total = 0;
  std::printf(
      "\n| model | file | bytes resident | load (acquire) ms | inference ms |\n|---|---|---:|---:|---:|\n");
  for (const auto& [name, m] : measured) {
    sizes[name] = m.bytes;
    total += m.bytes;
    std::printf("| %s | %s | %zu | %.1f | %.2f |\n", name.c_str(),
                std::filesystem::path(files.at(name).first).lexically_relative(args.data).c_str(), m.bytes,
                m.load_ms, m.infer_ms);
  }
  const auto budget = static_cast<std::size_t>(args.budget_mb * 1024 * 1024);
  std::printf("\nbudget %.1f MiB of %.1f MiB for all %zu models, device %s\n", args.budget_mb,
              static_cast<double>(total) / (1024 * 1024), sizes.size(), args.device.str().c_str());

  std::map<std::string, double> counts;
  for (const Observation& o : train) counts[o.model] += 1.0 / static_cast<double>(train.size());
  const serve::Ranker popular = [counts](const serve::RequestContext&) {
    std::vector<serve::ModelScore> ranked;
    for (const auto& [name, share] : counts) ranked.push_back({name, share});
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
    return ranked;
  };
  auto rng = std::make_shared<std::mt19937>(7);
  const serve::Ranker random_ranking = [rng, names = model->models()](const serve::RequestContext&) {
    std::vector<serve::ModelScore> ranked;
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (const std::string& name : names) ranked.push_back({name, u(*rng)});
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
    return ranked;
  };
  const Preloader context_preloader(model, sizes, budget, args.preload);
  const Preloader popular_preloader(popular, sizes, budget, args.preload);
  serve::PreloaderOptions random_options = args.preload;
  random_options.min_score = 0.0;
  const Preloader random_preloader(random_ranking, sizes, budget, random_options);

  std::vector<Row> rows;
  rows.push_back(estimated_row("LRU", serve::replay_cache(test, sizes, budget), test, measured));
  rows.push_back(estimated_row(
      "LRU+context", serve::replay_cache(test, sizes, budget, &context_preloader, args.window_seconds), test,
      measured));
  rows.push_back(estimated_row(
      "LRU+popular", serve::replay_cache(test, sizes, budget, &popular_preloader, args.window_seconds), test,
      measured));
  rows.push_back(estimated_row(
      "LRU+random", serve::replay_cache(test, sizes, budget, &random_preloader, args.window_seconds), test,
      measured));
  std::printf("\nall %zu test requests (cache simulation; a miss costs the measured load time):\n\n",
              test.size());
  std::printf(
      "| policy | resident-hit rate | misses | preloads | time-to-first-result mean ms | p50 | p95 |\n"
      "|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& row : rows) {
    std::printf("| %s | %.3f | %zu | %zu | %.1f | %.1f | %.1f |\n", row.policy.c_str(), row.replay.hit_rate(),
                row.replay.loads_on_request, row.replay.preloads, mean(row.ttfr_ms),
                percentile(row.ttfr_ms, 0.5), percentile(row.ttfr_ms, 0.95));
  }

  if (args.real_limit > 0) {
    const std::vector<Observation> head(
        test.begin(), test.begin() + static_cast<std::ptrdiff_t>(std::min(args.real_limit, test.size())));
    std::printf(
        "\nthe first %zu test requests through a real ModelPool (each miss loads the file; inference "
        "run):\n\n",
        head.size());
    std::printf(
        "| policy | resident-hit rate | same hits as the simulation | time-to-first-result mean ms | p50 | "
        "p95 | "
        "preloads | preload time s |\n|---|---:|---|---:|---:|---:|---:|---:|\n");
    const ReplayResult lru_sim = serve::replay_cache(head, sizes, budget);
    const ReplayResult ctx_sim =
        serve::replay_cache(head, sizes, budget, &context_preloader, args.window_seconds);
    for (const auto& [name, preloader, sim] :
         {std::tuple{"LRU", static_cast<const Preloader*>(nullptr), &lru_sim},
          std::tuple{"LRU+context", &context_preloader, &ctx_sim}}) {
      const RealRun real = real_replay(args, files, head, budget, preloader);
      std::printf("| %s | %.3f | %s | %.1f | %.1f | %.1f | %zu | %.1f |\n", name,
                  static_cast<double>(real.hits) / static_cast<double>(head.size()),
                  real.hits == sim->hits ? "yes" : "NO", mean(real.ttfr_ms), percentile(real.ttfr_ms, 0.5),
                  percentile(real.ttfr_ms, 0.95), real.preloads, real.preload_ms / 1000.0);
    }
  }
  return 0;
}

}  // namespace
}  // namespace espresso

int main(int argc, char** argv) {
  try {
    return espresso::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "espresso_bench_context_replay: " << e.what() << "\n";
    return 1;
  }
}
