// espresso_bench_sparse_ip: the CPU InnerProduct on pruned, weight-shared weights, sparse × dense with
// codebook lookups (backends/cpu/sparse_inner_product.h) against sgemm on the same weights, one thread by
// default. For each layer shape, density and batch it prints one JSON line: median milliseconds of each,
// the speed-up, and what the planner's cost model (sparse_product_wins) chooses.
//
//   espresso_bench_sparse_ip [--repeats 30] [--threads 1]
#include "backends/cpu/sparse_inner_product.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "espresso/espresso.h"

namespace espresso {
namespace {

using Clock = std::chrono::steady_clock;

template <class F>
double median_ms(int repeats, F&& f) {
  f();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    f();
    times.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

struct LayerShape {
  const char* name;
  std::int64_t outputs, inner;
};

int run(int argc, char** argv) {
  int repeats = 30, threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i];
    if (arg == "--repeats")
      repeats = std::max(1, std::stoi(argv[i + 1]));
    else if (arg == "--threads")
      threads = std::max(1, std::stoi(argv[i + 1]));
  }
  set_num_threads(threads);
  const LayerShape shapes[] = {{"lenet-ip1", 500, 800},
                               {"lenet300-ip1", 300, 784},
                               {"fashion-ip1", 1280, 800},
                               {"alexnet-fc7", 4096, 4096}};
  const double densities[] = {0.5, 0.25, 0.1, 0.07, 0.04, 0.02};
  const std::int64_t batches[] = {1, 64};
  std::mt19937 engine(7);
  for (const LayerShape& shape : shapes) {
    for (double density : densities) {
      // Pruned to `density`, the kept weights shared among 31 values (5-bit indices), as `espresso compress`
      // leaves them.
      std::vector<float> codebook(31);
      std::uniform_real_distribution<float> value(-0.2f, 0.2f);
      for (float& v : codebook) v = value(engine);
      std::bernoulli_distribution keep(density);
      std::uniform_int_distribution<std::size_t> pick(0, codebook.size() - 1);
      std::vector<float> w(static_cast<std::size_t>(shape.outputs * shape.inner));
      for (float& v : w) v = keep(engine) ? codebook[pick(engine)] : 0.0f;
      const auto sparse = cpu::SparseCodebookMatrix::from_dense(w.data(), false, shape.outputs, shape.inner);
      for (std::int64_t rows : batches) {
        std::vector<float> x(static_cast<std::size_t>(rows * shape.inner)),
            y(static_cast<std::size_t>(rows * shape.outputs));
        for (float& v : x) v = value(engine);
        std::vector<float> scratch;
        const double dense_ms = median_ms(repeats, [&] {
          cpu::sgemm(false, true, rows, shape.outputs, shape.inner, 1.0f, x.data(), shape.inner, w.data(),
                     shape.inner, 0.0f, y.data(), shape.outputs);
        });
        const double sparse_ms =
            median_ms(repeats, [&] { sparse->multiply(x.data(), nullptr, y.data(), rows, scratch); });
        const bool chosen = cpu::sparse_product_wins(sparse->nonzeros(), rows, shape.outputs, shape.inner);
        std::printf(
            "{\"layer\": \"%s\", \"outputs\": %lld, \"inner\": %lld, \"density\": %.3f, \"batch\": %lld, "
            "\"sgemm_ms\": %.4f, \"sparse_ms\": %.4f, \"speedup\": %.2f, \"planner\": \"%s\", "
            "\"dense_bytes\": %lld, \"sparse_bytes\": %lld}\n",
            shape.name, static_cast<long long>(shape.outputs), static_cast<long long>(shape.inner), density,
            static_cast<long long>(rows), dense_ms, sparse_ms, dense_ms / sparse_ms,
            chosen ? "sparse" : "sgemm", static_cast<long long>(w.size() * 4),
            static_cast<long long>(sparse->bytes()));
        std::fflush(stdout);
      }
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
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
