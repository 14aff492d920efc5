#pragma once

#include <array>

#include "layers/layer.h"

namespace espresso {

// The SSD fork's detection output. Inputs: loc N x (P·L·4) (L = 1 with share_location, else
// num_classes), conf N x (P·num_classes) (probabilities), priors 1 x 2 x (P·4) (PriorBox's output).
// Per image and class other than background_label_id: boxes are decoded from the priors (code_type,
// with the prior variances unless variance_encoded_in_target), those scoring above
// confidence_threshold are ranked (at most nms_param.top_k) and suppressed greedily when their IoU
// with a kept box exceeds the threshold (times eta after each kept box while above 0.5); then the
// keep_top_k best of the image over all classes are kept.
//
// Output 1 x 1 x R x 7, rows (image_id, label, score, xmin, ymin, xmax, ymax) image by image, classes
// ascending, scores descending. The row count R depends on the data but the planner needs it
// statically, so R is the bound N · max(1, min(keep_top_k, classes · min(P, top_k))) and rows after
// the detections hold -1. As in the fork, an input with no detection at all gives one row per image
// (image_id, -1, -1, ...).
class DetectionOutputLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit DetectionOutputLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;

 private:
  using Box = std::array<float, 4>;  // xmin, ymin, xmax, ymax
  enum class Code { corner, center_size, corner_size };

  Box decode(const float* prior, const float* variance, const float* loc) const;
  // The kept indices, best first, among `boxes` scored by scores[i·stride].
  std::vector<int> suppress(const std::vector<Box>& boxes, const float* scores, std::int64_t stride) const;
  std::int64_t rows_per_image(std::int64_t priors) const;

  std::int64_t num_classes_;
  bool share_location_;
  std::int64_t background_;
  float nms_threshold_;
  std::int64_t top_k_;  // -1: all
  float eta_;
  Code code_;
  bool variance_in_target_;
  std::int64_t keep_top_k_;  // -1: all
  float confidence_threshold_;
};

}  // namespace espresso
