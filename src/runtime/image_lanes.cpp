#include "runtime/image_lanes.h"

#include <cstring>

#include "backends/cpu/blas.h"
#include "core/parallel.h"
#include "espresso/errors.h"

namespace espresso {
namespace {

// Copies images [first, first + count) of `from` (a batch on axis 0) to images [at, at + count) of `to`.
void copy_images(const Tensor& from, std::int64_t first, Tensor& to, std::int64_t at, std::int64_t count) {
  const std::int64_t per_image = from.shape()[0] == 0 ? 0 : from.numel() / from.shape()[0];
  std::memcpy(to.data<float>() + at * per_image, from.data<float>() + first * per_image,
              static_cast<std::size_t>(count * per_image) * sizeof(float));
}

}  // namespace

ImageLanes::ImageLanes(const Graph& graph, const NetOptions& options,
                       const std::vector<std::pair<std::string, Shape>>& inputs, int lanes,
                       std::int64_t micro)
    : micro_(micro) {
  Graph lane_graph = graph;
  lane_graph.inputs.clear();
  for (const auto& [name, shape] : inputs) {
    Shape lane_shape = shape;
    lane_shape[0] = micro;
    lane_graph.inputs.push_back({name, lane_shape});
    input_names_.push_back(name);
    batch_ = shape[0];
  }
  output_names_ = graph.outputs;
  NetOptions lane_options = options;
  lane_options.threads = 1;
  for (int lane = 0; lane < lanes; ++lane) {
    auto net = std::make_unique<Net>(lane_graph, lane_options);
    net->forward();  // plans it, on its own single thread
    for (const std::string& name : output_names_) {
      const Shape& shape = net->tensor(name).shape();
      if (shape.rank() == 0 || shape[0] != micro)
        throw UnsupportedError("output '" + name + "' does not keep the batch on axis 0");
    }
    nets_.push_back(std::move(net));
  }
}

ImageLanes::~ImageLanes() = default;

void ImageLanes::run_lane(std::size_t lane, const std::vector<const Tensor*>& inputs,
                          const std::vector<Tensor*>& outputs) {
  Net& net = *nets_[lane];
  const std::int64_t share = batch_ / static_cast<std::int64_t>(nets_.size());
  for (std::int64_t first = static_cast<std::int64_t>(lane) * share;
       first < static_cast<std::int64_t>(lane + 1) * share; first += micro_) {
    for (std::size_t k = 0; k < input_names_.size(); ++k)
      copy_images(*inputs[k], first, net.input(input_names_[k]), 0, micro_);
    net.forward();
    for (std::size_t k = 0; k < output_names_.size(); ++k)
      copy_images(net.tensor(output_names_[k]), 0, *outputs[k], first, micro_);
  }
}

void ImageLanes::forward(const std::vector<const Tensor*>& inputs, const std::vector<Tensor*>& outputs) {
  const cpu::SingleThreadedBlas single;  // each lane's GEMMs on its own thread, OpenBLAS's too
  parallel_for(static_cast<std::int64_t>(nets_.size()), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t lane = begin; lane < end; ++lane)
      run_lane(static_cast<std::size_t>(lane), inputs, outputs);
  });
}

}  // namespace espresso
