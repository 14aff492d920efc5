#include "layers/resize.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

namespace espresso {
namespace {

// The Keys cubic convolution weights of the four taps floor(x)−1 … floor(x)+2 at fraction t.
std::array<double, 4> cubic_weights(double t, double a) {
  const auto near = [a](double d) { return ((a + 2) * d - (a + 3)) * d * d + 1; };       // |d| ≤ 1
  const auto far = [a](double d) { return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a; };  // 1 < |d| < 2
  return {far(t + 1), near(t), near(1 - t), far(2 - t)};
}

}  // namespace

const LayerSchema& ResizeLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "mode",
               .type = AttrType::text,
               .fallback = std::string("nearest"),
               .choices = {"nearest", "linear", "cubic"}},
              {.name = "scales", .type = AttrType::numbers, .default_text = "one per axis, or `sizes`"},
              {.name = "sizes", .type = AttrType::integers, .default_text = "one per axis, or `scales`"},
              {.name = "coordinate_transformation_mode",
               .type = AttrType::text,
               .fallback = std::string("half_pixel"),
               .choices = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                           "tf_half_pixel_for_nn", "tf_crop_and_resize"}},
              {.name = "roi",
               .type = AttrType::numbers,
               .default_text = "tf_crop_and_resize: starts, then ends"},
              {.name = "extrapolation_value", .type = AttrType::number, .fallback = 0.0},
              {.name = "nearest_mode",
               .type = AttrType::text,
               .fallback = std::string("round_prefer_floor"),
               .choices = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"}},
              {.name = "cubic_coeff_a", .type = AttrType::number, .fallback = -0.75},
              flag("exclude_outside", false),
          },
      .weights = "–",
      .notes =
          "ONNX Resize semantics; backward sends each output's gradient to the inputs it interpolates, by "
          "their weights (none from outputs outside a crop region)",
  };
  return schema;
}

ResizeLayer::ResizeLayer(const LayerSpec& spec)
    : Layer(spec),
      coordinates_(spec.attrs.require_string("coordinate_transformation_mode")),
      rounding_(spec.attrs.require_string("nearest_mode")),
      cubic_a_(spec.attrs.require_float("cubic_coeff_a")),
      exclude_outside_(spec.attrs.require_int("exclude_outside") != 0),
      extrapolation_value_(static_cast<float>(spec.attrs.require_float("extrapolation_value"))) {
  const std::string mode = spec.attrs.require_string("mode");
  mode_ = mode == "linear" ? Mode::linear : mode == "cubic" ? Mode::cubic : Mode::nearest;
  if (spec.attrs.has("scales")) scales_ = spec.attrs.require_floats("scales");
  if (spec.attrs.has("sizes")) sizes_ = spec.attrs.require_ints("sizes");
  if (spec.attrs.has("roi")) roi_ = spec.attrs.require_floats("roi");
  if (scales_.empty() == sizes_.empty()) fail_model("exactly one of 'scales' and 'sizes' must be given");
  // The schema's bounds are inclusive; a scale must be > 0.
  for (double s : scales_) {
    if (!(s > 0)) fail_model("'scales' must be positive");
  }
  if (coordinates_ == "tf_crop_and_resize" && roi_.empty())
    fail_model("tf_crop_and_resize needs attribute 'roi'");
}

std::vector<Shape> ResizeLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const Shape& in = inputs[0];
  const std::size_t count = sizes_.empty() ? scales_.size() : sizes_.size();
  if (static_cast<int>(count) != in.rank()) {
    fail_shape("needs one scale or size per axis of " + in.str() + ", has " + std::to_string(count));
  }
  if (!roi_.empty() && static_cast<int>(roi_.size()) != 2 * in.rank()) {
    fail_shape("'roi' needs " + std::to_string(2 * in.rank()) + " values for " + in.str());
  }
  if (!sizes_.empty()) return {Shape(sizes_)};
  std::vector<std::int64_t> dims;
  for (int i = 0; i < in.rank(); ++i) {
    dims.push_back(static_cast<std::int64_t>(
        std::floor(static_cast<double>(in[i]) * scales_[static_cast<std::size_t>(i)])));
  }
  return {Shape(dims)};
}

double ResizeLayer::scale_of(const Shape& in, const Shape& out, int axis) const {
  if (!scales_.empty()) return scales_[static_cast<std::size_t>(axis)];
  return static_cast<double>(out[axis]) / static_cast<double>(in[axis]);
}

double ResizeLayer::source_coordinate(double x, double scale, int axis, std::int64_t in,
                                      std::int64_t out) const {
  // With given scales ONNX measures the output as input · scale, before flooring.
  const double length = scales_.empty() ? static_cast<double>(out) : static_cast<double>(in) * scale;
  if (coordinates_ == "half_pixel") return (x + 0.5) / scale - 0.5;
  if (coordinates_ == "pytorch_half_pixel") return length > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
  if (coordinates_ == "align_corners") {
    return length == 1 ? 0.0 : x * static_cast<double>(in - 1) / (length - 1);
  }
  if (coordinates_ == "asymmetric") return x / scale;
  if (coordinates_ == "tf_half_pixel_for_nn") return (x + 0.5) / scale;
  const double start = roi_[static_cast<std::size_t>(axis)];
  const double end = roi_[roi_.size() / 2 + static_cast<std::size_t>(axis)];
  const double span = (end - start) * static_cast<double>(in - 1);
  const double c = out == 1 ? span / 2 : x * span / static_cast<double>(out - 1);
  const double source = c + start * static_cast<double>(in - 1);
  return source < 0 || source > static_cast<double>(in - 1) ? std::nan("") : source;
}

std::int64_t ResizeLayer::nearest(double x) const {
  double r;
  if (rounding_ == "round_prefer_floor") {
    r = x == std::floor(x) + 0.5 ? std::floor(x) : std::round(x);
  } else if (rounding_ == "round_prefer_ceil") {
    r = std::floor(x + 0.5);
  } else if (rounding_ == "floor") {
    r = std::floor(x);
  } else {
    r = std::ceil(x);
  }
  return static_cast<std::int64_t>(r);
}

std::vector<ResizeLayer::AxisTaps> ResizeLayer::taps(const Shape& in, const Shape& out) const {
  std::vector<AxisTaps> all(static_cast<std::size_t>(in.rank()));
  for (int a = 0; a < in.rank(); ++a) {
    AxisTaps& t = all[static_cast<std::size_t>(a)];
    const std::int64_t n = in[a];
    t.count = mode_ == Mode::nearest ? 1 : mode_ == Mode::linear ? 2 : 4;
    const double scale = scale_of(in, out, a);
    for (std::int64_t o = 0; o < out[a]; ++o) {
      const double x = source_coordinate(static_cast<double>(o), scale, a, n, out[a]);
      if (std::isnan(x)) {
        for (int k = 0; k < t.count; ++k) {
          t.index.push_back(-1);
          t.weight.push_back(0);
        }
        continue;
      }
      if (mode_ == Mode::nearest) {
        t.index.push_back(std::clamp(nearest(x), std::int64_t{0}, n - 1));
        t.weight.push_back(1);
        continue;
      }
      const auto base = static_cast<std::int64_t>(std::floor(x));
      const double frac = x - static_cast<double>(base);
      std::array<double, 4> w{};
      std::int64_t first = base;
      if (mode_ == Mode::linear) {
        w = {1 - frac, frac, 0, 0};
      } else {
        w = cubic_weights(frac, cubic_a_);
        first = base - 1;
      }
      double kept = 0;
      for (int k = 0; k < t.count; ++k) {
        const std::int64_t i = first + k;
        if (exclude_outside_ && (i < 0 || i >= n)) w[static_cast<std::size_t>(k)] = 0;
        kept += w[static_cast<std::size_t>(k)];
      }
      for (int k = 0; k < t.count; ++k) {
        // Taps beyond the edges repeat the edge value, as ONNX's edge padding does.
        t.index.push_back(std::clamp(first + k, std::int64_t{0}, n - 1));
        t.weight.push_back(exclude_outside_ ? w[static_cast<std::size_t>(k)] / kept
                                            : w[static_cast<std::size_t>(k)]);
      }
    }
  }
  return all;
}

template <class Visit>
void ResizeLayer::map_outputs(const Shape& in, const Shape& out, Visit&& visit) const {
  const int rank = in.rank();
  const std::vector<AxisTaps> all = taps(in, out);
  std::vector<std::int64_t> index(static_cast<std::size_t>(rank), 0);
  std::int64_t combinations = 1;
  for (const AxisTaps& t : all) combinations *= t.count;
  std::vector<std::pair<std::int64_t, double>> output_taps;
  for (std::int64_t i = 0, total = out.numel(); i < total; ++i) {
    bool outside = false;
    for (int a = 0; a < rank; ++a) {
      const auto ua = static_cast<std::size_t>(a);
      if (all[ua].index[static_cast<std::size_t>(index[ua] * all[ua].count)] < 0) outside = true;
    }
    output_taps.clear();
    for (std::int64_t combination = 0; combination < combinations && !outside; ++combination) {
      double w = 1;
      std::int64_t offset = 0, rest = combination, stride = 1;
      for (int a = rank - 1; a >= 0; --a) {
        const auto ua = static_cast<std::size_t>(a);
        const AxisTaps& t = all[ua];
        const auto tap = static_cast<std::size_t>(index[ua] * t.count + rest % t.count);
        rest /= t.count;
        w *= t.weight[tap];
        offset += t.index[tap] * stride;
        stride *= in[a];
      }
      if (w != 0) output_taps.emplace_back(offset, w);
    }
    visit(i, outside, output_taps);
    for (int a = rank - 1; a >= 0; --a) {
      if (++index[static_cast<std::size_t>(a)] < out[a]) break;
      index[static_cast<std::size_t>(a)] = 0;
    }
  }
}

void ResizeLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  map_outputs(inputs[0].shape(), outputs[0].shape(),
              [&](std::int64_t i, bool outside, const std::vector<std::pair<std::int64_t, double>>& taps) {
                double sum = 0;
                for (const auto& [offset, w] : taps) sum += w * x[offset];
                y[i] = outside ? extrapolation_value_ : static_cast<float>(sum);
              });
}

void ResizeLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                           const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                           std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  map_outputs(inputs[0].shape(), outputs[0].shape(),
              [&](std::int64_t i, bool, const std::vector<std::pair<std::int64_t, double>>& taps) {
                for (const auto& [offset, w] : taps) dx[offset] += static_cast<float>(w * dy[i]);
              });
}

}  // namespace espresso
