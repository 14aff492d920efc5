// Image lanes, for CPU inference on a batch (docs/cpu-performance.md): one lane per worker thread, each
// taking an equal share of the batch through the whole net on its own thread, a micro-batch at a time, so
// that a micro-batch's activations stay in that core's caches from one layer to the next. Spreading each
// layer's whole batch over the threads instead streams every activation through memory: MobileNetV2 at
// batch 16 on two cores ran 66 ms so and 53 ms in lanes of one image.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "espresso/net.h"

namespace espresso {

class ImageLanes {
 public:
  // A net of `micro` images per lane, planned for one thread (options.threads is replaced); `inputs`:
  // the batch's input shapes, the batch on axis 0 a multiple of lanes · micro. Runs each lane once, so
  // that the lanes are planned and checked: throws UnsupportedError where the graph's outputs do not keep
  // the batch on axis 0.
  ImageLanes(const Graph& graph, const NetOptions& options,
             const std::vector<std::pair<std::string, Shape>>& inputs, int lanes, std::int64_t micro);
  ~ImageLanes();
  ImageLanes(const ImageLanes&) = delete;
  ImageLanes& operator=(const ImageLanes&) = delete;

  // Runs the batch held in `inputs` (f32 CPU tensors in the order given at construction) into `outputs`
  // (the graph's outputs in its order, the whole batch each), each lane on a thread of the current pool.
  void forward(const std::vector<const Tensor*>& inputs, const std::vector<Tensor*>& outputs);
  int lanes() const { return static_cast<int>(nets_.size()); }
  std::int64_t micro() const { return micro_; }

 private:
  void run_lane(std::size_t lane, const std::vector<const Tensor*>& inputs,
                const std::vector<Tensor*>& outputs);

  std::vector<std::string> input_names_, output_names_;
  std::int64_t batch_ = 0, micro_ = 0;
  std::vector<std::unique_ptr<Net>> nets_;  // one per lane, of `micro_` images
};

}  // namespace espresso
