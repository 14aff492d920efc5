// Model store benchmark on loopback (bench/store_bench.sh runs it): pull throughput of a large
// package into an empty cache, and search latency over a catalog of synthetic model cards.
// Usage: espresso_bench_store WORK_DIR [PACKAGE_MB] [CARDS] [QUERIES]
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

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

double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
}

// Bytes per second of a GET whose body is received in 8 MiB reads and dropped (what `curl -o
// /dev/null` measures).
double receive_only(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return 0;
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  const auto start = Clock::now();
  if (::send(fd, request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) return 0;
  std::vector<char> buffer(8 << 20);
  double total = 0;
  for (;;) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0) break;
    total += static_cast<double>(n);
  }
  ::close(fd);
  return total / seconds_since(start);
}

// Bytes per second of writing `bytes` to a new file in 8 MiB writes (then removed).
double write_only(const fs::path& file, const std::string& bytes) {
  fs::create_directories(file.parent_path());
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return 0;
  const auto start = Clock::now();
  for (std::size_t done = 0; done < bytes.size();) {
    const ssize_t n = ::write(fd, bytes.data() + done, std::min<std::size_t>(8 << 20, bytes.size() - done));
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  const double s = seconds_since(start);
  ::close(fd);
  fs::remove(file);
  return static_cast<double>(bytes.size()) / s;
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
  // Five pulls into empty caches; beside each, on the same machine at the same moment, the rate of
  // each of its three stages alone (receiving from the server and dropping the bytes, SHA-256 in memory,
  // writing a new file in the cache's folder), so a loaded machine's numbers can still be read against
  // what the stages allow. The client overlaps the three, so its ceiling is the slowest of them.
  const std::string digest = espresso::store::sha256_file_digest(package);
  std::string bytes_in_memory(static_cast<std::size_t>(bytes), '\0');
  {
    std::FILE* f = std::fopen(package.c_str(), "rb");
    if (f == nullptr || std::fread(bytes_in_memory.data(), 1, bytes_in_memory.size(), f) != bytes_in_memory.size()) return 1;
    std::fclose(f);
  }
  std::vector<double> pull_rates;
  // The push fsynced 200 MB; its writeback (and the discards of removed files) would stall the
  // measured writes, so each run starts on a settled disk.
  ::sync();
  std::printf("package: %.1f MB; push %.2f s (%.0f MB/s incl. card and hashing)\n", bytes / 1e6, push_s, bytes / push_s / 1e6);
  std::printf("pull into an empty cache (download, SHA-256 while streaming, write, rename) and each stage alone, MB/s:\n");
  for (int run = 0; run < 5; ++run) {
    espresso::store::ClientOptions options;
    options.cache = work / ("cache" + std::to_string(run));
    espresso::store::Client client(options);
    const double cpu_before = cpu_seconds();
    start = Clock::now();
    const auto result = client.pull(espresso::store::Reference::parse(registry + "/bench/big:1"));
    const double s = seconds_since(start);
    const double cpu = cpu_seconds() - cpu_before;
    pull_rates.push_back(static_cast<double>(result.bytes_downloaded) / s / 1e6);
    const double receive = receive_only(port, "/v2/bench/big/blobs/" + digest) / 1e6;
    start = Clock::now();
    const std::string check = sha256_digest(bytes_in_memory);
    const double hash = bytes / seconds_since(start) / 1e6;
    const double write = write_only(options.cache / "write-test", bytes_in_memory) / 1e6;
    std::printf("  run %d: pull %4.0f  (receive only %4.0f, SHA-256 only %4.0f, write only %4.0f; pull used %.2f CPU s "
                "in client and server)\n",
                run + 1, pull_rates.back(), receive, hash, write, cpu);
    if (check != digest) return 1;
    fs::remove_all(options.cache);
    ::sync();
  }
  std::sort(pull_rates.begin(), pull_rates.end());
  std::printf("pull median %.0f MB/s, best %.0f MB/s\n", pull_rates[2], pull_rates[4]);

  if (cards <= 0) {
    server.stop();
    serving.join();
    fs::remove_all(work);
    return 0;
  }
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
