// LSTM, GRU and RNN on the GPU: the CPU engine's algorithm (layers/recurrent.h) with cuBLAS products
// and fused element-wise kernels. Per direction, the input projections of all time steps are one SGEMM,
// each step one SGEMM for the recurrence (two for GRU without linear_before_reset, whose candidate reads
// r ⊙ H) and one kernel for the gates, which also keeps what back-propagation through time needs
// (pre-activations, states before and after the step). Backward walks the steps in reverse with one
// kernel and two SGEMMs per step, then takes the input and weight gradients of all steps at once.
//
// Every option of the engine is covered: the eleven activation functions with their alpha and beta,
// clip, forward / reverse / bidirectional, layout 0 and 1, bias, sequence_lens, initial_state, Caffe's
// continuation, LSTM peepholes and input_forget, GRU with and without linear_before_reset, and the
// states that stateful nets carry between runs. Sequence lengths are read on the device (no
// synchronisation, so capture works): a length outside 0..T or not whole, which the CPU engine rejects,
// is clamped to 0..T and rounded down here.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "backends/cuda/channel_sum.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "layers/gru.h"
#include "layers/lstm.h"
#include "layers/rnn.h"

namespace espresso::cuda {
namespace {

using Index = std::int64_t;

// GateActivation on the device.
struct Act {
  int kind;
  float alpha, beta;
};

struct Acts {
  Act f[3];  // per direction: f, g, h (LSTM), f, g (GRU), f (RNN)
};

using Kind = GateActivation::Kind;

__device__ float act_apply(const Act& a, float x) {
  switch (static_cast<Kind>(a.kind)) {
    case Kind::relu:
      return x > 0 ? x : 0.0f;
    case Kind::tanh:
      return tanhf(x);
    case Kind::sigmoid:
      return 1.0f / (1.0f + expf(-x));
    case Kind::affine:
      return a.alpha * x + a.beta;
    case Kind::leaky_relu:
      return x >= 0 ? x : a.alpha * x;
    case Kind::thresholded_relu:
      return x > a.alpha ? x : 0.0f;
    case Kind::scaled_tanh:
      return a.alpha * tanhf(a.beta * x);
    case Kind::hard_sigmoid:
      return fmaxf(0.0f, fminf(1.0f, a.alpha * x + a.beta));
    case Kind::elu:
      return x >= 0 ? x : a.alpha * (expf(x) - 1.0f);
    case Kind::softsign:
      return x / (1.0f + fabsf(x));
    case Kind::softplus:
      return log1pf(expf(-fabsf(x))) + fmaxf(x, 0.0f);
  }
  return x;
}

__device__ float act_slope(const Act& a, float x) {
  switch (static_cast<Kind>(a.kind)) {
    case Kind::relu:
      return x > 0 ? 1.0f : 0.0f;
    case Kind::tanh: {
      const float t = tanhf(x);
      return 1.0f - t * t;
    }
    case Kind::sigmoid: {
      const float s = 1.0f / (1.0f + expf(-x));
      return s * (1.0f - s);
    }
    case Kind::affine:
      return a.alpha;
    case Kind::leaky_relu:
      return x >= 0 ? 1.0f : a.alpha;
    case Kind::thresholded_relu:
      return x > a.alpha ? 1.0f : 0.0f;
    case Kind::scaled_tanh: {
      const float t = tanhf(a.beta * x);
      return a.alpha * a.beta * (1.0f - t * t);
    }
    case Kind::hard_sigmoid: {
      const float v = a.alpha * x + a.beta;
      return v > 0 && v < 1 ? a.alpha : 0.0f;
    }
    case Kind::elu:
      return x >= 0 ? 1.0f : a.alpha * expf(x);
    case Kind::softsign: {
      const float d = 1.0f + fabsf(x);
      return 1.0f / (d * d);
    }
    case Kind::softplus:
      return 1.0f / (1.0f + expf(-x));
  }
  return 1.0f;
}

// What every step kernel needs to know about the layer.
struct Config {
  int cell;  // 0 LSTM, 1 GRU, 2 RNN
  Index T, N, H, GH;
  float clip;  // 0: none
  bool input_forget, linear_before_reset, reverse;
  Acts acts;
};

__device__ float clipped(const Config& c, float z) { return c.clip > 0 ? fminf(fmaxf(z, -c.clip), c.clip) : z; }
// The clip's gradient: 1 inside, 0 where it cut.
__device__ float gate_slope(const Config& c, const Act& a, float z) {
  return c.clip <= 0 || (z >= -c.clip && z <= c.clip) ? act_slope(a, clipped(c, z)) : 0.0f;
}
__device__ float gate(const Config& c, const Act& a, float z) { return act_apply(a, clipped(c, z)); }

// dst[j][i][k] (+)= src[i][j][k], for i < a0, j < a1, k < inner.
__global__ void swap_leading(const float* __restrict__ src, float* __restrict__ dst, Index a0, Index a1,
                             Index inner, bool accumulate) {
  for (Index e : grid_stride(a0 * a1 * inner)) {
    const Index k = e % inner, j = (e / inner) % a1, i = e / (inner * a1);
    const float v = src[e];
    float& out = dst[(j * a0 + i) * inner + k];
    out = accumulate ? out + v : v;
  }
}

__global__ void add_into(const float* __restrict__ src, float* __restrict__ dst, Index n) {
  for (Index e : grid_stride(n)) dst[e] += src[e];
}

// Sequence lengths as whole steps, clamped to 0..T; all T without the input.
__global__ void read_lengths(const float* __restrict__ given, Index* __restrict__ len, Index N, Index T) {
  for (Index b : grid_stride(N)) {
    if (given == nullptr) {
      len[b] = T;
    } else {
      const float v = floorf(given[b]);
      len[b] = v >= 0 ? (v <= static_cast<float>(T) ? static_cast<Index>(v) : T) : 0;
    }
  }
}

// This direction's state [N, H] from a [D, N, H] (layout 0) or [N, D, H] (layout 1) tensor, or zero.
__global__ void load_state(const float* __restrict__ from, float* __restrict__ state, Index N, Index D,
                           Index H, int dir, bool batch_first) {
  for (Index e : grid_stride(N * H)) {
    const Index b = e / H, j = e % H;
    state[e] = from == nullptr ? 0.0f : from[batch_first ? (b * D + dir) * H + j : (dir * N + b) * H + j];
  }
}

// Caffe's cont: the state is scaled by cont[s, b] before step s (0 starts a new sequence).
__global__ void scale_states(const float* __restrict__ cont, const Index* __restrict__ len, float* h, float* c,
                             Index s, Index N, Index H) {
  for (Index e : grid_stride(N * H)) {
    const Index b = e / H;
    if (s >= len[b]) continue;
    const float k = cont[s * N + b];
    h[e] *= k;
    if (c != nullptr) c[e] *= k;
  }
}

struct Weights {
  const float *Wb, *Rb, *P;  // this direction's, or null
};

__device__ float bias_at(const Weights& w, Index k) { return w.Wb != nullptr ? w.Wb[k] + w.Rb[k] : 0.0f; }

// GRU without linear_before_reset, before the candidate's product: r ⊙ H.
__global__ void gru_reset_forward(Config c, Weights w, const float* __restrict__ xw, const float* __restrict__ hr,
                                  const float* __restrict__ h, const Index* __restrict__ len,
                                  float* __restrict__ reset_h, Index s) {
  for (Index e : grid_stride(c.N * c.H)) {
    const Index b = e / c.H, j = e % c.H;
    if (s >= len[b]) {
      reset_h[e] = 0.0f;
      continue;
    }
    const Index t = c.reverse ? len[b] - 1 - s : s;
    const float zr = xw[(t * c.N + b) * c.GH + c.H + j] + hr[b * c.GH + c.H + j] + bias_at(w, c.H + j);
    reset_h[e] = gate(c, c.acts.f[0], zr) * h[e];
  }
}

struct ForwardTrace {
  float *pre, *h_before, *c_before, *c_after, *linear;  // this direction's, [T, N, ·] by step
};

// One step of every batch entry: the gates, the new states, Y, and the trace.
__global__ void step_forward(Config c, Weights w, const float* __restrict__ xw, const float* __restrict__ hr,
                             const float* __restrict__ hr_h, const Index* __restrict__ len, float* h, float* cs,
                             float* __restrict__ y, ForwardTrace keep, Index s, Index D, int dir) {
  const Index N = c.N, H = c.H, GH = c.GH;
  for (Index e : grid_stride(N * H)) {
    const Index b = e / H, j = e % H;
    if (s >= len[b]) continue;
    const Index t = c.reverse ? len[b] - 1 - s : s;
    const float* xr = xw + (t * N + b) * GH;
    const float* hrb = hr + b * GH;
    const Index row = s * N + b;
    float* zb = keep.pre + row * GH;
    const float hb = h[e];
    keep.h_before[row * H + j] = hb;
    float out;
    if (c.cell == 0) {
      const float cb = cs[e];
      keep.c_before[row * H + j] = cb;
      const float* P = w.P;
      const float zi = xr[j] + hrb[j] + bias_at(w, j) + (P ? P[j] * cb : 0.0f);
      const float zf = xr[2 * H + j] + hrb[2 * H + j] + bias_at(w, 2 * H + j) + (P ? P[2 * H + j] * cb : 0.0f);
      const float zc = xr[3 * H + j] + hrb[3 * H + j] + bias_at(w, 3 * H + j);
      const float i = gate(c, c.acts.f[0], zi);
      const float f = c.input_forget ? 1.0f - i : gate(c, c.acts.f[0], zf);
      const float g = gate(c, c.acts.f[1], zc);
      const float cell = f * cb + i * g;
      const float zo = xr[H + j] + hrb[H + j] + bias_at(w, H + j) + (P ? P[H + j] * cell : 0.0f);
      const float o = gate(c, c.acts.f[0], zo);
      out = o * act_apply(c.acts.f[2], cell);
      cs[e] = cell;
      keep.c_after[row * H + j] = cell;
      zb[j] = zi;
      zb[H + j] = zo;
      zb[2 * H + j] = zf;
      zb[3 * H + j] = zc;
    } else if (c.cell == 1) {
      const float zu = xr[j] + hrb[j] + bias_at(w, j);
      const float zr = xr[H + j] + hrb[H + j] + bias_at(w, H + j);
      const float u = gate(c, c.acts.f[0], zu);
      const float r = gate(c, c.acts.f[0], zr);
      float zh;
      if (c.linear_before_reset) {
        const float linear = hrb[2 * H + j] + (w.Rb ? w.Rb[2 * H + j] : 0.0f);
        keep.linear[row * H + j] = linear;
        zh = xr[2 * H + j] + (w.Wb ? w.Wb[2 * H + j] : 0.0f) + r * linear;
      } else {
        zh = xr[2 * H + j] + hr_h[e] + bias_at(w, 2 * H + j);
      }
      const float candidate = gate(c, c.acts.f[1], zh);
      out = (1.0f - u) * candidate + u * hb;
      zb[j] = zu;
      zb[H + j] = zr;
      zb[2 * H + j] = zh;
    } else {
      const float z = xr[j] + hrb[j] + bias_at(w, j);
      out = gate(c, c.acts.f[0], z);
      zb[j] = z;
    }
    h[e] = out;
    y[((t * D + dir) * N + b) * H + j] = out;
  }
}

// One step of back-propagation through time: from dh (and dc) after the step to the pre-activations'
// gradients (gx by time, gr this step's) and the part of the gradients before the step that does not
// go through R.
__global__ void step_backward(Config c, const float* __restrict__ P, const float* __restrict__ pre,
                              const float* __restrict__ h_before, const float* __restrict__ c_before,
                              const float* __restrict__ c_after, const float* __restrict__ linear,
                              const Index* __restrict__ len, const float* __restrict__ dy, float* dh,
                              const float* __restrict__ dc, float* __restrict__ dh_next,
                              float* __restrict__ dc_next, float* __restrict__ dzx, float* __restrict__ dzr,
                              float* __restrict__ reset_h, Index s, Index D, int dir) {
  const Index N = c.N, H = c.H, GH = c.GH;
  for (Index e : grid_stride(N * H)) {
    const Index b = e / H, j = e % H;
    float* gr = dzr + b * GH;
    if (s >= len[b]) {
      // The state passes this step unchanged.
      dh_next[e] = dh[e];
      dc_next[e] = dc[e];
      for (int g = 0; g < GH / H; ++g) gr[g * H + j] = 0.0f;
      if (reset_h != nullptr) reset_h[e] = 0.0f;
      continue;
    }
    const Index t = c.reverse ? len[b] - 1 - s : s;
    const Index row = s * N + b;
    const float d_h = dh[e] + dy[((t * D + dir) * N + b) * H + j];
    const float* zb = pre + row * GH;
    float* gx = dzx + (t * N + b) * GH;
    if (c.cell == 0) {
      const float cp = c_before[row * H + j];
      const float cell = c_after[row * H + j];
      const float zi = zb[j], zo = zb[H + j], zf = zb[2 * H + j], zc = zb[3 * H + j];
      const Act& fa = c.acts.f[0];
      const float i = gate(c, fa, zi);
      const float f = c.input_forget ? 1.0f - i : gate(c, fa, zf);
      const float g = gate(c, c.acts.f[1], zc);
      const float o = gate(c, fa, zo);
      const float dzo = d_h * act_apply(c.acts.f[2], cell) * gate_slope(c, fa, zo);
      const float dcell = dc[e] + d_h * o * act_slope(c.acts.f[2], cell) + (P ? dzo * P[H + j] : 0.0f);
      const float df = dcell * cp;
      float di = dcell * g;
      float dzf = 0;
      if (c.input_forget) {
        di -= df;
      } else {
        dzf = df * gate_slope(c, fa, zf);
      }
      const float dzi = di * gate_slope(c, fa, zi);
      const float dzc = dcell * i * gate_slope(c, c.acts.f[1], zc);
      dc_next[e] = dcell * f + (P ? dzi * P[j] + dzf * P[2 * H + j] : 0.0f);
      dh_next[e] = 0.0f;
      gx[j] = gr[j] = dzi;
      gx[H + j] = gr[H + j] = dzo;
      gx[2 * H + j] = gr[2 * H + j] = dzf;
      gx[3 * H + j] = gr[3 * H + j] = dzc;
    } else if (c.cell == 1) {
      const float hp = h_before[row * H + j];
      const float zu = zb[j], zr = zb[H + j], zh = zb[2 * H + j];
      const Act& fa = c.acts.f[0];
      const float u = gate(c, fa, zu);
      const float r = gate(c, fa, zr);
      const float candidate = gate(c, c.acts.f[1], zh);
      const float dzu = d_h * (hp - candidate) * gate_slope(c, fa, zu);
      const float dzh = d_h * (1.0f - u) * gate_slope(c, c.acts.f[1], zh);
      dh_next[e] = d_h * u;
      gx[j] = gr[j] = dzu;
      gx[2 * H + j] = dzh;
      if (c.linear_before_reset) {
        const float lin = linear[row * H + j];
        gr[2 * H + j] = dzh * r;
        const float d = dzh * lin * gate_slope(c, fa, zr);
        gx[H + j] = gr[H + j] = d;
      } else {
        gr[2 * H + j] = dzh;
        gr[H + j] = 0.0f;  // set by gru_reset_backward
        reset_h[e] = r * hp;
      }
    } else {
      const float dz = d_h * gate_slope(c, c.acts.f[0], zb[j]);
      dh_next[e] = 0.0f;
      gx[j] = gr[j] = dz;
    }
    dh[e] = d_h;
  }
}

// GRU without linear_before_reset: the gradient of r ⊙ H (d_reset_h) reaches r and H.
__global__ void gru_reset_backward(Config c, const float* __restrict__ pre, const float* __restrict__ h_before,
                                   const Index* __restrict__ len, const float* __restrict__ d_reset_h,
                                   float* __restrict__ dh_next, float* __restrict__ dzx, float* __restrict__ dzr,
                                   Index s) {
  const Index N = c.N, H = c.H, GH = c.GH;
  for (Index e : grid_stride(N * H)) {
    const Index b = e / H, j = e % H;
    if (s >= len[b]) continue;
    const Index t = c.reverse ? len[b] - 1 - s : s;
    const Index row = s * N + b;
    const float zr = pre[row * GH + H + j];
    const float r = gate(c, c.acts.f[0], zr);
    const float grad = d_reset_h[e];
    dh_next[e] += grad * r;
    const float d = grad * h_before[row * H + j] * gate_slope(c, c.acts.f[0], zr);
    dzx[(t * N + b) * GH + H + j] = d;
    dzr[b * GH + H + j] = d;
  }
}

// Peephole gradients of one step, summed over the batch in order (no atomics).
__global__ void peephole_grads(const float* __restrict__ dzr, const float* __restrict__ c_before,
                               const float* __restrict__ c_after, const Index* __restrict__ len,
                               float* __restrict__ dP, Index s, Index N, Index H, Index GH) {
  for (Index e : grid_stride(3 * H)) {
    const Index g = e / H, j = e % H;
    float sum = 0.0f;
    for (Index b = 0; b < N; ++b) {
      if (s >= len[b]) continue;
      const float* state = g == 1 ? c_after : c_before;
      sum += dzr[b * GH + g * H + j] * state[(s * N + b) * H + j];
    }
    dP[e] += sum;
  }
}

bool fits_int(Index v) { return v <= std::numeric_limits<int>::max(); }

class RecurrentKernel final : public CudaKernel {
 public:
  RecurrentKernel(const RecurrentLayer& layer, const RecurrentLayer::Dims& d, StreamContext& context)
      : CudaKernel(context), layer_(layer), d_(d), cublas_(context.cublas()) {
    const std::string owner = "layer '" + layer.name() + "'";
    for (const Tensor& w : layer.weights()) weights_.push_back(context.device_weights(w, owner).data<float>());
    const LayerSpec& spec = layer.spec();
    const RecurrentLayer::Cell cell = layer.cell();
    config_.cell = cell == RecurrentLayer::Cell::lstm ? 0 : cell == RecurrentLayer::Cell::gru ? 1 : 2;
    config_.T = d.steps;
    config_.N = d.batch;
    config_.H = d.hidden;
    config_.GH = d.gates * d.hidden;
    config_.clip = static_cast<float>(spec.attrs.get_float("clip", 0.0));
    config_.input_forget = cell == RecurrentLayer::Cell::lstm && spec.attrs.require_int("input_forget") != 0;
    config_.linear_before_reset =
        cell == RecurrentLayer::Cell::gru && spec.attrs.require_int("linear_before_reset") != 0;
    peepholes_ = cell == RecurrentLayer::Cell::lstm && spec.attrs.require_int("peepholes") != 0;
    has_bias_ = spec.attrs.require_int("bias") != 0;
    reverse_only_ = spec.attrs.require_string("direction") == "reverse";
    batch_first_ = spec.attrs.require_int("layout") == 1;
    per_direction_ = cell == RecurrentLayer::Cell::lstm ? 3 : cell == RecurrentLayer::Cell::gru ? 2 : 1;
    const std::vector<GateActivation>& acts = layer.activations();
    for (int dir = 0; dir < d.directions; ++dir) {
      Acts a{};
      for (int k = 0; k < per_direction_; ++k) {
        const GateActivation& g = acts[static_cast<std::size_t>(dir * per_direction_ + k)];
        a.f[k] = Act{static_cast<int>(g.kind), g.alpha, g.beta};
      }
      acts_.push_back(a);
    }

    const Device device = context.device();
    const Index T = d.steps, N = d.batch, I = d.input, H = d.hidden, GH = config_.GH, D = d.directions;
    const auto buffer = [&](Index n) { return Tensor::zeros(Shape{std::max<Index>(n, 1)}, DType::f32, device); };
    x0_ = buffer(T * N * I);
    xw_ = buffer(T * N * GH);
    y0_ = buffer(T * D * N * H);
    yh0_ = buffer(D * N * H);
    yc0_ = buffer(D * N * H);
    h_ = buffer(N * H);
    c_ = buffer(N * H);
    hr_ = buffer(N * GH);
    reset_h_ = buffer(N * H);
    hr_h_ = buffer(N * H);
    len_ = Tensor::zeros(Shape{std::max<Index>(N, 1)}, DType::i64, device);
    for (Index dir = 0; dir < D; ++dir) {
      pre_.push_back(buffer(T * N * GH));
      h_before_.push_back(buffer(T * N * H));
      c_before_.push_back(buffer(cell == RecurrentLayer::Cell::lstm ? T * N * H : 1));
      c_after_.push_back(buffer(cell == RecurrentLayer::Cell::lstm ? T * N * H : 1));
      linear_.push_back(buffer(config_.linear_before_reset ? T * N * H : 1));
    }
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const Index T = d_.steps, N = d_.batch, I = d_.input, H = d_.hidden, GH = config_.GH, D = d_.directions;
    const StreamContext& ctx = context_;
    float* x0 = x0_.data<float>();
    if (batch_first_) {
      launch(ctx, T * N * I, swap_leading, inputs[0].data<float>(), x0, N, T, I, false);
    } else {
      copy(inputs[0].data<float>(), x0, T * N * I);
    }
    const int lengths = layer_.lengths_input();
    Index* len = len_.data<Index>();
    launch(ctx, N, read_lengths, lengths >= 0 ? inputs[static_cast<std::size_t>(lengths)].data<float>() : nullptr,
           len, N, T);
    const float* cont = layer_.continuation_input() >= 0 ? inputs[1].data<float>() : nullptr;
    const int state_count = layer_.states();
    const bool carried = carry_ != nullptr && carry_->size() == static_cast<std::size_t>(state_count) &&
                         carry_->front().size() == static_cast<std::size_t>(D * N * H);
    if (carried) {
      // Stateful nets: the states of the last run, from the host.
      ESPRESSO_CUDA_CHECK(cudaMemcpyAsync(yh0_.data<float>(), (*carry_)[0].data(), bytes(D * N * H),
                                          cudaMemcpyHostToDevice, ctx.stream()));
      if (state_count == 2)
        ESPRESSO_CUDA_CHECK(cudaMemcpyAsync(yc0_.data<float>(), (*carry_)[1].data(), bytes(D * N * H),
                                            cudaMemcpyHostToDevice, ctx.stream()));
    }
    ESPRESSO_CUDA_CHECK(cudaMemsetAsync(y0_.data<float>(), 0, bytes(T * D * N * H), ctx.stream()));
    const bool gated_reset = config_.cell == 1 && !config_.linear_before_reset;
    const Index recurrent_cols = gated_reset ? 2 * H : GH;
    for (int dir = 0; dir < D; ++dir) {
      const auto sdir = static_cast<std::size_t>(dir);
      const Config c = direction_config(dir);
      const float* W = weights_[0] + dir * GH * I;
      const float* R = weights_[1] + dir * GH * H;
      const Weights w = direction_weights(dir);
      float* xw = xw_.data<float>();
      // Input projections of every step: xw [T·N, GH] = x · Wᵀ.
      gemm(false, true, T * N, GH, I, 1.0f, x0, I, W, I, 0.0f, xw, GH);
      float* h = h_.data<float>();
      float* cs = c_.data<float>();
      if (carried) {
        launch(ctx, N * H, load_state, static_cast<const float*>(yh0_.data<float>()), h, N, D, H, dir, false);
        launch(ctx, N * H, load_state, static_cast<const float*>(yc0_.data<float>()), cs, N, D, H, dir, false);
      } else {
        const int init = layer_.initial_h_input();
        launch(ctx, N * H, load_state,
               init >= 0 ? static_cast<const float*>(inputs[static_cast<std::size_t>(init)].data<float>()) : nullptr,
               h, N, D, H, dir, batch_first_);
        launch(ctx, N * H, load_state,
               init >= 0 && state_count == 2
                   ? static_cast<const float*>(inputs[static_cast<std::size_t>(init + 1)].data<float>())
                   : nullptr,
               cs, N, D, H, dir, batch_first_);
      }
      ForwardTrace keep{pre_[sdir].data<float>(), h_before_[sdir].data<float>(), c_before_[sdir].data<float>(),
                        c_after_[sdir].data<float>(), linear_[sdir].data<float>()};
      ESPRESSO_CUDA_CHECK(cudaMemsetAsync(keep.pre, 0, bytes(T * N * GH), ctx.stream()));
      ESPRESSO_CUDA_CHECK(cudaMemsetAsync(keep.h_before, 0, bytes(T * N * H), ctx.stream()));
      if (config_.cell == 0) {
        ESPRESSO_CUDA_CHECK(cudaMemsetAsync(keep.c_before, 0, bytes(T * N * H), ctx.stream()));
        ESPRESSO_CUDA_CHECK(cudaMemsetAsync(keep.c_after, 0, bytes(T * N * H), ctx.stream()));
      }
      if (config_.linear_before_reset)
        ESPRESSO_CUDA_CHECK(cudaMemsetAsync(keep.linear, 0, bytes(T * N * H), ctx.stream()));
      float* hr = hr_.data<float>();
      for (Index s = 0; s < T; ++s) {
        if (cont != nullptr)
          launch(ctx, N * H, scale_states, cont, static_cast<const Index*>(len), h, config_.cell == 0 ? cs : nullptr,
                 s, N, H);
        gemm(false, true, N, recurrent_cols, H, 1.0f, h, H, R, H, 0.0f, hr, GH);
        if (gated_reset) {
          launch(ctx, N * H, gru_reset_forward, c, w, static_cast<const float*>(xw), static_cast<const float*>(hr),
                 static_cast<const float*>(h), static_cast<const Index*>(len), reset_h_.data<float>(), s);
          gemm(false, true, N, H, H, 1.0f, reset_h_.data<float>(), H, R + 2 * H * H, H, 0.0f, hr_h_.data<float>(),
               H);
        }
        launch(ctx, N * H, step_forward, c, w, static_cast<const float*>(xw), static_cast<const float*>(hr),
               static_cast<const float*>(hr_h_.data<float>()), static_cast<const Index*>(len), h, cs,
               y0_.data<float>(), keep, s, D, dir);
      }
      copy(h, yh0_.data<float>() + dir * N * H, N * H);
      copy(cs, yc0_.data<float>() + dir * N * H, N * H);
    }
    if (carry_ != nullptr) {
      carry_->assign(static_cast<std::size_t>(state_count), std::vector<float>(static_cast<std::size_t>(D * N * H)));
      ESPRESSO_CUDA_CHECK(cudaMemcpyAsync((*carry_)[0].data(), yh0_.data<float>(), bytes(D * N * H),
                                          cudaMemcpyDeviceToHost, ctx.stream()));
      if (state_count == 2)
        ESPRESSO_CUDA_CHECK(cudaMemcpyAsync((*carry_)[1].data(), yc0_.data<float>(), bytes(D * N * H),
                                            cudaMemcpyDeviceToHost, ctx.stream()));
      ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
    }
    to_layout(y0_.data<float>(), outputs[0].data<float>(), T * D, N, H, false);
    for (std::size_t k = 1; k < outputs.size(); ++k) {
      to_layout(k == 1 ? yh0_.data<float>() : yc0_.data<float>(), outputs[k].data<float>(), D, N, H, false);
    }
    forwarded_ = true;
  }

  void backward(const Layer&, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) override {
    const Index T = d_.steps, N = d_.batch, I = d_.input, H = d_.hidden, GH = config_.GH, D = d_.directions;
    const StreamContext& ctx = context_;
    const Device device = ctx.device();
    if (!forwarded_) {
      // Not preceded by this kernel's forward: run it for the trace.
      std::vector<Tensor> scratch;
      for (const Tensor& t : outputs) scratch.push_back(Tensor::empty(t.shape(), DType::f32, device));
      forward(inputs, scratch);
    }
    if (!backward_ready_) {
      // The scratch of backward, made on the first call and kept like the trace.
      const auto buffer = [&](Index n) { return Tensor::zeros(Shape{std::max<Index>(n, 1)}, DType::f32, device); };
      dy_ = buffer(T * D * N * H);
      dy_h_ = buffer(D * N * H);
      dy_c_ = buffer(D * N * H);
      dx_ = buffer(T * N * I);
      dh0_ = buffer(D * N * H);
      dc0_ = buffer(D * N * H);
      dzx_ = buffer(T * N * GH);
      dzr_ = buffer(N * GH);
      for (Tensor& t : state_) t = buffer(N * H);
      d_reset_h_ = buffer(N * H);
      for (const Tensor& w : layer_.weights()) unwanted_.push_back(Tensor::zeros(w.shape(), DType::f32, device));
      backward_ready_ = true;
    }
    Tensor &dy = dy_, &dy_h = dy_h_, &dy_c = dy_c_, &dx = dx_, &dh0 = dh0_, &dc0 = dc0_, &dzx = dzx_, &dzr = dzr_,
           &d_reset_h = d_reset_h_;
    Tensor* state = state_;
    // Output gradients in layout 0; absent ones are zero.
    zero(dy, T * D * N * H);
    zero(dy_h, D * N * H);
    zero(dy_c, D * N * H);
    zero(dx, T * N * I);
    zero(dh0, D * N * H);
    zero(dc0, D * N * H);
    if (!output_grads.empty() && output_grads[0].defined())
      from_layout(output_grads[0].data<float>(), dy.data<float>(), T * D, N, H);
    for (std::size_t k = 1; k < output_grads.size(); ++k) {
      if (!output_grads[k].defined()) continue;
      from_layout(output_grads[k].data<float>(), (k == 1 ? dy_h : dy_c).data<float>(), D, N, H);
    }
    // Weight gradients the caller does not want go to scratch.
    std::vector<float*> wg;
    for (std::size_t k = 0; k < layer_.weights().size(); ++k) {
      wg.push_back(k < weight_grads.size() && weight_grads[k].defined() ? weight_grads[k].data<float>()
                                                                        : unwanted_[k].data<float>());
    }
    const Index* len = len_.data<Index>();
    const float* cont = layer_.continuation_input() >= 0 ? inputs[1].data<float>() : nullptr;
    const bool gated_reset = config_.cell == 1 && !config_.linear_before_reset;
    const Index recurrent_cols = gated_reset ? 2 * H : GH;
    const float* x0 = x0_.data<float>();

    for (int dir = 0; dir < D; ++dir) {
      const auto sdir = static_cast<std::size_t>(dir);
      const Config c = direction_config(dir);
      const float* W = weights_[0] + dir * GH * I;
      const float* R = weights_[1] + dir * GH * H;
      const float* P = peepholes_ ? weights_[has_bias_ ? 3 : 2] + dir * 3 * H : nullptr;
      float* dW = wg[0] + dir * GH * I;
      float* dR = wg[1] + dir * GH * H;
      float* dWb = has_bias_ ? wg[2] + dir * 2 * GH : nullptr;
      float* dRb = dWb ? dWb + GH : nullptr;
      float* dP = peepholes_ ? wg[has_bias_ ? 3 : 2] + dir * 3 * H : nullptr;
      float* dh = state[0].data<float>();
      float* dc = state[1].data<float>();
      float* dh_next = state[2].data<float>();
      float* dc_next = state[3].data<float>();
      copy(dy_h.data<float>() + dir * N * H, dh, N * H);
      copy(dy_c.data<float>() + dir * N * H, dc, N * H);
      ESPRESSO_CUDA_CHECK(cudaMemsetAsync(dzx.data<float>(), 0, bytes(T * N * GH), ctx.stream()));
      const float* pre = pre_[sdir].data<float>();
      const float* h_before = h_before_[sdir].data<float>();
      for (Index s = T - 1; s >= 0; --s) {
        launch(ctx, N * H, step_backward, c, P, pre, h_before, static_cast<const float*>(c_before_[sdir].data<float>()),
               static_cast<const float*>(c_after_[sdir].data<float>()),
               static_cast<const float*>(linear_[sdir].data<float>()), len,
               static_cast<const float*>(dy.data<float>()), dh, static_cast<const float*>(dc), dh_next, dc_next,
               dzx.data<float>(), dzr.data<float>(), gated_reset ? reset_h_.data<float>() : nullptr, s, D, dir);
        if (dP != nullptr)
          launch(ctx, 3 * H, peephole_grads, static_cast<const float*>(dzr.data<float>()),
                 static_cast<const float*>(c_before_[sdir].data<float>()),
                 static_cast<const float*>(c_after_[sdir].data<float>()), len, dP, s, N, H, GH);
        const float* hp_step = h_before + s * N * H;
        if (gated_reset) {
          gemm(false, false, N, H, H, 1.0f, dzr.data<float>() + 2 * H, GH, R + 2 * H * H, H, 0.0f,
               d_reset_h.data<float>(), H);
          gemm(true, false, H, H, N, 1.0f, dzr.data<float>() + 2 * H, GH, reset_h_.data<float>(), H, 1.0f,
               dR + 2 * H * H, H);
          launch(ctx, N * H, gru_reset_backward, c, pre, h_before, len,
                 static_cast<const float*>(d_reset_h.data<float>()), dh_next, dzx.data<float>(), dzr.data<float>(),
                 s);
        }
        gemm(true, false, recurrent_cols, H, N, 1.0f, dzr.data<float>(), GH, hp_step, H, 1.0f, dR, H);
        gemm(false, false, N, H, recurrent_cols, 1.0f, dzr.data<float>(), GH, R, H, 1.0f, dh_next, H);
        if (dRb != nullptr) add_channel_sums(context_, dzr.data<float>(), dRb, {N, GH, 1});
        if (cont != nullptr)
          launch(ctx, N * H, scale_states, cont, len, dh_next, dc_next, s, N, H);
        std::swap(dh, dh_next);
        std::swap(dc, dc_next);
      }
      launch(ctx, N * H, add_into, static_cast<const float*>(dh), dh0.data<float>() + dir * N * H, N * H);
      launch(ctx, N * H, add_into, static_cast<const float*>(dc), dc0.data<float>() + dir * N * H, N * H);
      gemm(true, false, GH, I, T * N, 1.0f, dzx.data<float>(), GH, x0, I, 1.0f, dW, I);
      gemm(false, false, T * N, I, GH, 1.0f, dzx.data<float>(), GH, W, I, 1.0f, dx.data<float>(), I);
      if (dWb != nullptr) add_channel_sums(context_, dzx.data<float>(), dWb, {T * N, GH, 1});
    }
    if (input_grads[0].defined()) {
      if (batch_first_) {
        launch(ctx, T * N * I, swap_leading, static_cast<const float*>(dx.data<float>()),
               input_grads[0].data<float>(), T, N, I, true);
      } else {
        launch(ctx, T * N * I, add_into, static_cast<const float*>(dx.data<float>()), input_grads[0].data<float>(),
               T * N * I);
      }
    }
    for (int s = 0; layer_.initial_h_input() >= 0 && s < layer_.states(); ++s) {
      Tensor& grad = input_grads[static_cast<std::size_t>(layer_.initial_h_input() + s)];
      if (!grad.defined()) continue;
      const float* from = (s == 0 ? dh0 : dc0).data<float>();
      if (batch_first_) {
        launch(ctx, D * N * H, swap_leading, from, grad.data<float>(), D, N, H, true);
      } else {
        launch(ctx, D * N * H, add_into, from, grad.data<float>(), D * N * H);
      }
    }
  }

  bool bind_state(std::vector<std::vector<float>>* state) override {
    carry_ = state;
    return true;
  }
  const char* name() const override { return "cublas-recurrent"; }

 private:
  static std::size_t bytes(Index n) { return static_cast<std::size_t>(n) * sizeof(float); }
  void zero(Tensor& t, Index n) {
    if (n > 0) ESPRESSO_CUDA_CHECK(cudaMemsetAsync(t.data<float>(), 0, bytes(n), context_.stream()));
  }

  // The cell's settings for one direction: its time order and activations.
  Config direction_config(int dir) const {
    Config c = config_;
    c.reverse = dir == 1 || reverse_only_;
    c.acts = acts_[static_cast<std::size_t>(dir)];
    return c;
  }

  Weights direction_weights(int dir) const {
    const Index GH = config_.GH, H = d_.hidden;
    Weights w{nullptr, nullptr, nullptr};
    if (has_bias_) {
      w.Wb = weights_[2] + dir * 2 * GH;
      w.Rb = w.Wb + GH;
    }
    if (peepholes_) w.P = weights_[has_bias_ ? 3 : 2] + dir * 3 * H;
    return w;
  }

  void copy(const float* from, float* to, Index n) {
    if (n > 0)
      ESPRESSO_CUDA_CHECK(cudaMemcpyAsync(to, from, bytes(n), cudaMemcpyDeviceToDevice, context_.stream()));
  }

  // A layout-0 tensor [a0, N, H] to the layer's layout ([N, a0, H] for layout 1), and back.
  void to_layout(const float* from, float* to, Index a0, Index N, Index H, bool accumulate) {
    if (batch_first_) {
      launch(context_, a0 * N * H, swap_leading, from, to, a0, N, H, accumulate);
    } else {
      copy(from, to, a0 * N * H);
    }
  }
  void from_layout(const float* from, float* to, Index a0, Index N, Index H) {
    if (batch_first_) {
      launch(context_, a0 * N * H, swap_leading, from, to, N, a0, H, false);
    } else {
      copy(from, to, a0 * N * H);
    }
  }

  // Row-major c = alpha · op(a) · op(b) + beta · c, the engine's RecurrentGemm contract. cuBLAS is
  // column-major, where a row-major matrix is its transpose: so it computes cᵀ = op(b)ᵀ · op(a)ᵀ.
  void gemm(bool transpose_a, bool transpose_b, Index m, Index n, Index k, float alpha, const float* a,
            Index lda, const float* b, Index ldb, float beta, float* c, Index ldc) {
    if (m == 0 || n == 0) return;
    ESPRESSO_CUDA_CHECK(cublasSgemm(cublas_, transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
                                    static_cast<int>(m), static_cast<int>(k), &alpha, b, static_cast<int>(ldb), a,
                                    static_cast<int>(lda), &beta, c, static_cast<int>(ldc)));
  }

  const RecurrentLayer& layer_;
  RecurrentLayer::Dims d_;
  cublasHandle_t cublas_;
  std::vector<const float*> weights_;  // W, R, then B and P where the layer has them
  Config config_{};
  std::vector<Acts> acts_;  // per direction
  int per_direction_ = 1;
  bool peepholes_ = false, has_bias_ = false, reverse_only_ = false, batch_first_ = false;
  Tensor x0_, xw_, y0_, yh0_, yc0_, h_, c_, hr_, reset_h_, hr_h_, len_;
  std::vector<Tensor> pre_, h_before_, c_before_, c_after_, linear_;  // per direction: the trace
  bool forwarded_ = false;
  bool backward_ready_ = false;
  Tensor dy_, dy_h_, dy_c_, dx_, dh0_, dc0_, dzx_, dzr_, state_[4], d_reset_h_;  // backward's scratch
  std::vector<Tensor> unwanted_;  // gradients of weights the caller does not ask for
  std::vector<std::vector<float>>* carry_ = nullptr;
};

std::unique_ptr<Kernel> recurrent_kernel(const Layer& layer, const std::vector<Shape>& inputs,
                                       StreamContext& context) {
  const auto& rnn = static_cast<const RecurrentLayer&>(layer);
  const RecurrentLayer::Dims d = rnn.dims(inputs);
  const Index rows = d.steps * d.batch;
  if (!fits_int(rows * d.gates * d.hidden) || !fits_int(rows * d.input) || !fits_int(d.gates * d.hidden)) {
    return nullptr;  // beyond cuBLAS's int dimensions: the CPU engine runs it
  }
  return std::make_unique<RecurrentKernel>(rnn, d, context);
}

}  // namespace

std::unique_ptr<Kernel> make_lstm(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  return recurrent_kernel(layer, inputs, context);
}

std::unique_ptr<Kernel> make_gru(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  return recurrent_kernel(layer, inputs, context);
}

std::unique_ptr<Kernel> make_rnn(const Layer& layer, const std::vector<Shape>& inputs, StreamContext& context) {
  return recurrent_kernel(layer, inputs, context);
}

}  // namespace espresso::cuda
