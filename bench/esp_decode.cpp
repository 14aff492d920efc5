// espresso_bench_decode: how fast compressed .esp tensors decode to dense f32 on one core.
//
//   espresso_bench_decode [--repeats 20] MODEL [WEIGHTS]
//
// Encodes every weight tensor of the model that the codec takes (at most 256 distinct values) as
// `save_package(..., {.compress = true})` would, then decodes all of them on this thread, repeatedly, and
// prints one JSON line per encoding kind and one for the total: tensors, output bytes, stored bytes and
// the best and median decode rate in GB/s of dense output. It also times load_package() of the model saved
// dense and compressed (checksums on), the best of the repeats.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "esp/weight_codec.h"
#include "espresso/espresso.h"
#include "espresso/package.h"

namespace espresso {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Item {
  codec::Encoded encoded;
  std::vector<float> out;
  std::string kind;
};

int run(int argc, char** argv) {
  int repeats = 20;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--repeats" && i + 1 < argc) {
      repeats = std::max(1, std::stoi(argv[++i]));
    } else {
      paths.push_back(arg);
    }
  }
  if (paths.empty() || paths.size() > 2) {
    std::fprintf(stderr, "usage: espresso_bench_decode [--repeats N] MODEL [WEIGHTS]\n");
    return 2;
  }
  const Graph graph = load_model(paths[0], paths.size() > 1 ? paths[1] : "");
  std::vector<Item> items;
  for (const LayerSpec& layer : graph.layers) {
    for (const Tensor& w : layer.weights) {
      std::optional<codec::Encoded> e = codec::encode(std::span(w.data<float>(), static_cast<std::size_t>(w.numel())));
      if (!e) continue;
      const std::string kind = std::string(e->encoding.huffman ? "huffman" : "packed") +
                               (e->encoding.gap_bits > 0 ? "-sparse" : "-dense");
      items.push_back({std::move(*e), std::vector<float>(static_cast<std::size_t>(w.numel())), kind});
    }
  }
  if (items.empty()) {
    std::fprintf(stderr, "no tensor of %s has at most 256 distinct values\n", paths[0].c_str());
    return 1;
  }
  std::map<std::string, std::vector<double>> times;  // per kind, one entry per repeat
  for (int r = 0; r < repeats; ++r) {
    std::map<std::string, double> repeat;
    for (Item& item : items) {
      const Clock::time_point start = Clock::now();
      codec::decode(item.encoded.encoding, item.encoded.bytes, item.out, "bench");
      const double t = seconds_since(start);
      repeat[item.kind] += t;
      repeat["total"] += t;
    }
    for (const auto& [kind, t] : repeat) times[kind].push_back(t);
  }
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> sizes;  // out bytes, stored bytes
  std::map<std::string, int> counts;
  for (const Item& item : items) {
    for (const std::string& kind : {item.kind, std::string("total")}) {
      sizes[kind].first += item.out.size() * 4;
      sizes[kind].second += item.encoded.bytes.size();
      ++counts[kind];
    }
  }
  for (auto& [kind, t] : times) {
    std::sort(t.begin(), t.end());
    const double out = static_cast<double>(sizes[kind].first);
    std::printf("{\"model\": \"%s\", \"encoding\": \"%s\", \"tensors\": %d, \"output_bytes\": %llu, "
                "\"stored_bytes\": %llu, \"best_gb_s\": %.3f, \"median_gb_s\": %.3f}\n",
                paths[0].c_str(), kind.c_str(), counts[kind], static_cast<unsigned long long>(sizes[kind].first),
                static_cast<unsigned long long>(sizes[kind].second), out / t.front() / 1e9,
                out / t[t.size() / 2] / 1e9);
  }
  // Whole-package loads, dense and compressed.
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "espresso_bench_decode";
  std::filesystem::create_directories(dir);
  for (const bool compress : {false, true}) {
    const std::string file = (dir / (compress ? "compressed.esp" : "dense.esp")).string();
    save_package(graph, file, {.compress = compress});
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
      const Clock::time_point start = Clock::now();
      const Graph loaded = load_package(file);
      best = std::min(best, seconds_since(start));
    }
    std::printf("{\"model\": \"%s\", \"package\": \"%s\", \"file_bytes\": %llu, \"best_load_ms\": %.3f}\n",
                paths[0].c_str(), compress ? "compressed" : "dense",
                static_cast<unsigned long long>(std::filesystem::file_size(file)), best * 1e3);
  }
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace espresso

int main(int argc, char** argv) {
  try {
    return espresso::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
