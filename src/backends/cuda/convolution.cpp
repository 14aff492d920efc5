// Convolution on the GPU: picks a tactic per layer and input shape (conv_tactics.h). The backward
// is one for every tactic: cuDNN's, or im2col/col2im + cuBLAS where cuDNN declines.
#include <cstdlib>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backends/cuda/channel_affine.h"
#include "backends/cuda/channel_sum.h"
#include "backends/cuda/conv_tactics.h"
#include "backends/cuda/kernels.h"
#include "backends/tactic_cache.h"

namespace espresso::cuda {
namespace {

enum class Tactic { cudnn, im2col, implicit };

using TacticFactory = std::unique_ptr<ConvTactic> (*)(const ConvProblem&, StreamContext&);

TacticFactory factory(Tactic tactic) {
  switch (tactic) {
    case Tactic::cudnn:
      return make_cudnn_conv;
    case Tactic::im2col:
      return make_im2col_conv;
    case Tactic::implicit:
      return make_implicit_conv;
  }
  return make_implicit_conv;
}

// Measured on an H100 (bench/results/2026-11-22-h100-conv-tactics.md): for a single image, one im2col
// plus one cuBLAS GEMM per layer beats cuDNN's heuristic choice (NIN 0.12 ms vs 0.25 ms a forward, LeNet
// even); from a batch of a few images cuDNN wins clearly, because im2col runs one GEMM per image. Our
// implicit GEMM was slower than both everywhere, so it only runs where the other two decline.
constexpr std::int64_t kIm2colMaxBatch = 2;

std::vector<Tactic> heuristic_order(const ConvProblem& p) {
  if (p.batch <= kIm2colMaxBatch) return {Tactic::im2col, Tactic::cudnn, Tactic::implicit};
  return {Tactic::cudnn, Tactic::im2col, Tactic::implicit};
}

// ESPRESSO_CONV_TACTIC=cudnn|im2col|implicit, for tests and comparisons; none when unset or when it
// names one of the CPU's tactics (gemm, winograd, direct).
std::optional<Tactic> forced_tactic() {
  const std::string name = forced_conv_tactic_name();
  if (name == "cudnn") return Tactic::cudnn;
  if (name == "im2col") return Tactic::im2col;
  if (name == "implicit") return Tactic::implicit;
  return std::nullopt;
}

// The forced tactic moves to the front; it still declines configurations it cannot run.
std::vector<Tactic> tactic_order(const ConvProblem& p) {
  std::vector<Tactic> order = heuristic_order(p);
  if (const std::optional<Tactic> first = forced_tactic()) {
    std::erase(order, *first);
    order.insert(order.begin(), *first);
  }
  return order;
}

// A convolution's kernel at inference may take over the residual Add and the ReLU/clip after it
// (Net's fuse_steps): the tactic then leaves out the bias, and one pass adds bias and residual and
// clamps, where three launches would each read and write the whole output.
class FusingConvolution : public CudaKernel {
 public:
  FusingConvolution(const ConvProblem& problem, DType dtype, const float* bias, StreamContext& context)
      : CudaKernel(context), problem_(problem), dtype_(dtype), bias_(bias) {}

  bool fuse_residual(const Tensor& residual) override {
    if (epilogue_.active() || residual.dtype() != dtype_) return false;
    epilogue_.residual = residual.raw();
    return true;
  }
  // The Add runs in place on the residual (a ResNet block whose shortcut convolution comes second):
  // the epilogue adds what is there and writes it back there.
  bool accumulate_output(void* base, DType dtype, std::int64_t image_stride) override {
    if (epilogue_.active() || dtype != dtype_ ||
        image_stride != problem_.out_channels * problem_.out_spatial()) {
      return false;
    }
    epilogue_.residual = base;
    epilogue_.destination = base;
    return true;
  }
  // Its slice of a channel Concat (image n at base + n·image_stride): the epilogue writes there instead of
  // in place. A null base takes a redirection back.
  bool redirect_output(float* base, std::int64_t image_stride) override {
    if (base == nullptr) {
      if (epilogue_.destination_image_stride != 0) epilogue_.destination = nullptr;
      epilogue_.destination_image_stride = 0;
      return true;
    }
    if (epilogue_.residual != nullptr || epilogue_.destination != nullptr || dtype_ != DType::f32)
      return false;
    epilogue_.destination = base;
    epilogue_.destination_image_stride = image_stride;
    return true;
  }
  bool fuse_clamp(float lo, float hi) override {
    if (epilogue_.lo != -std::numeric_limits<float>::infinity() ||
        epilogue_.hi != std::numeric_limits<float>::infinity()) {
      return false;
    }
    epilogue_.lo = lo;
    epilogue_.hi = hi;
    return true;
  }

 protected:
  // The bias the tactic adds itself: none when the epilogue adds it.
  const float* tactic_bias() const { return epilogue_.active() ? nullptr : bias_; }
  void finish(void* y) {
    if (epilogue_.active()) channel_epilogue(context_, dtype_, y, bias_, epilogue_, problem_.out_extent());
  }

  ConvProblem problem_;
  DType dtype_;
  const float* bias_;
  Epilogue epilogue_;
};

class ConvolutionKernel final : public FusingConvolution {
 public:
  ConvolutionKernel(const ConvProblem& problem, std::unique_ptr<ConvTactic> tactic,
                    std::unique_ptr<ConvGradients> gradients, const float* weights, const float* bias,
                    StreamContext& context)
      : FusingConvolution(problem, DType::f32, bias, context),
        tactic_(std::move(tactic)),
        gradients_(std::move(gradients)),
        weights_(weights) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    tactic_->run(inputs[0].data<float>(), weights_, tactic_bias(), outputs[0].data<float>());
    finish(outputs[0].data<float>());
  }

  void backward(const Layer& layer, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    // Prepared here only outside training (gradient checks): training nets prepare it with the
    // kernel, since they may be capturing a CUDA graph now.
    if (!gradients_) {
      gradients_ = make_conv_gradients(problem_, kDataPass | kFilterPass, context_);
      if (!gradients_) {
        throw UnsupportedError("layer '" + layer.name() + "' (" + layer.type() +
                               "): neither cuDNN nor im2col can run this convolution's backward on the GPU");
      }
    }
    const float* dy = output_grads[0].data<float>();
    if (input_grads[0].defined()) gradients_->data_add(weights_, dy, input_grads[0].data<float>());
    if (weight_grads[0].defined())
      gradients_->filter_add(inputs[0].data<float>(), dy, weight_grads[0].data<float>());
    if (bias_ != nullptr && weight_grads[1].defined()) {
      add_channel_sums(context_, dy, weight_grads[1].data<float>(),
                       {problem_.batch, problem_.out_channels, problem_.out_spatial()});
    }
  }

  const char* name() const override { return tactic_->name(); }

 private:
  std::unique_ptr<ConvTactic> tactic_;
  std::unique_ptr<ConvGradients> gradients_;
  const float* weights_;
};

}  // namespace

bool lift_conv(const ConvGeometry& g, bool bias, const std::string& owner, ConvProblem& p) {
  const int axes = g.axes();
  if (axes < 1 || axes > kMaxConvAxes) return false;
  p.batch = g.batch;
  p.in_channels = g.in_channels;
  p.out_channels = g.out_channels;
  p.group = g.group;
  p.axes = axes;
  p.bias = bias;
  p.owner = owner;
  for (int a = 0; a < axes; ++a) {
    const auto from = static_cast<std::size_t>(a);
    const auto to = static_cast<std::size_t>(kMaxConvAxes - axes + a);
    p.in[to] = g.in_size[from];
    p.out[to] = g.out_size[from];
    p.kernel[to] = g.kernel[from];
    p.stride[to] = g.stride[from];
    p.pad[to] = g.pad[from];
    p.dilation[to] = g.dilation[from];
  }
  return true;
}

std::unique_ptr<ConvGradients> make_conv_gradients(const ConvProblem& problem, unsigned passes,
                                                   StreamContext& context) {
  // Forcing either of our own tactics puts our own backward first, so that tests reach it.
  const std::optional<Tactic> forced = forced_tactic();
  if (forced && *forced != Tactic::cudnn) {
    if (auto gradients = make_gemm_gradients(problem, context)) return gradients;
    return make_cudnn_gradients(problem, passes, context);
  }
  const char* pointwise = std::getenv("ESPRESSO_POINTWISE_BACKWARD");
  if (!forced && (pointwise == nullptr || std::string(pointwise) != "0")) {
    if (auto gradients = make_pointwise_gradients(problem, context)) return gradients;
  }
  if (auto gradients = make_cudnn_gradients(problem, passes, context)) return gradients;
  return make_gemm_gradients(problem, context);
}

std::unique_ptr<Kernel> make_convolution(const Layer& layer, const std::vector<Shape>& inputs,
                                         StreamContext& context) {
  const auto& conv = static_cast<const ConvolutionLayer&>(layer);
  ConvProblem problem;
  if (!lift_conv(conv.geometry(inputs[0]), conv.has_bias(), layer.name(), problem)) return nullptr;
  std::unique_ptr<ConvGradients> gradients;
  if (layer.training()) {
    gradients = make_conv_gradients(problem, kDataPass | kFilterPass, context);
    if (!gradients) return nullptr;
  }
  for (Tactic tactic : tactic_order(problem)) {
    if (std::unique_ptr<ConvTactic> chosen = factory(tactic)(problem, context)) {
      const std::string owner = "layer '" + layer.name() + "'";
      const float* weights = context.device_weights(layer.weights()[0], owner).data<float>();
      const float* bias =
          conv.has_bias() ? context.device_weights(layer.weights()[1], owner).data<float>() : nullptr;
      return std::make_unique<ConvolutionKernel>(problem, std::move(chosen), std::move(gradients), weights,
                                                 bias, context);
    }
  }
  return nullptr;
}

namespace {

// ESPRESSO_CUDNN_FUSED: "1" the fused epilogue wherever the tactic takes it, untimed; "0" never (to measure
// what fusing saves); else timed per layer.
std::string fused_epilogue_setting() {
  const char* value = std::getenv("ESPRESSO_CUDNN_FUSED");
  return value != nullptr ? value : "";
}

// The GPU time of `work` on the context's stream in milliseconds, from a CUDA graph of a few runs replayed:
// run plainly, a cuDNN call can spend more time on the host than its kernels take (0.3 ms against tens of
// microseconds for MobileNetV2's batch-1 layers), which a recorded net never pays. `work` ran plainly before.
template <typename Work>
float recorded_ms(StreamContext& context, Work work) {
  constexpr int kRuns = 8;
  const std::lock_guard exclusion(capture_exclusion());  // no other capture meanwhile: this one synchronises
  cudaStream_t stream = context.stream();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaEvent_t start = nullptr, end = nullptr;
  const auto release = [&] {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (start != nullptr) cudaEventDestroy(start);
    if (end != nullptr) cudaEventDestroy(end);
  };
  float ms = 0.0f;
  try {
    ESPRESSO_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      for (int run = 0; run < kRuns; ++run) work();
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);
      throw;
    }
    ESPRESSO_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    ESPRESSO_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    ESPRESSO_CUDA_CHECK(cudaEventCreate(&start));
    ESPRESSO_CUDA_CHECK(cudaEventCreate(&end));
    ESPRESSO_CUDA_CHECK(cudaGraphLaunch(exec, stream));  // warm-up
    ESPRESSO_CUDA_CHECK(cudaEventRecord(start, stream));
    ESPRESSO_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    ESPRESSO_CUDA_CHECK(cudaEventRecord(end, stream));
    ESPRESSO_CUDA_CHECK(cudaEventSynchronize(end));
    ESPRESSO_CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
  } catch (...) {
    release();
    throw;
  }
  release();
  return ms / kRuns;
}

// fp16 / bf16: cuDNN, or im2col + GEMM for one image, on tensor cores; the weights converted once (and
// again before each training forward, Stream::refresh_converted_weights), the bias kept fp32. Training:
// pointwise convolutions as whole-batch GEMMs, the others through cuDNN's passes in the same type; the
// weight gradients fp32.
class LowpConvolutionKernel final : public FusingConvolution {
 public:
  // `typed_bias`: the bias in `dtype` too (for the tactic's fused epilogue), or null.
  LowpConvolutionKernel(const ConvProblem& problem, DType dtype, std::unique_ptr<TypedConvTactic> tactic,
                        std::unique_ptr<TypedConvGradients> gradients, const Tensor& weights,
                        const float* bias, const void* typed_bias, StreamContext& context)
      : FusingConvolution(problem, dtype, bias, context),
        tactic_(std::move(tactic)),
        gradients_(std::move(gradients)),
        weights_(weights),
        typed_bias_(typed_bias),
        name_(tactic_->name()) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const void* x = inputs[0].raw();
    void* y = outputs[0].raw();
    if (!fusion_chosen_) {
      fused_ = fusion_pays(x);
      fusion_chosen_ = true;
    }
    if (fused_ && tactic_->run_fused(x, weights_.raw(), typed_bias_, epilogue_, y)) {
      if (!named_fused_) name_ += "+epilogue";
      named_fused_ = true;
      return;
    }
    run_separately(x, y);
  }
  bool fuse_input_clamp(float lo, float hi) override { return tactic_->clamp_input(lo, hi); }
  // Channels-last kernels serve inference plans only.
  bool has_fast_backward() const override { return !problem_.channels_last; }
  void backward(const Layer& layer, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    if (problem_.channels_last)
      throw UnsupportedError("layer '" + layer.name() + "': a channels-last convolution has no backward");
    // Prepared here only outside training (gradient checks), as in the fp32 kernel.
    if (!gradients_) {
      gradients_ = make_cudnn_typed_gradients(problem_, dtype_, context_);
      if (!gradients_) {
        throw UnsupportedError("layer '" + layer.name() + "' (" + layer.type() + "): cuDNN cannot run this " +
                               dtype_name(dtype_) + " convolution's backward");
      }
    }
    const void* dy = output_grads[0].raw();
    if (input_grads[0].defined()) gradients_->data_add(weights_.raw(), dy, input_grads[0].raw());
    if (weight_grads[0].defined()) gradients_->filter_add(inputs[0].raw(), dy, weight_grads[0].data<float>());
    if (bias_ != nullptr && weight_grads[1].defined()) {
      add_channel_sums(context_, dtype_, dy, weight_grads[1].data<float>(),
                       {problem_.batch, problem_.out_channels, problem_.out_spatial()});
    }
  }
  // "+epilogue" once the fused epilogue ran (ESPRESSO_PROFILE_LAYERS prints names after the runs).
  const char* name() const override { return name_.c_str(); }

 private:
  void run_separately(const void* x, void* y) {
    tactic_->run_typed(x, weights_.raw(), tactic_bias(), y);
    finish(y);
  }
  // Whether the tactic's fused epilogue (one pass) beats the product and the epilogue as two passes for this
  // layer: cuDNN's fused call took ResNet-18's fp16 forward at batch 256 on an H100 from 4.97 to 3.99 ms but
  // MobileNetV2's at batch 1 from 0.297 to 0.359 and NIN's at batch 64 from 0.32 to 0.42
  // (bench/results/2026-12-07-h100-cudnn-fused.md). So both are timed once, recorded, on the first plain run
  // (the net runs plainly once before it records a graph), into scratch memory: y may share its buffer with x
  // or the residual. While a graph records, the fused call is taken untimed; where the scratch or the
  // recording fails, the separate passes stay.
  bool fusion_pays(const void* x) {
    const std::string setting = fused_epilogue_setting();
    if (typed_bias_ == nullptr || setting == "0" || !tactic_->can_fuse(epilogue_)) return false;
    if (setting == "1") return true;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    ESPRESSO_CUDA_CHECK(cudaStreamIsCapturing(context_.stream(), &capture));
    if (capture != cudaStreamCaptureStatusNone) return true;
    const auto bytes =
        static_cast<std::size_t>(problem_.batch * problem_.out_channels * problem_.out_spatial()) *
        dtype_size(dtype_);
    bool pays = false;
    std::shared_ptr<void> scratch;  // goes back to the pool for others once the stream is done with it
    // Both write the scratch, also where the epilogue writes elsewhere (the Add in place on the residual,
    // which repeated runs there would add up).
    struct Restore {
      Epilogue& epilogue;
      Epilogue kept;
      ~Restore() { epilogue = kept; }
    } restore{epilogue_, epilogue_};
    epilogue_.destination = nullptr;
    try {
      scratch =
          allocate(bytes, context_.device(), "timing the fused epilogue of layer '" + problem_.owner + "'");
      const auto fused = [&] {
        tactic_->run_fused(x, weights_.raw(), typed_bias_, epilogue_, scratch.get());
      };
      const auto separate = [&] { run_separately(x, scratch.get()); };
      fused();  // each once plainly first: cuDNN sets up what a recording may not
      separate();
      const float fused_ms = recorded_ms(context_, fused);
      pays = fused_ms <= recorded_ms(context_, separate);
    } catch (const DeviceError&) {
      pays = false;
    }
    ESPRESSO_CUDA_CHECK(
        cudaStreamSynchronize(context_.stream()));  // a fault of the work itself surfaces here
    return pays;
  }

  std::unique_ptr<TypedConvTactic> tactic_;
  std::unique_ptr<TypedConvGradients> gradients_;  // made with the kernel when training
  Tensor weights_;
  const void* typed_bias_;
  bool fusion_chosen_ = false, fused_ = false, named_fused_ = false;
  std::string name_;
};

// The bias in `dtype` for a fused epilogue (inference plans only: timing it costs scratch memory), or null.
const void* typed_bias(const ConvolutionLayer& conv, DType dtype, StreamContext& context,
                       const std::string& owner) {
  return conv.has_bias() ? context.device_weights_as(conv.weights()[1], dtype, owner).raw() : nullptr;
}

}  // namespace

// How much faster cuDNN's fp32 passes must be for a few-channel convolution to train in fp32.
constexpr float kFp32Margin = 1.5f;

std::unique_ptr<Kernel> make_lowp_convolution(const Layer& layer, const std::vector<Shape>& inputs,
                                              DType dtype, StreamContext& context) {
  const auto& conv = static_cast<const ConvolutionLayer&>(layer);
  ConvProblem problem;
  if (!lift_conv(conv.geometry(inputs[0]), conv.has_bias(), layer.name(), problem)) return nullptr;
  // cuDNN, unless im2col + GEMM is forced (ESPRESSO_CONV_TACTIC=im2col). Measured in fp16 at batch 1 on an
  // H100, im2col won NIN (0.071 against 0.085 ms) but lost ResNet-18 (0.369 against 0.342) and MobileNetV2
  // (0.553 against 0.286, its depthwise convolutions), and timing each layer alone on zero input picked
  // tactics that ran slower in the recorded net (bench/results/2026-12-06-h100-fp16-im2col.md).
  std::unique_ptr<TypedConvGradients> gradients;
  std::unique_ptr<TypedConvTactic> tactic;
  if (layer.training()) {
    gradients = make_pointwise_typed_gradients(problem, dtype, context);
    if (gradients) {
      tactic = make_pointwise_typed_conv(problem, dtype, context);
    } else {
      // cuDNN's fp16 kernels can lose to its fp32 ones where the channels are few (NIN's stem, three:
      // a 1.46 ms backward against 0.38 on an H100): both timed, fp32 trains where it is clearly faster,
      // since its output then costs a conversion and a copy in each direction.
      if (problem.in_per_group() % 8 != 0) {
        const float low = cudnn_backward_ms(problem, dtype, dtype, context);
        const float full = cudnn_backward_ms(problem, DType::f32, dtype, context);
        if (low > 0.0f && full > 0.0f && low > kFp32Margin * full) return nullptr;
      }
      gradients = make_cudnn_typed_gradients(problem, dtype, context);
      if (!gradients) return nullptr;  // trains in fp32
    }
  }
  if (!tactic && forced_tactic() == Tactic::im2col) tactic = make_im2col_typed_conv(problem, dtype, context);
  if (!tactic) tactic = make_cudnn_typed_conv(problem, dtype, context);
  if (!tactic) return nullptr;
  const std::string owner = "layer '" + layer.name() + "'";
  const Tensor& weights = context.device_weights_as(layer.weights()[0], dtype, owner);
  const float* bias =
      conv.has_bias() ? context.device_weights(layer.weights()[1], owner).data<float>() : nullptr;
  return std::make_unique<LowpConvolutionKernel>(
      problem, dtype, std::move(tactic), std::move(gradients), weights, bias,
      layer.training() ? nullptr : typed_bias(conv, dtype, context, owner), context);
}

// Channels-last (inference plans): cuDNN on N, H, W, C tensors with the filter K, R, S, C (converted once),
// the layout its fp16/bf16 tensor-core kernels work in, so it transposes nothing around them.
std::unique_ptr<Kernel> make_nhwc_convolution(const Layer& layer, const std::vector<Shape>& inputs,
                                              DType dtype, StreamContext& context) {
  const auto& conv = static_cast<const ConvolutionLayer&>(layer);
  ConvProblem problem;
  if (!lift_conv(conv.geometry(inputs[0]), conv.has_bias(), layer.name(), problem) || problem.axes != 2)
    return nullptr;
  problem.channels_last = true;
  const std::string owner = "layer '" + layer.name() + "'";
  const Tensor& full = context.device_weights(layer.weights()[0], owner);
  const Shape filter{problem.out_channels, problem.in_per_group(), problem.kernel[1], problem.kernel[2]};
  auto memory = allocate(static_cast<std::size_t>(filter.numel()) * dtype_size(dtype), context.device(),
                         "the channels-last " + std::string(dtype_name(dtype)) + " weights of " + owner);
  Tensor weights = Tensor::wrap(memory.get(), filter, dtype, context.device(), memory);
  context.convert_layout(full.reshaped(filter), weights, true);
  // Depthwise layers run our kernel, pointwise ones cuBLASLt's GEMM (ESPRESSO_CONV_TACTIC=cudnn keeps cuDNN's
  // for both): MobileNetV2 fp16 at batch 256 on an H100, 7.9 -> 5.1 ms with both, the ReLU6 between them
  // clamped by the depthwise kernel (bench/results/2026-12-08-h100-session28.md).
  std::unique_ptr<TypedConvTactic> tactic;
  if (forced_tactic() != Tactic::cudnn) {
    tactic = make_depthwise_nhwc_conv(problem, dtype, weights.raw(), context);
    if (!tactic) tactic = make_pointwise_nhwc_conv(problem, dtype, context);
  }
  if (!tactic) tactic = make_cudnn_typed_conv(problem, dtype, context);
  if (!tactic) return nullptr;
  const float* bias =
      conv.has_bias() ? context.device_weights(layer.weights()[1], owner).data<float>() : nullptr;
  return std::make_unique<LowpConvolutionKernel>(problem, dtype, std::move(tactic), nullptr, weights, bias,
                                                 typed_bias(conv, dtype, context, owner), context);
}

}  // namespace espresso::cuda
