// What an int8 convolution kernel takes over from the steps after it (Kernel::fuse_*), kept alike on every
// backend: an inference BatchNorm folded once into a per-channel multiplier and offset (a quantized net's
// weights and statistics are fixed when it is quantized), a residual add, a clamp (ReLU, clip), and its
// slice of a channel Concat. The arithmetic steps follow real outputs only: a requantized output leaves them
// to their own layers.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "backends/kernel.h"
#include "layers/quantized_convolution.h"

namespace espresso {

class Int8Fusions {
 public:
  Int8Fusions(const QuantizedConvParams& params, std::int64_t channels, std::string name)
      : real_(params.output == QuantizedConvParams::Output::real),
        relu_(params.relu),
        multiplier_(static_cast<std::size_t>(channels), 1.0),
        offset_(static_cast<std::size_t>(channels), 0.0),
        base_name_(std::move(name)) {
    rename();
  }

  // Before any other fusion.
  bool fold(const Kernel::ChannelAffine& affine) {
    if (!real_ || relu_ || residual_.defined() || clamped_ || redirect_ != nullptr) return false;
    std::vector<float> m, o;
    affine.coefficients(m, o);
    if (m.size() != multiplier_.size() || o.size() != offset_.size()) return false;
    for (std::size_t c = 0; c < m.size(); ++c) {
      multiplier_[c] *= m[c];
      offset_[c] = offset_[c] * m[c] + o[c];
    }
    folded_ = true;
    rename();
    return true;
  }
  bool add(const Tensor& r) {
    if (!real_ || clamped_ || residual_.defined()) return false;
    residual_ = r;
    rename();
    return true;
  }
  bool clamp(float low, float high) {
    if (!real_ || clamped_) return false;
    clamped_ = true;
    lo_ = low;
    hi_ = high;
    rename();
    return true;
  }
  // A null base takes the redirection back (device kernels: the Concat's other inputs could not follow).
  bool redirect_to(float* base, std::int64_t image_stride) {
    if (base == nullptr) {
      redirect_ = nullptr;
      rename();
      return true;
    }
    if (redirect_ != nullptr) return false;
    redirect_ = base;
    redirect_stride_ = image_stride;
    rename();
    return true;
  }
  // Where the finish rounds and clamps: onto the output type's grid (step, zero point, range) when the output
  // is requantized, else to the fused clamp's [lo, hi].
  struct Bounds {
    float step = 1, zero = 0, lo, hi;
  };
  Bounds bounds(const QuantizedConvParams& p) const {
    if (p.output == QuantizedConvParams::Output::quantized ||
        p.output == QuantizedConvParams::Output::dequantized) {
      return {static_cast<float>(p.output_scale), static_cast<float>(p.output_zero_point),
              static_cast<float>(p.output_range.lo), static_cast<float>(p.output_range.hi)};
    }
    return {1, 0, lo_, hi_};
  }
  // Channel c's real output is sum · scale · multiplier[c] + channel_offset(c, bias).
  float channel_offset(std::size_t c, const std::vector<float>& bias) const {
    return static_cast<float>((bias.empty() ? 0.0 : bias[c]) * multiplier_[c] + offset_[c]);
  }

  const std::vector<double>& multiplier() const { return multiplier_; }
  const Tensor& residual() const { return residual_; }
  float* redirect() const { return redirect_; }
  std::int64_t redirect_stride() const { return redirect_stride_; }
  const std::string& name() const { return name_; }

 private:
  // The kernel's name and what it took over, for profiles and `espresso info`.
  void rename() {
    name_ = base_name_ + (folded_ ? "+batchnorm" : "") + (residual_.defined() ? "+add" : "") +
            (clamped_ ? "+clamp" : "") + (redirect_ != nullptr ? " into concat" : "");
  }

  bool real_, relu_;
  bool folded_ = false, clamped_ = false;
  std::vector<double> multiplier_, offset_;
  Tensor residual_;
  float lo_ = -std::numeric_limits<float>::infinity(), hi_ = std::numeric_limits<float>::infinity();
  float* redirect_ = nullptr;
  std::int64_t redirect_stride_ = 0;
  std::string base_name_, name_;
};

}  // namespace espresso
