// Helpers shared by the test files: where the real shared data lives, and scratch directories.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "espresso/graph.h"

namespace espresso::testing {

// $ESPRESSO_DATA, else ../shared/data beside the source tree.
std::filesystem::path shared_data_dir();

// A fixture for tests that read the shared data: they skip, visibly, where it is missing (a GPU
// machine without it, say) instead of failing on empty files.
class SharedDataTest : public ::testing::Test {
 protected:
  void SetUp() override;
};

// A fresh directory for one test, removed with everything in it at the end.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const;
  // Writes `bytes` to `name` in the directory and returns the file's path.
  std::string write(const std::string& name, const std::string& bytes) const;

 private:
  std::string path_;
};

std::string read_bytes(const std::string& path);

// Whether a CUDA device is usable here, and why not ("no CUDA device", "CUDA backend not built").
bool have_gpu();
std::string no_gpu_reason();
// A queue on the first GPU; only where have_gpu().
std::unique_ptr<Stream> gpu_stream();
// Whether a Vulkan device is usable here, and why not ("Vulkan backend not built", the loader's or
// driver's absence); a queue on the first one, only where have_vulkan().
bool have_vulkan();
std::string no_vulkan_reason();
std::unique_ptr<Stream> vulkan_stream();
// The kernel a stream's backend makes for the layer, or nullptr where it has none for these shapes.
std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs, Stream& stream);
// The CPU backend's fast kernel for the layer, or nullptr where it would run the layer's reference.
std::unique_ptr<Kernel> fast_cpu_kernel(const Layer& layer, const std::vector<Shape>& inputs);

// Runs onnx.checker (full check) on an ONNX file with the system Python and expects it to pass; prints a
// visible "SKIPPED:" line instead where python3-onnx is not installed.
void expect_onnx_checker_accepts(const std::string& path);

// A layer of a hand-built graph: name, type, input and output tensor names; attributes and weights
// are set by the caller.
LayerSpec layer(const std::string& name, const std::string& type, std::vector<std::string> inputs,
                std::vector<std::string> outputs);
// A Convolution of a hand-built graph with a square kernel, padding and stride.
LayerSpec conv_layer(const std::string& name, const std::string& input, const std::string& output,
                     std::int64_t outputs, std::int64_t kernel, std::int64_t pad, std::int64_t stride);
// Random weights and bias for such a Convolution of `in` input channels.
void set_random_conv_weights(LayerSpec& spec, std::int64_t in, std::mt19937& rng);

}  // namespace espresso::testing

// GPU tests skip, visibly, on machines without a GPU (CI).
#define REQUIRE_GPU()                                                                         \
  do {                                                                                        \
    if (!::espresso::testing::have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA test not run"; \
  } while (0)

// Vulkan tests skip, visibly, where no Vulkan device is usable (CI has lavapipe, Mesa's CPU Vulkan).
#define REQUIRE_VULKAN()                                                                              \
  do {                                                                                                \
    if (!::espresso::testing::have_vulkan())                                                          \
      GTEST_SKIP() << ::espresso::testing::no_vulkan_reason() << ": Vulkan test not run";            \
  } while (0)

namespace espresso::testing {

// The espresso CLI the tests run: $ESPRESSO_CLI where the tests run away from the build tree (the GPU
// machine runs a bundle), else the one built beside them.
#ifdef ESPRESSO_CLI_PATH
inline std::string espresso_cli() {
  const char* env = std::getenv("ESPRESSO_CLI");
  return env != nullptr ? env : ESPRESSO_CLI_PATH;
}
#endif

// Uniform values in [-1, 1).
inline std::vector<float> random_values(std::mt19937& rng, std::size_t n) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// The largest difference from a double-precision reference, relative to the reference's largest value.
inline double normalized_error(const std::vector<double>& reference, const std::vector<float>& got) {
  double scale = 1e-30, worst = 0.0;
  for (double r : reference) scale = std::max(scale, std::abs(r));
  for (std::size_t i = 0; i < reference.size(); ++i)
    worst = std::max(worst, std::abs(reference[i] - static_cast<double>(got[i])));
  return worst / scale;
}
// The same between two float results; infinite where the sizes differ or only one side is NaN.
double normalized_error(const std::vector<float>& reference, const std::vector<float>& other);

// Each layer's kernel by layer name, from Net::summary().
std::map<std::string, std::string> kernels_by_layer(const std::vector<LayerSummary>& summary);
// How a windowed CPU convolution's kernel name starts under a tactic: "winograd-", "direct-" or, for
// "gemm", "window-packed-gemm-".
std::string cpu_conv_kernel_prefix(const std::string& tactic);

// A residual block with the steps inference fuses into convolutions (Net's fuse_steps): conv1 → relu1,
// conv2 → add (of the input) → relu2, conv3 (stride 2) → clip(0, 6); random weights, input [2, 8, 13, 11].
Graph residual_block();
// The fusions of residual_block() a GPU backend makes: the fused steps' summary rows name their convolution.
void expect_residual_block_fused(const std::vector<LayerSummary>& summary);
// ResNet's downsampling block: relu(conv2(relu(conv1(x))) + shortcut(x)), the 1 x 1 shortcut made after
// conv2, so that the Add (in place on conv2's output) fuses into the shortcut; input [2, 8, 13, 11].
Graph shortcut_block();

inline int pick(std::mt19937& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

// Sets (or, with nullptr, removes) an environment variable for a scope, restoring the previous value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_.empty()) {
      unsetenv(name_);
    } else {
      setenv(name_, old_.c_str(), 1);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::string old_;
};

}  // namespace espresso::testing
