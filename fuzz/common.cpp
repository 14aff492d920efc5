// Helpers shared by the fuzz targets.
#include <unistd.h>

#include <filesystem>
#include <map>

#include "espresso/graph.h"
#include "espresso/limits.h"
#include "fuzz_target.h"
#include "layers/registry.h"

namespace espresso::fuzz {

FuzzLimits::FuzzLimits() : saved_(limits()) {
  Limits tight = saved_;
  tight.max_tensor_elements = std::int64_t{1} << 24;
  tight.max_tensor_bytes = std::int64_t{256} << 20;
  tight.max_planned_bytes = std::int64_t{256} << 20;
  tight.max_image_pixels = std::int64_t{1} << 22;
  set_limits(tight);
}

FuzzLimits::~FuzzLimits() { set_limits(saved_); }

void infer_shapes(const Graph& graph) {
  std::map<std::string, Shape> shapes;
  for (const InputSpec& input : graph.inputs) shapes[input.name] = input.shape;
  for (const LayerSpec& spec : graph.layers) {
    std::vector<Shape> in;
    for (const std::string& name : spec.inputs) {
      auto it = shapes.find(name);
      if (it == shapes.end()) return;  // validate() already refused such graphs
      in.push_back(it->second);
    }
    const std::vector<Shape> out = create_layer(spec)->output_shapes(in);
    for (std::size_t k = 0; k < out.size() && k < spec.outputs.size(); ++k) {
      checked_numel(out[k].dims(), sizeof(float), "layer '" + spec.name + "' output");
      shapes[spec.outputs[k]] = out[k];
    }
  }
}

std::string scratch_dir() {
  static const std::string dir = [] {
    const auto path = std::filesystem::temp_directory_path() / ("espresso-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(path);
    return path.string();
  }();
  return dir;
}

}  // namespace espresso::fuzz
