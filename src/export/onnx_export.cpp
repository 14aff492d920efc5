// Graph → ONNX (IR 7, opset 13; 14 for recurrent layers in layout 1). Each espresso layer becomes one ONNX
// node or a short, exact chain.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>

#include "espresso/errors.h"
#include "espresso/onnx.h"
#include "import/onnx/onnx.pb.h"
#include "layers/registry.h"

namespace espresso {
namespace {

using Dims = std::vector<std::int64_t>;
using TP = onnx::TensorProto;

class Exporter {
 public:
  explicit Exporter(const Graph& graph) : graph_(graph) {}
  onnx::ModelProto run();

 private:
  [[noreturn]] void unsupported(const LayerSpec& layer, const std::string& what) const {
    throw UnsupportedError("ONNX export: layer '" + layer.name + "' (" + layer.type + "): " + what);
  }
  onnx::NodeProto& node(const LayerSpec& layer, const std::string& op, std::vector<std::string> inputs,
                        std::vector<std::string> outputs, const std::string& suffix = "");
  std::string initializer(const std::string& name, const Shape& shape, const std::vector<float>& values);
  std::string int_initializer(const std::string& name, const Dims& values);
  std::string temp(const LayerSpec& layer, const std::string& what) { return layer.name + "/" + what; }
  void convert(const LayerSpec& layer, const std::vector<Shape>& in, const std::vector<Shape>& out);
  void pooling(const LayerSpec& layer, const Shape& in, const Shape& out);
  void inner_product(const LayerSpec& layer, const Shape& in);
  void activation(const LayerSpec& layer);
  void recurrent(const LayerSpec& layer);

  const Graph& graph_;
  onnx::GraphProto* out_ = nullptr;
  std::int64_t opset_ = 13;  // 14 where a recurrent layer needs `layout`
};

void set_attr(onnx::NodeProto& n, const std::string& name, std::int64_t v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

void set_attr(onnx::NodeProto& n, const std::string& name, double v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(static_cast<float>(v));
}

void set_attr(onnx::NodeProto& n, const std::string& name, const std::string& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

void set_attr(onnx::NodeProto& n, const std::string& name, const Dims& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (std::int64_t x : v) a->add_ints(x);
}

void set_attr(onnx::NodeProto& n, const std::string& name, const std::vector<double>& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOATS);
  for (double x : v) a->add_floats(static_cast<float>(x));
}

void set_strings(onnx::NodeProto& n, const std::string& name, const std::vector<std::string>& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRINGS);
  for (const std::string& x : v) a->add_strings(x);
}

// A per-axis attribute expanded to `count` values.
Dims per_axis(const Attributes& attrs, const std::string& name, std::int64_t fallback, std::size_t count) {
  Dims v = attrs.get_ints(name, {fallback});
  if (v.size() == 1) v.assign(count, v[0]);
  return v;
}

void set_value_info(onnx::ValueInfoProto* info, const std::string& name, const Shape& shape) {
  info->set_name(name);
  auto* tensor = info->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(TP::FLOAT);
  auto* dims = tensor->mutable_shape();
  for (std::int64_t d : shape.dims()) dims->add_dim()->set_dim_value(d);
}

onnx::NodeProto& Exporter::node(const LayerSpec& layer, const std::string& op,
                                std::vector<std::string> inputs, std::vector<std::string> outputs,
                                const std::string& suffix) {
  onnx::NodeProto* n = out_->add_node();
  n->set_name(suffix.empty() ? layer.name : layer.name + "/" + suffix);
  n->set_op_type(op);
  for (const std::string& i : inputs) n->add_input(i);
  for (const std::string& o : outputs) n->add_output(o);
  return *n;
}

std::string Exporter::initializer(const std::string& name, const Shape& shape,
                                  const std::vector<float>& values) {
  TP* t = out_->add_initializer();
  t->set_name(name);
  t->set_data_type(TP::FLOAT);
  for (std::int64_t d : shape.dims()) t->add_dims(d);
  t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return name;
}

std::string Exporter::int_initializer(const std::string& name, const Dims& values) {
  TP* t = out_->add_initializer();
  t->set_name(name);
  t->set_data_type(TP::INT64);
  t->add_dims(static_cast<std::int64_t>(values.size()));
  for (std::int64_t v : values) t->add_int64_data(v);
  return name;
}

void Exporter::pooling(const LayerSpec& layer, const Shape& in, const Shape& out) {
  const Attributes& a = layer.attrs;
  const bool max = a.get_string("method", "max") == "max";
  if (a.get_int("global", 0) != 0) {
    node(layer, max ? "GlobalMaxPool" : "GlobalAveragePool", {layer.inputs[0]}, {layer.outputs[0]});
    return;
  }
  const std::size_t spatial = static_cast<std::size_t>(in.rank() - 2);
  const Dims kernel = per_axis(a, "kernel", 1, spatial), stride = per_axis(a, "stride", 1, spatial),
             pad = per_axis(a, "pad", 0, spatial);
  Dims pads(pad);
  pads.insert(pads.end(), pad.begin(), pad.end());
  auto& n = node(layer, max ? "MaxPool" : "AveragePool", {layer.inputs[0]}, {layer.outputs[0]});
  set_attr(n, "kernel_shape", kernel);
  set_attr(n, "strides", stride);
  if (max) {
    // Caffe's ceil rounding (and its rule that the last window starts inside the input) written as
    // floor rounding with the end padding that yields the same windows.
    for (std::size_t i = 0; i < spatial; ++i) {
      const std::int64_t end =
          (out[static_cast<int>(i) + 2] - 1) * stride[i] + kernel[i] - in[static_cast<int>(i) + 2] - pad[i];
      pads[spatial + i] = std::max<std::int64_t>(end, 0);
    }
  } else {
    set_attr(n, "ceil_mode", static_cast<std::int64_t>(a.get_string("round", "ceil") == "ceil"));
    set_attr(n, "count_include_pad", a.get_int("count_include_pad", 1));
  }
  set_attr(n, "pads", pads);
}

void Exporter::inner_product(const LayerSpec& layer, const Shape& in) {
  const Attributes& a = layer.attrs;
  const int axis = in.canonical_axis(static_cast<int>(a.get_int("axis", 1)));
  const bool transpose = a.get_int("transpose", 0) != 0;
  const bool bias = a.get_int("bias", 1) != 0;
  const Tensor& w = layer.weights.at(0);
  const std::string weight = initializer(temp(layer, "weight"), w.shape(), w.to_vector());
  std::string input = layer.inputs[0];
  if (axis == 1) {
    if (in.rank() != 2) {
      input = temp(layer, "flat");
      set_attr(node(layer, "Flatten", {layer.inputs[0]}, {input}, "flatten"), "axis", std::int64_t{1});
    }
    std::vector<std::string> inputs{input, weight};
    if (bias)
      inputs.push_back(
          initializer(temp(layer, "bias"), layer.weights.at(1).shape(), layer.weights.at(1).to_vector()));
    set_attr(node(layer, "Gemm", inputs, {layer.outputs[0]}), "transB",
             static_cast<std::int64_t>(!transpose));
    return;
  }
  if (axis != in.rank() - 1) unsupported(layer, "only axis 1 or the last axis can be exported");
  std::string matrix = weight;
  if (!transpose) {
    matrix = temp(layer, "weight_t");
    node(layer, "Transpose", {weight}, {matrix}, "transpose");
  }
  const std::string product = bias ? temp(layer, "product") : layer.outputs[0];
  node(layer, "MatMul", {input, matrix}, {product}, bias ? "matmul" : "");
  if (bias) {
    node(layer, "Add",
         {product,
          initializer(temp(layer, "bias"), layer.weights.at(1).shape(), layer.weights.at(1).to_vector())},
         {layer.outputs[0]});
  }
}

void Exporter::activation(const LayerSpec& layer) {
  const Attributes& a = layer.attrs;
  const std::string f = a.get_string("function", "");
  static const std::map<std::string, std::string> kOps = {{"hard_sigmoid", "HardSigmoid"},
                                                          {"hard_swish", "HardSwish"},
                                                          {"elu", "Elu"},
                                                          {"selu", "Selu"},
                                                          {"softplus", "Softplus"},
                                                          {"softsign", "Softsign"},
                                                          {"sigmoid", "Sigmoid"},
                                                          {"tanh", "Tanh"},
                                                          {"exp", "Exp"},
                                                          {"log", "Log"},
                                                          {"sqrt", "Sqrt"},
                                                          {"neg", "Neg"},
                                                          {"reciprocal", "Reciprocal"},
                                                          {"floor", "Floor"},
                                                          {"ceil", "Ceil"},
                                                          {"abs", "Abs"}};
  if (f == "clip") {
    std::vector<std::string> inputs{layer.inputs[0], "", ""};
    if (a.has("min"))
      inputs[1] = initializer(temp(layer, "min"), Shape{}, {static_cast<float>(a.get_float("min", 0))});
    if (a.has("max"))
      inputs[2] = initializer(temp(layer, "max"), Shape{}, {static_cast<float>(a.get_float("max", 0))});
    node(layer, "Clip", inputs, {layer.outputs[0]});
    return;
  }
  if (f == "power") {  // (beta + alpha·x)^gamma as Mul, Add and Pow, leaving out the steps that do nothing
    const double alpha = a.get_float("alpha", 1.0), beta = a.get_float("beta", 0.0),
                 gamma = a.get_float("gamma", 1.0);
    const std::string& y = layer.outputs[0];
    std::string current = layer.inputs[0];
    auto step = [&](const std::string& op, double value, const std::string& what, bool last) {
      const std::string next = last ? y : temp(layer, what);
      node(layer, op,
           {current, initializer(temp(layer, what + "_value"), Shape{}, {static_cast<float>(value)})}, {next},
           last ? "" : what);
      current = next;
    };
    if (alpha != 1.0) step("Mul", alpha, "scale", beta == 0.0 && gamma == 1.0);
    if (beta != 0.0) step("Add", beta, "shift", gamma == 1.0);
    if (gamma != 1.0) step("Pow", gamma, "power", true);
    if (current != y) node(layer, "Identity", {current}, {y});
    return;
  }
  if (f == "float16") {  // a round trip through FLOAT16 rounds the same way
    const std::string half = temp(layer, "half");
    set_attr(node(layer, "Cast", {layer.inputs[0]}, {half}, "half"), "to",
             std::int64_t{onnx::TensorProto::FLOAT16});
    set_attr(node(layer, "Cast", {half}, {layer.outputs[0]}), "to", std::int64_t{onnx::TensorProto::FLOAT});
    return;
  }
  auto it = kOps.find(f);
  if (it == kOps.end()) unsupported(layer, "function '" + f + "'");
  auto& n = node(layer, it->second, {layer.inputs[0]}, {layer.outputs[0]});
  if (f == "hard_sigmoid") {
    set_attr(n, "alpha", a.get_float("alpha", 0.2));
    set_attr(n, "beta", a.get_float("beta", 0.5));
  } else if (f == "elu") {
    set_attr(n, "alpha", a.get_float("alpha", 1.0));
  } else if (f == "selu") {
    set_attr(n, "alpha", a.get_float("alpha", 1.67326319217681884765625));
    set_attr(n, "gamma", a.get_float("gamma", 1.05070102214813232421875));
  }
}

void Exporter::convert(const LayerSpec& layer, const std::vector<Shape>& in, const std::vector<Shape>& out) {
  const Attributes& a = layer.attrs;
  const std::string& t = layer.type;
  const std::string x = layer.inputs.empty() ? "" : layer.inputs[0];
  const std::string y = layer.outputs.empty() ? "" : layer.outputs[0];
  auto weight = [&](std::size_t i, const std::string& what, const Shape* shape = nullptr) {
    const Tensor& w = layer.weights.at(i);
    return initializer(temp(layer, what), shape ? *shape : w.shape(), w.to_vector());
  };
  if (t == "Convolution" || t == "Deconvolution") {
    const std::size_t spatial = static_cast<std::size_t>(in[0].rank() - 2);
    std::vector<std::string> inputs{x, weight(0, "weight")};
    if (a.get_int("bias", 1) != 0) inputs.push_back(weight(1, "bias"));
    auto& n = node(layer, t == "Convolution" ? "Conv" : "ConvTranspose", inputs, {y});
    const Dims pad = per_axis(a, "pad", 0, spatial);
    Dims pads(pad);
    pads.insert(pads.end(), pad.begin(), pad.end());
    set_attr(n, "kernel_shape",
             Dims(layer.weights[0].shape().dims().begin() + 2, layer.weights[0].shape().dims().end()));
    set_attr(n, "strides", per_axis(a, "stride", 1, spatial));
    set_attr(n, "dilations", per_axis(a, "dilation", 1, spatial));
    set_attr(n, "pads", pads);
    set_attr(n, "group", a.get_int("group", 1));
    if (t == "Deconvolution") set_attr(n, "output_padding", per_axis(a, "output_pad", 0, spatial));
  } else if (t == "Pooling") {
    pooling(layer, in[0], out[0]);
  } else if (t == "InnerProduct") {
    inner_product(layer, in[0]);
  } else if (t == "ReLU") {
    const double slope = a.get_float("negative_slope", 0.0);
    if (slope == 0.0) {
      node(layer, "Relu", {x}, {y});
    } else {
      set_attr(node(layer, "LeakyRelu", {x}, {y}), "alpha", slope);
    }
  } else if (t == "PReLU") {
    Dims dims(static_cast<std::size_t>(in[0].rank() - 1), 1);
    dims[0] = layer.weights[0].numel();
    const Shape slope(dims);
    node(layer, "PRelu", {x, weight(0, "slope", &slope)}, {y});
  } else if (t == "Softmax" || t == "LogSoftmax") {
    set_attr(node(layer, t, {x}, {y}), "axis", a.get_int("axis", 1));
  } else if (t == "LRN") {
    if (a.get_string("region", "across") != "across")
      unsupported(layer, "only the 'across' region has an ONNX form");
    auto& n = node(layer, "LRN", {x}, {y});
    set_attr(n, "size", a.get_int("size", 5));
    set_attr(n, "alpha", a.get_float("alpha", 1.0));
    set_attr(n, "beta", a.get_float("beta", 0.75));
    set_attr(n, "bias", a.get_float("k", 1.0));
  } else if (t == "Dropout" || t == "Split") {
    for (const std::string& o : layer.outputs) node(layer, "Identity", {x}, {o}, o == y ? "" : o);
  } else if (t == "Flatten" || t == "Reshape") {
    node(layer, "Reshape", {x, int_initializer(temp(layer, "shape"), out[0].dims())}, {y});
  } else if (t == "Concat") {
    std::vector<std::string> inputs(layer.inputs);
    set_attr(node(layer, "Concat", inputs, {y}), "axis",
             static_cast<std::int64_t>(in[0].canonical_axis(static_cast<int>(a.get_int("axis", 1)))));
  } else if (t == "Slice") {
    const int axis = in[0].canonical_axis(static_cast<int>(a.get_int("axis", 1)));
    Dims sizes;
    for (const Shape& s : out) sizes.push_back(s[axis]);
    set_attr(node(layer, "Split", {x, int_initializer(temp(layer, "split"), sizes)}, layer.outputs), "axis",
             static_cast<std::int64_t>(axis));
  } else if (t == "BatchNorm") {
    const float factor = layer.weights.at(2).to_vector().at(0);
    const float inverse = factor == 0 ? 0.0f : 1.0f / factor;
    const std::int64_t c = in[0][1];
    std::vector<float> mean = layer.weights[0].to_vector(), var = layer.weights[1].to_vector();
    for (float& v : mean) v *= inverse;
    for (float& v : var) v *= inverse;
    auto& n = node(
        layer, "BatchNormalization",
        {x,
         initializer(temp(layer, "gamma"), Shape{c}, std::vector<float>(static_cast<std::size_t>(c), 1.0f)),
         initializer(temp(layer, "beta"), Shape{c}, std::vector<float>(static_cast<std::size_t>(c), 0.0f)),
         initializer(temp(layer, "mean"), Shape{c}, mean), initializer(temp(layer, "var"), Shape{c}, var)},
        {y});
    set_attr(n, "epsilon", a.get_float("eps", 1e-5));
  } else if (t == "Scale" || t == "Bias") {
    if (layer.inputs.size() != 1) unsupported(layer, "a scale or bias given as a second input");
    const int axis = in[0].canonical_axis(static_cast<int>(a.get_int("axis", 1)));
    // The learned blob covers axes [axis, axis + its rank); trailing 1s align it for numpy broadcasting.
    auto aligned = [&](const Tensor& w) {
      Dims dims = w.shape().dims();
      dims.resize(static_cast<std::size_t>(in[0].rank() - axis), 1);
      return Shape(dims);
    };
    std::string current = x;
    const bool has_bias = t == "Bias" || a.get_int("bias", 0) != 0;
    if (t == "Scale") {
      const Shape s = aligned(layer.weights[0]);
      const std::string scaled = has_bias ? temp(layer, "scaled") : y;
      node(layer, "Mul", {x, weight(0, "scale", &s)}, {scaled}, has_bias ? "mul" : "");
      current = scaled;
    }
    if (has_bias) {
      const std::size_t index = t == "Scale" ? 1 : 0;
      const Shape s = aligned(layer.weights.at(index));
      node(layer, "Add", {current, weight(index, "bias", &s)}, {y});
    }
  } else if (t == "Constant") {
    initializer(y, layer.weights.at(0).shape(), layer.weights[0].to_vector());
  } else if (t == "Binary") {
    static const std::map<std::string, std::string> kOps = {{"add", "Add"}, {"sub", "Sub"}, {"mul", "Mul"},
                                                            {"div", "Div"}, {"max", "Max"}, {"min", "Min"},
                                                            {"pow", "Pow"}};
    node(layer, kOps.at(a.get_string("operation", "add")), layer.inputs, {y});
  } else if (t == "Activation") {
    activation(layer);
  } else if (t == "MatMul") {
    node(layer, "MatMul", layer.inputs, {y});
  } else if (t == "Transpose") {
    auto& n = node(layer, "Transpose", {x}, {y});
    if (a.has("perm")) set_attr(n, "perm", a.get_ints("perm", {}));
  } else if (t == "Pad") {
    auto& n =
        node(layer, "Pad",
             {x, int_initializer(temp(layer, "pads"), a.get_ints("pads", {})),
              initializer(temp(layer, "value"), Shape{}, {static_cast<float>(a.get_float("value", 0))})},
             {y});
    set_attr(n, "mode", a.get_string("mode", "constant"));
  } else if (t == "Resize") {
    std::vector<std::string> inputs{x, "", ""};
    if (a.has("roi")) {
      std::vector<float> roi;
      for (double r : a.get_floats("roi", {})) roi.push_back(static_cast<float>(r));
      inputs[1] = initializer(temp(layer, "roi"), Shape{static_cast<std::int64_t>(roi.size())}, roi);
    }
    if (a.has("sizes")) {
      inputs.push_back(int_initializer(temp(layer, "sizes"), a.get_ints("sizes", {})));
    } else {
      std::vector<float> scales;
      for (double s : a.get_floats("scales", {})) scales.push_back(static_cast<float>(s));
      inputs[2] = initializer(temp(layer, "scales"), Shape{static_cast<std::int64_t>(scales.size())}, scales);
    }
    auto& n = node(layer, "Resize", inputs, {y});
    set_attr(n, "mode", a.get_string("mode", "nearest"));
    set_attr(n, "coordinate_transformation_mode",
             a.get_string("coordinate_transformation_mode", "half_pixel"));
    set_attr(n, "nearest_mode", a.get_string("nearest_mode", "round_prefer_floor"));
    set_attr(n, "cubic_coeff_a", a.get_float("cubic_coeff_a", -0.75));
    set_attr(n, "exclude_outside", a.get_int("exclude_outside", 0));
    set_attr(n, "extrapolation_value", a.get_float("extrapolation_value", 0.0));
  } else if (t == "Reduce") {
    static const std::map<std::string, std::string> kOps = {
        {"mean", "ReduceMean"},      {"sum", "ReduceSum"},
        {"max", "ReduceMax"},        {"min", "ReduceMin"},
        {"prod", "ReduceProd"},      {"sum_square", "ReduceSumSquare"},
        {"l1", "ReduceL1"},          {"l2", "ReduceL2"},
        {"log_sum", "ReduceLogSum"}, {"log_sum_exp", "ReduceLogSumExp"}};
    const std::string op = kOps.at(a.get_string("operation", "mean"));
    const Dims axes = a.get_ints("axes", {});
    std::vector<std::string> inputs{x};
    if (op == "ReduceSum" && !axes.empty()) inputs.push_back(int_initializer(temp(layer, "axes"), axes));
    auto& n = node(layer, op, inputs, {y});
    if (op != "ReduceSum" && !axes.empty()) set_attr(n, "axes", axes);
    set_attr(n, "keepdims", a.get_int("keepdims", 1));
  } else if (t == "Gather") {
    const std::string indices = temp(layer, "indices");
    set_attr(node(layer, "Cast", {layer.inputs.at(1)}, {indices}, "cast"), "to", std::int64_t{TP::INT64});
    set_attr(node(layer, "Gather", {x, indices}, {y}), "axis", a.get_int("axis", 0));
  } else if (t == "LSTM" || t == "GRU" || t == "RNN") {
    recurrent(layer);
  } else if (t == "StridedSlice") {
    std::vector<std::string> inputs{x, int_initializer(temp(layer, "starts"), a.get_ints("starts", {})),
                                    int_initializer(temp(layer, "ends"), a.get_ints("ends", {}))};
    if (a.has("axes") || a.has("steps"))
      inputs.push_back(a.has("axes") ? int_initializer(temp(layer, "axes"), a.get_ints("axes", {})) : "");
    if (a.has("steps")) inputs.push_back(int_initializer(temp(layer, "steps"), a.get_ints("steps", {})));
    node(layer, "Slice", inputs, {y});
  } else {
    unsupported(layer, "no ONNX equivalent");
  }
}

// LSTM, GRU, RNN: one node with espresso's attributes (the layer's tensors are ONNX's); sequence
// lengths become int32 through a Cast.
void Exporter::recurrent(const LayerSpec& layer) {
  const Attributes& a = layer.attrs;
  if (a.get_int("continuation", 0) != 0) unsupported(layer, "Caffe's cont input has no ONNX form");
  const bool lstm = layer.type == "LSTM";
  std::size_t next_input = 1;
  std::size_t next_weight = 2;
  auto weight = [&](std::size_t i, const std::string& what) {
    const Tensor& w = layer.weights.at(i);
    return initializer(temp(layer, what), w.shape(), w.to_vector());
  };
  std::vector<std::string> inputs{layer.inputs.at(0), weight(0, "W"), weight(1, "R")};
  inputs.push_back(a.get_int("bias", 1) != 0 ? weight(next_weight++, "B") : "");
  if (a.get_int("sequence_lens", 0) != 0) {
    const std::string& given = layer.inputs.at(next_input++);
    bool graph_input = false;
    for (onnx::ValueInfoProto& info : *out_->mutable_input()) {
      if (info.name() != given) continue;
      // A graph input of lengths is declared int32, as ONNX wants it.
      info.mutable_type()->mutable_tensor_type()->set_elem_type(TP::INT32);
      graph_input = true;
    }
    if (graph_input) {
      inputs.push_back(given);
    } else {
      const std::string lengths = temp(layer, "sequence_lens");
      set_attr(node(layer, "Cast", {given}, {lengths}, "sequence_lens"), "to", std::int64_t{TP::INT32});
      inputs.push_back(lengths);
    }
  } else {
    inputs.push_back("");
  }
  const bool initial = a.get_int("initial_state", 0) != 0;
  inputs.push_back(initial ? layer.inputs.at(next_input++) : "");
  if (lstm) {
    inputs.push_back(initial ? layer.inputs.at(next_input++) : "");
    inputs.push_back(a.get_int("peepholes", 0) != 0 ? weight(next_weight, "P") : "");
  }
  while (!inputs.empty() && inputs.back().empty()) inputs.pop_back();
  auto& n = node(layer, layer.type, inputs, layer.outputs);
  set_attr(n, "hidden_size", a.get_int("hidden_size", 1));
  set_attr(n, "direction", a.get_string("direction", "forward"));
  if (a.has("activations")) {
    std::vector<std::string> names;
    std::string word;
    for (char ch : a.get_string("activations", "") + ",") {
      if (ch != ',') {
        word += ch;
      } else if (!word.empty()) {
        names.push_back(word);
        word.clear();
      }
    }
    // ONNX wants one list entry per direction.
    const std::size_t per = lstm ? 3 : layer.type == "GRU" ? 2 : 1;
    if (a.get_string("direction", "forward") == "bidirectional" && names.size() == per) {
      const std::vector<std::string> once = names;
      names.insert(names.end(), once.begin(), once.end());
    }
    set_strings(n, "activations", names);
  }
  if (a.has("activation_alpha")) set_attr(n, "activation_alpha", a.get_floats("activation_alpha", {}));
  if (a.has("activation_beta")) set_attr(n, "activation_beta", a.get_floats("activation_beta", {}));
  if (a.has("clip")) set_attr(n, "clip", a.get_float("clip", 0.0));
  if (lstm && a.get_int("input_forget", 0) != 0) set_attr(n, "input_forget", std::int64_t{1});
  if (layer.type == "GRU") set_attr(n, "linear_before_reset", a.get_int("linear_before_reset", 0));
  if (a.get_int("layout", 0) != 0) {
    set_attr(n, "layout", std::int64_t{1});
    opset_ = std::max<std::int64_t>(opset_, 14);
  }
}

onnx::ModelProto Exporter::run() {
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.set_producer_name("espresso");
  model.set_producer_version(ESPRESSO_VERSION);
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  out_ = model.mutable_graph();
  out_->set_name(graph_.name.empty() ? "espresso" : graph_.name);

  graph_.validate();
  std::map<std::string, Shape> shapes;
  for (const InputSpec& input : graph_.inputs) {
    shapes[input.name] = input.shape;
    set_value_info(out_->add_input(), input.name, input.shape);
  }
  std::set<std::string> consumed;
  for (const LayerSpec& layer : graph_.layers) {
    std::vector<Shape> in;
    for (const std::string& name : layer.inputs) {
      in.push_back(shapes.at(name));
      consumed.insert(name);
    }
    std::vector<Shape> out;
    try {
      out = create_layer(layer)->output_shapes(in);
    } catch (const Error& e) {
      throw ModelError(std::string("ONNX export: ") + e.what());
    }
    for (std::size_t i = 0; i < out.size() && i < layer.outputs.size(); ++i)
      shapes[layer.outputs[i]] = out[i];
    convert(layer, in, out);
  }
  std::vector<std::string> outputs = graph_.outputs;
  if (outputs.empty()) {
    for (const LayerSpec& layer : graph_.layers) {
      for (const std::string& o : layer.outputs) {
        if (!consumed.count(o)) outputs.push_back(o);
      }
    }
  }
  for (const std::string& name : outputs) set_value_info(out_->add_output(), name, shapes.at(name));
  opset->set_version(opset_);
  return model;
}

}  // namespace

void export_onnx(const Graph& graph, const std::string& path) {
  const onnx::ModelProto model = Exporter(graph).run();
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file || !model.SerializeToOstream(&file)) throw FileError(path + ": cannot write the ONNX model");
}

}  // namespace espresso
