#include "harness/layer_harness.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "backends/registry.h"
#include "core/half.h"
#include "layers/registry.h"
#include "test_support.h"

namespace espresso::testing {

Values Rng::values(std::size_t n, double lo, double hi) {
  Values v(n);
  for (double& x : v) x = uniform(lo, hi);
  return v;
}

double normalized_error(const Values& reference, const Values& other) {
  if (reference.size() != other.size()) return INFINITY;
  double scale = 1e-12, diff = 0;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    scale = std::max(scale, std::abs(reference[i]));
    diff = std::max(diff, std::abs(reference[i] - other[i]));
    if (std::isnan(other[i]) != std::isnan(reference[i])) return INFINITY;
  }
  return diff / scale;
}

namespace {

std::string describe(const LayerCase& c) {
  std::ostringstream out;
  out << c.spec.type << " inputs:";
  for (const Shape& s : c.input_shapes) out << " " << s.str();
  for (const auto& [name, value] : c.spec.attrs.all()) {
    out << " " << name << "=";
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::vector<std::int64_t>> ||
                        std::is_same_v<T, std::vector<double>>) {
            for (std::size_t i = 0; i < v.size(); ++i) out << (i ? "," : "") << v[i];
          } else {
            out << v;
          }
        },
        value);
  }
  return out.str();
}

Tensor to_tensor(const Shape& shape, const Values& values) {
  std::vector<float> f(values.begin(), values.end());
  return Tensor::from(shape, f);
}

std::vector<Shape> shapes_of_tensors(const std::vector<Tensor>& tensors) {
  std::vector<Shape> shapes;
  for (const Tensor& t : tensors) shapes.push_back(t.shape());
  return shapes;
}

Values to_values(const Tensor& t) {
  std::vector<float> f = t.to_vector();
  return Values(f.begin(), f.end());
}

// Values as they are after rounding to float, so the naive computation sees what the kernels see.
Values rounded(const Values& v) {
  Values r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = static_cast<float>(v[i]);
  return r;
}

// The context all layer tests share, or nullptr without a GPU (said once, visibly, since a
// silently skipped backend looks like a passing one).
Stream* gpu_context() {
  static const std::unique_ptr<Stream> context = [] {
    std::unique_ptr<Stream> created;
    if (have_gpu()) {
      created = gpu_stream();
    } else {
      std::printf("[ SKIPPED  ] %s: CUDA kernels not checked\n",
                  no_gpu_reason().c_str());
      std::fflush(stdout);
    }
    return created;
  }();
  return context.get();
}

// The Vulkan stream all layer tests share, or nullptr without a Vulkan device (said once, visibly).
Stream* vulkan_context() {
  static const std::unique_ptr<Stream> context = [] {
    std::unique_ptr<Stream> created;
    if (have_vulkan()) {
      created = vulkan_stream();
    } else {
      std::printf("[ SKIPPED  ] %s: Vulkan kernels not checked\n", no_vulkan_reason().c_str());
      std::fflush(stdout);
    }
    return created;
  }();
  return context.get();
}

// Runs the layer's CUDA kernel, if it has one for these shapes, and returns its outputs on the CPU.
std::vector<Tensor> run_on_gpu(Stream& context, const Layer& layer, const std::vector<Tensor>& inputs,
                               const std::vector<Shape>& out_shapes, std::string& kernel_name) {
  std::vector<Shape> in_shapes;
  std::vector<Tensor> device_inputs, device_outputs;
  for (const Tensor& t : inputs) {
    in_shapes.push_back(t.shape());
    device_inputs.push_back(t.to(context.device()));
  }
  std::unique_ptr<Kernel> kernel = make_kernel(layer, in_shapes, context);
  if (!kernel) return {};
  kernel_name = kernel->name();
  for (const Shape& s : out_shapes) device_outputs.push_back(Tensor::empty(s, DType::f32, context.device()));
  kernel->forward(device_inputs, device_outputs);
  context.synchronize();
  std::vector<Tensor> results;
  for (const Tensor& t : device_outputs) results.push_back(t.to(Device::cpu()));
  return results;
}

// A CPU f32 tensor rounded to `dtype` (f16 or bf16), as raw 16-bit values in a CPU tensor of that type.
Tensor to_low_precision(const Tensor& values, DType dtype) {
  Tensor low = Tensor::empty(values.shape(), dtype);
  const float* x = values.data<float>();
  auto* y = static_cast<std::uint16_t*>(low.raw());
  for (std::int64_t i = 0; i < values.numel(); ++i)
    y[i] = dtype == DType::f16 ? float_to_half(x[i]) : float_to_bf16(x[i]);
  return low;
}

Tensor from_low_precision(const Tensor& low) {
  Tensor values = Tensor::empty(low.shape());
  const auto* x = static_cast<const std::uint16_t*>(low.raw());
  float* y = values.data<float>();
  for (std::int64_t i = 0; i < low.numel(); ++i)
    y[i] = low.dtype() == DType::f16 ? half_to_float(x[i]) : bf16_to_float(x[i]);
  return values;
}

// A CPU f32 tensor's values in channels-last order (N, C, H, W as N, H, W, C) when `to_last`, else back
// from there; tensors whose bytes the order does not change as they are.
Tensor moved_channels(const Tensor& t, bool to_last) {
  if (!layout_sensitive(t.shape())) return t;
  const std::int64_t images = t.shape()[0], channels = t.shape()[1], plane = t.shape()[2] * t.shape()[3];
  Tensor moved = Tensor::empty(t.shape());
  const float* x = t.data<float>();
  float* y = moved.data<float>();
  for (std::int64_t n = 0; n < images; ++n) {
    for (std::int64_t c = 0; c < channels; ++c) {
      for (std::int64_t p = 0; p < plane; ++p) {
        const std::int64_t first = (n * channels + c) * plane + p, last = (n * plane + p) * channels + c;
        if (to_last) {
          y[last] = x[first];
        } else {
          y[first] = x[last];
        }
      }
    }
  }
  return moved;
}

// Runs the layer's kernel in `dtype` (f16, bf16) where the GPU's backend has one for these shapes: the
// inputs rounded to that type on the host, the outputs widened back; empty where it has none. With
// `channels_last`, its channels-last kernel, the tensors reordered on the host around it.
std::vector<Tensor> run_on_gpu_in(Stream& context, const Layer& layer, const std::vector<Tensor>& inputs,
                                  const std::vector<Shape>& out_shapes, DType dtype, std::string& kernel_name,
                                  bool channels_last = false) {
  Backend& backend = backend_for(context.device());
  const std::vector<Shape> in_shapes = shapes_of_tensors(inputs);
  if (!backend.supports(layer, in_shapes, dtype)) return {};
  std::unique_ptr<Kernel> kernel = channels_last
                                       ? backend.make_channels_last_kernel(layer, in_shapes, dtype, context)
                                       : backend.make_typed_kernel(layer, in_shapes, dtype, context);
  if (!kernel) return {};
  kernel_name = kernel->name();
  std::vector<Tensor> device_inputs, device_outputs;
  for (const Tensor& t : inputs)
    device_inputs.push_back(
        to_low_precision(channels_last ? moved_channels(t, true) : t, dtype).to(context.device()));
  for (const Shape& s : out_shapes) device_outputs.push_back(Tensor::empty(s, dtype, context.device()));
  kernel->forward(device_inputs, device_outputs);
  context.synchronize();
  std::vector<Tensor> results;
  for (const Tensor& t : device_outputs) {
    const Tensor values = from_low_precision(t.to(Device::cpu()));
    results.push_back(channels_last ? moved_channels(values, false) : values);
  }
  return results;
}

// Σ_k <out_k, R_k>, the scalar whose gradient the backward check compares.
double weighted_sum(const std::vector<Values>& outputs, const std::vector<Values>& directions) {
  double sum = 0;
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    for (std::size_t i = 0; i < outputs[k].size(); ++i) sum += outputs[k][i] * directions[k][i];
  }
  return sum;
}

// Up to `count` distinct positions in [0, n), all of them when n is small.
std::vector<std::size_t> sample_positions(Rng& rng, std::size_t n, int count) {
  std::vector<std::size_t> all(n);
  for (std::size_t i = 0; i < n; ++i) all[i] = i;
  if (n <= static_cast<std::size_t>(count)) return all;
  for (std::size_t i = 0; i < static_cast<std::size_t>(count); ++i) {
    std::swap(all[i], all[i + static_cast<std::size_t>(rng.integer(0, static_cast<int>(n - i - 1)))]);
  }
  all.resize(static_cast<std::size_t>(count));
  return all;
}

struct Gradients {
  std::vector<Tensor> inputs, weights;  // undefined inputs take none
};

Gradients zero_gradients(const Layer& layer, const std::vector<Tensor>& inputs) {
  Gradients g;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    g.inputs.push_back(layer.differentiable_input(i) ? Tensor::zeros(inputs[i].shape()) : Tensor{});
  }
  for (const Tensor& w : layer.weights()) g.weights.push_back(Tensor::zeros(w.shape()));
  return g;
}

// NaNs of each tensor's shape and type on `device`: what the planner may leave where a backward says it
// reads nothing (Layer::backward_reads_outputs, Kernel::backward_reads_inputs).
std::vector<Tensor> poisoned(const std::vector<Tensor>& tensors, Device device) {
  std::vector<Tensor> nans;
  for (const Tensor& t : tensors) {
    Tensor values = Tensor::from(t.shape(), std::vector<float>(static_cast<std::size_t>(t.numel()), NAN));
    if (t.dtype() != DType::f32) values = to_low_precision(values, t.dtype());
    nans.push_back(values.to(device));
  }
  return nans;
}

// The CUDA kernel's forward then backward with the same output gradients, compared with the reference
// backward. Every layer that trains on the CPU must train on the GPU too, so a CUDA kernel without a
// backward fails here.
void check_gpu_backward(Stream& context, const Layer& layer, const std::vector<Tensor>& inputs,
                        const std::vector<Tensor>& outputs, const std::vector<Tensor>& output_grads,
                        const Gradients& reference) {
  std::unique_ptr<Kernel> kernel = make_kernel(layer, shapes_of_tensors(inputs), context);
  if (!kernel) return;
  if (!kernel->has_fast_backward()) {
    ADD_FAILURE() << "CUDA kernel '" << kernel->name() << "' has no backward pass";
    return;
  }
  const Device device = context.device();
  std::vector<Tensor> device_inputs, device_outputs, device_output_grads;
  for (const Tensor& t : inputs) device_inputs.push_back(t.to(device));
  for (const Tensor& t : outputs) device_outputs.push_back(Tensor::empty(t.shape(), DType::f32, device));
  for (const Tensor& t : output_grads) device_output_grads.push_back(t.to(device));
  // Forward first: kernels may keep what backward needs (Dropout's mask).
  kernel->forward(device_inputs, device_outputs);
  // What backward says it never reads the memory plan may reuse before it runs. (The forward must be
  // done with the tensors replaced first: their memory goes back to the allocator's cache.)
  context.synchronize();
  if (!kernel->backward_reads_inputs()) device_inputs = poisoned(device_inputs, device);
  if (!layer.backward_reads_outputs()) device_outputs = poisoned(device_outputs, device);
  Gradients device_grads;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    device_grads.inputs.push_back(reference.inputs[i].defined()
                                      ? Tensor::zeros(inputs[i].shape(), DType::f32, device)
                                      : Tensor{});
  }
  for (const Tensor& w : reference.weights) device_grads.weights.push_back(Tensor::zeros(w.shape(), DType::f32, device));
  kernel->backward(layer, device_inputs, device_outputs, device_output_grads, device_grads.inputs,
                   device_grads.weights);
  context.synchronize();
  if (kernel->backward_in_place(layer) && reference.inputs[0].defined()) {
    // The input gradient written over the output gradient's memory: the same values, bit for bit.
    std::vector<Tensor> shared = device_output_grads;
    shared[0] = output_grads[0].to(device);
    // The other inputs' gradients start from zero again (device_grads holds the first run's).
    std::vector<Tensor> in_place_inputs;
    for (const Tensor& grad : device_grads.inputs)
      in_place_inputs.push_back(grad.defined() ? Tensor::zeros(grad.shape(), DType::f32, device) : Tensor{});
    in_place_inputs[0] = shared[0];
    std::vector<Tensor> weights;
    for (const Tensor& w : reference.weights) weights.push_back(Tensor::zeros(w.shape(), DType::f32, device));
    kernel->backward(layer, device_inputs, device_outputs, shared, in_place_inputs, weights);
    context.synchronize();
    EXPECT_EQ(to_values(in_place_inputs[0].to(Device::cpu())),
              to_values(device_grads.inputs[0].to(Device::cpu())))
        << "CUDA kernel '" << kernel->name() << "' backward in place";
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!reference.inputs[i].defined()) continue;
    EXPECT_LE(normalized_error(to_values(reference.inputs[i]), to_values(device_grads.inputs[i].to(Device::cpu()))),
              kGradientTolerance)
        << "CUDA kernel '" << kernel->name() << "' backward vs reference, input " << i;
  }
  for (std::size_t w = 0; w < reference.weights.size(); ++w) {
    if (!layer.learned_weight(w)) continue;
    EXPECT_LE(normalized_error(to_values(reference.weights[w]), to_values(device_grads.weights[w].to(Device::cpu()))),
              kGradientTolerance)
        << "CUDA kernel '" << kernel->name() << "' backward vs reference, weight " << w;
  }
}

// Mixed precision training: the layer's fp16 / bf16 CUDA kernel, where it has a backward, forward then
// backward against the reference run on the same values rounded to that type (inputs, weights and
// output gradients), so that both meet the same ties (a max pooling's window). Returns whether it ran.
bool check_gpu_backward_in(Stream& context, const LayerTest& test, const LayerCase& c,
                           const std::vector<Tensor>& inputs, DType dtype, Rng& rng) {
  const auto round_trip = [&](const Tensor& t) { return from_low_precision(to_low_precision(t, dtype)); };
  LayerSpec spec = c.spec;
  for (Tensor& w : spec.weights) w = round_trip(w);
  std::unique_ptr<Layer> layer = create_layer(spec);
  layer->set_training(test.training);
  const std::vector<Shape> in_shapes = shapes_of_tensors(inputs);
  Backend& backend = backend_for(context.device());
  if (!backend.supports(*layer, in_shapes, dtype)) return false;
  std::unique_ptr<Kernel> kernel = backend.make_typed_kernel(*layer, in_shapes, dtype, context);
  if (!kernel || !kernel->has_fast_backward()) return false;

  std::vector<Tensor> rounded_inputs, outputs, output_grads;
  for (const Tensor& t : inputs) rounded_inputs.push_back(round_trip(t));
  for (const Shape& s : layer->output_shapes(in_shapes)) outputs.push_back(Tensor::empty(s));
  layer->forward(rounded_inputs, outputs);
  for (const Tensor& out : outputs)
    output_grads.push_back(
        round_trip(to_tensor(out.shape(), rng.values(static_cast<std::size_t>(out.numel())))));
  Gradients reference = zero_gradients(*layer, rounded_inputs);
  layer->backward(rounded_inputs, outputs, output_grads, reference.inputs, reference.weights);

  const Device device = context.device();
  const auto on_device = [&](const Tensor& t) { return to_low_precision(t, dtype).to(device); };
  std::vector<Tensor> device_inputs, device_outputs, device_output_grads;
  for (const Tensor& t : rounded_inputs) device_inputs.push_back(on_device(t));
  for (const Tensor& t : outputs) device_outputs.push_back(Tensor::empty(t.shape(), dtype, device));
  for (const Tensor& t : output_grads) device_output_grads.push_back(on_device(t));
  kernel->forward(device_inputs, device_outputs);
  context.synchronize();  // before the poisoning frees what forward used
  if (!kernel->backward_reads_inputs()) device_inputs = poisoned(device_inputs, device);
  if (!layer->backward_reads_outputs()) device_outputs = poisoned(device_outputs, device);
  Gradients device_grads;
  for (const Tensor& g : reference.inputs)
    device_grads.inputs.push_back(g.defined() ? on_device(Tensor::zeros(g.shape())) : Tensor{});
  for (const Tensor& w : reference.weights)
    device_grads.weights.push_back(Tensor::zeros(w.shape(), DType::f32, device));
  kernel->backward(*layer, device_inputs, device_outputs, device_output_grads, device_grads.inputs,
                   device_grads.weights);
  context.synchronize();
  const double tolerance = dtype == DType::f16 ? kFp16GradientTolerance : kBf16GradientTolerance;
  for (std::size_t i = 0; i < reference.inputs.size(); ++i) {
    if (!reference.inputs[i].defined()) continue;
    EXPECT_LE(normalized_error(to_values(reference.inputs[i]),
                               to_values(from_low_precision(device_grads.inputs[i].to(Device::cpu())))),
              tolerance)
        << "CUDA " << dtype_name(dtype) << " kernel '" << kernel->name() << "' backward vs reference, input "
        << i;
  }
  for (std::size_t w = 0; w < reference.weights.size(); ++w) {
    if (!layer->learned_weight(w)) continue;
    EXPECT_LE(normalized_error(to_values(reference.weights[w]),
                               to_values(device_grads.weights[w].to(Device::cpu()))),
              tolerance)
        << "CUDA " << dtype_name(dtype) << " kernel '" << kernel->name() << "' backward vs reference, weight "
        << w;
  }
  return true;
}

// Checks the layer's backward (and the fast CPU one) against central differences of the naive forward.
// Returns whether a fast CPU backward was compared.
bool check_gradients(const LayerTest& test, LayerCase& c, const Layer& layer,
                     const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, Rng& rng) {
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const bool declared = std::find(c.non_differentiable_inputs.begin(), c.non_differentiable_inputs.end(),
                                    i) != c.non_differentiable_inputs.end();
    EXPECT_EQ(layer.differentiable_input(i), !declared) << "input " << i << " differentiability";
  }
  std::vector<Values> directions;
  std::vector<Tensor> output_grads;
  for (const Tensor& out : outputs) {
    directions.push_back(rounded(rng.values(static_cast<std::size_t>(out.numel()))));
    output_grads.push_back(to_tensor(out.shape(), directions.back()));
  }
  Gradients analytic = zero_gradients(layer, inputs);
  layer.backward(inputs, outputs, output_grads, analytic.inputs, analytic.weights);
  // The planner's in-place training (docs/training-memory.md) must not change a bit: the input
  // gradient written over the output gradient's memory, and backward reading the output where its
  // input was overwritten, give the same values as the separate buffers above.
  if (layer.backward_in_place() && analytic.inputs[0].defined()) {
    std::vector<Tensor> shared = output_grads;
    shared[0] = output_grads[0].clone();
    Gradients in_place = zero_gradients(layer, inputs);
    in_place.inputs[0] = shared[0];
    layer.backward(inputs, outputs, shared, in_place.inputs, in_place.weights);
    EXPECT_EQ(to_values(in_place.inputs[0]), to_values(analytic.inputs[0])) << "backward in place";
    if (std::unique_ptr<Kernel> fast = fast_cpu_kernel(layer, shapes_of_tensors(inputs));
        fast && fast->has_fast_backward() && fast->backward_in_place(layer)) {
      std::vector<Tensor> fast_outputs;
      for (const Tensor& out : outputs) fast_outputs.push_back(Tensor::empty(out.shape()));
      fast->forward(inputs, fast_outputs);
      Gradients separate = zero_gradients(layer, inputs), fast_in_place = zero_gradients(layer, inputs);
      fast->backward(layer, inputs, fast_outputs, output_grads, separate.inputs, separate.weights);
      shared[0] = output_grads[0].clone();
      fast_in_place.inputs[0] = shared[0];
      fast->backward(layer, inputs, fast_outputs, shared, fast_in_place.inputs, fast_in_place.weights);
      EXPECT_EQ(to_values(fast_in_place.inputs[0]), to_values(separate.inputs[0]))
          << "CPU kernel '" << fast->name() << "' backward in place";
    }
  }
  if (!layer.backward_reads_outputs()) {
    Gradients without_outputs = zero_gradients(layer, inputs);
    layer.backward(inputs, poisoned(outputs, Device::cpu()), output_grads, without_outputs.inputs,
                   without_outputs.weights);
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      if (!analytic.inputs[i].defined()) continue;
      EXPECT_EQ(to_values(without_outputs.inputs[i]), to_values(analytic.inputs[i]))
          << "backward without its outputs (backward_reads_outputs() is false), input " << i;
    }
  }
  if (layer.in_place_while_training()) {
    std::vector<Tensor> overwritten = inputs;
    overwritten[0] = outputs[0];
    Gradients from_output = zero_gradients(layer, inputs);
    layer.backward(overwritten, outputs, output_grads, from_output.inputs, from_output.weights);
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      if (!analytic.inputs[i].defined()) continue;
      EXPECT_EQ(to_values(from_output.inputs[i]), to_values(analytic.inputs[i]))
          << "backward over the output, input " << i;
    }
  }

  bool fast_compared = false;
  if (std::unique_ptr<Kernel> fast = fast_cpu_kernel(layer, shapes_of_tensors(inputs))) {
    if (fast->has_fast_backward()) {
      fast_compared = true;
      std::vector<Tensor> fast_outputs;
      for (const Tensor& out : outputs) fast_outputs.push_back(Tensor::empty(out.shape()));
      fast->forward(inputs, fast_outputs);
      Gradients fast_grads = zero_gradients(layer, inputs);
      fast->backward(layer, inputs, fast_outputs, output_grads, fast_grads.inputs, fast_grads.weights);
      for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (!analytic.inputs[i].defined()) continue;
        EXPECT_LE(normalized_error(to_values(analytic.inputs[i]), to_values(fast_grads.inputs[i])),
                  kGradientTolerance)
            << "CPU kernel '" << fast->name() << "' backward vs reference, input " << i;
      }
      for (std::size_t w = 0; w < analytic.weights.size(); ++w) {
        EXPECT_LE(normalized_error(to_values(analytic.weights[w]), to_values(fast_grads.weights[w])),
                  kGradientTolerance)
            << "CPU kernel '" << fast->name() << "' backward vs reference, weight " << w;
      }
    }
  }

  if (Stream* context = gpu_context()) {
    check_gpu_backward(*context, layer, inputs, outputs, output_grads, analytic);
  }

  const double h = test.gradient_step;
  auto check = [&](Values& values, const Tensor& grad, const std::string& what) {
    const Values backward = to_values(grad);
    Values numeric, analytic_at;
    for (std::size_t at : sample_positions(rng, values.size(), test.gradient_samples)) {
      const double saved = values[at];
      values[at] = saved + h;
      const double plus = weighted_sum(test.naive(c, c.inputs, c.weights), directions);
      values[at] = saved - h;
      const double minus = weighted_sum(test.naive(c, c.inputs, c.weights), directions);
      values[at] = saved;
      numeric.push_back((plus - minus) / (2 * h));
      analytic_at.push_back(backward[at]);
    }
    EXPECT_LE(normalized_error(numeric, analytic_at), kGradientTolerance)
        << "backward vs numeric gradient of the naive forward, " << what;
  };
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (analytic.inputs[i].defined()) check(c.inputs[i], analytic.inputs[i], "input " + std::to_string(i));
  }
  // Blobs that hold state (BatchNorm's statistics) have no gradient by definition.
  for (std::size_t w = 0; w < analytic.weights.size(); ++w) {
    if (layer.learned_weight(w)) check(c.weights[w], analytic.weights[w], "weight " + std::to_string(w));
  }
  return fast_compared;
}

}  // namespace

void run_layer_test(const LayerTest& test) {
  int fast_cases = 0;
  int gpu_cases = 0;
  int low_precision_cases = 0;
  int low_precision_gradient_cases = 0;
  int channels_last_cases = 0;
  int vulkan_cases = 0;
  int vulkan_fp16_cases = 0;
  int gradient_cases = 0;
  int fast_gradient_cases = 0;
  for (int index = 0; index < test.cases; ++index) {
    Rng rng(1000u + static_cast<unsigned>(index));
    LayerCase c = test.make_case(rng);
    if (c.spec.name.empty()) c.spec.name = "under_test";
    if (c.spec.inputs.empty()) {
      for (std::size_t i = 0; i < c.input_shapes.size(); ++i)
        c.spec.inputs.push_back("in" + std::to_string(i));
    }
    if (c.spec.outputs.empty()) c.spec.outputs.push_back("out0");
    const std::string what = describe(c);
    SCOPED_TRACE("case " + std::to_string(index) + ": " + what);

    std::unique_ptr<Layer> probe = create_layer(c.spec);
    const std::vector<Shape> out_shapes = probe->output_shapes(c.input_shapes);
    const std::vector<Shape> weight_shapes = probe->weight_shapes(c.input_shapes);
    if (c.weights.empty()) {
      for (const Shape& s : weight_shapes)
        c.weights.push_back(rng.values(static_cast<std::size_t>(s.numel())));
    }
    ASSERT_EQ(c.weights.size(), weight_shapes.size());
    for (std::size_t i = 0; i < weight_shapes.size(); ++i) {
      c.weights[i] = rounded(c.weights[i]);
      c.spec.weights.push_back(to_tensor(weight_shapes[i], c.weights[i]));
    }
    for (std::size_t i = c.inputs.size(); i < c.input_shapes.size(); ++i) {
      c.inputs.push_back(rng.values(static_cast<std::size_t>(c.input_shapes[i].numel())));
    }
    std::vector<Tensor> inputs;
    for (std::size_t i = 0; i < c.input_shapes.size(); ++i) {
      c.inputs[i] = rounded(c.inputs[i]);
      inputs.push_back(to_tensor(c.input_shapes[i], c.inputs[i]));
    }
    std::unique_ptr<Layer> layer = create_layer(c.spec);
    layer->set_training(test.training);

    std::vector<Tensor> reference;
    for (const Shape& s : out_shapes) reference.push_back(Tensor::empty(s));
    layer->forward(inputs, reference);

    const std::vector<Values> expected = test.naive(c, c.inputs, c.weights);
    ASSERT_EQ(expected.size(), reference.size());
    for (std::size_t k = 0; k < reference.size(); ++k) {
      ASSERT_EQ(expected[k].size(), static_cast<std::size_t>(reference[k].numel())) << "output " << k;
      EXPECT_LE(normalized_error(expected[k], to_values(reference[k])), test.tolerance)
          << "reference vs naive double, output " << k;
    }

    if (std::unique_ptr<Kernel> fast = fast_cpu_kernel(*layer, c.input_shapes)) {
      ++fast_cases;
      std::vector<Tensor> outputs;
      for (const Shape& s : out_shapes) outputs.push_back(Tensor::empty(s));
      fast->forward(inputs, outputs);
      for (std::size_t k = 0; k < reference.size(); ++k) {
        EXPECT_LE(normalized_error(to_values(reference[k]), to_values(outputs[k])), test.tolerance)
            << "CPU kernel '" << fast->name() << "' vs reference, output " << k;
      }
    }

    if (index < test.gradient_cases && c.check_gradient) {
      if (test.gradient == Gradient::checked) {
        ++gradient_cases;
        if (check_gradients(test, c, *layer, inputs, reference, rng)) ++fast_gradient_cases;
      } else {
        Gradients none = zero_gradients(*layer, inputs);
        EXPECT_THROW(layer->backward(inputs, reference, reference, none.inputs, none.weights),
                     UnsupportedError)
            << "the test says this layer has no backward pass";
      }
    }

    if (Stream* context = gpu_context()) {
      std::string kernel_name;
      const std::vector<Tensor> outputs = run_on_gpu(*context, *layer, inputs, out_shapes, kernel_name);
      if (!outputs.empty()) ++gpu_cases;
      for (std::size_t k = 0; k < outputs.size(); ++k) {
        EXPECT_LE(normalized_error(to_values(reference[k]), to_values(outputs[k])), test.tolerance)
            << "CUDA kernel '" << kernel_name << "' vs reference, output " << k;
      }
      // Low precision: the inputs rounded, fp32 inside, the outputs rounded (kFp16Tolerance, kBf16Tolerance).
      for (const DType dtype : {DType::f16, DType::bf16}) {
        const std::vector<Tensor> low =
            run_on_gpu_in(*context, *layer, inputs, out_shapes, dtype, kernel_name);
        if (!low.empty()) ++low_precision_cases;
        const double tolerance =
            std::max(test.tolerance, dtype == DType::f16 ? kFp16Tolerance : kBf16Tolerance);
        for (std::size_t k = 0; k < low.size(); ++k) {
          EXPECT_LE(normalized_error(to_values(reference[k]), to_values(low[k])), tolerance)
              << "CUDA " << dtype_name(dtype) << " kernel '" << kernel_name << "' vs reference, output " << k;
        }
        if (index < test.gradient_cases && c.check_gradient && test.gradient == Gradient::checked &&
            check_gpu_backward_in(*context, test, c, inputs, dtype, rng)) {
          ++low_precision_gradient_cases;
        }
        // Channels-last kernels (inference plans in fp16 / bf16), where the layer has one for these shapes.
        if (!layer->training() && (std::any_of(inputs.begin(), inputs.end(),
                                               [](const Tensor& t) { return layout_sensitive(t.shape()); }) ||
                                   std::any_of(out_shapes.begin(), out_shapes.end(), layout_sensitive))) {
          const std::vector<Tensor> last =
              run_on_gpu_in(*context, *layer, inputs, out_shapes, dtype, kernel_name, true);
          if (!last.empty()) ++channels_last_cases;
          for (std::size_t k = 0; k < last.size(); ++k) {
            EXPECT_LE(normalized_error(to_values(reference[k]), to_values(last[k])), tolerance)
                << "CUDA channels-last " << dtype_name(dtype) << " kernel '" << kernel_name
                << "' vs reference, output " << k;
          }
        }
      }
    }
    if (Stream* context = vulkan_context()) {
      std::string kernel_name;
      const std::vector<Tensor> outputs = run_on_gpu(*context, *layer, inputs, out_shapes, kernel_name);
      if (!outputs.empty()) ++vulkan_cases;
      for (std::size_t k = 0; k < outputs.size(); ++k) {
        EXPECT_LE(normalized_error(to_values(reference[k]), to_values(outputs[k])), test.tolerance)
            << "Vulkan kernel '" << kernel_name << "' vs reference, output " << k;
      }
      // fp16 activations (the shaders' _f16 variants) where the device has 16-bit storage.
      const std::vector<Tensor> low =
          run_on_gpu_in(*context, *layer, inputs, out_shapes, DType::f16, kernel_name);
      if (!low.empty()) ++vulkan_fp16_cases;
      for (std::size_t k = 0; k < low.size(); ++k) {
        EXPECT_LE(normalized_error(to_values(reference[k]), to_values(low[k])),
                  std::max(test.tolerance, kFp16Tolerance))
            << "Vulkan fp16 kernel '" << kernel_name << "' vs reference, output " << k;
      }
    }
  }
  ::testing::Test::RecordProperty("vulkan_cases", vulkan_cases);
  ::testing::Test::RecordProperty("vulkan_fp16_cases", vulkan_fp16_cases);
  ::testing::Test::RecordProperty("fast_cpu_cases", fast_cases);
  ::testing::Test::RecordProperty("cuda_cases", gpu_cases);
  ::testing::Test::RecordProperty("cuda_low_precision_cases", low_precision_cases);
  ::testing::Test::RecordProperty("cuda_low_precision_gradient_cases", low_precision_gradient_cases);
  ::testing::Test::RecordProperty("cuda_channels_last_cases", channels_last_cases);
  ::testing::Test::RecordProperty("gradient_cases", gradient_cases);
  ::testing::Test::RecordProperty("fast_cpu_gradient_cases", fast_gradient_cases);
}

}  // namespace espresso::testing
