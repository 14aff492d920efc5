// LSTM, GRU and RNN on the CPU: the layers' engine (layers/recurrent.h) with OpenBLAS products, so the
// input projections of all time steps are one sgemm and each step one more. While training, the
// forward pass keeps what back-propagation through time needs, and backward uses it. The per-step
// products are small (batch x gates x hidden): OpenBLAS runs them single-threaded, and the engine
// spreads each step's element-wise work over the batch instead. (With OpenBLAS's threads, 40 iterations
// of the language-identification LSTM on 2 cores spent 17 s of system time beside 6 s of compute.)
#include "backends/cpu/blas.h"
#include "backends/cpu/cpu_backend.h"
#include "layers/gru.h"
#include "layers/lstm.h"
#include "layers/rnn.h"

namespace espresso::cpu {
namespace {

class RecurrentKernel final : public Kernel {
 public:
  explicit RecurrentKernel(const RecurrentLayer& layer) : layer_(layer) {}

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    kept_ = layer_.training();
    SingleThreadedBlas single;
    layer_.run_forward(inputs, outputs, sgemm, kept_ ? &trace_ : nullptr, carry_);
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    SingleThreadedBlas single;
    if (!kept_) {
      // Not kept by a training forward: run it again for the trace.
      std::vector<Tensor> scratch;
      for (const Tensor& t : outputs) scratch.push_back(Tensor::empty(t.shape()));
      layer_.run_forward(inputs, scratch, sgemm, &trace_);
    }
    layer_.run_backward(trace_, output_grads, input_grads, weight_grads, sgemm);
  }
  bool has_fast_backward() const override { return true; }
  bool bind_state(std::vector<std::vector<float>>* state) override {
    carry_ = state;
    return true;
  }
  const char* name() const override { return "sgemm-recurrent"; }

 private:
  const RecurrentLayer& layer_;
  RecurrentLayer::Trace trace_;
  bool kept_ = false;
  std::vector<std::vector<float>>* carry_ = nullptr;  // stateful nets: the states carried between runs
};

}  // namespace

std::unique_ptr<Kernel> make_lstm(const Layer& layer, const std::vector<Shape>&) {
  return std::make_unique<RecurrentKernel>(static_cast<const RecurrentLayer&>(layer));
}

std::unique_ptr<Kernel> make_gru(const Layer& layer, const std::vector<Shape>&) {
  return std::make_unique<RecurrentKernel>(static_cast<const RecurrentLayer&>(layer));
}

std::unique_ptr<Kernel> make_rnn(const Layer& layer, const std::vector<Shape>&) {
  return std::make_unique<RecurrentKernel>(static_cast<const RecurrentLayer&>(layer));
}

}  // namespace espresso::cpu
