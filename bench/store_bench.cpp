// Model store benchmark on loopback (bench/store_bench.sh runs it): pull throughput of a large
// package into an empty cache, and search latency over a catalog of synthetic model cards.
// Usage: espresso_bench_store WORK_DIR [PACKAGE_MB] [CARDS] [QUERIES]
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "espresso/espresso.h"
#include "espresso/package.h"
#include "espresso/store.h"

namespace fs = std::filesystem;
using espresso::store::sha256_digest;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string big_package(const fs::path& dir, int megabytes) {
  const std::int64_t inputs = 16384;
  const std::int64_t outputs = static_cast<std::int64_t>(megabytes) * 1000000 / (inputs * 4);
  espresso::Graph graph;
  graph.name = "big";
  graph.inputs = {{"data", espresso::Shape{1, inputs}}};
  espresso::LayerSpec ip;
  ip.name = "ip";
  ip.type = "InnerProduct";
  ip.inputs = {"data"};
  ip.outputs = {"ip"};
  ip.attrs.set("num_output", outputs);
  espresso::Tensor w = espresso::Tensor::empty(espresso::Shape{outputs, inputs});
  espresso::Tensor b = espresso::Tensor::empty(espresso::Shape{outputs});
  std::mt19937 random(1);
  for (std::int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = static_cast<float>(random() % 1000) * 1e-3f;
  for (std::int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] = 0.0f;
  ip.weights = {w, b};
  graph.layers = {ip};
  graph.outputs = {"ip"};
  graph.metadata.name = "big";
  graph.metadata.description = "synthetic large model";
  const std::string path = (dir / "big.esp").string();
  espresso::save_package(graph, path);
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s WORK_DIR [PACKAGE_MB] [CARDS] [QUERIES]\n", argv[0]);
    return 2;
  }
  const fs::path work = argv[1];
  const int megabytes = argc > 2 ? std::atoi(argv[2]) : 200;
  const int cards = argc > 3 ? std::atoi(argv[3]) : 10000;
  const int queries = argc > 4 ? std::atoi(argv[4]) : 1000;
  fs::remove_all(work);
  fs::create_directories(work);

  espresso::store::ServerOptions server_options;
  server_options.root = work / "root";
  server_options.port = 0;
  espresso::store::Server server(server_options);
  const int port = server.bind();
  std::thread serving([&] { server.run(); });
  const std::string registry = "127.0.0.1:" + std::to_string(port);

  // Pull throughput.
  const std::string package = big_package(work, megabytes);
  const double bytes = static_cast<double>(fs::file_size(package));
  espresso::store::ClientOptions push_options;
  push_options.cache = work / "push-cache";
  espresso::store::Client pusher(push_options);
  auto start = Clock::now();
  pusher.push(package, espresso::store::Reference::parse(registry + "/bench/big:1"));
  const double push_s = seconds_since(start);
  std::vector<double> pull_rates;
  for (int run = 0; run < 3; ++run) {
    espresso::store::ClientOptions options;
    options.cache = work / ("cache" + std::to_string(run));
    espresso::store::Client client(options);
    start = Clock::now();
    const auto result = client.pull(espresso::store::Reference::parse(registry + "/bench/big:1"));
    const double s = seconds_since(start);
    pull_rates.push_back(static_cast<double>(result.bytes_downloaded) / s / 1e6);
    fs::remove_all(options.cache);
  }
  std::sort(pull_rates.begin(), pull_rates.end());
  std::printf("package: %.1f MB; push %.2f s (%.0f MB/s incl. card and hashing)\n", bytes / 1e6, push_s, bytes / push_s / 1e6);
  std::printf("pull into an empty cache (download, SHA-256 while streaming, rename), 3 runs: %.0f / %.0f / %.0f MB/s (median %.0f)\n",
              pull_rates[0], pull_rates[1], pull_rates[2], pull_rates[1]);

  // Catalog: synthetic cards pushed as manifests over HTTP.
  const std::vector<std::string> words = {"resnet", "mobilenet", "lenet", "squeezenet", "vgg", "inception", "yolo",
                                          "ssd", "unet", "bert", "digits", "faces", "cars", "birds", "flowers",
                                          "medical", "satellite", "traffic", "speech", "depth", "segmentation",
                                          "detection", "classification", "quantized", "pruned", "distilled",
                                          "tiny", "large", "mnist", "cifar", "imagenet", "coco", "voc"};
  const std::vector<std::string> tasks = {"classification", "detection", "segmentation"};
  const std::vector<std::string> licenses = {"MIT", "Apache-2.0", "BSD-3-Clause", "CC-BY-4.0"};
  httplib::Client http("127.0.0.1", port);
  http.set_keep_alive(true);
  http.set_tcp_nodelay(true);
  const std::string layer = "tiny package stand-in";
  const std::string layer_digest = sha256_digest(layer);
  http.Post(("/v2/bench/layer/blobs/uploads/?digest=" + layer_digest).c_str(), layer, "application/octet-stream");
  // Eight publishers at once (the server fsyncs each push; one at a time would measure the disk).
  start = Clock::now();
  std::atomic<int> next{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> publishers;
  for (int t = 0; t < 8; ++t) {
    publishers.emplace_back([&, t] {
      httplib::Client client("127.0.0.1", port);
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);
      std::mt19937 random(static_cast<unsigned>(42 + t));
      for (int i = next++; i < cards; i = next++) {
        std::string description;
        for (int w = 0; w < 8; ++w) description += words[random() % words.size()] + " ";
        nlohmann::json card = {{"schema", 1},
                               {"name", words[random() % words.size()] + std::to_string(i)},
                               {"description", description},
                               {"task", tasks[random() % tasks.size()]},
                               {"license", licenses[random() % licenses.size()]},
                               {"labels", {words[random() % words.size()], words[random() % words.size()]}},
                               {"metrics", {{"top1", 0.5 + static_cast<double>(random() % 500) / 1000.0}}},
                               {"size_bytes", 100000 + random() % 100000000}};
        const std::string card_bytes = card.dump();
        const std::string card_digest = sha256_digest(card_bytes);
        const std::string repo = "cards/m" + std::to_string(i);
        client.Post(("/v2/" + repo + "/blobs/uploads/?digest=" + card_digest).c_str(), card_bytes, "application/octet-stream");
        nlohmann::json manifest = {
            {"schemaVersion", 2},
            {"mediaType", espresso::store::kManifestMediaType},
            {"artifactType", espresso::store::kArtifactType},
            {"config", {{"mediaType", espresso::store::kCardMediaType}, {"digest", card_digest}, {"size", card_bytes.size()}}},
            {"layers", {{{"mediaType", espresso::store::kPackageMediaType}, {"digest", layer_digest}, {"size", layer.size()}}}}};
        auto put = client.Put(("/v2/" + repo + "/manifests/1.0").c_str(), manifest.dump(),
                              std::string(espresso::store::kManifestMediaType).c_str());
        if (!put || put->status != 201) ++failed;
      }
    });
  }
  for (std::thread& t : publishers) t.join();
  if (failed > 0) {
    std::fprintf(stderr, "%d card pushes failed\n", failed.load());
    return 1;
  }
  std::mt19937 random(42);
  const double index_s = seconds_since(start);
  std::vector<double> latencies;
  std::size_t hits = 0;
  for (int q = 0; q < queries; ++q) {
    std::string path = "/api/v1/models?limit=20&q=" + words[random() % words.size()];
    if (q % 3 == 1) path += "+" + words[random() % words.size()];
    if (q % 4 == 2) path += "&task=" + tasks[random() % tasks.size()] + "&min_accuracy=0.7";
    if (q % 5 == 3) path += "&max_bytes=50000000&sort=size";
    const auto t = Clock::now();
    auto got = http.Get(path.c_str());
    latencies.push_back(seconds_since(t) * 1e3);
    if (!got || got->status != 200) {
      std::fprintf(stderr, "query %s failed\n", path.c_str());
      return 1;
    }
    hits += nlohmann::json::parse(got->body)["models"].size();
  }
  std::sort(latencies.begin(), latencies.end());
  const auto pct = [&](double p) { return latencies[static_cast<std::size_t>(p * static_cast<double>(latencies.size() - 1))]; };
  std::printf("catalog: %d cards pushed over HTTP by 8 publishers in %.1f s (%.0f pushes/s)\n", cards, index_s, cards / index_s);
  std::printf("search over %d cards, %d queries (HTTP round trip, FTS5 + filters, 20 per page, %.1f hits avg): "
              "p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms\n",
              cards, queries, static_cast<double>(hits) / queries, pct(0.5), pct(0.95), pct(0.99), latencies.back());
  server.stop();
  serving.join();
  fs::remove_all(work);
  return 0;
}
