#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "test_support.h"
#include "harness/layer_harness.h"
#include "layers/registry.h"

namespace espresso::testing {
namespace {

std::int64_t attr_at(const Attributes& attrs, const std::string& name, int axis, std::int64_t fallback) {
  const std::vector<std::int64_t> v = attrs.get_ints(name, {fallback});
  return v.size() == 1 ? v[0] : v[static_cast<std::size_t>(axis)];
}

// One axis of the pooling geometry, from the definitions in docs/layers.md.
struct Axis {
  std::int64_t size, kernel, stride, pad, out;
};

std::vector<Axis> axes_of(const LayerCase& c) {
  const Shape& in = c.input_shapes[0];
  const bool global = c.spec.attrs.get_int("global", 0) != 0;
  const bool ceil_mode = c.spec.attrs.get_string("round", "ceil") == "ceil";
  std::vector<Axis> axes;
  for (int a = 0; a + 2 < in.rank(); ++a) {
    Axis x{in[2 + a], in[2 + a], 1, 0, 1};
    if (!global) {
      x.kernel = attr_at(c.spec.attrs, "kernel", a, 1);
      x.stride = attr_at(c.spec.attrs, "stride", a, 1);
      x.pad = attr_at(c.spec.attrs, "pad", a, 0);
      const double steps = static_cast<double>(x.size + 2 * x.pad - x.kernel) / static_cast<double>(x.stride);
      x.out = static_cast<std::int64_t>(ceil_mode ? std::ceil(steps) : std::floor(steps)) + 1;
      if (ceil_mode && (x.out - 1) * x.stride >= x.size + x.pad) --x.out;
    }
    axes.push_back(x);
  }
  return axes;
}

LayerCase make_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "Pooling";
  const int spatial = rng.integer(0, 6) == 0 ? 3 : rng.integer(1, 2);
  std::vector<std::int64_t> dims{rng.integer(1, 3), rng.integer(1, 5)};
  const bool global = rng.integer(0, 4) == 0;
  std::vector<std::int64_t> kernel, stride, pad;
  for (int a = 0; a < spatial; ++a) {
    kernel.push_back(rng.integer(1, spatial == 3 ? 3 : 5));
    stride.push_back(rng.integer(1, 3));
    pad.push_back(rng.integer(0, static_cast<int>(kernel.back()) - 1));
    // Rows sometimes wider than the vector kernels' sixteen and thirty-two lanes, with a ragged end.
    const bool wide = spatial < 3 && a == spatial - 1 && rng.integer(0, 2) == 0;
    dims.push_back(std::max<std::int64_t>(1, kernel.back() - 2 * pad.back()) + rng.integer(0, spatial == 3 ? 4
                                                                                              : wide ? 70
                                                                                                     : 10));
    // Sometimes whole 16-byte packs of halves or floats per row (the GPU backward's wide loads).
    if (spatial < 3 && a == spatial - 1 && rng.integer(0, 2) == 0) dims.back() = (dims.back() + 7) / 8 * 8;
  }
  c.spec.attrs.set("method", std::string(rng.coin() ? "max" : "ave"));
  if (global) {
    c.spec.attrs.set("global", std::int64_t{1});
  } else {
    c.spec.attrs.set("kernel", kernel);
    c.spec.attrs.set("stride", stride);
    c.spec.attrs.set("pad", pad);
  }
  if (rng.coin()) c.spec.attrs.set("round", std::string(rng.coin() ? "ceil" : "floor"));
  if (rng.coin()) c.spec.attrs.set("count_include_pad", std::int64_t{rng.integer(0, 1)});
  c.input_shapes = {Shape(dims)};
  return c;
}

// Lifts to 3 axes with unit leading axes and walks every window directly.
std::vector<Values> naive(const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
  std::vector<Axis> given = axes_of(c);
  std::vector<Axis> axes(3 - given.size(), Axis{1, 1, 1, 0, 1});
  axes.insert(axes.end(), given.begin(), given.end());
  const bool max = c.spec.attrs.get_string("method", "max") == "max";
  const bool include_pad = c.spec.attrs.get_int("count_include_pad", 1) != 0;
  const std::int64_t planes = c.input_shapes[0][0] * c.input_shapes[0][1];
  const std::int64_t volume = axes[0].size * axes[1].size * axes[2].size;
  Values y;
  for (std::int64_t p = 0; p < planes; ++p) {
    for (std::int64_t o0 = 0; o0 < axes[0].out; ++o0) {
      for (std::int64_t o1 = 0; o1 < axes[1].out; ++o1) {
        for (std::int64_t o2 = 0; o2 < axes[2].out; ++o2) {
          const std::int64_t o[3] = {o0, o1, o2};
          std::int64_t lo[3], hi[3];
          double padded_count = 1;
          for (int a = 0; a < 3; ++a) {
            const std::int64_t start = o[a] * axes[a].stride - axes[a].pad;
            const std::int64_t end = std::min(start + axes[a].kernel, axes[a].size + axes[a].pad);
            padded_count *= static_cast<double>(end - start);
            lo[a] = std::max<std::int64_t>(start, 0);
            hi[a] = std::min(end, axes[a].size);
          }
          double best = -std::numeric_limits<double>::infinity(), sum = 0, valid = 0;
          for (std::int64_t i = lo[0]; i < hi[0]; ++i) {
            for (std::int64_t j = lo[1]; j < hi[1]; ++j) {
              for (std::int64_t k = lo[2]; k < hi[2]; ++k) {
                const double v =
                    in[0][static_cast<std::size_t>(p * volume + (i * axes[1].size + j) * axes[2].size + k)];
                best = std::max(best, v);
                sum += v;
                ++valid;
              }
            }
          }
          y.push_back(max ? best : sum / (include_pad ? padded_count : valid));
        }
      }
    }
  }
  return {y};
}

LayerSpec pool_spec(const std::string& method, std::int64_t kernel, std::int64_t stride, std::int64_t pad) {
  LayerSpec spec;
  spec.name = "pool_bad";
  spec.type = "Pooling";
  spec.attrs.set("method", method);
  spec.attrs.set("kernel", kernel);
  spec.attrs.set("stride", stride);
  spec.attrs.set("pad", pad);
  return spec;
}

// A kernel's forward then backward (gradients added into zeros), with tensors on `device`; returns the
// input gradient there, perhaps still being computed.
Tensor kernel_input_gradient(Kernel& kernel, const Layer& layer, const Tensor& x, const Tensor& dy,
                             Device device) {
  std::vector<Tensor> inputs{x.to(device)}, outputs{Tensor::empty(dy.shape(), DType::f32, device)};
  std::vector<Tensor> output_grads{dy.to(device)}, input_grads{Tensor::zeros(x.shape(), DType::f32, device)};
  std::vector<Tensor> weight_grads;
  kernel.forward(inputs, outputs);
  kernel.backward(layer, inputs, outputs, output_grads, input_grads, weight_grads);
  return input_grads[0];
}

}  // namespace

// Every case checks gradients, so that the CUDA backward sees every mode on 1 to 3 spatial axes.
TEST(Layers, Pooling) {
  run_layer_test({.make_case = make_case, .naive = naive, .cases = 60, .gradient_cases = 60});
}

// Max pooling sends each window's gradient to the first maximum in window order. The harness never
// meets ties (its numeric gradient is undefined there), so here inputs take three values only and
// every fast backward must route the gradients exactly as the reference does.
TEST(Layers, PoolingMaxTiesGoToTheFirstMaximum) {
  std::unique_ptr<Stream> gpu;
  if (have_gpu()) gpu = gpu_stream();
  Rng rng(77);
  for (int index = 0; index < 24; ++index) {
    LayerCase c = make_case(rng);
    c.spec.name = "pool_ties";
    c.spec.inputs = {"in0"};
    c.spec.outputs = {"out0"};
    c.spec.attrs.set("method", std::string("max"));
    SCOPED_TRACE("case " + std::to_string(index) + ": input " + c.input_shapes[0].str());
    const std::unique_ptr<Layer> layer = create_layer(c.spec);
    const Shape out_shape = layer->output_shapes(c.input_shapes)[0];
    std::vector<float> levels(static_cast<std::size_t>(c.input_shapes[0].numel()));
    for (float& v : levels) v = static_cast<float>(rng.integer(-1, 1));
    const Tensor x = Tensor::from(c.input_shapes[0], levels);
    const Values directions = rng.values(static_cast<std::size_t>(out_shape.numel()));
    const Tensor dy = Tensor::from(out_shape, std::vector<float>(directions.begin(), directions.end()));

    std::vector<Tensor> outputs{Tensor::empty(out_shape)}, input_grads{Tensor::zeros(x.shape())}, none;
    layer->forward({x}, outputs);
    layer->backward({x}, outputs, {dy}, input_grads, none);
    const std::vector<float> reference = input_grads[0].to_vector();
    const Values expected(reference.begin(), reference.end());

    if (std::unique_ptr<Kernel> cpu_kernel = fast_cpu_kernel(*layer, c.input_shapes)) {
      if (cpu_kernel->has_fast_backward()) {
        const std::vector<float> got =
            kernel_input_gradient(*cpu_kernel, *layer, x, dy, Device::cpu()).to_vector();
        EXPECT_LE(normalized_error(expected, Values(got.begin(), got.end())), 1e-6) << "CPU kernel";
      }
    }
    if (gpu) {
      std::unique_ptr<Kernel> cuda_kernel = make_kernel(*layer, c.input_shapes, *gpu);
      ASSERT_TRUE(cuda_kernel);
      const Tensor on_gpu = kernel_input_gradient(*cuda_kernel, *layer, x, dy, gpu->device());
      gpu->synchronize();
      const std::vector<float> got = on_gpu.to(Device::cpu()).to_vector();
      EXPECT_LE(normalized_error(expected, Values(got.begin(), got.end())), 1e-6) << "CUDA kernel";
    }
  }
}

TEST(Layers, PoolingRounding) {
  // Caffe's ceil rounding: (6 − 3)/2 rounds up to 2, so 3 outputs; floor gives 2.
  LayerSpec spec = pool_spec("max", 3, 2, 0);
  EXPECT_EQ(create_layer(spec)->output_shapes({Shape{1, 1, 6, 6}})[0], (Shape{1, 1, 3, 3}));
  spec.attrs.set("round", std::string("floor"));
  EXPECT_EQ(create_layer(spec)->output_shapes({Shape{1, 1, 6, 6}})[0], (Shape{1, 1, 2, 2}));
  // in 5, kernel 2, stride 2, pad 1: ceil(5/2) + 1 = 4, but window 3 would start at 6 − 1 = 5,
  // past the input, so Caffe drops it.
  spec = pool_spec("ave", 2, 2, 1);
  EXPECT_EQ(create_layer(spec)->output_shapes({Shape{1, 1, 5}})[0], (Shape{1, 1, 3}));
  spec.attrs = Attributes{};
  spec.attrs.set("global", std::int64_t{1});
  EXPECT_EQ(create_layer(spec)->output_shapes({Shape{2, 3, 7, 5}})[0], (Shape{2, 3, 1, 1}));
}

TEST(Layers, PoolingRejectsBadParameters) {
  auto expect_model_error = [](const LayerSpec& spec) {
    try {
      create_layer(spec);
      ADD_FAILURE() << "no ModelError";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("pool_bad"), std::string::npos) << e.what();
    }
  };
  expect_model_error(pool_spec("min", 2, 2, 0));
  expect_model_error(pool_spec("max", 2, 0, 0));
  expect_model_error(pool_spec("max", 2, 2, 2));
  LayerSpec spec = pool_spec("max", 2, 2, 0);
  spec.attrs.set("round", std::string("up"));
  expect_model_error(spec);
  spec = pool_spec("max", 2, 2, 0);
  spec.attrs.set("global", std::int64_t{1});
  expect_model_error(spec);
  spec.attrs = Attributes{};
  spec.attrs.set("method", std::string("max"));
  expect_model_error(spec);

  const auto layer = create_layer(pool_spec("max", 5, 1, 1));
  try {
    layer->output_shapes({Shape{1, 1, 2, 9}});
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("pool_bad"), std::string::npos) << e.what();
  }
  EXPECT_THROW(layer->output_shapes({Shape{4, 4}}), ShapeError);
}

}  // namespace espresso::testing
