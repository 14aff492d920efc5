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
               dilation[3] = {1, 1, 1}, output_pad[3] = {0, 0, 0};
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
    b.output_pad[slot] = attr_at(c.spec.attrs, "output_pad", a, 0);
  }
  return b;
}

LayerCase make_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "Deconvolution";
  const int axes = rng.integer(0, 5) == 0 ? 3 : rng.integer(1, 2);
  const int group = rng.integer(1, 3);
  const int in_channels = group * rng.integer(1, 4);
  const int out_channels = group * rng.integer(1, 4);
  const bool pointwise = rng.integer(0, 4) == 0;
  std::vector<std::int64_t> kernel, stride, pad, dilation, output_pad, dims{rng.integer(1, 3), in_channels};
  for (int a = 0; a < axes; ++a) {
    kernel.push_back(pointwise ? 1 : rng.integer(1, axes == 3 ? 3 : 5));
    stride.push_back(pointwise ? 1 : rng.integer(1, 3));
    dilation.push_back(rng.integer(1, 2));
    output_pad.push_back(pointwise ? 0 : rng.integer(0, std::max(stride.back(), dilation.back()) - 1));
    const std::int64_t extent = dilation.back() * (kernel.back() - 1) + 1;
    pad.push_back(pointwise ? 0 : rng.integer(0, static_cast<int>((extent - 1) / 2)));
    dims.push_back(rng.integer(1, axes == 3 ? 4 : 9));
  }
  c.spec.attrs.set("num_output", std::int64_t{out_channels});
  c.spec.attrs.set("kernel", kernel);
  c.spec.attrs.set("stride", stride);
  if (rng.coin() || !pointwise) c.spec.attrs.set("pad", pad);
  c.spec.attrs.set("dilation", dilation);
  if (rng.coin() || !pointwise) c.spec.attrs.set("output_pad", output_pad);
  if (group > 1 || rng.coin()) c.spec.attrs.set("group", std::int64_t{group});
  if (rng.coin()) c.spec.attrs.set("bias", std::int64_t{0});
  c.input_shapes = {Shape(dims)};
  return c;
}

// Gathers each output from the inputs that reach it: o = i·stride − pad + k·dilation.
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
    out[a] = b.stride[a] * (b.size[a] - 1) + b.dilation[a] * (b.kernel[a] - 1) + 1 - 2 * b.pad[a] +
             b.output_pad[a];
  }
  const std::int64_t in_volume = b.size[0] * b.size[1] * b.size[2];
  const std::int64_t taps = b.kernel[0] * b.kernel[1] * b.kernel[2];
  Values y;
  for (std::int64_t n = 0; n < batch; ++n) {
    for (std::int64_t co = 0; co < outputs; ++co) {
      const std::int64_t grp = co / out_group;
      for (std::int64_t od = 0; od < out[0]; ++od) {
        for (std::int64_t oh = 0; oh < out[1]; ++oh) {
          for (std::int64_t ow = 0; ow < out[2]; ++ow) {
            double sum = bias ? weights[1][static_cast<std::size_t>(co)] : 0.0;
            for (std::int64_t ci = grp * in_group; ci < (grp + 1) * in_group; ++ci) {
              for (std::int64_t kd = 0; kd < b.kernel[0]; ++kd) {
                for (std::int64_t kh = 0; kh < b.kernel[1]; ++kh) {
                  for (std::int64_t kw = 0; kw < b.kernel[2]; ++kw) {
                    const std::int64_t td = od + b.pad[0] - kd * b.dilation[0];
                    const std::int64_t th = oh + b.pad[1] - kh * b.dilation[1];
                    const std::int64_t tw = ow + b.pad[2] - kw * b.dilation[2];
                    if (td < 0 || th < 0 || tw < 0 || td % b.stride[0] || th % b.stride[1] ||
                        tw % b.stride[2])
                      continue;
                    const std::int64_t d = td / b.stride[0], h = th / b.stride[1], w = tw / b.stride[2];
                    if (d >= b.size[0] || h >= b.size[1] || w >= b.size[2]) continue;
                    const std::int64_t x_at =
                        (n * channels + ci) * in_volume + (d * b.size[1] + h) * b.size[2] + w;
                    const std::int64_t w_at =
                        (ci * out_group + co % out_group) * taps + (kd * b.kernel[1] + kh) * b.kernel[2] + kw;
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

LayerSpec deconv_spec() {
  LayerSpec spec;
  spec.name = "deconv_bad";
  spec.type = "Deconvolution";
  spec.attrs.set("num_output", std::int64_t{6});
  spec.attrs.set("kernel", std::int64_t{4});
  spec.attrs.set("stride", std::int64_t{2});
  spec.attrs.set("pad", std::int64_t{1});
  return spec;
}

}  // namespace

// Every case checks gradients, so that the CUDA backward sees groups, dilation, strides, padding,
// output padding and 1 to 3 spatial axes.
TEST(Layers, Deconvolution) {
  run_layer_test({.make_case = make_case, .naive = naive, .cases = 40, .gradient_cases = 40});
}

// The CUDA backward prepared with the kernel, as in training nets, and through the im2col / col2im
// GEMM path that serves what cuDNN declines (output padding beyond the stride, for one). Their CPU
// checks repeat Layers.Deconvolution's, so they run only with a GPU.
TEST(Layers, DeconvolutionCudaBackwardPaths) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: CUDA backward paths not checked";
  run_layer_test(
      {.make_case = make_case, .naive = naive, .cases = 40, .training = true, .gradient_cases = 40});
  setenv("ESPRESSO_CONV_TACTIC", "im2col", 1);
  run_layer_test({.make_case = make_case, .naive = naive, .cases = 40, .gradient_cases = 40});
  unsetenv("ESPRESSO_CONV_TACTIC");
}

TEST(Layers, DeconvolutionShapesWeightsAndMacs) {
  LayerSpec spec = deconv_spec();
  spec.attrs.set("group", std::int64_t{2});
  const auto layer = create_layer(spec);
  const std::vector<Shape> in{Shape{2, 4, 5, 7}};
  // 2·(5−1) + 4 − 2 = 10, 2·(7−1) + 4 − 2 = 14
  EXPECT_EQ(layer->output_shapes(in)[0], (Shape{2, 6, 10, 14}));
  EXPECT_EQ(layer->weight_shapes(in), (std::vector<Shape>{Shape{4, 3, 4, 4}, Shape{6}}));
  EXPECT_EQ(layer->macs(in), 2 * 35 * 4 * 3 * 16);
  spec.attrs.set("output_pad", std::int64_t{1});
  EXPECT_EQ(create_layer(spec)->output_shapes(in)[0], (Shape{2, 6, 11, 15}));
}

TEST(Layers, DeconvolutionRejectsBadParameters) {
  LayerSpec spec = deconv_spec();
  spec.attrs.set("output_pad", std::int64_t{2});
  try {
    create_layer(spec);
    ADD_FAILURE() << "no ModelError";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("deconv_bad"), std::string::npos) << e.what();
  }
  spec = deconv_spec();
  spec.attrs.set("dilation", std::int64_t{0});
  EXPECT_THROW(create_layer(spec), ModelError);
  spec = deconv_spec();
  spec.attrs.set("group", std::int64_t{4});
  EXPECT_THROW(create_layer(spec), ModelError);
  spec = deconv_spec();
  spec.attrs.set("kernel", std::int64_t{1});
  spec.attrs.set("stride", std::int64_t{1});
  spec.attrs.set("pad", std::int64_t{1});
  EXPECT_THROW(create_layer(spec)->output_shapes({Shape{1, 2, 1, 5}}), ShapeError);
  EXPECT_THROW(create_layer(deconv_spec())->output_shapes({Shape{1, 2}}), ShapeError);
}

}  // namespace espresso::testing
