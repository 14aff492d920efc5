#include "layers/binary.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string_view>

namespace espresso {
namespace {

// The `operation` names, in the order of Op.
constexpr std::string_view kOperations[] = {"add", "sub", "mul", "div", "max", "min", "pow"};

// Strides of `shape` laid against `out` (aligned at the last axis), 0 where it broadcasts.
std::vector<std::int64_t> broadcast_strides(const Shape& shape, const Shape& out) {
  std::vector<std::int64_t> strides(static_cast<std::size_t>(out.rank()), 0);
  std::int64_t stride = 1;
  for (int i = shape.rank() - 1, o = out.rank() - 1; i >= 0; --i, --o) {
    if (shape[i] != 1) strides[static_cast<std::size_t>(o)] = stride;
    stride *= shape[i];
  }
  return strides;
}

}  // namespace

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  const int rank = std::max(a.rank(), b.rank());
  std::vector<std::int64_t> dims(static_cast<std::size_t>(rank));
  for (int o = 0; o < rank; ++o) {
    const int ia = o - (rank - a.rank()), ib = o - (rank - b.rank());
    const std::int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      throw ShapeError("shapes " + a.str() + " and " + b.str() + " do not broadcast");
    }
    dims[static_cast<std::size_t>(o)] = da == 1 ? db : da;
  }
  return Shape(dims);
}

const LayerSchema& BinaryLayer::schema() {
  static const LayerSchema schema{
      .attributes = {{.name = "operation",
                      .type = AttrType::text,
                      .required = true,
                      .choices = {std::begin(kOperations), std::end(kOperations)}}},
      .weights = "–",
      .notes = "two inputs, numpy broadcasting; in place",
  };
  return schema;
}

BinaryLayer::BinaryLayer(const LayerSpec& spec) : Layer(spec) {
  const std::string name = spec.attrs.require_string("operation");
  op_ = static_cast<Op>(std::find(std::begin(kOperations), std::end(kOperations), name) -
                        std::begin(kOperations));
}

std::vector<LayerSpec> eltwise_as_binary(LayerSpec eltwise, const std::string& operation,
                                         const std::vector<double>& coeffs,
                                         const std::function<std::string(const std::string&)>& fresh) {
  auto fail = [&](const std::string& what) {
    throw ModelError("layer '" + eltwise.name + "' (Eltwise): " + what);
  };
  const std::size_t count = eltwise.inputs.size();
  if (count < 2) fail("takes 2 or more inputs, got " + std::to_string(count));
  if (operation != "sum" && operation != "prod" && operation != "max") {
    fail("attribute 'operation' is \"" + operation + "\"; expected \"sum\", \"prod\" or \"max\"");
  }
  if (!coeffs.empty() && operation != "sum") fail("attribute 'coeffs' applies only to the \"sum\" operation");
  if (!coeffs.empty() && coeffs.size() != count) {
    fail("attribute 'coeffs' has " + std::to_string(coeffs.size()) + " values for " + std::to_string(count) +
         " inputs");
  }
  std::vector<LayerSpec> layers;
  auto binary = [&](const std::string& op, std::vector<std::string> inputs, const std::string& name) {
    LayerSpec spec{.name = name, .type = "Binary", .inputs = std::move(inputs), .outputs = {name}};
    spec.attrs.set("operation", op);
    layers.push_back(std::move(spec));
    return name;
  };
  auto term = [&](std::size_t k) {
    const std::string& x = eltwise.inputs[k];
    if (coeffs.empty() || coeffs[k] == 1.0) return x;
    const std::string coeff = fresh(eltwise.name + "/coeff" + std::to_string(k));
    LayerSpec constant{.name = coeff, .type = "Constant", .outputs = {coeff}};
    constant.attrs.set("shape", std::vector<std::int64_t>{});
    constant.weights = {Tensor::from(Shape{}, {static_cast<float>(coeffs[k])})};
    layers.push_back(std::move(constant));
    return binary("mul", {x, coeff}, fresh(eltwise.name + "/scaled" + std::to_string(k)));
  };
  const std::string op = operation == "sum" ? "add" : operation == "prod" ? "mul" : "max";
  std::string acc = term(0);
  for (std::size_t k = 1; k + 1 < count; ++k)
    acc = binary(op, {acc, term(k)}, fresh(eltwise.name + "/step" + std::to_string(k)));
  const std::string last = term(count - 1);
  eltwise.type = "Binary";
  eltwise.inputs = {acc, last};
  Attributes attrs;  // the training attributes (loss_weight) stay
  for (const auto& [name, value] : eltwise.attrs.all()) {
    if (name != "operation" && name != "coeffs") attrs.set(name, value);
  }
  attrs.set("operation", op);
  eltwise.attrs = std::move(attrs);
  layers.push_back(std::move(eltwise));
  return layers;
}

std::vector<Shape> BinaryLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, 2);
  try {
    return {broadcast_shapes(inputs[0], inputs[1])};
  } catch (const ShapeError& e) {
    fail_shape(e.what());
  }
}

void BinaryLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Shape& out = outputs[0].shape();
  const std::vector<std::int64_t> sa = broadcast_strides(inputs[0].shape(), out);
  const std::vector<std::int64_t> sb = broadcast_strides(inputs[1].shape(), out);
  const float* a = inputs[0].data<float>();
  const float* b = inputs[1].data<float>();
  float* y = outputs[0].data<float>();
  std::vector<std::int64_t> index(static_cast<std::size_t>(out.rank()), 0);
  for (std::int64_t i = 0, n = out.numel(); i < n; ++i) {
    std::int64_t oa = 0, ob = 0;
    for (std::size_t k = 0; k < index.size(); ++k) {
      oa += index[k] * sa[k];
      ob += index[k] * sb[k];
    }
    y[i] = binary_value(op_, a[oa], b[ob]);
    for (int k = out.rank() - 1; k >= 0; --k) {
      if (++index[static_cast<std::size_t>(k)] < out[k]) break;
      index[static_cast<std::size_t>(k)] = 0;
    }
  }
}

void BinaryLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                           const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                           std::vector<Tensor>&) const {
  const Shape& out = outputs[0].shape();
  const std::vector<std::int64_t> sa = broadcast_strides(inputs[0].shape(), out);
  const std::vector<std::int64_t> sb = broadcast_strides(inputs[1].shape(), out);
  const float* a = inputs[0].data<float>();
  const float* b = inputs[1].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* da = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
  float* db = input_grads[1].defined() ? input_grads[1].data<float>() : nullptr;
  // Broadcast operands sum the gradients of every output they reach.
  std::vector<std::int64_t> index(static_cast<std::size_t>(out.rank()), 0);
  for (std::int64_t i = 0, n = out.numel(); i < n; ++i) {
    std::int64_t oa = 0, ob = 0;
    for (std::size_t k = 0; k < index.size(); ++k) {
      oa += index[k] * sa[k];
      ob += index[k] * sb[k];
    }
    const auto [pa, pb] = binary_partials(op_, a[oa], b[ob]);
    if (da) da[oa] += dy[i] * pa;
    if (db) db[ob] += dy[i] * pb;
    for (int k = out.rank() - 1; k >= 0; --k) {
      if (++index[static_cast<std::size_t>(k)] < out[k]) break;
      index[static_cast<std::size_t>(k)] = 0;
    }
  }
}

}  // namespace espresso
