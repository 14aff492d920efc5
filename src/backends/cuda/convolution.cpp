// Convolution on the GPU: picks a tactic per layer and input shape (conv_tactics.h).
#include <cstdlib>
#include <string>
#include <vector>

#include "backends/cuda/conv_tactics.h"
#include "backends/cuda/kernels.h"

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

// ESPRESSO_CONV_TACTIC=cudnn|im2col|implicit moves that tactic to the front (for tests and
// comparisons); it still declines configurations it cannot run.
std::vector<Tactic> tactic_order(const ConvProblem& p) {
  std::vector<Tactic> order = heuristic_order(p);
  const char* forced = std::getenv("ESPRESSO_CONV_TACTIC");
  if (forced == nullptr || *forced == '\0') return order;
  const std::string name = forced;
  Tactic first;
  if (name == "cudnn") {
    first = Tactic::cudnn;
  } else if (name == "im2col") {
    first = Tactic::im2col;
  } else if (name == "implicit") {
    first = Tactic::implicit;
  } else {
    throw UnsupportedError("ESPRESSO_CONV_TACTIC must be cudnn, im2col or implicit, got '" + name + "'");
  }
  std::erase(order, first);
  order.insert(order.begin(), first);
  return order;
}

class ConvolutionKernel final : public Kernel {
 public:
  ConvolutionKernel(std::unique_ptr<ConvTactic> tactic, const float* weights, const float* bias)
      : tactic_(std::move(tactic)), weights_(weights), bias_(bias) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    tactic_->run(inputs[0].data<float>(), weights_, bias_, outputs[0].data<float>());
  }
  const char* name() const override { return tactic_->name(); }

 private:
  std::unique_ptr<ConvTactic> tactic_;
  const float* weights_;
  const float* bias_;
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

std::unique_ptr<Kernel> make_convolution(const Layer& layer, const std::vector<Shape>& inputs,
                                         StreamContext& context) {
  const auto& conv = static_cast<const ConvolutionLayer&>(layer);
  ConvProblem problem;
  if (!lift_conv(conv.geometry(inputs[0]), conv.has_bias(), layer.name(), problem)) return nullptr;
  for (Tactic tactic : tactic_order(problem)) {
    if (std::unique_ptr<ConvTactic> chosen = factory(tactic)(problem, context)) {
      const std::string owner = "layer '" + layer.name() + "'";
      const float* weights = context.device_weights(layer.weights()[0], owner).data<float>();
      const float* bias =
          conv.has_bias() ? context.device_weights(layer.weights()[1], owner).data<float>() : nullptr;
      return std::make_unique<ConvolutionKernel>(std::move(chosen), weights, bias);
    }
  }
  return nullptr;
}

}  // namespace espresso::cuda
