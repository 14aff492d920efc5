#include "layers/recurrent.h"

#include <cctype>
#include <cmath>
#include <cstring>

#include "core/parallel.h"

namespace espresso {

void naive_gemm(bool transpose_a, bool transpose_b, std::int64_t m, std::int64_t n, std::int64_t k,
                float alpha, const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta,
                float* c, std::int64_t ldc) {
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      float sum = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        sum +=
            (transpose_a ? a[p * lda + i] : a[i * lda + p]) * (transpose_b ? b[j * ldb + p] : b[p * ldb + j]);
      }
      float& out = c[i * ldc + j];
      out = alpha * sum + (beta == 0 ? 0.0f : beta * out);
    }
  }
}

float GateActivation::apply(float x) const {
  switch (kind) {
    case Kind::relu:
      return x > 0 ? x : 0.0f;
    case Kind::tanh:
      return std::tanh(x);
    case Kind::sigmoid:
      return 1.0f / (1.0f + std::exp(-x));
    case Kind::affine:
      return alpha * x + beta;
    case Kind::leaky_relu:
      return x >= 0 ? x : alpha * x;
    case Kind::thresholded_relu:
      return x > alpha ? x : 0.0f;
    case Kind::scaled_tanh:
      return alpha * std::tanh(beta * x);
    case Kind::hard_sigmoid:
      return std::max(0.0f, std::min(1.0f, alpha * x + beta));
    case Kind::elu:
      return x >= 0 ? x : alpha * (std::exp(x) - 1.0f);
    case Kind::softsign:
      return x / (1.0f + std::abs(x));
    case Kind::softplus:
      return std::log1p(std::exp(-std::abs(x))) + std::max(x, 0.0f);
  }
  return x;
}

float GateActivation::slope(float x) const {
  switch (kind) {
    case Kind::relu:
      return x > 0 ? 1.0f : 0.0f;
    case Kind::tanh: {
      const float t = std::tanh(x);
      return 1.0f - t * t;
    }
    case Kind::sigmoid: {
      const float s = 1.0f / (1.0f + std::exp(-x));
      return s * (1.0f - s);
    }
    case Kind::affine:
      return alpha;
    case Kind::leaky_relu:
      return x >= 0 ? 1.0f : alpha;
    case Kind::thresholded_relu:
      return x > alpha ? 1.0f : 0.0f;
    case Kind::scaled_tanh: {
      const float t = std::tanh(beta * x);
      return alpha * beta * (1.0f - t * t);
    }
    case Kind::hard_sigmoid: {
      const float v = alpha * x + beta;
      return v > 0 && v < 1 ? alpha : 0.0f;
    }
    case Kind::elu:
      return x >= 0 ? 1.0f : alpha * std::exp(x);
    case Kind::softsign: {
      const float d = 1.0f + std::abs(x);
      return 1.0f / (d * d);
    }
    case Kind::softplus:
      return 1.0f / (1.0f + std::exp(-x));
  }
  return 1.0f;
}

namespace {

struct ActivationName {
  std::string_view name;
  GateActivation::Kind kind;
  int parameters;  // how many of alpha, beta it takes
  float alpha, beta;
};

// ONNX's functions, with the defaults of the operators of the same name.
constexpr ActivationName kActivations[] = {
    {"relu", GateActivation::Kind::relu, 0, 0, 0},
    {"tanh", GateActivation::Kind::tanh, 0, 0, 0},
    {"sigmoid", GateActivation::Kind::sigmoid, 0, 0, 0},
    {"affine", GateActivation::Kind::affine, 2, 1.0f, 0.0f},
    {"leakyrelu", GateActivation::Kind::leaky_relu, 1, 0.01f, 0},
    {"thresholdedrelu", GateActivation::Kind::thresholded_relu, 1, 1.0f, 0},
    {"scaledtanh", GateActivation::Kind::scaled_tanh, 2, 1.0f, 1.0f},
    {"hardsigmoid", GateActivation::Kind::hard_sigmoid, 2, 0.2f, 0.5f},
    {"elu", GateActivation::Kind::elu, 1, 1.0f, 0},
    {"softsign", GateActivation::Kind::softsign, 0, 0, 0},
    {"softplus", GateActivation::Kind::softplus, 0, 0, 0},
};

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> words;
  std::string word;
  for (char ch : text + ",") {
    if (ch == ',') {
      if (!word.empty()) words.push_back(word);
      word.clear();
    } else if (!std::isspace(static_cast<unsigned char>(ch))) {
      word += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
  }
  return words;
}

// dst[a1][a0][inner] = src[a0][a1][inner]
void swap_leading(const float* src, float* dst, std::int64_t a0, std::int64_t a1, std::int64_t inner) {
  for (std::int64_t i = 0; i < a0; ++i) {
    for (std::int64_t j = 0; j < a1; ++j) {
      std::memcpy(dst + (j * a0 + i) * inner, src + (i * a1 + j) * inner,
                  static_cast<std::size_t>(inner) * 4);
    }
  }
}

}  // namespace

std::vector<AttrSpec> RecurrentLayer::common_attributes(std::string_view default_activations) {
  return {
      {.name = "hidden_size", .type = AttrType::integer, .required = true, .min = 1},
      {.name = "direction",
       .type = AttrType::text,
       .fallback = std::string("forward"),
       .choices = {"forward", "reverse", "bidirectional"}},
      {.name = "activations",
       .type = AttrType::text,
       .fallback = std::string(default_activations),
       .default_text = "comma-separated, per direction"},
      {.name = "activation_alpha", .type = AttrType::numbers, .default_text = "each function's own"},
      {.name = "activation_beta", .type = AttrType::numbers, .default_text = "each function's own"},
      {.name = "clip", .type = AttrType::number, .min = 0, .default_text = "none"},
      {.name = "layout", .type = AttrType::integer, .fallback = std::int64_t{0}, .min = 0, .max = 1},
      flag("bias", true),
      flag("sequence_lens", false),
      flag("initial_state", false),
      flag("continuation", false),
  };
}

RecurrentLayer::RecurrentLayer(const LayerSpec& spec, Cell cell)
    : Layer(spec),
      cell_(cell),
      hidden_(spec.attrs.require_int("hidden_size")),
      directions_(spec.attrs.require_string("direction") == "bidirectional" ? 2 : 1),
      reverse_only_(spec.attrs.require_string("direction") == "reverse"),
      layout_batch_first_(spec.attrs.require_int("layout") == 1),
      has_bias_(spec.attrs.require_int("bias") != 0),
      has_lengths_(spec.attrs.require_int("sequence_lens") != 0),
      has_initial_(spec.attrs.require_int("initial_state") != 0),
      has_cont_(spec.attrs.require_int("continuation") != 0),
      clip_(static_cast<float>(spec.attrs.get_float("clip", 0.0))) {
  if (cell == Cell::lstm) {
    input_forget_ = spec.attrs.require_int("input_forget") != 0;
    peepholes_ = spec.attrs.require_int("peepholes") != 0;
  }
  if (cell == Cell::gru) linear_before_reset_ = spec.attrs.require_int("linear_before_reset") != 0;
  if (spec.attrs.has("clip") && clip_ <= 0) fail_model("clip must be positive");
  if (has_cont_ && (directions_ != 1 || reverse_only_ || layout_batch_first_)) {
    fail_model("continuation (Caffe's cont input) needs direction forward and layout 0");
  }

  std::vector<std::string> names = split_list(spec.attrs.require_string("activations"));
  const auto per = static_cast<std::size_t>(activations_per_direction());
  if (names.size() == per && directions_ == 2) {
    const std::vector<std::string> once = names;
    names.insert(names.end(), once.begin(), once.end());
  }
  if (names.size() != per * static_cast<std::size_t>(directions_)) {
    fail_model("activations lists " + std::to_string(names.size()) + " functions, expected " +
               std::to_string(per * static_cast<std::size_t>(directions_)) + " (" + std::to_string(per) +
               " per direction)");
  }
  const std::vector<double> alphas = spec.attrs.get_floats("activation_alpha", {});
  const std::vector<double> betas = spec.attrs.get_floats("activation_beta", {});
  std::size_t next_alpha = 0, next_beta = 0;
  for (const std::string& name : names) {
    const ActivationName* found = nullptr;
    for (const ActivationName& a : kActivations) {
      if (a.name == name) found = &a;
    }
    if (!found) fail_model("unknown activation function '" + name + "'");
    GateActivation act{found->kind, found->alpha, found->beta};
    // ONNX: the lists are consumed in the order of the functions, by those that take the value.
    if (found->parameters >= 1 && next_alpha < alphas.size())
      act.alpha = static_cast<float>(alphas[next_alpha++]);
    if (found->parameters >= 2 && next_beta < betas.size()) act.beta = static_cast<float>(betas[next_beta++]);
    activations_.push_back(act);
  }
}

RecurrentLayer::Dims RecurrentLayer::dims(const std::vector<Shape>& inputs) const {
  const std::size_t expected = 1 + (has_cont_ ? 1 : 0) + (has_lengths_ ? 1 : 0) +
                               (has_initial_ ? static_cast<std::size_t>(states()) : 0);
  expect_inputs(inputs, expected, expected);
  const Shape& x = inputs[0];
  if (x.rank() != 3) fail_shape("X must have rank 3, got " + x.str());
  Dims d{layout_batch_first_ ? x[1] : x[0],
         layout_batch_first_ ? x[0] : x[1],
         x[2],
         hidden_,
         directions_,
         gates_per_cell()};
  if (has_cont_ && inputs[1] != Shape{d.steps, d.batch}) {
    fail_shape("cont must have shape " + Shape{d.steps, d.batch}.str() + ", got " + inputs[1].str());
  }
  if (has_lengths_ && inputs[static_cast<std::size_t>(lengths_input())] != Shape{d.batch}) {
    fail_shape("sequence_lens must have shape [" + std::to_string(d.batch) + "], got " +
               inputs[static_cast<std::size_t>(lengths_input())].str());
  }
  const Shape state =
      layout_batch_first_ ? Shape{d.batch, d.directions, d.hidden} : Shape{d.directions, d.batch, d.hidden};
  for (int s = 0; has_initial_ && s < states(); ++s) {
    const Shape& given = inputs[static_cast<std::size_t>(initial_h_input() + s)];
    if (given != state) {
      fail_shape(std::string(s == 0 ? "initial_h" : "initial_c") + " must have shape " + state.str() +
                 ", got " + given.str() + " (hidden_size " + std::to_string(hidden_) + ")");
    }
  }
  return d;
}

std::vector<Shape> RecurrentLayer::output_shapes(const std::vector<Shape>& inputs) const {
  const Dims d = dims(inputs);
  const std::size_t outputs = spec().outputs.size();
  if (outputs < 1 || outputs > 1 + static_cast<std::size_t>(states())) {
    fail_shape("has " + std::to_string(outputs) + " outputs; it makes Y, Y_h" +
               (cell_ == Cell::lstm ? ", Y_c" : "") + " (a leading subset)");
  }
  std::vector<Shape> shapes{layout_batch_first_ ? Shape{d.batch, d.steps, d.directions, d.hidden}
                                                : Shape{d.steps, d.directions, d.batch, d.hidden}};
  for (std::size_t k = 1; k < outputs; ++k) {
    shapes.push_back(layout_batch_first_ ? Shape{d.batch, d.directions, d.hidden}
                                         : Shape{d.directions, d.batch, d.hidden});
  }
  return shapes;
}

std::vector<Shape> RecurrentLayer::weight_shapes(const std::vector<Shape>& inputs) const {
  const Dims d = dims(inputs);
  const std::int64_t gh = d.gates * d.hidden;
  std::vector<Shape> shapes{Shape{d.directions, gh, d.input}, Shape{d.directions, gh, d.hidden}};
  if (has_bias_) shapes.push_back(Shape{d.directions, 2 * gh});
  if (peepholes_) shapes.push_back(Shape{d.directions, 3 * d.hidden});
  return shapes;
}

std::int64_t RecurrentLayer::macs(const std::vector<Shape>& inputs) const {
  const Dims d = dims(inputs);
  return d.directions * d.steps * d.batch * d.gates * d.hidden * (d.input + d.hidden);
}

void RecurrentLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  run_forward(inputs, outputs, naive_gemm, nullptr);
}

void RecurrentLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                              const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                              std::vector<Tensor>& weight_grads) const {
  Trace trace;
  std::vector<Tensor> scratch;
  for (const Tensor& t : outputs) scratch.push_back(Tensor::empty(t.shape()));
  run_forward(inputs, scratch, naive_gemm, &trace);
  run_backward(trace, output_grads, input_grads, weight_grads, naive_gemm);
}

void RecurrentLayer::run_forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs,
                                 RecurrentGemm gemm, Trace* keep,
                                 std::vector<std::vector<float>>* carry) const {
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  const Dims d = dims(shapes);
  Trace local;
  Trace& trace = keep ? *keep : local;
  trace.dims = d;
  const float* x = inputs[0].data<float>();
  trace.x.resize(static_cast<std::size_t>(d.steps * d.batch * d.input));
  if (layout_batch_first_) {
    swap_leading(x, trace.x.data(), d.batch, d.steps, d.input);
  } else {
    std::memcpy(trace.x.data(), x, trace.x.size() * 4);
  }
  trace.lengths.assign(static_cast<std::size_t>(d.batch), d.steps);
  if (has_lengths_) {
    const float* lengths = inputs[static_cast<std::size_t>(lengths_input())].data<float>();
    for (std::int64_t b = 0; b < d.batch; ++b) {
      const float len = lengths[b];
      if (!(len >= 0 && len <= static_cast<float>(d.steps)) || len != std::floor(len)) {
        fail_shape("sequence_lens[" + std::to_string(b) + "] is " + std::to_string(len) +
                   ", outside the input's 0.." + std::to_string(d.steps) + " steps");
      }
      trace.lengths[static_cast<std::size_t>(b)] = static_cast<std::int64_t>(len);
    }
  }
  if (has_cont_) {
    const float* cont = inputs[1].data<float>();
    trace.cont.assign(cont, cont + d.steps * d.batch);
  }
  const auto dirs = static_cast<std::size_t>(d.directions);
  trace.pre.assign(dirs, {});
  trace.h_before.assign(dirs, {});
  trace.c_before.assign(dirs, {});
  trace.c_after.assign(dirs, {});
  trace.linear.assign(dirs, {});

  const std::int64_t state_size = d.directions * d.batch * d.hidden;
  std::vector<float> y(static_cast<std::size_t>(d.steps * state_size), 0.0f);
  std::vector<float> y_h(static_cast<std::size_t>(state_size)), y_c(static_cast<std::size_t>(state_size));
  const bool carried = carry && carry->size() == static_cast<std::size_t>(states()) &&
                       carry->front().size() == static_cast<std::size_t>(state_size);
  for (int dir = 0; dir < d.directions; ++dir) {
    direction_forward(d, dir, trace, inputs, y.data(), y_h.data(), y_c.data(), gemm, keep,
                      carried ? carry : nullptr);
  }
  if (carry) {
    *carry = {y_h};
    if (cell_ == Cell::lstm) carry->push_back(y_c);
  }
  if (layout_batch_first_) {
    swap_leading(y.data(), outputs[0].data<float>(), d.steps * d.directions, d.batch, d.hidden);
  } else {
    std::memcpy(outputs[0].data<float>(), y.data(), y.size() * 4);
  }
  for (std::size_t k = 1; k < outputs.size(); ++k) {
    const float* state = k == 1 ? y_h.data() : y_c.data();
    if (layout_batch_first_) {
      swap_leading(state, outputs[k].data<float>(), d.directions, d.batch, d.hidden);
    } else {
      std::memcpy(outputs[k].data<float>(), state, static_cast<std::size_t>(state_size) * 4);
    }
  }
}

void RecurrentLayer::direction_forward(const Dims& d, int dir, const Trace& trace,
                                       const std::vector<Tensor>& inputs, float* y, float* y_h, float* y_c,
                                       RecurrentGemm gemm, Trace* keep,
                                       const std::vector<std::vector<float>>* start) const {
  const std::int64_t T = d.steps, N = d.batch, I = d.input, H = d.hidden, GH = d.gates * d.hidden;
  const auto sz = [](std::int64_t n) { return static_cast<std::size_t>(n); };
  const float* W = weights()[0].data<float>() + dir * GH * I;
  const float* R = weights()[1].data<float>() + dir * GH * H;
  const float* Wb = has_bias_ ? weights()[2].data<float>() + dir * 2 * GH : nullptr;
  const float* Rb = Wb ? Wb + GH : nullptr;
  const float* P = peepholes_ ? weights()[has_bias_ ? 3 : 2].data<float>() + dir * 3 * H : nullptr;
  const GateActivation* act = activations_.data() + dir * activations_per_direction();
  const bool reverse = dir == 1 || reverse_only_;
  const auto bias = [&](std::int64_t k) { return Wb ? Wb[k] + Rb[k] : 0.0f; };

  // Input projections of every step at once.
  std::vector<float> xw(sz(T * N * GH));
  gemm(false, true, T * N, GH, I, 1.0f, trace.x.data(), I, W, I, 0.0f, xw.data(), GH);

  std::vector<float> h(sz(N * H), 0.0f), c(sz(N * H), 0.0f);
  const bool batch_first = layout_batch_first_;
  auto load_state = [&](int input, std::vector<float>& state) {
    const float* s = inputs[static_cast<std::size_t>(input)].data<float>();
    for (std::int64_t b = 0; b < N; ++b) {
      const float* from = s + (batch_first ? (b * d.directions + dir) * H : (dir * N + b) * H);
      std::memcpy(state.data() + b * H, from, sz(H) * 4);
    }
  };
  if (has_initial_) load_state(initial_h_input(), h);
  if (has_initial_ && cell_ == Cell::lstm) load_state(initial_c_input(), c);
  if (start) {
    std::memcpy(h.data(), (*start)[0].data() + dir * N * H, sz(N * H) * 4);
    if (cell_ == Cell::lstm) std::memcpy(c.data(), (*start)[1].data() + dir * N * H, sz(N * H) * 4);
  }
  if (keep) {
    keep->pre[sz(dir)].assign(sz(T * N * GH), 0.0f);
    keep->h_before[sz(dir)].assign(sz(T * N * H), 0.0f);
    if (cell_ == Cell::lstm) {
      keep->c_before[sz(dir)].assign(sz(T * N * H), 0.0f);
      keep->c_after[sz(dir)].assign(sz(T * N * H), 0.0f);
    }
    if (linear_before_reset_) keep->linear[sz(dir)].assign(sz(T * N * H), 0.0f);
  }

  const bool gated_reset = cell_ == Cell::gru && !linear_before_reset_;
  const std::int64_t recurrent_cols = gated_reset ? 2 * H : GH;
  std::vector<float> hr(sz(N * GH), 0.0f), z(sz(N * GH), 0.0f);
  std::vector<float> reset_h, hr_h;  // r ⊙ H and its product with Rhᵀ (GRU without linear_before_reset)
  if (gated_reset) {
    reset_h.assign(sz(N * H), 0.0f);
    hr_h.assign(sz(N * H), 0.0f);
  }
  const std::vector<std::int64_t>& len = trace.lengths;
  for (std::int64_t s = 0; s < T; ++s) {
    if (has_cont_) {
      // Caffe's cont: 0 starts a new sequence at this step (only the forward direction has one).
      for (std::int64_t b = 0; b < N; ++b) {
        if (s >= len[sz(b)]) continue;
        const float keep_state = trace.cont[sz(s * N + b)];
        for (std::int64_t j = 0; j < H; ++j) {
          h[sz(b * H + j)] *= keep_state;
          c[sz(b * H + j)] *= keep_state;
        }
      }
    }
    gemm(false, true, N, recurrent_cols, H, 1.0f, h.data(), H, R, H, 0.0f, hr.data(), GH);
    if (cell_ == Cell::gru) {
      // Update and reset gates first: the candidate needs r.
      for (std::int64_t b = 0; b < N; ++b) {
        if (s >= len[sz(b)]) {
          if (gated_reset) std::fill_n(reset_h.data() + b * H, H, 0.0f);
          continue;
        }
        const std::int64_t t = reverse ? len[sz(b)] - 1 - s : s;
        const float* xr = xw.data() + (t * N + b) * GH;
        float* zb = z.data() + b * GH;
        for (std::int64_t j = 0; j < 2 * H; ++j) zb[j] = xr[j] + hr[sz(b * GH + j)] + bias(j);
        if (gated_reset) {
          for (std::int64_t j = 0; j < H; ++j) {
            reset_h[sz(b * H + j)] = act[0].apply(clipped(zb[H + j])) * h[sz(b * H + j)];
          }
        }
      }
      if (gated_reset)
        gemm(false, true, N, H, H, 1.0f, reset_h.data(), H, R + 2 * H * H, H, 0.0f, hr_h.data(), H);
    }
    parallel_for(N, [&](std::int64_t first, std::int64_t end) {
      for (std::int64_t b = first; b < end; ++b) {
        if (s >= len[sz(b)]) continue;
        const std::int64_t t = reverse ? len[sz(b)] - 1 - s : s;
        const float* xr = xw.data() + (t * N + b) * GH;
        const float* hrb = hr.data() + b * GH;
        float* zb = z.data() + b * GH;
        float* hb = h.data() + b * H;
        float* cb = c.data() + b * H;
        const std::int64_t row = s * N + b;
        if (keep) {
          std::memcpy(keep->h_before[sz(dir)].data() + row * H, hb, sz(H) * 4);
          if (cell_ == Cell::lstm) std::memcpy(keep->c_before[sz(dir)].data() + row * H, cb, sz(H) * 4);
        }
        for (std::int64_t j = 0; j < H; ++j) {
          float out = 0;
          if (cell_ == Cell::lstm) {
            // Gate order i, o, f, c; peepholes i, o, f.
            float& zi = zb[j];
            float& zo = zb[H + j];
            float& zf = zb[2 * H + j];
            float& zc = zb[3 * H + j];
            zi = xr[j] + hrb[j] + bias(j) + (P ? P[j] * cb[j] : 0.0f);
            zf = xr[2 * H + j] + hrb[2 * H + j] + bias(2 * H + j) + (P ? P[2 * H + j] * cb[j] : 0.0f);
            zc = xr[3 * H + j] + hrb[3 * H + j] + bias(3 * H + j);
            const float i = act[0].apply(clipped(zi));
            const float f = input_forget_ ? 1.0f - i : act[0].apply(clipped(zf));
            const float g = act[1].apply(clipped(zc));
            const float cell = f * cb[j] + i * g;
            zo = xr[H + j] + hrb[H + j] + bias(H + j) + (P ? P[H + j] * cell : 0.0f);
            const float o = act[0].apply(clipped(zo));
            out = o * act[2].apply(cell);
            cb[j] = cell;
            if (keep) keep->c_after[sz(dir)][sz(row * H + j)] = cell;
          } else if (cell_ == Cell::gru) {
            const float u = act[0].apply(clipped(zb[j]));
            const float r = act[0].apply(clipped(zb[H + j]));
            float& zh = zb[2 * H + j];
            if (linear_before_reset_) {
              const float linear = hrb[2 * H + j] + (Rb ? Rb[2 * H + j] : 0.0f);
              if (keep) keep->linear[sz(dir)][sz(row * H + j)] = linear;
              zh = xr[2 * H + j] + (Wb ? Wb[2 * H + j] : 0.0f) + r * linear;
            } else {
              zh = xr[2 * H + j] + hr_h[sz(b * H + j)] + bias(2 * H + j);
            }
            const float candidate = act[1].apply(clipped(zh));
            out = (1.0f - u) * candidate + u * hb[j];
          } else {
            zb[j] = xr[j] + hrb[j] + bias(j);
            out = act[0].apply(clipped(zb[j]));
          }
          hb[j] = out;
          y[sz(((t * d.directions + dir) * N + b) * H + j)] = out;
        }
        if (keep) std::memcpy(keep->pre[sz(dir)].data() + row * GH, zb, sz(GH) * 4);
      }
    });
  }
  std::memcpy(y_h + dir * N * H, h.data(), sz(N * H) * 4);
  std::memcpy(y_c + dir * N * H, c.data(), sz(N * H) * 4);
}

void RecurrentLayer::run_backward(const Trace& trace, const std::vector<Tensor>& output_grads,
                                  std::vector<Tensor>& input_grads, std::vector<Tensor>& weight_grads,
                                  RecurrentGemm gemm) const {
  const Dims d = trace.dims;
  const auto sz = [](std::int64_t n) { return static_cast<std::size_t>(n); };
  const std::int64_t state_size = d.directions * d.batch * d.hidden;

  // Output gradients in layout 0; absent ones are zero.
  std::vector<float> dy(sz(d.steps * state_size), 0.0f), dy_h(sz(state_size), 0.0f),
      dy_c(sz(state_size), 0.0f);
  if (!output_grads.empty() && output_grads[0].defined()) {
    if (layout_batch_first_) {
      swap_leading(output_grads[0].data<float>(), dy.data(), d.batch, d.steps * d.directions, d.hidden);
    } else {
      std::memcpy(dy.data(), output_grads[0].data<float>(), dy.size() * 4);
    }
  }
  for (std::size_t k = 1; k < output_grads.size(); ++k) {
    if (!output_grads[k].defined()) continue;
    float* to = k == 1 ? dy_h.data() : dy_c.data();
    if (layout_batch_first_) {
      swap_leading(output_grads[k].data<float>(), to, d.batch, d.directions, d.hidden);
    } else {
      std::memcpy(to, output_grads[k].data<float>(), sz(state_size) * 4);
    }
  }
  std::vector<float> dx(trace.x.size(), 0.0f), dh0(sz(state_size), 0.0f), dc0(sz(state_size), 0.0f);
  for (int dir = 0; dir < d.directions; ++dir) {
    direction_backward(d, dir, trace, dy.data(), dy_h.data(), dy_c.data(), dx.data(), dh0.data(), dc0.data(),
                       weight_grads, gemm);
  }
  if (input_grads[0].defined()) {
    float* out = input_grads[0].data<float>();
    if (layout_batch_first_) {
      std::vector<float> swapped(dx.size());
      swap_leading(dx.data(), swapped.data(), d.steps, d.batch, d.input);
      for (std::size_t i = 0; i < dx.size(); ++i) out[i] += swapped[i];
    } else {
      for (std::size_t i = 0; i < dx.size(); ++i) out[i] += dx[i];
    }
  }
  for (int s = 0; has_initial_ && s < states(); ++s) {
    Tensor& grad = input_grads[static_cast<std::size_t>(initial_h_input() + s)];
    if (!grad.defined()) continue;
    const std::vector<float>& from = s == 0 ? dh0 : dc0;
    std::vector<float> swapped(from.size());
    if (layout_batch_first_) swap_leading(from.data(), swapped.data(), d.directions, d.batch, d.hidden);
    const std::vector<float>& use = layout_batch_first_ ? swapped : from;
    float* out = grad.data<float>();
    for (std::size_t i = 0; i < use.size(); ++i) out[i] += use[i];
  }
}

void RecurrentLayer::direction_backward(const Dims& d, int dir, const Trace& trace, const float* dy,
                                        const float* dy_h, const float* dy_c, float* dx, float* dh0,
                                        float* dc0, std::vector<Tensor>& weight_grads,
                                        RecurrentGemm gemm) const {
  const std::int64_t T = d.steps, N = d.batch, I = d.input, H = d.hidden, GH = d.gates * d.hidden;
  const auto sz = [](std::int64_t n) { return static_cast<std::size_t>(n); };
  const float* W = weights()[0].data<float>() + dir * GH * I;
  const float* R = weights()[1].data<float>() + dir * GH * H;
  const float* P = peepholes_ ? weights()[has_bias_ ? 3 : 2].data<float>() + dir * 3 * H : nullptr;
  float* dW = weight_grads[0].data<float>() + dir * GH * I;
  float* dR = weight_grads[1].data<float>() + dir * GH * H;
  float* dWb = has_bias_ ? weight_grads[2].data<float>() + dir * 2 * GH : nullptr;
  float* dRb = dWb ? dWb + GH : nullptr;
  float* dP = peepholes_ ? weight_grads[has_bias_ ? 3 : 2].data<float>() + dir * 3 * H : nullptr;
  const GateActivation* act = activations_.data() + dir * activations_per_direction();
  const bool reverse = dir == 1 || reverse_only_;
  const bool gated_reset = cell_ == Cell::gru && !linear_before_reset_;
  const std::int64_t recurrent_cols = gated_reset ? 2 * H : GH;
  const std::vector<float>& pre = trace.pre[sz(dir)];
  const std::vector<float>& h_before = trace.h_before[sz(dir)];
  const std::vector<std::int64_t>& len = trace.lengths;

  std::vector<float> dzx(sz(T * N * GH), 0.0f);  // by time: d loss / d pre-activation, input side
  std::vector<float> dzr(sz(N * GH));            // this step: recurrent side
  std::vector<float> dh(dy_h + dir * N * H, dy_h + (dir + 1) * N * H);
  std::vector<float> dc(dy_c + dir * N * H, dy_c + (dir + 1) * N * H);
  std::vector<float> dh_next(sz(N * H)), dc_next(sz(N * H));
  std::vector<float> reset_h, d_reset_h;
  if (gated_reset) {
    reset_h.assign(sz(N * H), 0.0f);
    d_reset_h.assign(sz(N * H), 0.0f);
  }

  for (std::int64_t s = T - 1; s >= 0; --s) {
    std::fill(dzr.begin(), dzr.end(), 0.0f);
    parallel_for(N, [&](std::int64_t first, std::int64_t end) {
      for (std::int64_t b = first; b < end; ++b) {
        float* dhb = dh.data() + b * H;
        if (s >= len[sz(b)]) {
          // The state passes this step unchanged.
          std::memcpy(dh_next.data() + b * H, dhb, sz(H) * 4);
          std::memcpy(dc_next.data() + b * H, dc.data() + b * H, sz(H) * 4);
          if (gated_reset) std::fill_n(reset_h.data() + b * H, H, 0.0f);
          continue;
        }
        const std::int64_t t = reverse ? len[sz(b)] - 1 - s : s;
        const std::int64_t row = s * N + b;
        const float* dyb = dy + ((t * d.directions + dir) * N + b) * H;
        for (std::int64_t j = 0; j < H; ++j) dhb[j] += dyb[j];
        const float* zb = pre.data() + row * GH;
        const float* hp = h_before.data() + row * H;
        float* gx = dzx.data() + (t * N + b) * GH;
        float* gr = dzr.data() + b * GH;
        for (std::int64_t j = 0; j < H; ++j) {
          if (cell_ == Cell::lstm) {
            const float cp = trace.c_before[sz(dir)][sz(row * H + j)];
            const float cell = trace.c_after[sz(dir)][sz(row * H + j)];
            const float zi = zb[j], zo = zb[H + j], zf = zb[2 * H + j], zc = zb[3 * H + j];
            const float i = act[0].apply(clipped(zi));
            const float f = input_forget_ ? 1.0f - i : act[0].apply(clipped(zf));
            const float g = act[1].apply(clipped(zc));
            const float o = act[0].apply(clipped(zo));
            const float dzo = dhb[j] * act[2].apply(cell) * (passes(zo) ? act[0].slope(clipped(zo)) : 0.0f);
            const float dcell =
                dc[sz(b * H + j)] + dhb[j] * o * act[2].slope(cell) + (P ? dzo * P[H + j] : 0.0f);
            const float df = dcell * cp;
            float di = dcell * g;
            float dzf = 0;
            if (input_forget_) {
              di -= df;
            } else {
              dzf = df * (passes(zf) ? act[0].slope(clipped(zf)) : 0.0f);
            }
            const float dzi = di * (passes(zi) ? act[0].slope(clipped(zi)) : 0.0f);
            const float dzc = dcell * i * (passes(zc) ? act[1].slope(clipped(zc)) : 0.0f);
            dc_next[sz(b * H + j)] = dcell * f + (P ? dzi * P[j] + dzf * P[2 * H + j] : 0.0f);
            dh_next[sz(b * H + j)] = 0.0f;
            gx[j] = gr[j] = dzi;
            gx[H + j] = gr[H + j] = dzo;
            gx[2 * H + j] = gr[2 * H + j] = dzf;
            gx[3 * H + j] = gr[3 * H + j] = dzc;
          } else if (cell_ == Cell::gru) {
            const float zu = zb[j], zr = zb[H + j], zh = zb[2 * H + j];
            const float u = act[0].apply(clipped(zu));
            const float r = act[0].apply(clipped(zr));
            const float candidate = act[1].apply(clipped(zh));
            const float dzu = dhb[j] * (hp[j] - candidate) * (passes(zu) ? act[0].slope(clipped(zu)) : 0.0f);
            const float dzh = dhb[j] * (1.0f - u) * (passes(zh) ? act[1].slope(clipped(zh)) : 0.0f);
            dh_next[sz(b * H + j)] = dhb[j] * u;
            gx[j] = gr[j] = dzu;
            gx[2 * H + j] = dzh;
            if (linear_before_reset_) {
              const float linear = trace.linear[sz(dir)][sz(row * H + j)];
              gr[2 * H + j] = dzh * r;
              const float dzr_ = dzh * linear * (passes(zr) ? act[0].slope(clipped(zr)) : 0.0f);
              gx[H + j] = gr[H + j] = dzr_;
            } else {
              gr[2 * H + j] = dzh;
              reset_h[sz(b * H + j)] = r * hp[j];
            }
          } else {
            const float dz = dhb[j] * (passes(zb[j]) ? act[0].slope(clipped(zb[j])) : 0.0f);
            dh_next[sz(b * H + j)] = 0.0f;
            gx[j] = gr[j] = dz;
          }
        }
      }
    });
    if (dP) {
      // Peephole gradients sum over the batch: after the parallel part.
      for (std::int64_t b = 0; b < N; ++b) {
        if (s >= len[sz(b)]) continue;
        const float* gr = dzr.data() + b * GH;
        const float* cp = trace.c_before[sz(dir)].data() + (s * N + b) * H;
        const float* cell = trace.c_after[sz(dir)].data() + (s * N + b) * H;
        for (std::int64_t j = 0; j < H; ++j) {
          dP[j] += gr[j] * cp[j];
          dP[H + j] += gr[H + j] * cell[j];
          dP[2 * H + j] += gr[2 * H + j] * cp[j];
        }
      }
    }
    const float* hp_step = h_before.data() + s * N * H;
    if (gated_reset) {
      // The candidate read r ⊙ H through Rh: its gradient reaches r and H.
      gemm(false, false, N, H, H, 1.0f, dzr.data() + 2 * H, GH, R + 2 * H * H, H, 0.0f, d_reset_h.data(), H);
      gemm(true, false, H, H, N, 1.0f, dzr.data() + 2 * H, GH, reset_h.data(), H, 1.0f, dR + 2 * H * H, H);
      for (std::int64_t b = 0; b < N; ++b) {
        if (s >= len[sz(b)]) continue;
        const std::int64_t t = reverse ? len[sz(b)] - 1 - s : s;
        const std::int64_t row = s * N + b;
        const float* zb = pre.data() + row * GH;
        const float* hp = h_before.data() + row * H;
        float* gx = dzx.data() + (t * N + b) * GH;
        float* gr = dzr.data() + b * GH;
        for (std::int64_t j = 0; j < H; ++j) {
          const float zr = zb[H + j];
          const float r = act[0].apply(clipped(zr));
          const float grad = d_reset_h[sz(b * H + j)];
          dh_next[sz(b * H + j)] += grad * r;
          gx[H + j] = gr[H + j] = grad * hp[j] * (passes(zr) ? act[0].slope(clipped(zr)) : 0.0f);
        }
      }
    }
    gemm(true, false, recurrent_cols, H, N, 1.0f, dzr.data(), GH, hp_step, H, 1.0f, dR, H);
    gemm(false, false, N, H, recurrent_cols, 1.0f, dzr.data(), GH, R, H, 1.0f, dh_next.data(), H);
    if (dRb) {
      for (std::int64_t b = 0; b < N; ++b) {
        for (std::int64_t k = 0; k < GH; ++k) dRb[k] += dzr[sz(b * GH + k)];
      }
    }
    if (has_cont_) {
      for (std::int64_t b = 0; b < N; ++b) {
        if (s >= len[sz(b)]) continue;
        const float keep_state = trace.cont[sz(s * N + b)];
        for (std::int64_t j = 0; j < H; ++j) {
          dh_next[sz(b * H + j)] *= keep_state;
          dc_next[sz(b * H + j)] *= keep_state;
        }
      }
    }
    std::swap(dh, dh_next);
    std::swap(dc, dc_next);
  }
  for (std::int64_t k = 0; k < N * H; ++k) {
    dh0[dir * N * H + k] += dh[sz(k)];
    dc0[dir * N * H + k] += dc[sz(k)];
  }
  gemm(true, false, GH, I, T * N, 1.0f, dzx.data(), GH, trace.x.data(), I, 1.0f, dW, I);
  gemm(false, false, T * N, I, GH, 1.0f, dzx.data(), GH, W, I, 1.0f, dx, I);
  if (dWb) {
    for (std::int64_t row = 0; row < T * N; ++row) {
      for (std::int64_t k = 0; k < GH; ++k) dWb[k] += dzx[sz(row * GH + k)];
    }
  }
}

}  // namespace espresso
