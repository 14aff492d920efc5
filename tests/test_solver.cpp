// Solver update rules and learning-rate policies against Caffe's documented formulas, written out
// here independently in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "espresso/errors.h"
#include "import/caffe/caffe.pb.h"
#include "test_support.h"
#include "train/solver_config.h"

namespace espresso::train {
namespace {

using Vec = std::vector<double>;

Parameter make_param(const Vec& value, const Vec& grad, float lr_mult = 1.0f, float decay_mult = 1.0f) {
  Parameter p;
  p.layer = "fc";
  std::vector<float> v(value.begin(), value.end());
  std::vector<float> g(grad.begin(), grad.end());
  p.value = Tensor::from(Shape{static_cast<std::int64_t>(v.size())}, v);
  p.grad = Tensor::from(Shape{static_cast<std::int64_t>(g.size())}, g);
  p.spec.lr_mult = lr_mult;
  p.spec.decay_mult = decay_mult;
  return p;
}

void expect_near(const Tensor& actual, const Vec& expected, double tolerance = 1e-6) {
  const std::vector<float> values = actual.to_vector();
  ASSERT_EQ(values.size(), expected.size());
  for (std::size_t i = 0; i < values.size(); ++i)
    EXPECT_NEAR(values[i], expected[i], tolerance * std::max(1.0, std::abs(expected[i]))) << "index " << i;
}

// The gradients of a fixed sequence of steps, so that history terms matter.
const std::vector<Vec> kGrads = {{0.5, -0.25, 2.0}, {-0.1, 0.4, 1.0}, {0.3, 0.3, -0.7}};
const Vec kStart = {1.0, -2.0, 0.5};

// Runs the solver over kGrads on `device` and returns the final weights on the CPU.
Tensor run_solver(const SolverConfig& config, Device device = Device::cpu()) {
  Solver solver(config);
  std::vector<Parameter> params = {make_param(kStart, kGrads[0])};
  params[0].value = params[0].value.to(device);
  for (std::size_t it = 0; it < kGrads.size(); ++it) {
    std::vector<float> g(kGrads[it].begin(), kGrads[it].end());
    params[0].grad = Tensor::from(Shape{3}, g).to(device);
    solver.update(params, static_cast<std::int64_t>(it));
  }
  return params[0].value.to(Device::cpu());
}

SolverConfig base_config(SolverType type) {
  SolverConfig c;
  c.type = type;
  c.base_lr = 0.1;
  c.momentum = 0.9;
  c.weight_decay = 0.01;
  return c;
}

TEST(Solver, SgdWithMomentumAndL2Decay) {
  const SolverConfig c = base_config(SolverType::sgd);
  Vec w = kStart, v(3, 0.0);
  for (const Vec& grad : kGrads) {
    for (int i = 0; i < 3; ++i) {
      v[i] = c.momentum * v[i] + c.base_lr * (grad[i] + c.weight_decay * w[i]);
      w[i] -= v[i];
    }
  }
  expect_near(run_solver(c), w);
}

TEST(Solver, SgdHandComputedFirstStep) {
  // w = 1, g = 0.5, decay 0.01: step = 0.1 * (0.5 + 0.01) = 0.051.
  SolverConfig c = base_config(SolverType::sgd);
  Solver solver(c);
  std::vector<Parameter> params = {make_param({1.0}, {0.5})};
  solver.update(params, 0);
  expect_near(params[0].value, {0.949});
}

TEST(Solver, L1DecayUsesTheSign) {
  SolverConfig c = base_config(SolverType::sgd);
  c.regularization = Regularization::l1;
  c.momentum = 0.0;
  Solver solver(c);
  std::vector<Parameter> params = {make_param({2.0, -3.0, 0.0}, {0.0, 0.0, 0.0})};
  solver.update(params, 0);
  expect_near(params[0].value, {2.0 - 0.1 * 0.01, -3.0 + 0.1 * 0.01, 0.0});
}

TEST(Solver, Nesterov) {
  const SolverConfig c = base_config(SolverType::nesterov);
  Vec w = kStart, v(3, 0.0);
  for (const Vec& grad : kGrads) {
    for (int i = 0; i < 3; ++i) {
      const double previous = v[i];
      v[i] = c.momentum * v[i] + c.base_lr * (grad[i] + c.weight_decay * w[i]);
      w[i] -= (1 + c.momentum) * v[i] - c.momentum * previous;
    }
  }
  expect_near(run_solver(c), w);
}

TEST(Solver, AdaGrad) {
  SolverConfig c = base_config(SolverType::adagrad);
  c.momentum = 0.0;
  c.delta = 1e-7;
  Vec w = kStart, h(3, 0.0);
  for (const Vec& grad : kGrads) {
    for (int i = 0; i < 3; ++i) {
      const double g = grad[i] + c.weight_decay * w[i];
      h[i] += g * g;
      w[i] -= c.base_lr * g / (std::sqrt(h[i]) + c.delta);
    }
  }
  expect_near(run_solver(c), w, 1e-5);
}

TEST(Solver, RmsProp) {
  SolverConfig c = base_config(SolverType::rmsprop);
  c.momentum = 0.0;
  c.rms_decay = 0.98;
  Vec w = kStart, h(3, 0.0);
  for (const Vec& grad : kGrads) {
    for (int i = 0; i < 3; ++i) {
      const double g = grad[i] + c.weight_decay * w[i];
      h[i] = c.rms_decay * h[i] + (1 - c.rms_decay) * g * g;
      w[i] -= c.base_lr * g / (std::sqrt(h[i]) + c.delta);
    }
  }
  expect_near(run_solver(c), w, 1e-5);
}

TEST(Solver, AdaDelta) {
  SolverConfig c = base_config(SolverType::adadelta);
  c.base_lr = 1.0;
  c.momentum = 0.95;
  c.delta = 1e-6;
  Vec w = kStart, gsq(3, 0.0), usq(3, 0.0);
  for (const Vec& grad : kGrads) {
    for (int i = 0; i < 3; ++i) {
      const double g = grad[i] + c.weight_decay * w[i];
      gsq[i] = c.momentum * gsq[i] + (1 - c.momentum) * g * g;
      const double step = g * std::sqrt((usq[i] + c.delta) / (gsq[i] + c.delta));
      usq[i] = c.momentum * usq[i] + (1 - c.momentum) * step * step;
      w[i] -= c.base_lr * step;
    }
  }
  expect_near(run_solver(c), w, 1e-5);
}

TEST(Solver, Adam) {
  SolverConfig c = base_config(SolverType::adam);
  c.base_lr = 0.001;
  c.momentum2 = 0.999;
  Vec w = kStart, m(3, 0.0), v(3, 0.0);
  for (std::size_t t = 1; t <= kGrads.size(); ++t) {
    const double correction = std::sqrt(1 - std::pow(c.momentum2, static_cast<double>(t))) /
                              (1 - std::pow(c.momentum, static_cast<double>(t)));
    for (int i = 0; i < 3; ++i) {
      const double g = kGrads[t - 1][i] + c.weight_decay * w[i];
      m[i] = c.momentum * m[i] + (1 - c.momentum) * g;
      v[i] = c.momentum2 * v[i] + (1 - c.momentum2) * g * g;
      w[i] -= c.base_lr * correction * m[i] / (std::sqrt(v[i]) + c.delta);
    }
  }
  expect_near(run_solver(c), w, 1e-5);
}

TEST(Solver, LrMultDecayMultAndFreezing) {
  SolverConfig c = base_config(SolverType::sgd);
  c.momentum = 0.0;
  Solver solver(c);
  std::vector<Parameter> params = {make_param({1.0}, {0.5}, 2.0f, 0.0f), make_param({1.0}, {0.5}, 0.0f)};
  solver.update(params, 0);
  expect_near(params[0].value, {1.0 - 2 * 0.1 * 0.5});
  expect_near(params[1].value, {1.0});
}

TEST(Solver, IterSizeAveragesAndClippingScalesTheGlobalNorm) {
  SolverConfig c = base_config(SolverType::sgd);
  c.momentum = 0.0;
  c.weight_decay = 0.0;
  c.iter_size = 2;
  c.clip_gradients = 2.5;
  Solver solver(c);
  // Accumulated gradients (3, 4) and (0): global norm 5, clipped to 2.5, then halved by iter_size.
  std::vector<Parameter> params = {make_param({0.0, 0.0}, {3.0, 4.0}), make_param({0.0}, {0.0})};
  solver.update(params, 0);
  expect_near(params[0].value, {-0.1 * 1.5 / 2, -0.1 * 2.0 / 2});
}

// The GPU runs the same per-element rule (backends/update_rule.h) in a kernel: every solver type, with
// decay, L1 and clipping, gives the CPU's weights.
TEST(Solver, GpuUpdatesMatchTheCpu) {
  REQUIRE_GPU();
  for (SolverType type : {SolverType::sgd, SolverType::nesterov, SolverType::adagrad, SolverType::rmsprop,
                          SolverType::adadelta, SolverType::adam}) {
    for (bool l1 : {false, true}) {
      SolverConfig c = base_config(type);
      if (l1) c.regularization = Regularization::l1;
      c.clip_gradients = 1.5;
      SCOPED_TRACE(std::string(solver_type_name(type)) + (l1 ? " L1" : " L2"));
      const std::vector<float> cpu = run_solver(c).to_vector();
      expect_near(run_solver(c, Device::cuda(0)), Vec(cpu.begin(), cpu.end()), 1e-6);
    }
  }
}

TEST(Solver, HistoryMustMatchTheNet) {
  Solver solver(base_config(SolverType::adam));
  std::vector<Parameter> params = {make_param({1.0, 2.0}, {0.0, 0.0})};
  EXPECT_THROW(solver.set_history(params, {Tensor::zeros(Shape{2})}), ModelError);
  EXPECT_THROW(solver.set_history(params, {Tensor::zeros(Shape{3}), Tensor::zeros(Shape{3})}), ModelError);
  solver.set_history(params, {Tensor::zeros(Shape{2}), Tensor::zeros(Shape{2})});
  EXPECT_EQ(solver.history().size(), 2u);
}

TEST(LearningRate, Policies) {
  SolverConfig c;
  c.base_lr = 0.01;
  c.gamma = 0.1;
  c.power = 0.75;
  c.stepsize = 100;
  c.max_iter = 1000;
  c.stepvalue = {200, 500};
  auto at = [&](const char* policy, std::int64_t iter) {
    c.lr_policy = policy;
    return learning_rate(c, iter);
  };
  EXPECT_DOUBLE_EQ(at("fixed", 777), 0.01);
  EXPECT_NEAR(at("step", 99), 0.01, 1e-15);
  EXPECT_NEAR(at("step", 250), 0.0001, 1e-15);
  EXPECT_NEAR(at("exp", 3), 0.01 * 0.001, 1e-15);
  EXPECT_NEAR(at("multistep", 199), 0.01, 1e-15);
  EXPECT_NEAR(at("multistep", 200), 0.001, 1e-15);
  EXPECT_NEAR(at("multistep", 999), 0.0001, 1e-15);
  EXPECT_NEAR(at("poly", 250), 0.01 * std::pow(0.75, 0.75), 1e-15);
  EXPECT_NEAR(at("sigmoid", 100), 0.005, 1e-15);
  EXPECT_NEAR(at("sigmoid", 130), 0.01 / (1 + std::exp(-0.1 * 30)), 1e-15);
  EXPECT_NEAR(at("cosine", 500), 0.005, 1e-15);
  EXPECT_NEAR(at("cosine", 0), 0.01, 1e-15);
  // Caffe's LeNet recipe: inv with gamma 1e-4 and power 0.75; at iteration 100, 0.01 * 1.01^-0.75.
  c.gamma = 1e-4;
  EXPECT_NEAR(at("inv", 100), 0.00992565, 1e-8);
  EXPECT_THROW(at("triangle", 0), ModelError);
  c.stepsize = 0;
  EXPECT_THROW(at("step", 0), ModelError);
}

TEST(SolverConfig, FromSolverParameter) {
  caffe::SolverParameter p;
  p.set_base_lr(0.5f);
  p.set_solver_type(caffe::SolverParameter::NESTEROV);
  p.set_regularization_type("L1");
  EXPECT_EQ(solver_config(p).type, SolverType::nesterov);
  EXPECT_EQ(solver_config(p).regularization, Regularization::l1);
  p.set_type("Adam");
  EXPECT_EQ(solver_config(p).type, SolverType::adam);
  p.set_type("Adamax");
  EXPECT_THROW(solver_config(p), ModelError);
  p.set_type("SGD");
  p.set_regularization_type("L3");
  EXPECT_THROW(solver_config(p), ModelError);
}

}  // namespace
}  // namespace espresso::train
