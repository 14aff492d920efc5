#include "layers/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace espresso {

ReduceLayer::ReduceLayer(const LayerSpec& spec)
    : Layer(spec), axes_(spec.attrs.get_ints("axes", {})), keepdims_(spec.attrs.get_int("keepdims", 1) != 0) {
  const std::string name = spec.attrs.get_string("operation", "");
  static const std::pair<const char*, Op> kOps[] = {
      {"mean", Op::mean},       {"sum", Op::sum},
      {"max", Op::max},         {"min", Op::min},
      {"prod", Op::prod},       {"sum_square", Op::sum_square},
      {"l1", Op::l1},           {"l2", Op::l2},
      {"log_sum", Op::log_sum}, {"log_sum_exp", Op::log_sum_exp}};
  auto it = std::find_if(std::begin(kOps), std::end(kOps), [&](const auto& e) { return name == e.first; });
  if (it == std::end(kOps)) fail_model("unknown operation '" + name + "'");
  op_ = it->second;
}

std::vector<bool> ReduceLayer::reduced_axes(const Shape& in) const {
  std::vector<bool> reduced(static_cast<std::size_t>(in.rank()), axes_.empty());
  for (std::int64_t axis : axes_) {
    if (axis < -in.rank() || axis >= in.rank())
      fail_shape("axis " + std::to_string(axis) + " is out of range for " + in.str());
    reduced[static_cast<std::size_t>(axis < 0 ? axis + in.rank() : axis)] = true;
  }
  return reduced;
}

std::vector<Shape> ReduceLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const std::vector<bool> reduced = reduced_axes(inputs[0]);
  std::vector<std::int64_t> dims;
  for (int i = 0; i < inputs[0].rank(); ++i) {
    if (!reduced[static_cast<std::size_t>(i)]) {
      dims.push_back(inputs[0][i]);
    } else if (keepdims_) {
      dims.push_back(1);
    }
  }
  return {Shape(dims)};
}

void ReduceLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& in = inputs[0].shape();
  const std::vector<bool> reduced = reduced_axes(in);
  const std::int64_t out_count = outputs[0].numel();
  double init = 0;
  if (op_ == Op::max) init = -std::numeric_limits<double>::infinity();
  if (op_ == Op::min) init = std::numeric_limits<double>::infinity();
  if (op_ == Op::prod) init = 1;
  std::vector<double> acc(static_cast<std::size_t>(out_count), init);
  std::int64_t group = 1;
  for (int i = 0; i < in.rank(); ++i) {
    if (reduced[static_cast<std::size_t>(i)]) group *= in[i];
  }
  const float* x = inputs[0].data<float>();
  std::vector<std::int64_t> index(static_cast<std::size_t>(in.rank()), 0);
  for (std::int64_t i = 0, n = in.numel(); i < n; ++i) {
    std::int64_t o = 0;
    for (int k = 0; k < in.rank(); ++k) {
      if (!reduced[static_cast<std::size_t>(k)]) o = o * in[k] + index[static_cast<std::size_t>(k)];
    }
    double& a = acc[static_cast<std::size_t>(o)];
    const double v = x[i];
    switch (op_) {
      case Op::mean:
      case Op::sum:
      case Op::log_sum:
        a += v;
        break;
      case Op::max:
        a = std::max(a, v);
        break;
      case Op::min:
        a = std::min(a, v);
        break;
      case Op::prod:
        a *= v;
        break;
      case Op::sum_square:
      case Op::l2:
        a += v * v;
        break;
      case Op::l1:
        a += std::abs(v);
        break;
      case Op::log_sum_exp:
        a += std::exp(v);
        break;
    }
    for (int k = in.rank() - 1; k >= 0; --k) {
      if (++index[static_cast<std::size_t>(k)] < in[k]) break;
      index[static_cast<std::size_t>(k)] = 0;
    }
  }
  float* y = outputs[0].data<float>();
  for (std::int64_t o = 0; o < out_count; ++o) {
    double a = acc[static_cast<std::size_t>(o)];
    if (op_ == Op::mean) a /= static_cast<double>(group);
    if (op_ == Op::l2) a = std::sqrt(a);
    if (op_ == Op::log_sum || op_ == Op::log_sum_exp) a = std::log(a);
    y[o] = static_cast<float>(a);
  }
}

}  // namespace espresso
