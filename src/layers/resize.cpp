#include "layers/resize.h"

#include <algorithm>
#include <cmath>

namespace espresso {

ResizeLayer::ResizeLayer(const LayerSpec& spec)
    : Layer(spec),
      coordinates_(spec.attrs.get_string("coordinate_transformation_mode", "half_pixel")),
      rounding_(spec.attrs.get_string("nearest_mode", "round_prefer_floor")),
      scales_(spec.attrs.get_floats("scales", {})),
      sizes_(spec.attrs.get_ints("sizes", {})) {
  const std::string mode = spec.attrs.get_string("mode", "nearest");
  if (mode != "nearest" && mode != "linear")
    fail_model("attribute 'mode' must be nearest or linear, got '" + mode + "'");
  linear_ = mode == "linear";
  static const char* const kCoordinates[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                             "asymmetric", "tf_half_pixel_for_nn"};
  if (std::none_of(std::begin(kCoordinates), std::end(kCoordinates),
                   [&](const char* c) { return coordinates_ == c; })) {
    fail_model("unsupported coordinate_transformation_mode '" + coordinates_ + "'");
  }
  static const char* const kRounding[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
  if (std::none_of(std::begin(kRounding), std::end(kRounding),
                   [&](const char* c) { return rounding_ == c; })) {
    fail_model("unsupported nearest_mode '" + rounding_ + "'");
  }
  if (scales_.empty() == sizes_.empty()) fail_model("exactly one of 'scales' and 'sizes' must be given");
  for (double s : scales_) {
    if (!(s > 0)) fail_model("'scales' must be positive");
  }
}

std::vector<Shape> ResizeLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const Shape& in = inputs[0];
  const std::size_t count = sizes_.empty() ? scales_.size() : sizes_.size();
  if (static_cast<int>(count) != in.rank()) {
    fail_shape("needs one scale or size per axis of " + in.str() + ", has " + std::to_string(count));
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

double ResizeLayer::source_coordinate(double x, double scale, std::int64_t in, double out) const {
  if (coordinates_ == "half_pixel") return (x + 0.5) / scale - 0.5;
  if (coordinates_ == "pytorch_half_pixel") return out > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
  if (coordinates_ == "align_corners") {
    return out == 1 ? 0.0 : x * static_cast<double>(in - 1) / (out - 1);
  }
  if (coordinates_ == "asymmetric") return x / scale;
  return (x + 0.5) / scale;  // tf_half_pixel_for_nn
}

void ResizeLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& in = inputs[0].shape();
  const Shape& out = outputs[0].shape();
  const int rank = in.rank();
  // Per axis and output coordinate: the two input neighbours and the weight of the upper one.
  std::vector<std::vector<std::int64_t>> lower(static_cast<std::size_t>(rank)),
      upper(static_cast<std::size_t>(rank));
  std::vector<std::vector<double>> weight(static_cast<std::size_t>(rank));
  for (int a = 0; a < rank; ++a) {
    const std::int64_t n = in[a];
    const double scale = scale_of(in, out, a);
    for (std::int64_t o = 0; o < out[a]; ++o) {
      // With given scales ONNX measures the output as input · scale, before flooring.
      const double length = scales_.empty() ? static_cast<double>(out[a]) : static_cast<double>(n) * scale;
      const double x = source_coordinate(static_cast<double>(o), scale, n, length);
      std::int64_t lo = 0, hi = 0;
      double w = 0;
      if (linear_) {
        const double c = std::clamp(x, 0.0, static_cast<double>(n - 1));
        lo = static_cast<std::int64_t>(std::floor(c));
        hi = std::min(lo + 1, n - 1);
        w = c - static_cast<double>(lo);
      } else {
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
        lo = hi = std::clamp(static_cast<std::int64_t>(r), std::int64_t{0}, n - 1);
      }
      lower[static_cast<std::size_t>(a)].push_back(lo);
      upper[static_cast<std::size_t>(a)].push_back(hi);
      weight[static_cast<std::size_t>(a)].push_back(w);
    }
  }
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  std::vector<std::int64_t> index(static_cast<std::size_t>(rank), 0);
  const int corners = 1 << rank;
  for (std::int64_t i = 0, total = out.numel(); i < total; ++i) {
    double sum = 0;
    for (int corner = 0; corner < corners; ++corner) {
      double w = 1;
      std::int64_t offset = 0;
      for (int a = 0; a < rank; ++a) {
        const auto ua = static_cast<std::size_t>(a);
        const auto o = static_cast<std::size_t>(index[ua]);
        const bool take_upper = (corner >> a) & 1;
        w *= take_upper ? weight[ua][o] : 1 - weight[ua][o];
        offset = offset * in[a] + (take_upper ? upper[ua][o] : lower[ua][o]);
      }
      if (w != 0) sum += w * x[offset];
    }
    y[i] = static_cast<float>(sum);
    for (int a = rank - 1; a >= 0; --a) {
      if (++index[static_cast<std::size_t>(a)] < out[a]) break;
      index[static_cast<std::size_t>(a)] = 0;
    }
  }
}

}  // namespace espresso
