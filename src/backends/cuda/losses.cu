// Loss and metric layers on the GPU: SoftmaxWithLoss, SigmoidCrossEntropyLoss, EuclideanLoss and
// Accuracy. Sums are accumulated in double by one block, as the reference does on the CPU; the
// normalizer found in forward stays on the device for backward, which reads the loss gradient from
// device memory too, so no step waits for the host. A label that is not a class index is flagged
// in mapped host memory and reported after the forward completes (check_completed), naming it as
// the CPU kernel would.
#include <cfloat>
#include <climits>
#include <sstream>

#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/accuracy.h"
#include "layers/euclidean_loss.h"
#include "layers/sigmoid_cross_entropy_loss.h"
#include "layers/softmax_with_loss.h"

namespace espresso::cuda {
namespace {

constexpr int kReduceThreads = 1024;
constexpr unsigned long long kNoBadLabel = ULLONG_MAX;

// Labels as the reference reads them (LabeledLayer::label_at).
constexpr long long kIgnored = -1;
constexpr long long kNotAClass = -2;

struct LabelRule {
  long long classes = 0;
  bool has_ignore = false;
  long long ignore = 0;
};

__device__ long long class_of(float value, const LabelRule& rule) {
  if (value == nearbyintf(value) && fabsf(value) < 1e15f) {
    const auto label = static_cast<long long>(value);
    if (rule.has_ignore && label == rule.ignore) return kIgnored;
    if (label >= 0 && label < rule.classes) return label;
  }
  return kNotAClass;
}

// Sums of one kReduceThreads block; the result is valid in thread 0.
template <typename T>
__device__ T block_sum(T value) {
  __shared__ T partial[kReduceThreads];
  partial[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kReduceThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const T total = partial[0];
  __syncthreads();
  return total;
}

// A word of pinned host memory that kernels write directly: the first bad label's position.
class BadLabelFlag {
 public:
  explicit BadLabelFlag(Device device) {
    const std::lock_guard exclusion(capture_exclusion());
    DeviceGuard guard(device.index);
    void* host = nullptr;
    ESPRESSO_CUDA_CHECK(cudaHostAlloc(&host, sizeof(unsigned long long), cudaHostAllocMapped | cudaHostAllocPortable));
    host_ = static_cast<unsigned long long*>(host);
    *host_ = kNoBadLabel;
    void* mapped = nullptr;
    ESPRESSO_CUDA_CHECK(cudaHostGetDevicePointer(&mapped, host, 0));
    device_ = static_cast<unsigned long long*>(mapped);
  }
  ~BadLabelFlag() {
    const std::lock_guard exclusion(capture_exclusion());
    cudaFreeHost(host_);
  }
  BadLabelFlag(const BadLabelFlag&) = delete;
  BadLabelFlag& operator=(const BadLabelFlag&) = delete;

  unsigned long long* device() const { return device_; }
  // Throws DataError naming the label when a kernel flagged one, and clears the flag.
  void check(const Layer& layer, const float* labels, long long classes) {
    const unsigned long long index = *static_cast<volatile unsigned long long*>(host_);
    if (index == kNoBadLabel) return;
    *host_ = kNoBadLabel;
    float value = 0.0f;
    ESPRESSO_CUDA_CHECK(cudaMemcpy(&value, labels + index, sizeof(float), cudaMemcpyDeviceToHost));
    std::ostringstream what;
    what << "layer '" << layer.name() << "' (" << layer.type() << "): label " << index << " is " << value
         << ", not a class index in [0, " << classes << ")";
    throw DataError(what.str());
  }

 private:
  unsigned long long* host_ = nullptr;
  unsigned long long* device_ = nullptr;
};

LabelRule label_rule(const LabeledLayer& layer, const AxisSplit& split) {
  LabelRule rule;
  rule.classes = split.channels;
  if (layer.ignore_label()) {
    rule.has_ignore = true;
    rule.ignore = *layer.ignore_label();
  }
  return rule;
}

// ---- SoftmaxWithLoss ----

// A warp per line (one outer x inner position): the probabilities and the line's loss term.
__global__ void softmax_loss_lines(const float* __restrict__ x, const float* __restrict__ labels,
                                   float* __restrict__ prob, double* __restrict__ terms, AxisSplit s,
                                   LabelRule rule, unsigned long long* bad) {
  const long long lines = s.outer * s.inner;
  const int lane = threadIdx.x % kWarp;
  for (long long line : warp_stride(lines)) {
    const long long base = line / s.inner * s.channels * s.inner + line % s.inner;
    float max = -INFINITY;
    for (long long c = lane; c < s.channels; c += kWarp) max = fmaxf(max, x[base + c * s.inner]);
    max = warp_max(max);
    float sum = 0.0f;
    for (long long c = lane; c < s.channels; c += kWarp) {
      const float e = expf(x[base + c * s.inner] - max);
      prob[base + c * s.inner] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    for (long long c = lane; c < s.channels; c += kWarp) prob[base + c * s.inner] /= sum;
    __syncwarp();
    if (lane == 0) {
      const long long label = class_of(labels[line], rule);
      if (label == kNotAClass) atomicMin(bad, static_cast<unsigned long long>(line));
      // terms: loss in the even slot, 1 for a counted label in the odd one.
      terms[2 * line] = label >= 0 ? -log(fmax(static_cast<double>(prob[base + label * s.inner]), static_cast<double>(FLT_MIN))) : 0.0;
      terms[2 * line + 1] = label >= 0 ? 1.0 : 0.0;
    }
  }
}

// One block: loss = Σ terms / normalizer; keeps the normalizer for backward.
__global__ void softmax_loss_total(const double* terms, long long lines, AxisSplit s, LossNormalization mode,
                                   float* loss, double* norm) {
  double sum = 0.0, valid = 0.0;
  for (long long i = threadIdx.x; i < lines; i += blockDim.x) {
    sum += terms[2 * i];
    valid += terms[2 * i + 1];
  }
  sum = block_sum(sum);
  valid = block_sum(valid);
  if (threadIdx.x == 0) {
    const double n = loss_normalizer(mode, static_cast<long long>(valid), s.outer, s.outer * s.inner);
    *norm = n;
    *loss = static_cast<float>(sum / n);
  }
}

__global__ void softmax_loss_backward(const float* __restrict__ prob, const float* __restrict__ labels,
                                      const float* __restrict__ dloss, const double* __restrict__ norm,
                                      float* __restrict__ dx, AxisSplit s, LabelRule rule) {
  const long long n = s.outer * s.channels * s.inner;
  const float scale = static_cast<float>(*dloss / *norm);
  for (long long at : grid_stride(n)) {
    const long long i = at % s.inner;
    const long long c = at / s.inner % s.channels;
    const long long o = at / (s.inner * s.channels);
    const long long label = class_of(labels[o * s.inner + i], rule);
    if (label < 0) continue;
    dx[at] += scale * (prob[at] - (c == label ? 1.0f : 0.0f));
  }
}

// dx += p ⊙ (dp − Σ_c p·dp) per line: a gradient arriving on the probabilities output.
__global__ void softmax_passthrough(const float* __restrict__ prob, const float* __restrict__ dprob,
                                    float* __restrict__ dx, AxisSplit s) {
  const long long lines = s.outer * s.inner;
  const int lane = threadIdx.x % kWarp;
  for (long long line : warp_stride(lines)) {
    const long long base = line / s.inner * s.channels * s.inner + line % s.inner;
    float dot = 0.0f;
    for (long long c = lane; c < s.channels; c += kWarp) dot += prob[base + c * s.inner] * dprob[base + c * s.inner];
    dot = warp_sum(dot);
    for (long long c = lane; c < s.channels; c += kWarp) {
      const long long at = base + c * s.inner;
      dx[at] += prob[at] * (dprob[at] - dot);
    }
  }
}

class SoftmaxWithLossKernel final : public CudaKernel {
 public:
  SoftmaxWithLossKernel(const SoftmaxWithLossLayer& layer, const AxisSplit& split, StreamContext& context)
      : CudaKernel(context),
        layer_(layer),
        split_(split),
        rule_(label_rule(layer, split)),
        flag_(context.device()),
        terms_(allocate(
            sizeof(double) * 2 * static_cast<std::size_t>(split.outer * split.inner) + sizeof(double),
            context.device(), "layer '" + layer.name() + "'")),
        norm_(allocate(sizeof(double), context.device(), "layer '" + layer.name() + "'")) {
    // Without a probabilities output, the kernel keeps its own for backward.
    if (layer.spec().outputs.size() < 2) {
      prob_ = allocate(sizeof(float) * static_cast<std::size_t>(split.outer * split.channels * split.inner),
                       context.device(), "layer '" + layer.name() + "'");
    }
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    labels_ = inputs[1].data<float>();
    const long long lines = split_.outer * split_.inner;
    auto* terms = static_cast<double*>(terms_.get());
    if (lines > 0 && split_.channels > 0) {
      launch(context_, lines * kWarp, softmax_loss_lines, inputs[0].data<float>(), labels_,
             probabilities(outputs), terms, split_, rule_, flag_.device());
    }
    launch(context_, Grid{1, kReduceThreads}, softmax_loss_total, terms, lines, split_,
           layer_.normalization(), outputs[0].data<float>(), static_cast<double*>(norm_.get()));
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    if (!input_grads[0].defined()) return;
    const long long n = split_.outer * split_.channels * split_.inner;
    if (n == 0) return;
    const float* prob = outputs.size() == 2 ? outputs[1].data<float>() : static_cast<const float*>(prob_.get());
    float* dx = input_grads[0].data<float>();
    launch(context_, n, softmax_loss_backward, prob, inputs[1].data<float>(), output_grads[0].data<float>(),
           static_cast<const double*>(norm_.get()), dx, split_, rule_);
    if (outputs.size() == 2) {
      const long long lines = split_.outer * split_.inner;
      launch(context_, lines * kWarp, softmax_passthrough, prob, output_grads[1].data<float>(), dx, split_);
    }
  }
  void check_completed() override { flag_.check(layer_, labels_, split_.channels); }

 private:
  float* probabilities(std::vector<Tensor>& outputs) {
    return outputs.size() == 2 ? outputs[1].data<float>() : static_cast<float*>(prob_.get());
  }

  const SoftmaxWithLossLayer& layer_;
  AxisSplit split_;
  LabelRule rule_;
  BadLabelFlag flag_;
  std::shared_ptr<void> terms_, norm_, prob_;
  const float* labels_ = nullptr;
};

// ---- Accuracy ----

__global__ void accuracy_kernel(const float* __restrict__ scores, const float* __restrict__ labels, AxisSplit s,
                                LabelRule rule, long long top_k, float* accuracy, unsigned long long* bad) {
  long long counted = 0, correct = 0;
  for (long long line = threadIdx.x; line < s.outer * s.inner; line += blockDim.x) {
    const long long label = class_of(labels[line], rule);
    if (label == kNotAClass) atomicMin(bad, static_cast<unsigned long long>(line));
    if (label < 0) continue;
    const float* row = scores + line / s.inner * s.channels * s.inner + line % s.inner;
    const float truth = row[label * s.inner];
    long long better = 0;
    for (long long c = 0; c < s.channels; ++c) better += row[c * s.inner] > truth ? 1 : 0;
    ++counted;
    correct += better < top_k ? 1 : 0;
  }
  counted = block_sum(counted);
  correct = block_sum(correct);
  if (threadIdx.x == 0)
    *accuracy = counted == 0 ? 0.0f : static_cast<float>(correct) / static_cast<float>(counted);
}

class AccuracyKernel final : public CudaKernel {
 public:
  AccuracyKernel(const AccuracyLayer& layer, const AxisSplit& split, StreamContext& context)
      : CudaKernel(context),
        layer_(layer),
        split_(split),
        rule_(label_rule(layer, split)),
        flag_(context.device()) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    labels_ = inputs[1].data<float>();
    launch(context_, Grid{1, kReduceThreads}, accuracy_kernel, inputs[0].data<float>(), labels_, split_,
           rule_, layer_.top_k(), outputs[0].data<float>(), flag_.device());
  }
  void check_completed() override { flag_.check(layer_, labels_, split_.channels); }
  // Accuracy has no gradient: the layer's reference backward is the one that runs.
  bool has_fast_backward() const override { return false; }

 private:
  const AccuracyLayer& layer_;
  AxisSplit split_;
  LabelRule rule_;
  BadLabelFlag flag_;
  const float* labels_ = nullptr;
};

// ---- EuclideanLoss ----

__global__ void euclidean_forward(const float* a, const float* b, long long n, long long batch, float* loss) {
  double sum = 0.0;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const double d = static_cast<double>(a[i]) - b[i];
    sum += d * d;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) *loss = static_cast<float>(batch == 0 ? 0.0 : sum / (2.0 * static_cast<double>(batch)));
}

__global__ void euclidean_backward(const float* a, const float* b, const float* dloss, long long n, long long batch,
                                   float* da, float* db) {
  const float scale = *dloss / static_cast<float>(batch);
  for (long long i : grid_stride(n)) {
    const float g = scale * (a[i] - b[i]);
    if (da != nullptr) da[i] += g;
    if (db != nullptr) db[i] -= g;
  }
}

class EuclideanLossKernel final : public CudaKernel {
 public:
  EuclideanLossKernel(long long batch, StreamContext& context) : CudaKernel(context), batch_(batch) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    launch(context_, Grid{1, kReduceThreads}, euclidean_forward, inputs[0].data<float>(),
           inputs[1].data<float>(), inputs[0].numel(), batch_, outputs[0].data<float>());
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const long long n = inputs[0].numel();
    if (batch_ == 0 || n == 0) return;
    float* da = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
    float* db = input_grads[1].defined() ? input_grads[1].data<float>() : nullptr;
    if (da == nullptr && db == nullptr) return;
    launch(context_, n, euclidean_backward, inputs[0].data<float>(), inputs[1].data<float>(),
           output_grads[0].data<float>(), n, batch_, da, db);
  }

 private:
  long long batch_;
};

// ---- SigmoidCrossEntropyLoss ----

__device__ bool ignored_target(float t, bool has_ignore, long long ignore) {
  return has_ignore && t == static_cast<float>(ignore);
}

__global__ void sigmoid_ce_forward(const float* x, const float* t, long long n, long long batch, bool has_ignore,
                                   long long ignore, LossNormalization mode, float* loss, double* norm) {
  double sum = 0.0, valid = 0.0;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    if (ignored_target(t[i], has_ignore, ignore)) continue;
    // max(x, 0) − t·x + log(1 + exp(−|x|)) never overflows.
    const double v = x[i];
    sum += fmax(v, 0.0) - t[i] * v + log1p(exp(-fabs(v)));
    valid += 1.0;
  }
  sum = block_sum(sum);
  valid = block_sum(valid);
  if (threadIdx.x == 0) {
    const double d = loss_normalizer(mode, static_cast<long long>(valid), batch, n);
    *norm = d;
    *loss = static_cast<float>(sum / d);
  }
}

__global__ void sigmoid_ce_backward(const float* x, const float* t, const float* dloss, const double* norm,
                                    long long n, bool has_ignore, long long ignore, float* dx) {
  const float scale = static_cast<float>(*dloss / *norm);
  for (long long i : grid_stride(n)) {
    if (!ignored_target(t[i], has_ignore, ignore)) dx[i] += scale * (1.0f / (1.0f + expf(-x[i])) - t[i]);
  }
}

class SigmoidCrossEntropyLossKernel final : public CudaKernel {
 public:
  SigmoidCrossEntropyLossKernel(const SigmoidCrossEntropyLossLayer& layer, long long batch,
                                StreamContext& context)
      : CudaKernel(context),
        batch_(batch),
        mode_(layer.normalization()),
        has_ignore_(layer.ignore_label().has_value()),
        ignore_(layer.ignore_label().value_or(0)),
        norm_(allocate(sizeof(double), context.device(), "layer '" + layer.name() + "'")) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    launch(context_, Grid{1, kReduceThreads}, sigmoid_ce_forward, inputs[0].data<float>(),
           inputs[1].data<float>(), inputs[0].numel(), batch_, has_ignore_, ignore_, mode_,
           outputs[0].data<float>(), static_cast<double*>(norm_.get()));
  }
  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>&) override {
    const long long n = inputs[0].numel();
    if (!input_grads[0].defined() || n == 0) return;
    launch(context_, n, sigmoid_ce_backward, inputs[0].data<float>(), inputs[1].data<float>(),
           output_grads[0].data<float>(), static_cast<const double*>(norm_.get()), n, has_ignore_, ignore_,
           input_grads[0].data<float>());
  }

 private:
  long long batch_;
  LossNormalization mode_;
  bool has_ignore_;
  long long ignore_;
  std::shared_ptr<void> norm_;
};

}  // namespace

std::unique_ptr<Kernel> make_accuracy(const Layer& layer, const std::vector<Shape>& inputs,
                                      StreamContext& context) {
  const auto& accuracy = static_cast<const AccuracyLayer&>(layer);
  return std::make_unique<AccuracyKernel>(accuracy, accuracy.split(inputs), context);
}

std::unique_ptr<Kernel> make_euclidean_loss(const Layer&, const std::vector<Shape>& inputs,
                                            StreamContext& context) {
  return std::make_unique<EuclideanLossKernel>(inputs[0][0], context);
}

std::unique_ptr<Kernel> make_sigmoid_cross_entropy_loss(const Layer& layer, const std::vector<Shape>& inputs,
                                                        StreamContext& context) {
  return std::make_unique<SigmoidCrossEntropyLossKernel>(static_cast<const SigmoidCrossEntropyLossLayer&>(layer),
                                                         inputs[0][0], context);
}

std::unique_ptr<Kernel> make_softmax_with_loss(const Layer& layer, const std::vector<Shape>& inputs,
                                               StreamContext& context) {
  const auto& loss = static_cast<const SoftmaxWithLossLayer&>(layer);
  return std::make_unique<SoftmaxWithLossKernel>(loss, loss.split(inputs), context);
}

}  // namespace espresso::cuda
