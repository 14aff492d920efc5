// `espresso serve --models NAME=PATH|REF ... [--device D] [--memory-budget BYTES] [--listen ADDR] ...`: the
// inference server (Open Inference Protocol / KServe v2 REST, metrics, the store's catalog JSON;
// docs/serve.md).
#include "espresso/serve.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <thread>

#include "common.h"

namespace espresso::cli {
namespace {

struct ServeCliOptions {
  std::vector<std::string> models;
  std::string device = "cpu";
  std::string memory_budget = "1G";
  std::string listen = "127.0.0.1:8000";
  int max_batch = 32;
  int max_queue_delay_us = 2000;
  int max_concurrency = 256;
  int workers = 1;
  int threads = 0;
  int http_threads = 128;
  std::string max_body = "64M";
  int timeout = 10;
  std::string pad_batches = "gpu";
  std::string context_log;
  std::string context_model;
  std::int64_t retrain_every = 0;
  std::int64_t preload_window = 600;
};

int stop_pipe[2] = {-1, -1};

void on_stop_signal(int) {
  const char byte = 1;
  // Only async-signal-safe calls here; a full pipe means a stop is already on its way.
  [[maybe_unused]] const ssize_t written = ::write(stop_pipe[1], &byte, 1);
}

// "1073741824", "512M", "2G", "64K" (powers of 1024).
std::size_t parse_bytes(const std::string& text, const std::string& option) {
  std::size_t used = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (const std::exception&) {
    throw UnsupportedError(option + " '" + text + "': expected a number of bytes (suffix K, M or G allowed)");
  }
  const std::string suffix = text.substr(used);
  int shift = 0;
  if (suffix == "K" || suffix == "k")
    shift = 10;
  else if (suffix == "M" || suffix == "m")
    shift = 20;
  else if (suffix == "G" || suffix == "g")
    shift = 30;
  else if (!suffix.empty())
    throw UnsupportedError(option + " '" + text + "': unknown suffix '" + suffix + "' (K, M or G)");
  return static_cast<std::size_t>(value) << shift;
}

int run_serve(const ServeCliOptions& o) {
  serve::ServerOptions options;
  parse_listen(o.listen, options.host, options.port);
  options.device = Device::parse(o.device);
  options.memory_budget_bytes = parse_bytes(o.memory_budget, "--memory-budget");
  options.max_body_bytes = parse_bytes(o.max_body, "--max-body-bytes");
  options.max_batch = o.max_batch;
  options.max_queue_delay = std::chrono::microseconds(o.max_queue_delay_us);
  options.max_concurrency = o.max_concurrency;
  options.workers_per_model = o.workers;
  options.pad_batches = o.pad_batches == "on"    ? serve::ServerOptions::PadBatches::always
                        : o.pad_batches == "off" ? serve::ServerOptions::PadBatches::never
                                                 : serve::ServerOptions::PadBatches::on_gpu;
  options.http_threads = o.http_threads;
  options.read_timeout = std::chrono::seconds(o.timeout);
  options.write_timeout = std::chrono::seconds(o.timeout);
  options.context_log = o.context_log;
  options.context_model = o.context_model;
  options.retrain_every = o.retrain_every;
  options.preload_window_seconds = o.preload_window;
  apply_threads(o.threads);
  std::vector<serve::ModelSpec> models;
  for (const std::string& text : o.models) models.push_back(serve::ModelSpec::parse(text));
  serve::Server server(options, models);
  const int port = server.bind();
  // SIGINT and SIGTERM stop the server cleanly (requests in flight finish). Threads started before
  // main (OpenBLAS's) do not block them, so a handler takes them on any thread and wakes a waiting one.
  if (::pipe(stop_pipe) != 0) throw UnsupportedError("serve: cannot create a pipe for the signal handler");
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  std::thread([&server] {
    char byte = 0;
    while (::read(stop_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    server.stop();
  }).detach();
  std::printf("listening on %s:%d (%zu model(s) on %s, budget %zu bytes)\n", options.host.c_str(), port,
              models.size(), options.device.str().c_str(), options.memory_budget_bytes);
  std::fflush(stdout);
  server.run();
  std::printf("stopped\n");
  return 0;
}

}  // namespace

Verb add_serve_verb(CLI::App& app) {
  auto o = std::make_shared<ServeCliOptions>();
  CLI::App* command =
      app.add_subcommand("serve", "Serve models over the Open Inference Protocol (KServe v2 REST)");
  command
      ->add_option(
          "--models", o->models,
          "NAME=PATH, NAME=PROTOTXT,CAFFEMODEL or NAME=REGISTRY/NAME:VERSION (pulled on first request); "
          "repeatable")
      ->required();
  command->add_option("--device", o->device, "cpu, cuda, cuda:N, vulkan or vulkan:N")->capture_default_str();
  command
      ->add_option("--memory-budget", o->memory_budget,
                   "Bytes of weights resident at once (K, M, G suffixes)")
      ->capture_default_str();
  command->add_option("--listen", o->listen, "HOST:PORT (port 0: any free port, printed)")
      ->capture_default_str();
  command->add_option("--max-batch", o->max_batch, "Samples run as one batch (1: no batching)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  command
      ->add_option("--max-queue-delay-us", o->max_queue_delay_us, "How long a batch waits for more requests")
      ->capture_default_str()
      ->check(CLI::Range(0, 10000000));
  command->add_option("--max-concurrency", o->max_concurrency, "Inference requests in flight; more get 429")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  command->add_option("--workers", o->workers, "Batches of one model running at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  command
      ->add_option("--pad-batches", o->pad_batches,
                   "Zero-pad batches to powers of two so plans are reused: gpu (on GPUs only), on, off")
      ->capture_default_str()
      ->check(CLI::IsMember({"gpu", "on", "off"}));
  add_threads_option(*command, o->threads);
  command->add_option("--http-threads", o->http_threads, "Connections served at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  command->add_option("--max-body-bytes", o->max_body, "Larger request bodies get 413 (K, M, G suffixes)")
      ->capture_default_str();
  command->add_option("--timeout", o->timeout, "Seconds a client may take to send or receive")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  command->add_option("--context-log", o->context_log,
                      "Append (context, model) of each request with an X-Espresso-Context header to FILE");
  command->add_option("--context-model", o->context_model,
                      "A trained context model (.esp): POST /api/v1/recommend and background preloading");
  command
      ->add_option("--retrain-every", o->retrain_every,
                   "Retrain the context model from --context-log after every N logged requests (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 40));
  command
      ->add_option("--preload-window", o->preload_window,
                   "Seconds of recent requests whose contexts the preloader averages")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{86400} * 365));
  return {command, [o] { return run_serve(*o); }};
}

}  // namespace espresso::cli
