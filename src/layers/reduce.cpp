#include "layers/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace espresso {

namespace {

// The schema's choices of `operation`, in Op's order.
constexpr std::string_view kOperations[] = {"mean",       "sum", "max", "min",     "prod",
                                            "sum_square", "l1",  "l2",  "log_sum", "log_sum_exp"};

}  // namespace

const LayerSchema& ReduceLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "operation",
               .type = AttrType::text,
               .required = true,
               .choices = std::vector<std::string_view>(std::begin(kOperations), std::end(kOperations))},
              {.name = "axes", .type = AttrType::integers, .default_text = "all"},
              flag("keepdims", true),
          },
      .weights = "–",
      .notes =
          "gradient of max and min: all to the first extreme element in row-major order; of prod: the "
          "product of the other elements (exact with zeros)",
  };
  return schema;
}

ReduceLayer::ReduceLayer(const LayerSpec& spec)
    : Layer(spec), keepdims_(spec.attrs.require_int("keepdims") != 0) {
  if (spec.attrs.has("axes")) axes_ = spec.attrs.require_ints("axes");
  const std::string operation = spec.attrs.require_string("operation");
  op_ = static_cast<Op>(std::find(std::begin(kOperations), std::end(kOperations), operation) -
                        std::begin(kOperations));
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

namespace {

// Calls visit(i, o) for every element i of a tensor of shape `in`, in order, with the output o it is
// reduced into.
template <class Visit>
void each_element(const Shape& in, const std::vector<bool>& reduced, Visit&& visit) {
  std::vector<std::int64_t> index(static_cast<std::size_t>(in.rank()), 0);
  for (std::int64_t i = 0, n = in.numel(); i < n; ++i) {
    std::int64_t o = 0;
    for (int k = 0; k < in.rank(); ++k) {
      if (!reduced[static_cast<std::size_t>(k)]) o = o * in[k] + index[static_cast<std::size_t>(k)];
    }
    visit(i, o);
    for (int k = in.rank() - 1; k >= 0; --k) {
      if (++index[static_cast<std::size_t>(k)] < in[k]) break;
      index[static_cast<std::size_t>(k)] = 0;
    }
  }
}

// The number of elements reduced into each output.
std::int64_t group_size(const Shape& in, const std::vector<bool>& reduced) {
  std::int64_t group = 1;
  for (int i = 0; i < in.rank(); ++i) {
    if (reduced[static_cast<std::size_t>(i)]) group *= in[i];
  }
  return group;
}

}  // namespace

void ReduceLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& in = inputs[0].shape();
  const std::vector<bool> reduced = reduced_axes(in);
  const std::int64_t out_count = outputs[0].numel();
  double init = 0;
  if (op_ == Op::max) init = -std::numeric_limits<double>::infinity();
  if (op_ == Op::min) init = std::numeric_limits<double>::infinity();
  if (op_ == Op::prod) init = 1;
  std::vector<double> acc(static_cast<std::size_t>(out_count), init);
  const std::int64_t group = group_size(in, reduced);
  const float* x = inputs[0].data<float>();
  each_element(in, reduced, [&](std::int64_t i, std::int64_t o) {
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
  });
  float* y = outputs[0].data<float>();
  for (std::int64_t o = 0; o < out_count; ++o) {
    double a = acc[static_cast<std::size_t>(o)];
    if (op_ == Op::mean) a /= static_cast<double>(group);
    if (op_ == Op::l2) a = std::sqrt(a);
    if (op_ == Op::log_sum || op_ == Op::log_sum_exp) a = std::log(a);
    y[o] = static_cast<float>(a);
  }
}

void ReduceLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                           const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                           std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const Shape& in = inputs[0].shape();
  const std::vector<bool> reduced = reduced_axes(in);
  const auto out_count = static_cast<std::size_t>(outputs[0].numel());
  const auto group = static_cast<double>(group_size(in, reduced));
  const float* x = inputs[0].data<float>();
  const float* y = outputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  // prod: per output, its zero elements and the product of the others.
  std::vector<std::int64_t> zeros;
  std::vector<double> nonzero_product;
  if (op_ == Op::prod) {
    zeros.assign(out_count, 0);
    nonzero_product.assign(out_count, 1);
    each_element(in, reduced, [&](std::int64_t i, std::int64_t o) {
      if (x[i] == 0) {
        ++zeros[static_cast<std::size_t>(o)];
      } else {
        nonzero_product[static_cast<std::size_t>(o)] *= x[i];
      }
    });
  }
  // max, min: whether an output's gradient has gone to an element yet.
  std::vector<bool> taken(op_ == Op::max || op_ == Op::min ? out_count : 0, false);
  each_element(in, reduced, [&](std::int64_t i, std::int64_t o) {
    const auto uo = static_cast<std::size_t>(o);
    const double v = x[i];
    double partial = 0;
    switch (op_) {
      case Op::mean:
        partial = 1 / group;
        break;
      case Op::sum:
        partial = 1;
        break;
      case Op::max:
      case Op::min:
        if (taken[uo] || v != y[o]) return;
        taken[uo] = true;
        partial = 1;
        break;
      case Op::prod:
        if (v != 0) {
          partial = zeros[uo] == 0 ? nonzero_product[uo] / v : 0;
        } else {
          partial = zeros[uo] == 1 ? nonzero_product[uo] : 0;
        }
        break;
      case Op::sum_square:
        partial = 2 * v;
        break;
      case Op::l1:
        partial = v > 0 ? 1 : v < 0 ? -1 : 0;
        break;
      case Op::l2:
        partial = y[o] > 0 ? v / y[o] : 0;
        break;
      case Op::log_sum:  // 1 / Σx
        partial = std::exp(-static_cast<double>(y[o]));
        break;
      case Op::log_sum_exp:
        partial = std::exp(v - y[o]);
        break;
    }
    dx[i] += static_cast<float>(dy[o] * partial);
  });
}

}  // namespace espresso
