#include "layers/detection_output.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>

namespace espresso {

const LayerSchema& DetectionOutputLayer::schema() {
  using std::int64_t;
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "num_classes", .type = AttrType::integer, .required = true, .min = 1},
              {.name = "share_location",
               .type = AttrType::integer,
               .fallback = int64_t{1},
               .min = 0,
               .max = 1},
              {.name = "background_label_id",
               .type = AttrType::integer,
               .fallback = int64_t{0},
               .min = -1,
               .default_text = "0; -1 none"},
              {.name = "nms_param.nms_threshold", .type = AttrType::number, .fallback = 0.3, .min = 0},
              {.name = "nms_param.top_k",
               .type = AttrType::integer,
               .fallback = int64_t{-1},
               .min = -1,
               .default_text = "-1: all"},
              {.name = "nms_param.eta", .type = AttrType::number, .fallback = 1.0, .min = 0, .max = 1},
              {.name = "code_type",
               .type = AttrType::text,
               .fallback = std::string("corner"),
               .choices = {"corner", "center_size", "corner_size"}},
              {.name = "variance_encoded_in_target",
               .type = AttrType::integer,
               .fallback = int64_t{0},
               .min = 0,
               .max = 1},
              {.name = "keep_top_k",
               .type = AttrType::integer,
               .fallback = int64_t{-1},
               .min = -1,
               .default_text = "-1: all"},
              {.name = "confidence_threshold", .type = AttrType::number},
          },
      .weights = "–",
      .notes =
          "the SSD fork's decode + per-class NMS; inputs: loc, conf (probabilities), priors; output 1 x 1 x "
          "R x 7 rows (image_id, label, score, xmin, ymin, xmax, ymax); R is the static bound "
          "N·max(1, min(keep_top_k, classes·min(P, top_k))) and unused rows are -1; no detection at all "
          "gives the fork's row (image_id, -1, ...) per image; eta > 0; no gradient; CPU only (no CUDA "
          "kernel)",
  };
  return schema;
}

DetectionOutputLayer::DetectionOutputLayer(const LayerSpec& spec)
    : Layer(spec),
      num_classes_(spec.attrs.require_int("num_classes")),
      share_location_(spec.attrs.require_int("share_location") != 0),
      background_(spec.attrs.require_int("background_label_id")),
      nms_threshold_(static_cast<float>(spec.attrs.require_float("nms_param.nms_threshold"))),
      top_k_(spec.attrs.require_int("nms_param.top_k")),
      eta_(static_cast<float>(spec.attrs.require_float("nms_param.eta"))),
      code_(Code::corner),
      variance_in_target_(spec.attrs.require_int("variance_encoded_in_target") != 0),
      keep_top_k_(spec.attrs.require_int("keep_top_k")),
      // Absent, every score passes.
      confidence_threshold_(spec.attrs.has("confidence_threshold")
                                ? static_cast<float>(spec.attrs.require_float("confidence_threshold"))
                                : -std::numeric_limits<float>::max()) {
  if (background_ >= num_classes_) {
    fail_model("'background_label_id' " + std::to_string(background_) + " is not -1 or a class below " +
               std::to_string(num_classes_));
  }
  // The schema's bounds are inclusive; eta 0 would shrink the NMS threshold to 0.
  if (eta_ == 0) fail_model("attribute 'nms_param.eta' must be above 0");
  const std::string code = spec.attrs.require_string("code_type");
  if (code == "center_size") {
    code_ = Code::center_size;
  } else if (code == "corner_size") {
    code_ = Code::corner_size;
  }
}

std::int64_t DetectionOutputLayer::rows_per_image(std::int64_t priors) const {
  const std::int64_t classes = num_classes_ - (background_ >= 0 ? 1 : 0);
  std::int64_t rows = classes * (top_k_ >= 0 ? std::min(priors, top_k_) : priors);
  if (keep_top_k_ >= 0) rows = std::min(rows, keep_top_k_);
  return std::max<std::int64_t>(rows, 1);
}

std::vector<Shape> DetectionOutputLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 3, 3);
  const Shape& loc = inputs[0];
  const Shape& conf = inputs[1];
  const Shape& prior = inputs[2];
  if (prior.rank() != 3 || prior[0] != 1 || prior[1] != 2 || prior[2] % 4 != 0)
    fail_shape("input 2 (priors) must be 1 x 2 x (P·4), found " + prior.str());
  const std::int64_t priors = prior[2] / 4;
  if (loc.rank() < 1 || conf.rank() < 1 || loc[0] != conf[0])
    fail_shape("inputs 0 (loc) " + loc.str() + " and 1 (conf) " + conf.str() + " need one batch size");
  const std::int64_t loc_classes = share_location_ ? 1 : num_classes_;
  if (loc.count(1) != priors * loc_classes * 4) {
    fail_shape("input 0 (loc) " + loc.str() + " needs " + std::to_string(priors * loc_classes * 4) +
               " values per image for " + std::to_string(priors) + " priors" +
               (share_location_ ? "" : " and 'num_classes' " + std::to_string(num_classes_)));
  }
  if (conf.count(1) != priors * num_classes_) {
    fail_shape("input 1 (conf) " + conf.str() + " does not hold " + std::to_string(priors) + " priors x " +
               "'num_classes' " + std::to_string(num_classes_));
  }
  return {Shape{1, 1, loc[0] * rows_per_image(priors), 7}};
}

DetectionOutputLayer::Box DetectionOutputLayer::decode(const float* prior, const float* variance,
                                                       const float* loc) const {
  float v[4];
  for (int k = 0; k < 4; ++k) v[k] = variance_in_target_ ? 1.0f : variance[k];
  const float width = prior[2] - prior[0], height = prior[3] - prior[1];
  switch (code_) {
    case Code::corner:
      return {prior[0] + v[0] * loc[0], prior[1] + v[1] * loc[1], prior[2] + v[2] * loc[2],
              prior[3] + v[3] * loc[3]};
    case Code::corner_size:
      return {prior[0] + v[0] * loc[0] * width, prior[1] + v[1] * loc[1] * height,
              prior[2] + v[2] * loc[2] * width, prior[3] + v[3] * loc[3] * height};
    case Code::center_size:
      break;
  }
  const float cx = v[0] * loc[0] * width + (prior[0] + prior[2]) / 2;
  const float cy = v[1] * loc[1] * height + (prior[1] + prior[3]) / 2;
  const float w = std::exp(v[2] * loc[2]) * width, h = std::exp(v[3] * loc[3]) * height;
  return {cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2};
}

namespace {

float area(const std::array<float, 4>& b) {
  return b[2] < b[0] || b[3] < b[1] ? 0.0f : (b[2] - b[0]) * (b[3] - b[1]);
}

float iou(const std::array<float, 4>& a, const std::array<float, 4>& b) {
  if (b[0] > a[2] || b[2] < a[0] || b[1] > a[3] || b[3] < a[1]) return 0.0f;
  const float inter = (std::min(a[2], b[2]) - std::max(a[0], b[0])) * (std::min(a[3], b[3]) - std::max(a[1], b[1]));
  return inter / (area(a) + area(b) - inter);
}

}  // namespace

std::vector<int> DetectionOutputLayer::suppress(const std::vector<Box>& boxes, const float* scores,
                                                std::int64_t stride) const {
  std::vector<int> order;
  for (int i = 0; i < static_cast<int>(boxes.size()); ++i) {
    if (scores[i * stride] > confidence_threshold_) order.push_back(i);
  }
  // Stable: equal scores keep prior order, as the fork's stable sort.
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return scores[a * stride] > scores[b * stride]; });
  if (top_k_ >= 0 && static_cast<std::int64_t>(order.size()) > top_k_) order.resize(static_cast<std::size_t>(top_k_));
  std::vector<int> kept;
  float threshold = nms_threshold_;
  for (int candidate : order) {
    const bool keep = std::all_of(kept.begin(), kept.end(), [&](int k) {
      return iou(boxes[static_cast<std::size_t>(candidate)], boxes[static_cast<std::size_t>(k)]) <= threshold;
    });
    if (!keep) continue;
    kept.push_back(candidate);
    if (eta_ < 1 && threshold > 0.5f) threshold *= eta_;
  }
  return kept;
}

void DetectionOutputLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const std::int64_t images = inputs[0].shape()[0];
  const std::int64_t priors = inputs[2].shape()[2] / 4;
  const std::int64_t loc_classes = share_location_ ? 1 : num_classes_;
  const float* loc = inputs[0].data<float>();
  const float* conf = inputs[1].data<float>();
  const float* prior = inputs[2].data<float>();
  const float* variance = prior + priors * 4;
  float* out = outputs[0].data<float>();
  std::fill(out, out + outputs[0].numel(), -1.0f);
  float* row = out;
  bool found = false;
  for (std::int64_t n = 0; n < images; ++n) {
    // Boxes per location class.
    std::vector<std::vector<Box>> boxes(static_cast<std::size_t>(loc_classes));
    for (std::int64_t l = 0; l < loc_classes; ++l) {
      for (std::int64_t p = 0; p < priors; ++p) {
        boxes[static_cast<std::size_t>(l)].push_back(
            decode(prior + p * 4, variance + p * 4, loc + ((n * priors + p) * loc_classes + l) * 4));
      }
    }
    // (score, class, prior) of every kept box, classes ascending, scores descending.
    std::vector<std::tuple<float, std::int64_t, int>> kept;
    const float* scores = conf + n * priors * num_classes_;
    for (std::int64_t c = 0; c < num_classes_; ++c) {
      if (c == background_) continue;
      const std::vector<Box>& class_boxes = boxes[static_cast<std::size_t>(share_location_ ? 0 : c)];
      for (int p : suppress(class_boxes, scores + c, num_classes_)) kept.emplace_back(scores[p * num_classes_ + c], c, p);
    }
    if (keep_top_k_ >= 0 && static_cast<std::int64_t>(kept.size()) > keep_top_k_) {
      std::stable_sort(kept.begin(), kept.end(),
                       [](const auto& a, const auto& b) { return std::get<0>(a) > std::get<0>(b); });
      kept.resize(static_cast<std::size_t>(keep_top_k_));
      // Back to classes ascending; within a class the order by score stays.
      std::stable_sort(kept.begin(), kept.end(),
                       [](const auto& a, const auto& b) { return std::get<1>(a) < std::get<1>(b); });
    }
    for (const auto& [score, c, p] : kept) {
      const Box& box = boxes[static_cast<std::size_t>(share_location_ ? 0 : c)][static_cast<std::size_t>(p)];
      const float values[7] = {static_cast<float>(n), static_cast<float>(c), score, box[0], box[1], box[2], box[3]};
      row = std::copy(values, values + 7, row);
      found = true;
    }
  }
  // The fork's answer when nothing at all was found: one row per image, all -1 but the image_id.
  if (!found) {
    for (std::int64_t n = 0; n < images; ++n) out[n * 7] = static_cast<float>(n);
  }
}

}  // namespace espresso
