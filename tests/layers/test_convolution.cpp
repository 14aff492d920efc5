#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>

#include "test_support.h"
#include "harness/layer_harness.h"
#include "layers/registry.h"

namespace espresso::testing {
namespace {

// Geometry lifted to 3 spatial axes: missing leading axes have size 1 and a unit window.
struct Box {
  std::int64_t size[3] = {1, 1, 1}, kernel[3] = {1, 1, 1}, stride[3] = {1, 1, 1}, pad[3] = {0, 0, 0},
               dilation[3] = {1, 1, 1};
};

std::int64_t attr_at(const Attributes& attrs, const std::string& name, int axis, std::int64_t fallback) {
  const std::vector<std::int64_t> v = attrs.get_ints(name, {fallback});
  return v.size() == 1 ? v[0] : v[static_cast<std::size_t>(axis)];
}

Box lift(const LayerCase& c) {
  const Shape& in = c.input_shapes[0];
  const int axes = in.rank() - 2;
  Box b;
  for (int a = 0; a < axes; ++a) {
    const int slot = 3 - axes + a;
    b.size[slot] = in[2 + a];
    b.kernel[slot] = attr_at(c.spec.attrs, "kernel", a, 1);
    b.stride[slot] = attr_at(c.spec.attrs, "stride", a, 1);
    b.pad[slot] = attr_at(c.spec.attrs, "pad", a, 0);
    b.dilation[slot] = attr_at(c.spec.attrs, "dilation", a, 1);
  }
  return b;
}

// Writes per-axis values as one int when they agree and the coin says so, else as a list.
void set_axis_attr(LayerCase& c, const std::string& name, const std::vector<std::int64_t>& values, Rng& rng) {
  const bool same = std::all_of(values.begin(), values.end(), [&](std::int64_t v) { return v == values[0]; });
  if (same && rng.coin()) {
    c.spec.attrs.set(name, values[0]);
  } else {
    c.spec.attrs.set(name, values);
  }
}

LayerCase make_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "Convolution";
  // Depthwise 2-D cases (every channel its own group) reach the CPU's direct kernel.
  const bool depthwise = rng.integer(0, 3) == 0;
  const int axes = depthwise ? 2 : rng.integer(0, 5) == 0 ? 3 : rng.integer(1, 2);
  const int group = depthwise ? rng.integer(1, 6) : rng.integer(1, 3);
  const int in_channels = depthwise ? group : group * rng.integer(1, 4);
  const int out_channels = depthwise ? group : group * rng.integer(1, 4);
  const bool pointwise = !depthwise && rng.integer(0, 4) == 0;
  std::vector<std::int64_t> kernel, stride, pad, dilation, dims{rng.integer(1, 3), in_channels};
  for (int a = 0; a < axes; ++a) {
    kernel.push_back(pointwise ? 1 : rng.integer(1, axes == 3 ? 3 : 5));
    stride.push_back(pointwise ? 1 : rng.integer(1, 3));
    pad.push_back(pointwise ? 0 : rng.integer(0, 2));
    dilation.push_back(rng.integer(1, 2));
    const std::int64_t extent = dilation.back() * (kernel.back() - 1) + 1;
    dims.push_back(std::max<std::int64_t>(1, extent - 2 * pad.back()) + rng.integer(0, axes == 3 ? 3 : 9));
  }
  c.spec.attrs.set("num_output", std::int64_t{out_channels});
  set_axis_attr(c, "kernel", kernel, rng);
  if (rng.coin() || !pointwise) set_axis_attr(c, "stride", stride, rng);
  if (rng.coin() || !pointwise) set_axis_attr(c, "pad", pad, rng);
  set_axis_attr(c, "dilation", dilation, rng);
  if (group > 1 || rng.coin()) c.spec.attrs.set("group", std::int64_t{group});
  if (rng.coin()) c.spec.attrs.set("bias", std::int64_t{0});
  c.input_shapes = {Shape(dims)};
  return c;
}

std::vector<Values> naive(const LayerCase& c, const std::vector<Values>& in,
                          const std::vector<Values>& weights) {
  const Box b = lift(c);
  const Shape& shape = c.input_shapes[0];
  const std::int64_t batch = shape[0], channels = shape[1];
  const std::int64_t outputs = c.spec.attrs.get_int("num_output", 0);
  const std::int64_t group = c.spec.attrs.get_int("group", 1);
  const bool bias = c.spec.attrs.get_int("bias", 1) != 0;
  const std::int64_t in_group = channels / group, out_group = outputs / group;
  std::int64_t out[3];
  for (int a = 0; a < 3; ++a) {
    out[a] = (b.size[a] + 2 * b.pad[a] - b.dilation[a] * (b.kernel[a] - 1) - 1) / b.stride[a] + 1;
  }
  const std::int64_t in_volume = b.size[0] * b.size[1] * b.size[2];
  const std::int64_t taps = b.kernel[0] * b.kernel[1] * b.kernel[2];
  Values y;
  for (std::int64_t n = 0; n < batch; ++n) {
    for (std::int64_t co = 0; co < outputs; ++co) {
      for (std::int64_t od = 0; od < out[0]; ++od) {
        for (std::int64_t oh = 0; oh < out[1]; ++oh) {
          for (std::int64_t ow = 0; ow < out[2]; ++ow) {
            double sum = bias ? weights[1][static_cast<std::size_t>(co)] : 0.0;
            for (std::int64_t ci = 0; ci < in_group; ++ci) {
              const std::int64_t channel = co / out_group * in_group + ci;
              for (std::int64_t kd = 0; kd < b.kernel[0]; ++kd) {
                for (std::int64_t kh = 0; kh < b.kernel[1]; ++kh) {
                  for (std::int64_t kw = 0; kw < b.kernel[2]; ++kw) {
                    const std::int64_t d = od * b.stride[0] - b.pad[0] + kd * b.dilation[0];
                    const std::int64_t h = oh * b.stride[1] - b.pad[1] + kh * b.dilation[1];
                    const std::int64_t w = ow * b.stride[2] - b.pad[2] + kw * b.dilation[2];
                    if (d < 0 || d >= b.size[0] || h < 0 || h >= b.size[1] || w < 0 || w >= b.size[2])
                      continue;
                    const std::int64_t x_at =
                        (n * channels + channel) * in_volume + (d * b.size[1] + h) * b.size[2] + w;
                    const std::int64_t w_at =
                        (co * in_group + ci) * taps + (kd * b.kernel[1] + kh) * b.kernel[2] + kw;
                    sum += in[0][static_cast<std::size_t>(x_at)] * weights[0][static_cast<std::size_t>(w_at)];
                  }
                }
              }
            }
            y.push_back(sum);
          }
        }
      }
    }
  }
  return {y};
}

// 2-D 3×3 and 5×5 windows of stride 1 and dilation 1 with one group: the cases the CPU's Winograd tactics
// take.
LayerCase winograd_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "Convolution";
  const std::int64_t kernel = rng.coin() ? 3 : 5;
  const std::int64_t pad_h = rng.integer(0, kernel - 1), pad_w = rng.integer(0, kernel - 1);
  c.spec.attrs.set("num_output", std::int64_t{rng.integer(1, 12)});
  c.spec.attrs.set("kernel", kernel);
  c.spec.attrs.set("pad", std::vector<std::int64_t>{pad_h, pad_w});
  if (rng.coin()) c.spec.attrs.set("bias", std::int64_t{0});
  c.input_shapes = {Shape{rng.integer(1, 3), rng.integer(1, 9),
                          std::max<std::int64_t>(1, kernel - 2 * pad_h) + rng.integer(0, 12),
                          std::max<std::int64_t>(1, kernel - 2 * pad_w) + rng.integer(0, 12)}};
  return c;
}

// The largest kernel, stride, dilation and extra rows and columns random_windows draws per axis.
struct WindowRanges {
  int kernel, stride, dilation, extra_rows, extra_columns;
};

// A 2-D convolution on `channels` input channels with random windows within `r` (pads up to 3, which
// passes some windows), input rows and columns the window's reach past the pads plus up to r's extras.
LayerCase random_windows(Rng& rng, std::int64_t channels, const WindowRanges& r) {
  LayerCase c;
  c.spec.type = "Convolution";
  std::vector<std::int64_t> kernel, stride, pad, dilation, dims{rng.integer(1, 2), channels};
  for (int a = 0; a < 2; ++a) {
    kernel.push_back(rng.integer(1, r.kernel));
    stride.push_back(rng.integer(1, r.stride));
    pad.push_back(rng.integer(0, 3));
    dilation.push_back(rng.integer(1, r.dilation));
    const std::int64_t extent = dilation.back() * (kernel.back() - 1) + 1;
    dims.push_back(std::max<std::int64_t>(1, extent - 2 * pad.back()) +
                   rng.integer(0, a == 0 ? r.extra_rows : r.extra_columns));
  }
  c.spec.attrs.set("kernel", kernel);
  c.spec.attrs.set("stride", stride);
  c.spec.attrs.set("pad", pad);
  c.spec.attrs.set("dilation", dilation);
  if (rng.coin()) c.spec.attrs.set("bias", std::int64_t{0});
  c.input_shapes = {Shape(dims)};
  return c;
}

// Short depths (channels × window ≤ 256) with one group: the cases the CPU's direct convolution takes.
// Strides 1 to 4 and dilations 1 to 2 per axis, non-square windows up to 7, rows up to ~110 outputs wide
// (several 32-column tiles and a partial one), output channels across 12-row panels.
LayerCase direct_case(Rng& rng) {
  LayerCase c = random_windows(rng, rng.integer(1, 5), {7, 4, 2, 10, 110});
  c.spec.attrs.set("num_output", std::int64_t{rng.integer(1, 30)});
  return c;
}

// Depthwise 2-D windows (the CPU's direct kernels, which read the plane in place and mask the
// borders): rows wide enough for several vector blocks and a partial last one, pads up to 3 (wider
// than some windows), strides 1 to 3 per axis, dilations 1 to 3, non-square windows.
LayerCase depthwise_case(Rng& rng) {
  const std::int64_t channels = rng.integer(1, 5);
  LayerCase c = random_windows(rng, channels, {5, 3, 3, 12, 45});
  c.spec.attrs.set("num_output", channels);
  c.spec.attrs.set("group", channels);
  return c;
}

// 3×3 depthwise windows at dilation 1 (the AVX-512 kernels of their own): stride 1 or 2 along the
// rows, 1 to 3 down the columns, pads 0-2, rows from 1 to ~70 outputs wide (several blocks of sixteen
// and a partial one), odd and even heights, many channels.
LayerCase depthwise3x3_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "Convolution";
  const std::int64_t channels = rng.integer(1, 6);
  const std::int64_t stride_w = rng.integer(1, 2), stride_h = rng.coin() ? stride_w : rng.integer(1, 3);
  const std::int64_t pad_h = rng.integer(0, 2), pad_w = rng.integer(0, 2);
  c.spec.attrs.set("num_output", channels);
  c.spec.attrs.set("group", channels);
  c.spec.attrs.set("kernel", std::int64_t{3});
  c.spec.attrs.set("stride", std::vector<std::int64_t>{stride_h, stride_w});
  c.spec.attrs.set("pad", std::vector<std::int64_t>{pad_h, pad_w});
  if (rng.coin()) c.spec.attrs.set("bias", std::int64_t{0});
  const std::int64_t height = std::max<std::int64_t>(1, 3 - 2 * pad_h) + rng.integer(0, 9);
  const std::int64_t width = std::max<std::int64_t>(1, 3 - 2 * pad_w) + rng.integer(0, 140);
  c.input_shapes = {Shape{rng.integer(1, 2), channels, height, width}};
  return c;
}

// 1×1, stride 1, no padding (the packed GEMM on the image as it is): channel counts across the
// micro-kernel's row panels, images from 1 pixel to several column blocks (the threads split columns
// or rows), groups.
LayerCase pointwise_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "Convolution";
  const std::int64_t group = rng.integer(1, 2);
  c.spec.attrs.set("num_output", group * rng.integer(1, 40));
  c.spec.attrs.set("kernel", std::int64_t{1});
  if (group > 1) c.spec.attrs.set("group", group);
  if (rng.coin()) c.spec.attrs.set("bias", std::int64_t{0});
  const std::int64_t side = rng.coin() ? rng.integer(1, 8) : rng.integer(20, 40);
  c.input_shapes = {Shape{rng.integer(1, 2), group * rng.integer(1, 40), side, side + rng.integer(0, 5)}};
  return c;
}

LayerSpec conv_spec(std::int64_t num_output, std::int64_t kernel) {
  LayerSpec spec;
  spec.name = "conv_bad";
  spec.type = "Convolution";
  spec.attrs.set("num_output", num_output);
  spec.attrs.set("kernel", kernel);
  return spec;
}

}  // namespace

// Every case checks gradients, so that the CUDA backward sees groups, dilation, strides, padding and
// 1 to 3 spatial axes.
TEST(Layers, Convolution) {
  run_layer_test({.make_case = make_case, .naive = naive, .cases = 40, .gradient_cases = 40});
}

// The CPU's Winograd tactics, F(4×4, 3×3) and F(2×2, 5×5), forced (the planner would measure and might pick
// the GEMM): the fast kernel against the reference, which is checked against the naive double computation.
// Winograd's transforms round more than a direct sum: 1e-4 of the output's largest magnitude.
TEST(Layers, ConvolutionWinograd) {
  setenv("ESPRESSO_CONV_TACTIC", "winograd", 1);
  run_layer_test({.make_case = winograd_case, .naive = naive, .cases = 30, .tolerance = 1e-4, .gradient_cases = 3});
  unsetenv("ESPRESSO_CONV_TACTIC");
}

// The CPU's direct convolution forced: the same sums as the windows' GEMM, so the default tolerance.
TEST(Layers, ConvolutionDirect) {
  setenv("ESPRESSO_CONV_TACTIC", "direct", 1);
  run_layer_test({.make_case = direct_case, .naive = naive, .cases = 40, .gradient_cases = 2});
  unsetenv("ESPRESSO_CONV_TACTIC");
}

TEST(Layers, ConvolutionDepthwise) {
  run_layer_test({.make_case = depthwise_case, .naive = naive, .cases = 60, .gradient_cases = 2});
}

TEST(Layers, ConvolutionDepthwise3x3) {
  run_layer_test({.make_case = depthwise3x3_case, .naive = naive, .cases = 60, .gradient_cases = 2});
}

TEST(Layers, ConvolutionPointwise) {
  run_layer_test({.make_case = pointwise_case, .naive = naive, .cases = 30, .gradient_cases = 2});
}

// The CUDA backward's other paths: prepared with the kernel, as in training nets (pointwise ones as
// whole-batch GEMMs), and the im2col / col2im GEMM one that serves what cuDNN declines
// (ESPRESSO_CONV_TACTIC=im2col puts it first). Their CPU checks repeat Layers.Convolution's, so they run only
// with a GPU.
TEST(Layers, ConvolutionCudaBackwardPaths) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA backward paths not checked";
  run_layer_test(
      {.make_case = make_case, .naive = naive, .cases = 40, .training = true, .gradient_cases = 40});
  // Pointwise with one group: the whole-batch GEMM gradients.
  run_layer_test(
      {.make_case = pointwise_case, .naive = naive, .cases = 30, .training = true, .gradient_cases = 30});
  setenv("ESPRESSO_CONV_TACTIC", "im2col", 1);
  run_layer_test({.make_case = make_case, .naive = naive, .cases = 40, .gradient_cases = 40});
  unsetenv("ESPRESSO_CONV_TACTIC");
}

TEST(Layers, ConvolutionShapesWeightsAndMacs) {
  LayerSpec spec = conv_spec(20, 5);
  const auto layer = create_layer(spec);
  const std::vector<Shape> in{Shape{2, 1, 28, 28}};
  EXPECT_EQ(layer->output_shapes(in)[0], (Shape{2, 20, 24, 24}));
  const std::vector<Shape> weights = layer->weight_shapes(in);
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_EQ(weights[0], (Shape{20, 1, 5, 5}));
  EXPECT_EQ(weights[1], (Shape{20}));
  EXPECT_EQ(layer->macs(in), 2 * 24 * 24 * 20 * 1 * 25);

  spec.attrs.set("group", std::int64_t{2});
  spec.attrs.set("bias", std::int64_t{0});
  spec.attrs.set("stride", std::vector<std::int64_t>{2, 1});
  spec.attrs.set("pad", std::vector<std::int64_t>{1, 0});
  spec.attrs.set("dilation", std::int64_t{2});
  const auto grouped = create_layer(spec);
  const std::vector<Shape> in4{Shape{1, 4, 11, 12}};
  EXPECT_EQ(grouped->output_shapes(in4)[0], (Shape{1, 20, 3, 4}));
  EXPECT_EQ(grouped->weight_shapes(in4), (std::vector<Shape>{Shape{20, 2, 5, 5}}));
  EXPECT_EQ(grouped->macs(in4), 3 * 4 * 20 * 2 * 25);
}

TEST(Layers, ConvolutionRejectsBadParameters) {
  auto expect_model_error = [](const LayerSpec& spec) {
    try {
      create_layer(spec);
      ADD_FAILURE() << "no ModelError";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("conv_bad"), std::string::npos) << e.what();
    }
  };
  LayerSpec spec = conv_spec(8, 3);
  spec.attrs.set("stride", std::int64_t{0});
  expect_model_error(spec);
  spec = conv_spec(8, 0);
  expect_model_error(spec);
  spec = conv_spec(8, 3);
  spec.attrs.set("group", std::int64_t{3});
  expect_model_error(spec);
  spec = conv_spec(8, 3);
  spec.attrs.set("pad", std::int64_t{-1});
  expect_model_error(spec);
  spec = conv_spec(8, 3);
  spec.attrs.set("stride", std::vector<std::int64_t>{1, 2});
  spec.attrs.set("pad", std::vector<std::int64_t>{1, 2, 3});
  expect_model_error(spec);
  spec = conv_spec(8, 3);
  spec.attrs = Attributes{};
  spec.attrs.set("kernel", std::int64_t{3});
  expect_model_error(spec);

  spec = conv_spec(8, 3);
  spec.attrs.set("group", std::int64_t{2});
  const auto grouped = create_layer(spec);
  EXPECT_THROW(grouped->output_shapes({Shape{1, 3, 8, 8}}), ModelError);

  const auto layer = create_layer(conv_spec(8, 5));
  try {
    layer->output_shapes({Shape{1, 3, 3, 8}});
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("conv_bad"), std::string::npos) << e.what();
  }
  EXPECT_THROW(layer->output_shapes({Shape{1, 3}}), ShapeError);
  spec = conv_spec(8, 3);
  spec.attrs.set("kernel", std::vector<std::int64_t>{3, 3});
  EXPECT_THROW(create_layer(spec)->output_shapes({Shape{1, 3, 8}}), ShapeError);
}

}  // namespace espresso::testing
