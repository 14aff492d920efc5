// Quantize, Dequantize, DynamicQuantize and QuantizedConvolution in the layer harness (naive double
// loops over ONNX's definitions), the int8 GEMM's paths against plain integer sums, and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "backends/cpu/gemm_int8.h"
#include "layers/layer_test_util.h"

namespace espresso::testing {
namespace {

double round_even(double v) { return std::nearbyint(v); }

// Power-of-two scales keep x / scale exact in float and double alike, so rounding ties agree.
double pow2_scale(Rng& rng) { return std::ldexp(1.0, -rng.integer(3, 8)); }

TEST(Layers, Quantize) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Quantize";
            const Shape x = random_shape(rng, 1, 4, 6);
            const bool per_axis = rng.coin();
            int axis = 0;
            if (per_axis) c.spec.attrs.set("axis", std::int64_t{random_axis(rng, x.rank(), axis)});
            const bool signed_type = rng.coin();
            c.spec.attrs.set("type", std::string(signed_type ? "int8" : "uint8"));
            // A third of them QuantizeLinear → DequantizeLinear in one layer.
            if (rng.integer(0, 2) == 0) c.spec.attrs.set("dequantize", std::int64_t{1});
            const std::int64_t params = per_axis ? x[axis] : 1;
            Values scale, zero;
            for (std::int64_t i = 0; i < params; ++i) {
              scale.push_back(pow2_scale(rng));
              zero.push_back(signed_type ? rng.integer(-20, 20) : rng.integer(100, 150));
            }
            c.input_shapes = {x, per_axis ? Shape{params} : Shape{}, per_axis ? Shape{params} : Shape{}};
            c.inputs = {rng.values(static_cast<std::size_t>(x.numel()), -2.0, 2.0), scale, zero};
            c.non_differentiable_inputs = {0, 1, 2};
            c.spec.inputs = {"x", "scale", "zero"};
            c.spec.attrs.set("axis", std::int64_t{per_axis ? axis : 1});
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const Shape& x = c.input_shapes[0];
            const bool per_axis = c.input_shapes[1].rank() == 1;
            const int axis = static_cast<int>(c.spec.attrs.get_int("axis", 1));
            const bool signed_type = c.spec.attrs.get_string("type", "uint8") == "int8";
            const std::int64_t inner = per_axis ? product(x, axis + 1, x.rank()) : 1;
            const std::int64_t channels = per_axis ? x[axis] : 1;
            Values y;
            for (std::size_t i = 0; i < in[0].size(); ++i) {
              const std::size_t k = per_axis ? static_cast<std::size_t>((static_cast<std::int64_t>(i) / inner) % channels) : 0;
              const double q = std::clamp(round_even(in[0][i] / in[1][k]) + in[2][k],
                                          signed_type ? -128.0 : 0.0, signed_type ? 127.0 : 255.0);
              y.push_back(c.spec.attrs.get_int("dequantize", 0) ? (q - in[2][k]) * in[1][k] : q);
            }
            return std::vector<Values>{y};
          },
      .gradient = Gradient::none,
  });
}

TEST(Layers, Dequantize) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Dequantize";
            const Shape x = random_shape(rng, 2, 4, 6);
            const int axis = rng.integer(0, x.rank() - 1);
            c.spec.attrs.set("axis", std::int64_t{axis});
            Values values, scale, zero;
            for (std::int64_t i = 0; i < x.numel(); ++i) values.push_back(rng.integer(0, 255));
            for (std::int64_t i = 0; i < x[axis]; ++i) {
              scale.push_back(rng.uniform(0.001, 0.1));
              zero.push_back(rng.integer(0, 255));
            }
            c.input_shapes = {x, Shape{x[axis]}, Shape{x[axis]}};
            c.inputs = {values, scale, zero};
            c.spec.inputs = {"x", "scale", "zero"};
            c.non_differentiable_inputs = {0, 1, 2};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const Shape& x = c.input_shapes[0];
            const int axis = static_cast<int>(c.spec.attrs.get_int("axis", 1));
            const std::int64_t inner = product(x, axis + 1, x.rank());
            Values y;
            for (std::size_t i = 0; i < in[0].size(); ++i) {
              const auto k = static_cast<std::size_t>((static_cast<std::int64_t>(i) / inner) % x[axis]);
              y.push_back((in[0][i] - in[2][k]) * in[1][k]);
            }
            return std::vector<Values>{y};
          },
      .gradient = Gradient::none,
  });
}

// QuantizedConvolution: input real (power-of-two scale, saturating sometimes), already quantized, or
// dynamic (range per image); output real with bias and ReLU, or the raw integer sums.
LayerCase quantized_conv_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "QuantizedConvolution";
  const int axes = rng.integer(0, 5) == 0 ? 1 : 2;
  // A quarter depthwise, a group per channel (MobileNet's layers: the CPU's direct path).
  const bool depthwise = rng.integer(0, 3) == 0;
  const int group = depthwise ? rng.integer(2, 9) : rng.integer(1, 3) == 3 ? 2 : 1;
  // Outputs per group below 16 and above (the GPU's direct and tensor-core kernels).
  const int in_channels = depthwise ? group : group * rng.integer(1, 6),
            out_channels =
                depthwise ? group : group * (rng.coin() ? rng.integer(1, 12) : rng.integer(16, 40));
  std::vector<std::int64_t> kernel, stride, pad, dilation, dims{rng.integer(1, 3), in_channels};
  // Some images wide enough for the kernels' vector copies (16 and 32 columns at a time).
  const std::int64_t wide = rng.integer(0, 3) == 0 ? rng.integer(30, 70) : 0;
  for (int a = 0; a < axes; ++a) {
    kernel.push_back(rng.integer(1, 4));
    stride.push_back(rng.integer(1, 2));
    pad.push_back(rng.integer(0, 2));
    dilation.push_back(rng.integer(1, 2));
    const std::int64_t extent = dilation.back() * (kernel.back() - 1) + 1;
    dims.push_back(std::max<std::int64_t>(1, extent - 2 * pad.back()) + rng.integer(0, 12) + (a == axes - 1 ? wide : 0));
  }
  c.spec.attrs.set("num_output", std::int64_t{out_channels});
  c.spec.attrs.set("kernel", kernel);
  c.spec.attrs.set("stride", stride);
  c.spec.attrs.set("pad", pad);
  c.spec.attrs.set("dilation", dilation);
  c.spec.attrs.set("group", std::int64_t{group});
  const int mode = rng.integer(0, 2);
  const bool accumulator = rng.integer(0, 3) == 0;
  const bool signed_input = rng.coin();
  c.spec.attrs.set("input", std::string(mode == 0 ? "real" : mode == 1 ? "quantized" : "dynamic"));
  c.spec.attrs.set("input_type", std::string(signed_input ? "int8" : "uint8"));
  c.spec.attrs.set("input_scale", pow2_scale(rng));
  const std::int64_t zero = signed_input ? rng.integer(-10, 10) : rng.integer(100, 150);
  c.spec.attrs.set("input_zero_point", zero);
  c.spec.attrs.set("bias", std::int64_t{!accumulator && rng.coin()});
  if (accumulator) c.spec.attrs.set("output", std::string("accumulator"));
  if (!accumulator && rng.integer(0, 3) == 0) {  // real outputs rounded to a uint8 grid
    c.spec.attrs.set("output", std::string("dequantized"));
    c.spec.attrs.set("output_scale", pow2_scale(rng));
    c.spec.attrs.set("output_zero_point", rng.integer(0, 255));
  }
  if (!accumulator && rng.coin()) c.spec.attrs.set("relu", std::int64_t{1});
  c.input_shapes = {Shape(dims)};
  Values x;
  for (std::int64_t i = 0; i < Shape(dims).numel(); ++i)
    x.push_back(mode == 1 ? rng.integer(signed_input ? -128 : 0, signed_input ? 127 : 255) : rng.uniform(-1, 1));
  c.inputs = {x};
  std::int64_t depth = in_channels / group;
  for (std::int64_t k : kernel) depth *= k;
  Values w, w_scale, w_zero, bias;
  for (int oc = 0; oc < out_channels; ++oc) {
    w_scale.push_back(rng.uniform(0.001, 0.05));
    w_zero.push_back(rng.integer(-3, 3));
    bias.push_back(rng.uniform(-1, 1));
  }
  for (int oc = 0; oc < out_channels; ++oc)
    for (std::int64_t p = 0; p < depth; ++p) w.push_back(w_zero[static_cast<std::size_t>(oc)] + rng.integer(-120, 120));
  c.weights = {w, w_scale, w_zero};
  if (c.spec.attrs.get_int("bias", 0)) c.weights.push_back(bias);
  c.non_differentiable_inputs = {0};
  return c;
}

std::vector<Values> quantized_conv_naive(const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>& w) {
  const Shape& shape = c.input_shapes[0];
  const int axes = shape.rank() - 2;
  const std::int64_t batch = shape[0], channels = shape[1];
  const std::int64_t height = axes == 2 ? shape[2] : 1, width = shape[shape.rank() - 1];
  auto at = [&](const char* name, int a) { return c.spec.attrs.get_ints(name, {})[static_cast<std::size_t>(a)]; };
  const std::int64_t kh = axes == 2 ? at("kernel", 0) : 1, kw = at("kernel", axes - 1);
  const std::int64_t sh = axes == 2 ? at("stride", 0) : 1, sw = at("stride", axes - 1);
  const std::int64_t ph = axes == 2 ? at("pad", 0) : 0, pw = at("pad", axes - 1);
  const std::int64_t dh = axes == 2 ? at("dilation", 0) : 1, dw = at("dilation", axes - 1);
  const std::int64_t oh_count = (height + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const std::int64_t ow_count = (width + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  const std::int64_t outputs = c.spec.attrs.get_int("num_output", 0), group = c.spec.attrs.get_int("group", 1);
  const std::int64_t in_group = channels / group, out_group = outputs / group;
  const std::string mode = c.spec.attrs.get_string("input", "real");
  const bool signed_input = c.spec.attrs.get_string("input_type", "uint8") == "int8";
  const bool accumulator = c.spec.attrs.get_string("output", "real") == "accumulator";
  const bool dequantized = c.spec.attrs.get_string("output", "real") == "dequantized";
  const double out_scale = c.spec.attrs.get_float("output_scale", 1);
  const auto out_zero = static_cast<double>(c.spec.attrs.get_int("output_zero_point", 0));
  const bool relu = c.spec.attrs.get_int("relu", 0) != 0, bias = c.spec.attrs.get_int("bias", 0) != 0;
  Values y;
  const std::int64_t image = channels * height * width;
  for (std::int64_t n = 0; n < batch; ++n) {
    double scale = c.spec.attrs.get_float("input_scale", 1), zero = static_cast<double>(c.spec.attrs.get_int("input_zero_point", 0));
    double lo = signed_input ? -128 : 0, hi = signed_input ? 127 : 255;
    if (mode == "dynamic") {
      // ONNX DynamicQuantizeLinear's range, per image.
      double mn = 0, mx = 0;
      for (std::int64_t i = 0; i < image; ++i) {
        mn = std::min(mn, in[0][static_cast<std::size_t>(n * image + i)]);
        mx = std::max(mx, in[0][static_cast<std::size_t>(n * image + i)]);
      }
      // In float32, as ONNX defines DynamicQuantizeLinear.
      const float s = (static_cast<float>(mx) - static_cast<float>(mn)) / 255.0f;
      scale = s;
      zero = std::clamp(round_even(0.0f - static_cast<float>(mn) / s), 0.0, 255.0);
      lo = 0;
      hi = 255;
    }
    auto q = [&](std::int64_t ch, std::int64_t yy, std::int64_t xx) -> double {
      if (yy < 0 || yy >= height || xx < 0 || xx >= width) return 0.0;  // the zero point: a real 0
      const double v = in[0][static_cast<std::size_t>(((n * channels + ch) * height + yy) * width + xx)];
      if (mode == "quantized") return v - zero;
      return std::clamp(round_even(static_cast<float>(v) / static_cast<float>(scale)) + zero, lo, hi) - zero;
    };
    for (std::int64_t oc = 0; oc < outputs; ++oc) {
      for (std::int64_t oy = 0; oy < oh_count; ++oy) {
        for (std::int64_t ox = 0; ox < ow_count; ++ox) {
          double acc = 0;
          for (std::int64_t ic = 0; ic < in_group; ++ic) {
            const std::int64_t ch = oc / out_group * in_group + ic;
            for (std::int64_t ky = 0; ky < kh; ++ky)
              for (std::int64_t kx = 0; kx < kw; ++kx) {
                const double wq = w[0][static_cast<std::size_t>(((oc * in_group + ic) * kh + ky) * kw + kx)] -
                                  w[2][static_cast<std::size_t>(oc)];
                acc += q(ch, oy * sh - ph + ky * dh, ox * sw - pw + kx * dw) * wq;
              }
          }
          if (!accumulator) {
            acc = acc * scale * w[1][static_cast<std::size_t>(oc)] + (bias ? w[3][static_cast<std::size_t>(oc)] : 0.0);
            if (relu) acc = std::max(acc, 0.0);
            if (dequantized) acc = (std::clamp(round_even(acc / out_scale) + out_zero, 0.0, 255.0) - out_zero) * out_scale;
          }
          y.push_back(acc);
        }
      }
    }
  }
  return {y};
}

TEST(Layers, QuantizedConvolution) {
  run_layer_test({.make_case = quantized_conv_case, .naive = quantized_conv_naive, .cases = 40, .gradient = Gradient::none});
}

// Every int8 GEMM path this processor runs against plain 64-bit integer sums, on odd sizes.
TEST(Int8Gemm, PathsMatchIntegerSums) {
  Rng rng(7);
  for (cpu::Int8Path path : {cpu::Int8Path::plain, cpu::Int8Path::avx2, cpu::Int8Path::vnni}) {
    if (!cpu::int8_path_available(path)) {
      std::printf("int8 path %d not available here: skipped\n", static_cast<int>(path));
      continue;
    }
    for (int trial = 0; trial < 12; ++trial) {
      const std::int64_t m = rng.integer(1, 40), k = rng.integer(1, 300), n = rng.integer(1, 100);
      std::vector<std::int8_t> a(static_cast<std::size_t>(m * k));
      std::vector<std::uint8_t> b(static_cast<std::size_t>(k * n));
      for (auto& v : a) v = static_cast<std::int8_t>(rng.integer(-128, 127));
      for (auto& v : b) v = static_cast<std::uint8_t>(rng.integer(0, 255));
      const cpu::PackedInt8Matrix packed(a.data(), k, m, k);
      std::vector<std::uint8_t> pb(static_cast<std::size_t>(cpu::int8_b_bytes(k, n)), 0);
      const std::int64_t groups = cpu::int8_depth_groups(k);
      for (std::int64_t p = 0; p < k; ++p)
        for (std::int64_t j = 0; j < n; ++j) pb[static_cast<std::size_t>(cpu::int8_b_index(groups, p, j))] = b[static_cast<std::size_t>(p * n + j)];
      const std::int64_t ldc = (n + cpu::kInt8Columns - 1) / cpu::kInt8Columns * cpu::kInt8Columns;
      std::vector<std::int32_t> c(static_cast<std::size_t>(packed.panels() * cpu::kInt8Rows * ldc));
      std::atomic<int> tiles = 0;
      cpu::gemm_u8s8(
          packed, pb.data(), n,
          [&](std::int64_t row, std::int64_t column, const std::int32_t* tile) {
            for (std::int64_t r = 0; r < cpu::kInt8Rows; ++r)
              std::copy_n(tile + r * cpu::kInt8Columns, cpu::kInt8Columns, c.begin() + (row + r) * ldc + column);
            ++tiles;
          },
          path);
      ASSERT_EQ(tiles, packed.panels() * (ldc / cpu::kInt8Columns));
      for (std::int64_t i = 0; i < m; ++i) {
        std::int64_t row_sum = 0;
        for (std::int64_t p = 0; p < k; ++p) row_sum += a[static_cast<std::size_t>(i * k + p)];
        ASSERT_EQ(packed.row_sums()[static_cast<std::size_t>(i)], row_sum);
        for (std::int64_t j = 0; j < n; ++j) {
          std::int64_t sum = 0;
          for (std::int64_t p = 0; p < k; ++p)
            sum += static_cast<std::int64_t>(a[static_cast<std::size_t>(i * k + p)]) * b[static_cast<std::size_t>(p * n + j)];
          ASSERT_EQ(c[static_cast<std::size_t>(i * ldc + j)], sum)
              << "path " << static_cast<int>(path) << " m " << m << " k " << k << " n " << n << " at " << i << "," << j;
        }
      }
    }
  }
}

TEST(Layers, QuantizedErrors) {
  LayerSpec q = spec_of("Quantize", 3);
  auto make = [](const LayerSpec& spec) { return create_layer(spec); };
  // Per-axis scale of the wrong length.
  expect_error<ShapeError>([&] { make(q)->output_shapes({Shape{2, 3}, Shape{4}, Shape{4}}); }, "scale has 4 values for 3");
  // A scale of 0 and a zero point outside uint8, found when the values are seen.
  auto run = [&](float scale, float zero) {
    auto layer = make(q);
    std::vector<Tensor> in{Tensor::from(Shape{2}, {0.5f, 1.0f}), Tensor::from(Shape{}, {scale}), Tensor::from(Shape{}, {zero})};
    std::vector<Tensor> out{Tensor::zeros(Shape{2})};
    layer->forward(in, out);
  };
  expect_error<ModelError>([&] { run(0.0f, 0.0f); }, "scale[0] is 0");
  expect_error<ModelError>([&] { run(-1.0f, 0.0f); }, "scales must be positive");
  expect_error<ModelError>([&] { run(0.1f, 300.0f); }, "zero_point[0] is 300");
  LayerSpec conv = spec_of("QuantizedConvolution");
  conv.attrs.set("num_output", std::int64_t{2});
  conv.attrs.set("kernel", std::vector<std::int64_t>{1, 1});
  conv.attrs.set("input_scale", -0.5);
  expect_error<ModelError>([&] { make(conv); }, "input_scale");
  conv.attrs.set("input_scale", 0.5);
  conv.attrs.set("input_zero_point", std::int64_t{256});
  expect_error<ModelError>([&] { make(conv); }, "input_zero_point 256");
  conv.attrs.set("input_zero_point", std::int64_t{0});
  conv.attrs.set("output", std::string("accumulator"));
  expect_error<ModelError>([&] { make(conv); }, "accumulator");
}

}  // namespace
}  // namespace espresso::testing
