// What LSTM, GRU and RNN share: ONNX's attributes and tensor layouts, the gate activations, and one
// engine for the forward pass and back-propagation through time. The engine takes its matrix products
// from the caller: the reference passes plain loops, the CPU backend OpenBLAS's sgemm, so both compute
// the input projections of all time steps as one product and one product per step for the recurrence.
//
// Tensors (layout 0; layout 1 swaps the first two axes of X, Y, the states and their outputs):
//   inputs   X [T, N, I], then Caffe's cont [T, N] when `continuation` is set (forward, layout 0 only:
//            the state is multiplied by cont[t, n] before step t, so 0 starts a new sequence), then
//            sequence_lens [N] when `sequence_lens` is set, then initial_h [D, N, H] (and initial_c
//            [D, N, H] for LSTM) when `initial_state` is set
//   outputs  Y [T, D, N, H], Y_h [D, N, H], Y_c [D, N, H] (LSTM): any leading subset
//   weights  W [D, G·H, I], R [D, G·H, H], B [D, 2·G·H] (when `bias`), P [D, 3·H] (LSTM with `peepholes`)
// with D = 2 for `bidirectional` (forward first), G gates per cell in ONNX's order (LSTM i o f c, GRU
// z r h, RNN one). With sequence lengths, batch entry n runs over its first len[n] steps (the reverse
// direction from len[n] − 1 down), Y is 0 after them, and Y_h/Y_c hold the state after its last step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layers/layer.h"

namespace espresso {

// c = alpha · op(a) · op(b) + beta · c, row-major (OpenBLAS's cblas_sgemm contract).
using RecurrentGemm = void (*)(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n,
                               std::int64_t k, float alpha, const float* a, std::int64_t lda, const float* b,
                               std::int64_t ldb, float beta, float* c, std::int64_t ldc);

// The plain triple loop, for the reference kernels.
void naive_gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k,
                float alpha, const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta,
                float* c, std::int64_t ldc);

// One of ONNX's recurrent activation functions with its alpha and beta.
struct GateActivation {
  enum class Kind {
    relu,
    tanh,
    sigmoid,
    affine,
    leaky_relu,
    thresholded_relu,
    scaled_tanh,
    hard_sigmoid,
    elu,
    softsign,
    softplus
  };
  Kind kind = Kind::sigmoid;
  float alpha = 0, beta = 0;
  float apply(float x) const;
  // d apply / dx at x (one side at kinks).
  float slope(float x) const;
};

class RecurrentLayer : public Layer {
 public:
  enum class Cell { lstm, gru, rnn };
  struct Dims {
    std::int64_t steps, batch, input, hidden, directions;
    int gates;
  };
  // Everything the backward pass needs from the forward pass; kept by the CPU kernel between its
  // forward and backward, recomputed by the reference backward.
  struct Trace {
    Dims dims{};
    std::vector<float> x;               // X in layout 0, [T, N, I]
    std::vector<std::int64_t> lengths;  // per batch entry
    std::vector<float> cont;            // [T, N] with `continuation`
    // Per direction, indexed by step s (not time) and batch entry: pre-activations [T, N, G·H] (before
    // clipping), the state before the step [T, N, H], the cell state before and after it (LSTM), and
    // H·Rhᵀ + Rbh (GRU with linear_before_reset).
    std::vector<std::vector<float>> pre, h_before, c_before, c_after, linear;
  };

  Cell cell() const { return cell_; }
  Dims dims(const std::vector<Shape>& inputs) const;
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override;
  std::int64_t macs(const std::vector<Shape>& inputs) const override;
  bool differentiable_input(std::size_t input) const override {
    return static_cast<int>(input) != lengths_input() && static_cast<int>(input) != continuation_input();
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;

  // The engine. `trace` may be null when no backward follows. With `carry` (stateful nets), the run
  // starts from the states in it when they fit this batch ([D, N, H] per state, layout 0) instead of
  // the initial-state inputs, and leaves its final states there.
  void run_forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs, RecurrentGemm gemm,
                   Trace* trace, std::vector<std::vector<float>>* carry = nullptr) const;
  void run_backward(const Trace& trace, const std::vector<Tensor>& output_grads,
                    std::vector<Tensor>& input_grads, std::vector<Tensor>& weight_grads,
                    RecurrentGemm gemm) const;

  // Indices of the optional inputs, or -1.
  int continuation_input() const { return has_cont_ ? 1 : -1; }
  int lengths_input() const { return has_lengths_ ? 1 + (has_cont_ ? 1 : 0) : -1; }
  int initial_h_input() const { return has_initial_ ? 1 + (has_cont_ ? 1 : 0) + (has_lengths_ ? 1 : 0) : -1; }
  int initial_c_input() const { return has_initial_ && cell_ == Cell::lstm ? initial_h_input() + 1 : -1; }
  int states() const { return cell_ == Cell::lstm ? 2 : 1; }  // hidden (and cell) state outputs
  // Per direction: f, g, h (LSTM), f, g (GRU), f (RNN); for kernels that compute the gates themselves.
  const std::vector<GateActivation>& activations() const { return activations_; }

  // The schema's attributes common to the three cells, with `activations`' default for this cell.
  static std::vector<AttrSpec> common_attributes(std::string_view default_activations);

 protected:
  RecurrentLayer(const LayerSpec& spec, Cell cell);

 private:
  int gates_per_cell() const { return cell_ == Cell::lstm ? 4 : cell_ == Cell::gru ? 3 : 1; }
  int activations_per_direction() const { return cell_ == Cell::lstm ? 3 : cell_ == Cell::gru ? 2 : 1; }
  void direction_forward(const Dims& d, int dir, const Trace& trace, const std::vector<Tensor>& inputs,
                         float* y, float* y_h, float* y_c, RecurrentGemm gemm, Trace* keep,
                         const std::vector<std::vector<float>>* start) const;
  // dy, dy_h, dy_c: the output gradients in layout 0.
  void direction_backward(const Dims& d, int dir, const Trace& trace, const float* dy, const float* dy_h,
                          const float* dy_c, float* dx, float* dh0, float* dc0,
                          std::vector<Tensor>& weight_grads, RecurrentGemm gemm) const;
  float clipped(float z) const { return clip_ > 0 ? std::min(std::max(z, -clip_), clip_) : z; }
  bool passes(float z) const { return clip_ <= 0 || (z >= -clip_ && z <= clip_); }

  Cell cell_;
  std::int64_t hidden_;
  int directions_;
  bool reverse_only_;
  bool layout_batch_first_;
  bool has_bias_, has_lengths_, has_initial_, has_cont_;
  bool input_forget_ = false, peepholes_ = false, linear_before_reset_ = false;
  float clip_ = 0;                           // 0: none
  std::vector<GateActivation> activations_;  // per direction: f, g, h (LSTM), f, g (GRU), f (RNN)
};

}  // namespace espresso
