// LSTM, GRU and RNN in the layer harness. The naive forward below follows ONNX's equations one batch
// entry and one time step at a time in double precision; it shares nothing with the layers' engine
// (which batches the products and works step by step over the whole batch).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "harness/layer_harness.h"
#include "layers/registry.h"

namespace espresso::testing {
namespace {

struct Act {
  std::string name;
  double alpha = 0, beta = 0;
  double operator()(double x) const {
    if (name == "Sigmoid") return 1 / (1 + std::exp(-x));
    if (name == "Tanh") return std::tanh(x);
    if (name == "Relu") return std::max(x, 0.0);
    if (name == "Affine") return alpha * x + beta;
    if (name == "LeakyRelu") return x >= 0 ? x : alpha * x;
    if (name == "ThresholdedRelu") return x > alpha ? x : 0;
    if (name == "ScaledTanh") return alpha * std::tanh(beta * x);
    if (name == "HardSigmoid") return std::clamp(alpha * x + beta, 0.0, 1.0);
    if (name == "Elu") return x >= 0 ? x : alpha * (std::exp(x) - 1);
    if (name == "Softsign") return x / (1 + std::abs(x));
    if (name == "Softplus") return std::log1p(std::exp(x));
    ADD_FAILURE() << "unknown " << name;
    return 0;
  }
};

int gates_of(const std::string& type) { return type == "LSTM" ? 4 : type == "GRU" ? 3 : 1; }
int functions_of(const std::string& type) { return type == "LSTM" ? 3 : type == "GRU" ? 2 : 1; }

// Attributes, optional inputs and outputs at random.
LayerCase make_case(Rng& rng, const std::string& type) {
  LayerCase c;
  c.spec.type = type;
  const std::int64_t T = rng.integer(1, 5), N = rng.integer(1, 3), I = rng.integer(1, 5),
                     H = rng.integer(1, 4);
  c.spec.attrs.set("hidden_size", H);
  const int direction = rng.integer(0, 2);
  const std::int64_t D = direction == 2 ? 2 : 1;
  if (direction != 0 || rng.coin()) {
    c.spec.attrs.set("direction", std::string(direction == 0   ? "forward"
                                              : direction == 1 ? "reverse"
                                                               : "bidirectional"));
  }
  const bool batch_first = rng.coin();
  if (batch_first || rng.coin()) c.spec.attrs.set("layout", std::int64_t{batch_first ? 1 : 0});
  if (rng.integer(0, 3) == 0) c.spec.attrs.set("bias", std::int64_t{0});
  if (rng.integer(0, 3) == 0) c.spec.attrs.set("clip", rng.uniform(0.3, 2.0));
  if (type == "LSTM") {
    if (rng.coin()) c.spec.attrs.set("peepholes", std::int64_t{1});
    if (rng.integer(0, 3) == 0) c.spec.attrs.set("input_forget", std::int64_t{1});
  }
  if (type == "GRU" && rng.coin()) c.spec.attrs.set("linear_before_reset", std::int64_t{1});
  if (rng.integer(0, 2) == 0) {
    // Other functions, with alpha and beta where they take them.
    static const char* names[] = {"Sigmoid",    "Tanh",        "Relu", "Affine",   "LeakyRelu",
                                  "ScaledTanh", "HardSigmoid", "Elu",  "Softsign", "Softplus"};
    std::string list;
    std::vector<double> alphas, betas;
    for (int k = 0; k < functions_of(type) * D; ++k) {
      // Gates (the first function of LSTM and GRU) stay bounded, or states can grow without limit.
      static const char* bounded[] = {"Sigmoid", "HardSigmoid", "Tanh", "ScaledTanh", "Softsign"};
      const bool gate = type != "RNN" && k % functions_of(type) == 0;
      const std::string name = gate ? bounded[rng.integer(0, 4)] : names[rng.integer(0, 9)];
      list += (k ? "," : "") + name;
      if (name == "Affine" || name == "LeakyRelu" || name == "ScaledTanh" || name == "HardSigmoid" ||
          name == "Elu") {
        alphas.push_back(rng.uniform(0.1, 1.0));
      }
      if (name == "Affine" || name == "ScaledTanh" || name == "HardSigmoid")
        betas.push_back(rng.uniform(0.1, 0.6));
    }
    c.spec.attrs.set("activations", list);
    if (!alphas.empty()) c.spec.attrs.set("activation_alpha", alphas);
    if (!betas.empty()) c.spec.attrs.set("activation_beta", betas);
  }
  c.input_shapes = {batch_first ? Shape{N, T, I} : Shape{T, N, I}};
  c.inputs.push_back(rng.values(static_cast<std::size_t>(T * N * I)));
  if (direction == 0 && !batch_first && rng.coin()) {
    // Caffe's cont: 0 (a new sequence) or 1, and sometimes a fraction, which scales the state.
    c.spec.attrs.set("continuation", std::int64_t{1});
    c.input_shapes.push_back(Shape{T, N});
    Values cont;
    for (std::int64_t i = 0; i < T * N; ++i)
      cont.push_back(rng.integer(0, 3) == 0 ? 0.0 : rng.coin() ? 1.0 : 0.5);
    c.inputs.push_back(cont);
    c.non_differentiable_inputs.push_back(1);
  }
  if (rng.coin()) {
    c.spec.attrs.set("sequence_lens", std::int64_t{1});
    c.input_shapes.push_back(Shape{N});
    Values lengths;
    for (std::int64_t b = 0; b < N; ++b)
      lengths.push_back(rng.integer(0, 5) == 0 ? 0 : rng.integer(1, static_cast<int>(T)));
    c.inputs.push_back(lengths);
    c.non_differentiable_inputs.push_back(c.inputs.size() - 1);
  }
  const int states = type == "LSTM" ? 2 : 1;
  if (rng.coin()) {
    c.spec.attrs.set("initial_state", std::int64_t{1});
    for (int s = 0; s < states; ++s) {
      c.input_shapes.push_back(batch_first ? Shape{N, D, H} : Shape{D, N, H});
      c.inputs.push_back(rng.values(static_cast<std::size_t>(D * N * H)));
    }
  }
  const int outputs = rng.integer(1, 1 + states);
  for (int k = 0; k < outputs; ++k) c.spec.outputs.push_back("out" + std::to_string(k));
  return c;
}

std::vector<Act> activations_of(const LayerCase& c, int directions) {
  const std::string& type = c.spec.type;
  std::string list = c.spec.attrs.get_string("activations", type == "LSTM"  ? "Sigmoid,Tanh,Tanh"
                                                            : type == "GRU" ? "Sigmoid,Tanh"
                                                                            : "Tanh");
  std::vector<Act> acts;
  std::string word;
  for (char ch : list + ",") {
    if (ch == ',') {
      acts.push_back({word});
      word.clear();
    } else {
      word += ch;
    }
  }
  if (static_cast<int>(acts.size()) == functions_of(type) && directions == 2) {
    const std::vector<Act> once = acts;
    acts.insert(acts.end(), once.begin(), once.end());
  }
  std::vector<double> alphas = c.spec.attrs.get_floats("activation_alpha", {});
  std::vector<double> betas = c.spec.attrs.get_floats("activation_beta", {});
  std::size_t a = 0, b = 0;
  for (Act& act : acts) {
    const std::string& n = act.name;
    const bool takes_alpha =
        n == "Affine" || n == "LeakyRelu" || n == "ScaledTanh" || n == "HardSigmoid" || n == "Elu";
    const bool takes_beta = n == "Affine" || n == "ScaledTanh" || n == "HardSigmoid";
    act.alpha = n == "LeakyRelu" ? 0.01 : n == "HardSigmoid" ? 0.2 : 1.0;
    act.beta = n == "HardSigmoid" ? 0.5 : n == "Affine" ? 0.0 : 1.0;
    if (takes_alpha && a < alphas.size()) act.alpha = static_cast<float>(alphas[a++]);
    if (takes_beta && b < betas.size()) act.beta = static_cast<float>(betas[b++]);
  }
  return acts;
}

std::vector<Values> naive(const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>& w) {
  const std::string& type = c.spec.type;
  const bool batch_first = c.spec.attrs.get_int("layout", 0) == 1;
  const Shape& xs = c.input_shapes[0];
  const std::int64_t T = batch_first ? xs[1] : xs[0], N = batch_first ? xs[0] : xs[1], I = xs[2];
  const std::int64_t H = c.spec.attrs.get_int("hidden_size", 0);
  const std::string direction = c.spec.attrs.get_string("direction", "forward");
  const std::int64_t D = direction == "bidirectional" ? 2 : 1;
  const std::int64_t G = gates_of(type);
  const bool bias = c.spec.attrs.get_int("bias", 1) != 0;
  const bool peep = c.spec.attrs.get_int("peepholes", 0) != 0;
  const bool input_forget = c.spec.attrs.get_int("input_forget", 0) != 0;
  const bool lbr = c.spec.attrs.get_int("linear_before_reset", 0) != 0;
  const bool has_clip = c.spec.attrs.has("clip");
  const double clip = c.spec.attrs.get_float("clip", 0);
  const bool has_lengths = c.spec.attrs.get_int("sequence_lens", 0) != 0;
  const bool has_initial = c.spec.attrs.get_int("initial_state", 0) != 0;
  const bool has_cont = c.spec.attrs.get_int("continuation", 0) != 0;
  const std::size_t lengths_at = has_cont ? 2 : 1;
  const std::vector<Act> acts = activations_of(c, static_cast<int>(D));
  const int F = functions_of(type);
  auto cl = [&](double z) { return has_clip ? std::clamp(z, -clip, clip) : z; };
  auto X = [&](std::int64_t t, std::int64_t b, std::int64_t i) {
    return in[0][static_cast<std::size_t>(batch_first ? (b * T + t) * I + i : (t * N + b) * I + i)];
  };
  const std::size_t init_at = 1 + (has_cont ? 1 : 0) + (has_lengths ? 1 : 0);
  auto state_at = [&](std::int64_t d, std::int64_t b, std::int64_t j) {
    return static_cast<std::size_t>(batch_first ? (b * D + d) * H + j : (d * N + b) * H + j);
  };
  const std::size_t outputs = c.spec.outputs.size();
  Values y(static_cast<std::size_t>(T * D * N * H), 0.0), yh(static_cast<std::size_t>(D * N * H)),
      yc(static_cast<std::size_t>(D * N * H));
  for (std::int64_t d = 0; d < D; ++d) {
    const bool reverse = d == 1 || direction == "reverse";
    const Act* f = &acts[static_cast<std::size_t>(d * F)];
    auto Wm = [&](std::int64_t row, std::int64_t i) {
      return w[0][static_cast<std::size_t>((d * G * H + row) * I + i)];
    };
    auto Rm = [&](std::int64_t row, std::int64_t j) {
      return w[1][static_cast<std::size_t>((d * G * H + row) * H + j)];
    };
    auto Wb = [&](std::int64_t row) {
      return bias ? w[2][static_cast<std::size_t>(d * 2 * G * H + row)] : 0.0;
    };
    auto Rb = [&](std::int64_t row) {
      return bias ? w[2][static_cast<std::size_t>(d * 2 * G * H + G * H + row)] : 0.0;
    };
    auto Pm = [&](std::int64_t row) {
      return peep ? w[bias ? 3 : 2][static_cast<std::size_t>(d * 3 * H + row)] : 0.0;
    };
    for (std::int64_t b = 0; b < N; ++b) {
      std::vector<double> h(static_cast<std::size_t>(H), 0.0), cs(static_cast<std::size_t>(H), 0.0);
      if (has_initial) {
        for (std::int64_t j = 0; j < H; ++j) {
          h[static_cast<std::size_t>(j)] = in[init_at][state_at(d, b, j)];
          if (type == "LSTM") cs[static_cast<std::size_t>(j)] = in[init_at + 1][state_at(d, b, j)];
        }
      }
      const std::int64_t L =
          has_lengths ? static_cast<std::int64_t>(in[lengths_at][static_cast<std::size_t>(b)]) : T;
      for (std::int64_t k = 0; k < L; ++k) {
        const std::int64_t t = reverse ? L - 1 - k : k;
        if (has_cont) {
          const double m = in[1][static_cast<std::size_t>(t * N + b)];
          for (double& v : h) v *= m;
          for (double& v : cs) v *= m;
        }
        // x·Wᵀ + Wb and h·Rᵀ + Rb for every gate row.
        std::vector<double> xw(static_cast<std::size_t>(G * H)), hr(static_cast<std::size_t>(G * H));
        for (std::int64_t row = 0; row < G * H; ++row) {
          double sx = Wb(row), sh = Rb(row);
          for (std::int64_t i = 0; i < I; ++i) sx += X(t, b, i) * Wm(row, i);
          for (std::int64_t j = 0; j < H; ++j) sh += h[static_cast<std::size_t>(j)] * Rm(row, j);
          xw[static_cast<std::size_t>(row)] = sx;
          hr[static_cast<std::size_t>(row)] = sh;
        }
        std::vector<double> next(static_cast<std::size_t>(H)), next_c(static_cast<std::size_t>(H));
        for (std::int64_t j = 0; j < H; ++j) {
          const auto u = static_cast<std::size_t>(j);
          auto gate = [&](int g) {
            return xw[static_cast<std::size_t>(g * H + j)] + hr[static_cast<std::size_t>(g * H + j)];
          };
          if (type == "LSTM") {
            const double i = f[0](cl(gate(0) + Pm(j) * cs[u]));
            const double fg = input_forget ? 1 - i : f[0](cl(gate(2) + Pm(2 * H + j) * cs[u]));
            const double cand = f[1](cl(gate(3)));
            next_c[u] = fg * cs[u] + i * cand;
            const double o = f[0](cl(gate(1) + Pm(H + j) * next_c[u]));
            next[u] = o * f[2](next_c[u]);
          } else if (type == "GRU") {
            const double z = f[0](cl(gate(0)));
            const double r = f[0](cl(gate(1)));
            double pre = 0;
            if (lbr) {
              pre = xw[static_cast<std::size_t>(2 * H + j)] + r * hr[static_cast<std::size_t>(2 * H + j)];
            } else {
              double sum = Rb(2 * H + j);
              for (std::int64_t m = 0; m < H; ++m) {
                const auto um = static_cast<std::size_t>(m);
                const double rm =
                    f[0](cl(xw[static_cast<std::size_t>(H) + um] + hr[static_cast<std::size_t>(H) + um]));
                sum += rm * h[static_cast<std::size_t>(m)] * Rm(2 * H + j, m);
              }
              pre = xw[static_cast<std::size_t>(2 * H + j)] + sum;
            }
            const double cand = f[1](cl(pre));
            next[u] = (1 - z) * cand + z * h[u];
          } else {
            next[u] = f[0](cl(gate(0)));
          }
        }
        h = next;
        if (type == "LSTM") cs = next_c;
        for (std::int64_t j = 0; j < H; ++j)
          y[static_cast<std::size_t>(((t * D + d) * N + b) * H + j)] = h[static_cast<std::size_t>(j)];
      }
      for (std::int64_t j = 0; j < H; ++j) {
        yh[static_cast<std::size_t>((d * N + b) * H + j)] = h[static_cast<std::size_t>(j)];
        yc[static_cast<std::size_t>((d * N + b) * H + j)] = cs[static_cast<std::size_t>(j)];
      }
    }
  }
  std::vector<Values> result;
  if (batch_first) {
    Values y1(y.size()), yh1(yh.size()), yc1(yc.size());
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t d = 0; d < D; ++d)
        for (std::int64_t b = 0; b < N; ++b)
          for (std::int64_t j = 0; j < H; ++j)
            y1[static_cast<std::size_t>(((b * T + t) * D + d) * H + j)] =
                y[static_cast<std::size_t>(((t * D + d) * N + b) * H + j)];
    for (std::int64_t d = 0; d < D; ++d)
      for (std::int64_t b = 0; b < N; ++b)
        for (std::int64_t j = 0; j < H; ++j) {
          yh1[static_cast<std::size_t>((b * D + d) * H + j)] =
              yh[static_cast<std::size_t>((d * N + b) * H + j)];
          yc1[static_cast<std::size_t>((b * D + d) * H + j)] =
              yc[static_cast<std::size_t>((d * N + b) * H + j)];
        }
    y = y1;
    yh = yh1;
    yc = yc1;
  }
  result.push_back(y);
  if (outputs > 1) result.push_back(yh);
  if (outputs > 2) result.push_back(yc);
  return result;
}

LayerTest recurrent_test(const std::string& type) {
  return {.make_case = [type](Rng& rng) { return make_case(rng, type); },
          .naive = naive,
          .cases = 60,
          .tolerance = 2e-5,
          .gradient_cases = 40};
}

}  // namespace

TEST(Layers, LSTM) { run_layer_test(recurrent_test("LSTM")); }
TEST(Layers, GRU) { run_layer_test(recurrent_test("GRU")); }
TEST(Layers, RNN) { run_layer_test(recurrent_test("RNN")); }

TEST(Layers, RecurrentRejectsBadInputs) {
  LayerSpec spec;
  spec.name = "lstm_bad";
  spec.type = "LSTM";
  spec.inputs = {"x", "lens"};
  spec.outputs = {"y"};
  spec.attrs.set("hidden_size", std::int64_t{3});
  spec.attrs.set("sequence_lens", std::int64_t{1});
  auto layer = create_layer(spec);
  EXPECT_THROW(layer->output_shapes({Shape{4, 2, 5}, Shape{3}}), ShapeError);
  for (const Shape& s : layer->weight_shapes({Shape{4, 2, 5}, Shape{2}}))
    spec.weights.push_back(Tensor::zeros(s));
  layer = create_layer(spec);
  std::vector<Tensor> in{Tensor::zeros(Shape{4, 2, 5}), Tensor::from(Shape{2}, {2.0f, 7.0f})};
  std::vector<Tensor> out{Tensor::zeros(Shape{4, 1, 2, 3})};
  try {
    layer->forward(in, out);
    ADD_FAILURE() << "no error for a sequence length past the input";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("lstm_bad"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sequence_lens[1]"), std::string::npos) << e.what();
  }
  spec.attrs.set("activations", std::string("Sigmoid,Tanh"));
  EXPECT_THROW(create_layer(spec), ModelError);
  spec.attrs.set("activations", std::string("Sigmoid,Tanh,Cosine"));
  EXPECT_THROW(create_layer(spec), ModelError);
}

}  // namespace espresso::testing
