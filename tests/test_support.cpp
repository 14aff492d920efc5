#include "test_support.h"

#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "backends/registry.h"
#include "espresso/devices.h"

namespace espresso::testing {

namespace fs = std::filesystem;

fs::path shared_data_dir() {
  const char* env = std::getenv("ESPRESSO_DATA");
  return env != nullptr ? fs::path(env) : fs::path(ESPRESSO_DEFAULT_DATA_DIR);
}

void SharedDataTest::SetUp() {
  if (!fs::exists(shared_data_dir() / "MANIFEST.md")) {
    GTEST_SKIP() << "shared data not found at " << shared_data_dir() << " (set ESPRESSO_DATA)";
  }
}

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "espresso_test_XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("cannot create a temporary directory");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

namespace {
// Every test process, and the CLI processes it starts, pulls into a model cache of its own: ctest runs
// tests side by side and a registry port one test frees is soon another's, so a shared ~/.cache/espresso
// would hand one test the trust metadata another cached for the same host:port and repository.
struct OwnModelCache {
  TempDir dir;
  OwnModelCache() { ::setenv("ESPRESSO_CACHE", dir.file("models").c_str(), 1); }
};
const OwnModelCache own_model_cache;
}  // namespace

std::string TempDir::file(const std::string& name) const { return (fs::path(path_) / name).string(); }

std::string TempDir::write(const std::string& name, const std::string& bytes) const {
  const std::string path = file(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool have_gpu() { return device_available(Device::cuda(0)); }

std::string no_gpu_reason() {
  for (const std::string& name : backend_names()) {
    if (name == "cuda") return "no CUDA device";
  }
  return "CUDA backend not built";
}

std::unique_ptr<Stream> gpu_stream() { return backend_for(Device::cuda(0)).create_stream(Device::cuda(0), nullptr); }

bool have_vulkan() { return device_available(Device::vulkan(0)); }

std::string no_vulkan_reason() {
  try {
    backend_for(Device::vulkan(0)).require_device(Device::vulkan(0));
  } catch (const DeviceError& e) {
    return e.what();
  }
  return "";
}

std::unique_ptr<Stream> vulkan_stream() {
  return backend_for(Device::vulkan(0)).create_stream(Device::vulkan(0), nullptr);
}

std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs, Stream& stream) {
  return backend_for(stream.device()).make_kernel(layer, inputs, stream);
}

double normalized_error(const std::vector<float>& reference, const std::vector<float>& other) {
  if (reference.size() != other.size()) return INFINITY;
  double scale = 1e-12, diff = 0;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    if (std::isnan(reference[i]) != std::isnan(other[i])) return INFINITY;
    scale = std::max(scale, std::abs(static_cast<double>(reference[i])));
    diff = std::max(diff, std::abs(static_cast<double>(reference[i]) - other[i]));
  }
  return diff / scale;
}

std::unique_ptr<Kernel> fast_cpu_kernel(const Layer& layer, const std::vector<Shape>& inputs) {
  static const std::unique_ptr<Stream> host = backend_for(Device::cpu()).create_stream(Device::cpu(), nullptr);
  std::unique_ptr<Kernel> kernel = make_kernel(layer, inputs, *host);
  return std::string(kernel->name()) == "reference" ? nullptr : std::move(kernel);
}

LayerSpec layer(const std::string& name, const std::string& type, std::vector<std::string> inputs,
                std::vector<std::string> outputs) {
  LayerSpec s;
  s.name = name;
  s.type = type;
  s.inputs = std::move(inputs);
  s.outputs = std::move(outputs);
  return s;
}

LayerSpec conv_layer(const std::string& name, const std::string& input, const std::string& output,
                     std::int64_t outputs, std::int64_t kernel, std::int64_t pad, std::int64_t stride) {
  LayerSpec s = layer(name, "Convolution", {input}, {output});
  s.attrs.set("num_output", outputs);
  s.attrs.set("kernel", kernel);
  s.attrs.set("pad", pad);
  s.attrs.set("stride", stride);
  return s;
}

void set_random_conv_weights(LayerSpec& spec, std::int64_t in, std::mt19937& rng) {
  const std::int64_t outputs = spec.attrs.get_int("num_output", 0), side = spec.attrs.get_int("kernel", 1);
  spec.weights = {Tensor::from(Shape{outputs, in, side, side},
                               random_values(rng, static_cast<std::size_t>(outputs * in * side * side))),
                  Tensor::from(Shape{outputs}, random_values(rng, static_cast<std::size_t>(outputs)))};
}

Graph residual_block() {
  Graph g;
  g.inputs = {{"data", Shape{2, 8, 13, 11}}};
  LayerSpec add = layer("add", "Binary", {"c2", "data"}, {"sum"});
  add.attrs.set("operation", std::string("add"));
  LayerSpec clip = layer("clip", "Activation", {"c3"}, {"out"});
  clip.attrs.set("function", std::string("clip"));
  clip.attrs.set("min", 0.0);
  clip.attrs.set("max", 6.0);
  g.layers = {conv_layer("conv1", "data", "c1", 8, 3, 1, 1),
              layer("relu1", "ReLU", {"c1"}, {"r1"}),
              conv_layer("conv2", "r1", "c2", 8, 3, 1, 1),
              add,
              layer("relu2", "ReLU", {"sum"}, {"r2"}),
              conv_layer("conv3", "r2", "c3", 5, 3, 0, 2),
              clip};
  std::mt19937 rng(7);
  for (LayerSpec& spec : g.layers) {
    if (spec.type == "Convolution") set_random_conv_weights(spec, 8, rng);
  }
  g.outputs = {"out"};
  return g;
}

Graph shortcut_block() {
  Graph g;
  g.inputs = {{"data", Shape{2, 8, 13, 11}}};
  LayerSpec add = layer("add", "Binary", {"c2", "s"}, {"sum"});
  add.attrs.set("operation", std::string("add"));
  g.layers = {conv_layer("conv1", "data", "c1", 6, 3, 1, 2),
              layer("relu1", "ReLU", {"c1"}, {"r1"}),
              conv_layer("conv2", "r1", "c2", 12, 3, 1, 1),
              conv_layer("shortcut", "data", "s", 12, 1, 0, 2),
              add,
              layer("relu2", "ReLU", {"sum"}, {"out"})};
  std::mt19937 rng(9);
  for (LayerSpec& spec : g.layers) {
    if (spec.type == "Convolution") set_random_conv_weights(spec, spec.name == "conv2" ? 6 : 8, rng);
  }
  g.outputs = {"out"};
  return g;
}

std::map<std::string, std::string> kernels_by_layer(const std::vector<LayerSummary>& summary) {
  std::map<std::string, std::string> kernel;
  for (const LayerSummary& row : summary) kernel[row.name] = row.kernel;
  return kernel;
}

std::string cpu_conv_kernel_prefix(const std::string& tactic) {
  return tactic == "winograd"       ? "winograd-"
         : tactic == "direct"       ? "direct-"
         : tactic == "channel-gemm" ? "channel-gemm-"
                                    : "window-packed-gemm-";
}

void expect_residual_block_fused(const std::vector<LayerSummary>& summary) {
  auto kernel = kernels_by_layer(summary);
  EXPECT_EQ(kernel["relu1"], "fused into conv1");
  EXPECT_EQ(kernel["add"], "fused into conv2");
  EXPECT_EQ(kernel["relu2"], "fused into conv2");
  EXPECT_EQ(kernel["clip"], "fused into conv3");
}

void expect_onnx_checker_accepts(const std::string& path) {
  static const bool available = std::system("/usr/bin/python3 -c 'import onnx' 2>/dev/null") == 0;
  if (!available) {
    std::printf("SKIPPED: onnx.checker (python3-onnx is not installed)\n");
    return;
  }
  const std::string command =
      "/usr/bin/python3 -c \"import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)\" " + path;
  EXPECT_EQ(std::system(command.c_str()), 0) << "onnx.checker rejected " << path;
}

}  // namespace espresso::testing
