// Int8 convolution on the CPU. Per image (threads over images, or over GEMM tiles for one image):
// quantize the input to uint8 (int8 inputs move up by 128 with their zero point, which changes no
// difference), read each window straight into the GEMM's packed B, run the u8×s8 GEMM (gemm_int8.h),
// then one pass that removes the zero point's share (zero point × the weight row's sum), scales by
// input scale × the channel's weight scale, adds the bias, and applies fused steps (BatchNorm, residual,
// clamp) or requantizes. 1-D and 2-D windows; others run the layer's reference.
#include "backends/cpu/quantized_convolution.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "backends/cpu/blas.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/gemm_int8.h"
#include "layers/quantized_convolution.h"

namespace espresso::cpu {
namespace {

using Params = QuantizedConvParams;

// nearbyint without a library call: adding and removing 1.5·2^23 rounds half to even in the default
// rounding mode; larger magnitudes saturate anyway, so they are clamped first.
inline float round_half_even(float v) {
  constexpr float kMagic = 12582912.0f;
  v = std::clamp(v, -4194304.0f, 4194304.0f);
  const float shifted = v + kMagic;  // not folded: without -ffast-math the compiler keeps both steps
  return shifted - kMagic;
}

class Int8ConvolutionKernel final : public Kernel {
 public:
  // `w` are the integer weights minus their zero points (each in [-128, 127]), out_channels × depth.
  Int8ConvolutionKernel(const ConvGeometry& g, const Params& params, const std::vector<std::int8_t>& w,
                        std::vector<double> weight_scale, std::vector<float> bias)
      : g_(g), p_(params), schedule_(g.batch), weight_scale_(std::move(weight_scale)), bias_(std::move(bias)) {
    const std::int64_t out_group = g.out_channels / g.group;
    depth_ = g.in_channels / g.group * g.kernel_spatial();
    for (std::int64_t grp = 0; grp < g.group; ++grp)
      packed_.emplace_back(w.data() + grp * out_group * depth_, depth_, out_group, depth_);
    multiplier_.assign(static_cast<std::size_t>(g.out_channels), 1.0);
    offset_.assign(static_cast<std::size_t>(g.out_channels), 0.0);
    height_ = g.axes() == 2 ? g.in_size[0] : 1;
    width_ = g.in_size[static_cast<std::size_t>(g.axes() - 1)];
    out_height_ = g.axes() == 2 ? g.out_size[0] : 1;
    out_width_ = g.out_size[static_cast<std::size_t>(g.axes() - 1)];
    // 1-D windows are 2-D ones of height 1.
    const bool two = g.axes() == 2;
    auto first = [&](const std::vector<std::int64_t>& v, std::int64_t one) { return two ? v[0] : one; };
    kernel_h_ = first(g.kernel, 1);
    kernel_w_ = g.kernel.back();
    stride_h_ = first(g.stride, 1);
    stride_w_ = g.stride.back();
    pad_h_ = first(g.pad, 0);
    pad_w_ = g.pad.back();
    dilation_h_ = first(g.dilation, 1);
    dilation_w_ = g.dilation.back();
    const std::int64_t columns = g.out_spatial();
    const std::int64_t ldc = (columns + kInt8Columns - 1) / kInt8Columns * kInt8Columns;
    const auto slots = static_cast<std::size_t>(schedule_.slots());
    images_.assign(slots, std::vector<std::uint8_t>(static_cast<std::size_t>(g.in_channels * g.in_spatial())));
    packed_b_.assign(slots, std::vector<std::uint8_t>(static_cast<std::size_t>(int8_b_bytes(depth_, columns))));
    sums_.assign(slots, std::vector<std::int32_t>(static_cast<std::size_t>(packed_[0].panels() * kInt8Rows * ldc)));
    name_ = std::string("int8-gemm-") + int8_gemm_isa();
    column_offset_.resize(static_cast<std::size_t>(columns));
    for (std::int64_t j = 0; j < columns; ++j)
      column_offset_[static_cast<std::size_t>(j)] =
          (j / kInt8Columns) * int8_depth_groups(depth_) * kInt8Columns * 4 + (j % kInt8Columns) * 4;
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const float* residual = residual_.defined() ? residual_.data<float>() : nullptr;
    const std::int64_t in_spatial = g_.in_spatial(), out_spatial = g_.out_spatial();
    const std::int64_t out_group = g_.out_channels / g_.group, in_group = g_.in_channels / g_.group;
    const std::int64_t ldc = (out_spatial + kInt8Columns - 1) / kInt8Columns * kInt8Columns;
    const std::int64_t groups4 = int8_depth_groups(depth_);
    schedule_.run([&](std::int64_t n, int slot) {
      const auto s = static_cast<std::size_t>(slot);
      const float* image = x + n * g_.in_channels * in_spatial;
      // 1. Quantize the image to uint8.
      double scale = p_.input_scale, zero = p_.input_zero_point;
      QuantRange range = p_.input_range;
      if (p_.input == Params::Input::dynamic) {
        QuantizedConvolutionLayer::dynamic_params(image, g_.in_channels * in_spatial, scale, zero);
        range = {0, 255};
      }
      const int shift = range.lo < 0 ? 128 : 0;
      std::uint8_t* q = images_[s].data();
      const std::int64_t count = g_.in_channels * in_spatial;
      if (p_.input == Params::Input::quantized) {
        for (std::int64_t i = 0; i < count; ++i)
          q[i] = static_cast<std::uint8_t>(std::clamp(static_cast<int>(image[i]) + shift, 0, 255));
      } else {
        const float inverse = static_cast<float>(1.0 / scale);
        const float lo = static_cast<float>(range.lo + shift), hi = static_cast<float>(range.hi + shift);
        const float z = static_cast<float>(zero + shift);
        // x·(1/scale) can differ from x/scale in the last bit: unless scale is a power of two, divide in
        // float as the reference (and ONNX) does, so that ties round the same way.
        const auto scale_f = static_cast<float>(scale);
        const bool exact = inverse * scale_f == 1.0f && std::ldexp(1.0f, std::ilogb(scale_f)) == scale_f;
        for (std::int64_t i = 0; i < count; ++i) {
          const float v = round_half_even(exact ? image[i] * inverse : image[i] / scale_f) + z;
          q[i] = static_cast<std::uint8_t>(std::clamp(v, lo, hi));
        }
      }
      const auto zero_u8 = static_cast<std::uint8_t>(static_cast<int>(zero) + shift);
      std::uint8_t* b = packed_b_[s].data();
      std::int32_t* c = sums_[s].data();
      float* out = y + n * g_.out_channels * out_spatial;
      const double input_scale = scale;
      for (std::int64_t grp = 0; grp < g_.group; ++grp) {
        // 2. Windows into packed B: row (channel, ky, kx), column (oy, ox); padding reads the zero point.
        const std::uint8_t* qg = q + grp * in_group * in_spatial;
        // Column j of row k lives at b + row_offset(k) + column_offset_[j].
        for (std::int64_t k = 0; k < groups4 * 4; ++k) {
          std::uint8_t* dst = b + (k / 4) * kInt8Columns * 4 + k % 4;
          const std::int64_t* at = column_offset_.data();
          if (k >= depth_) {
            for (std::int64_t j = 0; j < out_spatial; ++j) dst[at[j]] = 0;
            continue;
          }
          const std::int64_t channel = k / (kernel_h_ * kernel_w_), tap = k % (kernel_h_ * kernel_w_);
          const std::int64_t ky = tap / kernel_w_, kx = tap % kernel_w_;
          const std::uint8_t* plane = qg + channel * in_spatial;
          for (std::int64_t oy = 0; oy < out_height_; ++oy, at += out_width_) {
            const std::int64_t iy = oy * stride_h_ - pad_h_ + ky * dilation_h_;
            if (iy < 0 || iy >= height_) {
              for (std::int64_t ox = 0; ox < out_width_; ++ox) dst[at[ox]] = zero_u8;
              continue;
            }
            const std::uint8_t* line = plane + iy * width_;
            for (std::int64_t ox = 0; ox < out_width_; ++ox) {
              const std::int64_t ix = ox * stride_w_ - pad_w_ + kx * dilation_w_;
              dst[at[ox]] = ix >= 0 && ix < width_ ? line[ix] : zero_u8;
            }
          }
        }
        // 3. The integer products.
        const PackedInt8Matrix& a = packed_[static_cast<std::size_t>(grp)];
        gemm_u8s8(a, b, out_spatial, c, ldc);
        // 4. Back to real values (or requantized, or the raw sums).
        for (std::int64_t r = 0; r < out_group; ++r) {
          const std::int64_t oc = grp * out_group + r;
          const auto ocs = static_cast<std::size_t>(oc);
          const std::int32_t correction = static_cast<std::int32_t>(zero_u8) * a.row_sums()[static_cast<std::size_t>(r)];
          const std::int32_t* row = c + r * ldc;
          float* dst = redirect_ ? redirect_ + n * image_stride_ + oc * out_spatial : out + oc * out_spatial;
          if (p_.output == Params::Output::accumulator) {
            for (std::int64_t j = 0; j < out_spatial; ++j) dst[j] = static_cast<float>(row[j] - correction);
            continue;
          }
          const float m = static_cast<float>(input_scale * weight_scale_[ocs] * multiplier_[ocs]);
          const float o = static_cast<float>((bias_.empty() ? 0.0 : bias_[ocs]) * multiplier_[ocs] + offset_[ocs]);
          const float* res = residual ? residual + (n * g_.out_channels + oc) * out_spatial : nullptr;
          if (p_.output == Params::Output::quantized) {
            const float inv = static_cast<float>(1.0 / p_.output_scale), oz = static_cast<float>(p_.output_zero_point);
            const float lo = static_cast<float>(p_.output_range.lo), hi = static_cast<float>(p_.output_range.hi);
            for (std::int64_t j = 0; j < out_spatial; ++j) {
              float v = static_cast<float>(row[j] - correction) * m + o;
              if (p_.relu) v = std::max(v, 0.0f);
              dst[j] = std::clamp(round_half_even(v * inv) + oz, lo, hi);
            }
            continue;
          }
          for (std::int64_t j = 0; j < out_spatial; ++j) {
            float v = static_cast<float>(row[j] - correction) * m + o;
            if (p_.relu) v = std::max(v, 0.0f);
            if (res) v += res[j];
            dst[j] = std::clamp(v, lo_, hi_);
          }
        }
      }
    });
  }

  // Folded once: a quantized net's weights and statistics are fixed when it is quantized.
  bool fuse_channel_affine(ChannelAffine affine) override {
    if (p_.output != Params::Output::real || p_.relu || residual_.defined() || clamped_ || redirect_) return false;
    std::vector<float> m, o;
    affine.coefficients(m, o);
    if (m.size() != multiplier_.size() || o.size() != offset_.size()) return false;
    for (std::size_t c = 0; c < m.size(); ++c) {
      multiplier_[c] *= m[c];
      offset_[c] = offset_[c] * m[c] + o[c];
    }
    name_ += "+batchnorm";
    return true;
  }
  bool fuse_residual(const Tensor& residual) override {
    if (p_.output != Params::Output::real || clamped_ || residual_.defined()) return false;
    residual_ = residual;
    name_ += "+add";
    return true;
  }
  bool fuse_clamp(float lo, float hi) override {
    if (p_.output != Params::Output::real || clamped_) return false;
    clamped_ = true;
    lo_ = lo;
    hi_ = hi;
    name_ += "+clamp";
    return true;
  }
  bool redirect_output(float* base, std::int64_t image_stride) override {
    if (redirect_) return false;
    redirect_ = base;
    image_stride_ = image_stride;
    name_ += " into concat";
    return true;
  }
  const char* name() const override { return name_.c_str(); }

 private:
  ConvGeometry g_;
  Params p_;
  ImageSchedule schedule_;
  std::int64_t depth_ = 0;
  std::int64_t height_ = 1, width_ = 1, out_height_ = 1, out_width_ = 1, kernel_h_ = 1, kernel_w_ = 1;
  std::int64_t stride_h_ = 1, stride_w_ = 1, pad_h_ = 0, pad_w_ = 0, dilation_h_ = 1, dilation_w_ = 1;
  std::vector<PackedInt8Matrix> packed_;
  std::vector<double> weight_scale_;
  std::vector<float> bias_;
  std::vector<double> multiplier_, offset_;  // fused BatchNorms
  Tensor residual_;
  bool clamped_ = false;
  float lo_ = -std::numeric_limits<float>::infinity(), hi_ = std::numeric_limits<float>::infinity();
  float* redirect_ = nullptr;
  std::int64_t image_stride_ = 0;
  std::string name_;
  std::vector<std::vector<std::uint8_t>> images_, packed_b_;
  std::vector<std::vector<std::int32_t>> sums_;
  std::vector<std::int64_t> column_offset_;  // where column j of packed B starts
};

bool fits_windows(const ConvGeometry& g) { return g.axes() == 1 || g.axes() == 2; }

}  // namespace

std::unique_ptr<Kernel> make_quantized_convolution(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& conv = static_cast<const QuantizedConvolutionLayer&>(layer);
  const ConvGeometry g = conv.geometry(inputs[0]);
  if (!fits_windows(g)) return nullptr;
  conv.check_weights();
  const float* w = layer.weights()[0].data<float>();
  const float* scale = layer.weights()[1].data<float>();
  const float* zero = layer.weights()[2].data<float>();
  const std::int64_t depth = g.in_channels / g.group * g.kernel_spatial();
  std::vector<std::int8_t> shifted(static_cast<std::size_t>(g.out_channels * depth));
  for (std::int64_t oc = 0; oc < g.out_channels; ++oc) {
    for (std::int64_t p = 0; p < depth; ++p) {
      const float v = w[oc * depth + p] - zero[oc];
      if (v < -128 || v > 127) return nullptr;  // uint8 weights far from their zero point: reference
      shifted[static_cast<std::size_t>(oc * depth + p)] = static_cast<std::int8_t>(v);
    }
  }
  std::vector<double> weight_scale(scale, scale + g.out_channels);
  std::vector<float> bias;
  if (conv.has_bias()) bias.assign(layer.weights()[3].data<float>(), layer.weights()[3].data<float>() + g.out_channels);
  return std::make_unique<Int8ConvolutionKernel>(g, conv.quant(), shifted, std::move(weight_scale), std::move(bias));
}

std::unique_ptr<Kernel> int8_convolution_kernel(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& conv = static_cast<const ConvolutionLayer&>(layer);
  const ConvGeometry g = conv.geometry(inputs[0]);
  if (!fits_windows(g)) return nullptr;
  // Weights: symmetric int8 per output channel, scale max|w| / 127.
  const float* w = layer.weights()[0].data<float>();
  const std::int64_t depth = g.in_channels / g.group * g.kernel_spatial();
  std::vector<std::int8_t> q(static_cast<std::size_t>(g.out_channels * depth));
  std::vector<double> scale(static_cast<std::size_t>(g.out_channels));
  for (std::int64_t oc = 0; oc < g.out_channels; ++oc) {
    double top = 0;
    for (std::int64_t p = 0; p < depth; ++p) top = std::max(top, std::abs(static_cast<double>(w[oc * depth + p])));
    const double s = top > 0 ? top / 127.0 : 1.0;
    scale[static_cast<std::size_t>(oc)] = s;
    for (std::int64_t p = 0; p < depth; ++p)
      q[static_cast<std::size_t>(oc * depth + p)] =
          static_cast<std::int8_t>(std::clamp(std::nearbyint(w[oc * depth + p] / s), -127.0, 127.0));
  }
  Params params;
  params.input = Params::Input::dynamic;
  std::vector<float> bias;
  if (conv.has_bias()) bias.assign(layer.weights()[1].data<float>(), layer.weights()[1].data<float>() + g.out_channels);
  return std::make_unique<Int8ConvolutionKernel>(g, params, q, std::move(scale), std::move(bias));
}

}  // namespace espresso::cpu
