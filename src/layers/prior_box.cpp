#include "layers/prior_box.h"

#include <algorithm>
#include <cmath>

namespace espresso {

// The schema takes only inclusive bounds, so the constructor checks the sizes, ratios and variances
// that must be > 0.
const LayerSchema& PriorBoxLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "min_size", .type = AttrType::numbers, .required = true},
              {.name = "max_size", .type = AttrType::numbers, .default_text = "none; one per min_size"},
              {.name = "aspect_ratio", .type = AttrType::numbers, .default_text = "none"},
              flag("flip", true),
              flag("clip", false),
              {.name = "variance", .type = AttrType::numbers, .fallback = std::vector<double>{0.1}},
              {.name = "img_size", .type = AttrType::number, .min = 0, .default_text = "image input"},
              {.name = "img_h", .type = AttrType::number, .min = 0, .default_text = "image input"},
              {.name = "img_w", .type = AttrType::number, .min = 0, .default_text = "image input"},
              {.name = "step", .type = AttrType::number, .min = 0, .default_text = "image / map size"},
              {.name = "step_h", .type = AttrType::number, .min = 0, .default_text = "image / map size"},
              {.name = "step_w", .type = AttrType::number, .min = 0, .default_text = "image / map size"},
              {.name = "offset", .type = AttrType::number, .fallback = 0.5},
          },
      .weights = "–",
      .notes =
          "the SSD fork's default boxes; `variance` 1 or 4 values; `img_size` or `img_h`/`img_w`, `step` or "
          "`step_h`/`step_w`; inputs: feature map, image (shapes only); output 1 x 2 x (H·W·P·4): per cell "
          "and min_size the min box, the sqrt(min·max) box, one per aspect ratio (with 1/ratio if flip), as "
          "corners / image size, then their variances; no gradient; CPU and Vulkan (no CUDA kernel)",
  };
  return schema;
}

PriorBoxLayer::PriorBoxLayer(const LayerSpec& spec)
    : Layer(spec),
      min_sizes_(spec.attrs.require_floats("min_size")),
      variances_(spec.attrs.require_floats("variance")),
      clip_(spec.attrs.require_int("clip") != 0),
      offset_(spec.attrs.require_float("offset")) {
  const Attributes& a = spec.attrs;
  if (min_sizes_.empty()) fail_model("attribute 'min_size' is empty");
  if (a.has("max_size")) max_sizes_ = a.require_floats("max_size");
  for (double size : min_sizes_) {
    if (!(size > 0)) fail_model("'min_size' values must be > 0, found " + std::to_string(size));
  }
  if (!max_sizes_.empty()) {
    if (max_sizes_.size() != min_sizes_.size()) {
      fail_model("'max_size' needs one value per 'min_size' (" + std::to_string(min_sizes_.size()) + "), found " +
                 std::to_string(max_sizes_.size()));
    }
    for (std::size_t i = 0; i < max_sizes_.size(); ++i) {
      if (!(max_sizes_[i] > min_sizes_[i])) fail_model("each 'max_size' must exceed its 'min_size'");
    }
  }
  const bool flip = a.require_int("flip") != 0;
  aspect_ratios_ = {1.0};
  for (double ratio : a.has("aspect_ratio") ? a.require_floats("aspect_ratio") : std::vector<double>{}) {
    if (!(ratio > 0)) fail_model("'aspect_ratio' values must be > 0, found " + std::to_string(ratio));
    const bool seen = std::any_of(aspect_ratios_.begin(), aspect_ratios_.end(),
                                  [&](double r) { return std::fabs(r - ratio) < 1e-6; });
    if (seen) continue;
    aspect_ratios_.push_back(ratio);
    if (flip) aspect_ratios_.push_back(1.0 / ratio);
  }
  if (variances_.size() != 1 && variances_.size() != 4)
    fail_model("'variance' needs 1 or 4 values, found " + std::to_string(variances_.size()));
  for (double v : variances_) {
    if (!(v > 0)) fail_model("'variance' values must be > 0, found " + std::to_string(v));
  }
  // A size given either as one value (`img_size`, `step`) or as `<prefix>_h` and `<prefix>_w`; 0 when
  // absent (the members' "from the inputs").
  auto pair = [&](const std::string& single, const std::string& prefix, double& h, double& w) {
    const bool has_hw = a.has(prefix + "_h") || a.has(prefix + "_w");
    if (a.has(single) && has_hw) fail_model("give either '" + single + "' or '" + prefix + "_h'/'" + prefix + "_w'");
    h = a.get_float(a.has(single) ? single : prefix + "_h", 0.0);
    w = a.get_float(a.has(single) ? single : prefix + "_w", 0.0);
    if (has_hw && (h == 0 || w == 0))
      fail_model("'" + prefix + "_h' and '" + prefix + "_w' must both be > 0");
  };
  pair("img_size", "img", img_h_, img_w_);
  pair("step", "step", step_h_, step_w_);
}

std::vector<Shape> PriorBoxLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, 2);
  if (inputs[0].rank() != 4) fail_shape("input 0 (feature map) must be N x C x H x W, found " + inputs[0].str());
  if (inputs[1].rank() != 4) fail_shape("input 1 (image) must be N x C x H x W, found " + inputs[1].str());
  if ((img_h_ == 0 && inputs[1][2] == 0) || (img_w_ == 0 && inputs[1][3] == 0))
    fail_shape("the image input " + inputs[1].str() + " is empty");
  return {Shape{1, 2, inputs[0][2] * inputs[0][3] * num_priors() * 4}};
}

void PriorBoxLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& map = inputs[0].shape();
  const std::int64_t height = map[2], width = map[3];
  const double img_h = img_h_ > 0 ? img_h_ : static_cast<double>(inputs[1].shape()[2]);
  const double img_w = img_w_ > 0 ? img_w_ : static_cast<double>(inputs[1].shape()[3]);
  const double step_h = step_h_ > 0 ? step_h_ : img_h / static_cast<double>(height);
  const double step_w = step_w_ > 0 ? step_w_ : img_w / static_cast<double>(width);
  float* out = outputs[0].data<float>();
  float* box = out;
  // One box of this size centred at (cx, cy), as normalised corners.
  auto add = [&](double cx, double cy, double box_w, double box_h) {
    const double corners[4] = {(cx - box_w / 2) / img_w, (cy - box_h / 2) / img_h, (cx + box_w / 2) / img_w,
                               (cy + box_h / 2) / img_h};
    for (double v : corners) *box++ = static_cast<float>(clip_ ? std::clamp(v, 0.0, 1.0) : v);
  };
  for (std::int64_t h = 0; h < height; ++h) {
    for (std::int64_t w = 0; w < width; ++w) {
      const double cx = (static_cast<double>(w) + offset_) * step_w;
      const double cy = (static_cast<double>(h) + offset_) * step_h;
      for (std::size_t s = 0; s < min_sizes_.size(); ++s) {
        const double min_size = min_sizes_[s];
        add(cx, cy, min_size, min_size);
        if (!max_sizes_.empty()) {
          const double size = std::sqrt(min_size * max_sizes_[s]);
          add(cx, cy, size, size);
        }
        for (double ratio : aspect_ratios_) {
          if (std::fabs(ratio - 1.0) < 1e-6) continue;
          add(cx, cy, min_size * std::sqrt(ratio), min_size / std::sqrt(ratio));
        }
      }
    }
  }
  const std::int64_t count = outputs[0].shape()[2];
  for (std::int64_t i = 0; i < count; ++i)
    out[count + i] = static_cast<float>(variances_[variances_.size() == 1 ? 0 : static_cast<std::size_t>(i % 4)]);
}

}  // namespace espresso
