// Graph → ONNX (IR 7, opset 13). Each espresso layer becomes one ONNX
// node or a short, exact chain. Control flow (If, Loop, Scan) becomes ONNX nodes with graph attributes; a
// subgraph's captured inputs turn back into ONNX's implicit references to the graph around it
// (docs/control_flow.md, "Writing ONNX").
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "espresso/errors.h"
#include "espresso/onnx.h"
#include "import/onnx/onnx.pb.h"
#include "layers/registry.h"

namespace espresso {
namespace {

using Dims = std::vector<std::int64_t>;
using TP = onnx::TensorProto;

// Shapes of a graph's values, and which of them may take other shapes at run time (they follow from
// values: a Loop's scan outputs, a DynamicSlice, an If whose branches disagree, and what is computed
// from them).
struct Flow {
  std::map<std::string, Shape> shapes;
  std::set<std::string> dynamic;
  bool is_dynamic(const std::string& name) const { return dynamic.count(name) != 0; }
};

// A subgraph input as ONNX sees it: a formal input of the GraphProto of this element type, or (`outer`
// given) a value of the graphs around it, which ONNX nodes reference by name.
struct Binding {
  std::string outer;
  int type = TP::FLOAT;
};

class Exporter {
 public:
  explicit Exporter(const Graph& graph) : graph_(graph) {}
  onnx::ModelProto run();

 private:
  // Names of the values of the graph being written: espresso's name → the ONNX name (prefixed inside
  // subgraphs, so that no name repeats one of a graph around it, as ONNX requires).
  struct Scope {
    std::string prefix;
    std::map<std::string, std::string> names;
  };

  [[noreturn]] void unsupported(const LayerSpec& layer, const std::string& what) const {
    throw UnsupportedError("ONNX export: " + where_ + "layer '" + original_name(layer) + "' (" + layer.type +
                           "): " + what);
  }
  std::string original_name(const LayerSpec& layer) const {
    return layer.name.size() >= prefix_.size() && layer.name.compare(0, prefix_.size(), prefix_) == 0
               ? layer.name.substr(prefix_.size())
               : layer.name;
  }
  onnx::NodeProto& node(const LayerSpec& layer, const std::string& op, std::vector<std::string> inputs,
                        std::vector<std::string> outputs, const std::string& suffix = "");
  std::string initializer(const std::string& name, const Shape& shape, const std::vector<float>& values);
  std::string int_initializer(const std::string& name, const Dims& values);
  std::string temp(const LayerSpec& layer, const std::string& what) { return layer.name + "/" + what; }
  // `value` as ONNX element type `type`: itself where it has that type, else a Cast named layer/what.
  std::string typed(const std::string& value, int type, const LayerSpec& layer, const std::string& what);
  // `value` (of one element, shape `shape`) as a scalar: itself, or a Reshape named layer/what.
  std::string scalar(const std::string& value, const Shape& shape, const LayerSpec& layer, const std::string& what);
  void convert(const LayerSpec& layer, const std::vector<Shape>& in, const std::vector<Shape>& out);
  void pooling(const LayerSpec& layer, const Shape& in, const Shape& out);
  void inner_product(const LayerSpec& layer, const Shape& in);
  void activation(const LayerSpec& layer);
  void recurrent(const LayerSpec& layer);

  // Control flow. `layer` is renamed for this scope; `original` is the spec with its subgraphs.
  Flow analyze(const Graph& graph, const std::vector<bool>& dynamic_inputs) const;
  std::vector<bool> loop_carried_dynamic(const LayerSpec& loop, const std::vector<bool>& dynamic_inputs) const;
  void write_layers(const Graph& graph, const Flow& flow, Scope& scope);
  void write_subgraph(const LayerSpec& layer, const LayerSpec& original, const std::string& role,
                      onnx::GraphProto* proto, const std::vector<Binding>& inputs,
                      const std::vector<bool>& dynamic_inputs, const std::vector<int>& output_types);
  void control_flow(const LayerSpec& layer, const LayerSpec& original, const std::vector<Shape>& in,
                    const std::vector<Shape>& out, const std::vector<bool>& dynamic_inputs);
  void batched_scan(const LayerSpec& layer, const LayerSpec& original, const std::vector<Shape>& in,
                    const std::vector<Shape>& out, const std::vector<bool>& dynamic_inputs);

  const Graph& graph_;
  onnx::GraphProto* out_ = nullptr;  // the graph nodes go into (a subgraph's while it is written)
  std::string where_;                // "layer 'l' (If) subgraph 'then_branch': " inside subgraphs
  std::string prefix_;               // the prefix of names in the graph being written
  bool dynamic_input_ = false;       // an input of the layer being converted may change shape at run time
  std::map<std::string, int> types_;  // ONNX values that are not FLOAT, by name
  mutable std::map<std::pair<const Graph*, std::vector<bool>>, Flow> flows_;  // analyze()'s results
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

// A value's type and shape; where the shape changes at run time (`fixed` false), only its rank, with
// dimensions of no fixed size.
void set_value_info(onnx::ValueInfoProto* info, const std::string& name, const Shape& shape, int type = TP::FLOAT,
                    bool fixed = true) {
  info->set_name(name);
  auto* tensor = info->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(type);
  auto* dims = tensor->mutable_shape();
  for (std::int64_t d : shape.dims()) {
    auto* dim = dims->add_dim();
    if (fixed) dim->set_dim_value(d);
  }
}

void set_graph_attr(onnx::NodeProto& n, const std::string& name, onnx::GraphProto** graph) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::GRAPH);
  *graph = a->mutable_g();
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

std::string Exporter::typed(const std::string& value, int type, const LayerSpec& layer, const std::string& what) {
  auto known = types_.find(value);
  if ((known == types_.end() ? static_cast<int>(TP::FLOAT) : known->second) == type) return value;
  const std::string cast = temp(layer, what);
  set_attr(node(layer, "Cast", {value}, {cast}, what), "to", std::int64_t{type});
  types_[cast] = type;
  return cast;
}

std::string Exporter::scalar(const std::string& value, const Shape& shape, const LayerSpec& layer,
                             const std::string& what) {
  if (shape.rank() == 0) return value;
  const std::string result = temp(layer, what);
  node(layer, "Reshape", {value, int_initializer(temp(layer, what + "_shape"), {})}, {result}, what);
  if (auto known = types_.find(value); known != types_.end()) types_[result] = known->second;
  return result;
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
    if (dynamic_input_) unsupported(layer, "its input changes shape at run time, and its ONNX padding follows from the shape");
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
    if (dynamic_input_) unsupported(layer, "its input changes shape at run time, and its ONNX form holds the output shape");
    node(layer, "Reshape", {x, int_initializer(temp(layer, "shape"), out[0].dims())}, {y});
  } else if (t == "Concat") {
    std::vector<std::string> inputs(layer.inputs);
    set_attr(node(layer, "Concat", inputs, {y}), "axis",
             static_cast<std::int64_t>(in[0].canonical_axis(static_cast<int>(a.get_int("axis", 1)))));
  } else if (t == "Slice") {
    if (dynamic_input_) unsupported(layer, "its input changes shape at run time, and its ONNX form holds the sizes");
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
  } else if (t == "DynamicSlice") {
    std::vector<std::string> inputs{x, typed(layer.inputs.at(1), TP::INT64, layer, "starts"),
                                    typed(layer.inputs.at(2), TP::INT64, layer, "ends")};
    if (a.has("axes") || a.has("steps"))
      inputs.push_back(a.has("axes") ? int_initializer(temp(layer, "axes"), a.get_ints("axes", {})) : "");
    if (a.has("steps")) inputs.push_back(int_initializer(temp(layer, "steps"), a.get_ints("steps", {})));
    node(layer, "Slice", inputs, {y});
  } else {
    unsupported(layer, "no ONNX equivalent");
  }
}

// LSTM, GRU, RNN: one node with espresso's attributes (the layer's tensors are ONNX's: gates i, o, f, c
// and z, r, h, W, R and B per direction); sequence lengths become int32 through a Cast. Batch-first layers
// (layout 1) are written in layout 0 between Transposes: ONNX Runtime's CPU kernels refuse layout 1, and
// opset 13 has no layout.
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
  const bool batch_first = a.get_int("layout", 0) != 0;
  auto transposed = [&](const std::string& value, const Dims& perm, const std::string& what) {
    const std::string result = temp(layer, what);
    set_attr(node(layer, "Transpose", {value}, {result}, what), "perm", perm);
    return result;
  };
  std::vector<std::string> inputs{batch_first ? transposed(layer.inputs.at(0), {1, 0, 2}, "X_sequence_first")
                                              : layer.inputs.at(0),
                                  weight(0, "W"), weight(1, "R")};
  inputs.push_back(a.get_int("bias", 1) != 0 ? weight(next_weight++, "B") : "");
  if (a.get_int("sequence_lens", 0) != 0) {
    // A graph input of lengths is declared int32, as ONNX wants it (run()); other values are cast.
    inputs.push_back(typed(layer.inputs.at(next_input++), TP::INT32, layer, "sequence_lens"));
  } else {
    inputs.push_back("");
  }
  const bool initial = a.get_int("initial_state", 0) != 0;
  auto state = [&](const std::string& what) {  // (batch, directions, hidden) → (directions, batch, hidden)
    const std::string& given = layer.inputs.at(next_input++);
    return batch_first ? transposed(given, {1, 0, 2}, what + "_directions_first") : given;
  };
  inputs.push_back(initial ? state("initial_h") : "");
  if (lstm) {
    inputs.push_back(initial ? state("initial_c") : "");
    inputs.push_back(a.get_int("peepholes", 0) != 0 ? weight(next_weight, "P") : "");
  }
  while (!inputs.empty() && inputs.back().empty()) inputs.pop_back();
  std::vector<std::string> outputs = layer.outputs;
  if (batch_first)
    for (std::size_t k = 0; k < outputs.size(); ++k) outputs[k] = temp(layer, "output" + std::to_string(k) + "_sequence_first");
  auto& n = node(layer, layer.type, inputs, outputs);
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
  // Y (sequence, directions, batch, hidden) → (batch, sequence, directions, hidden); Y_h and Y_c
  // (directions, batch, hidden) → (batch, directions, hidden).
  for (std::size_t k = 0; batch_first && k < outputs.size(); ++k) {
    set_attr(node(layer, "Transpose", {outputs[k]}, {layer.outputs[k]}, "output" + std::to_string(k) + "_batch_first"),
             "perm", k == 0 ? Dims{2, 0, 1, 3} : Dims{1, 0, 2});
  }
}

// ---- control flow ------------------------------------------------------------------------------

const Graph& subgraph_of(const LayerSpec& layer, const std::string& role) {
  const Subgraph* found = layer.find_subgraph(role);
  if (found == nullptr) throw ModelError("ONNX export: layer '" + layer.name + "' (" + layer.type + ") has no " + role);
  return found->graph;
}

std::size_t attr_count(const LayerSpec& layer, const std::string& name, std::int64_t fallback) {
  return static_cast<std::size_t>(std::max<std::int64_t>(layer.attrs.get_int(name, fallback), 0));
}

// The ONNX element type input `i` of `layer` takes: a condition is BOOL, a trip count INT64, sequence
// lengths INT32; everything else FLOAT.
int slot_type(const LayerSpec& layer, std::size_t i) {
  const Attributes& a = layer.attrs;
  if (layer.type == "If" && i == 0) return TP::BOOL;
  if (layer.type == "Loop") {
    const bool trip = a.get_int("has_trip_count", 1) != 0, condition = a.get_int("has_condition", 1) != 0;
    if (trip && i == 0) return TP::INT64;
    if (condition && i == (trip ? 1u : 0u)) return TP::BOOL;
  }
  if ((layer.type == "LSTM" || layer.type == "GRU" || layer.type == "RNN") && a.get_int("sequence_lens", 0) != 0 &&
      i == 1)
    return TP::INT32;
  return TP::FLOAT;
}

Flow Exporter::analyze(const Graph& graph, const std::vector<bool>& dynamic_inputs) const {
  // Subgraphs are analysed from each graph around them, and a Loop body until its carried values settle:
  // remembered, so that deep nesting costs no more than once per graph.
  const auto key = std::make_pair(&graph, dynamic_inputs);
  if (auto known = flows_.find(key); known != flows_.end()) return known->second;
  Flow flow;
  for (std::size_t i = 0; i < graph.inputs.size(); ++i) {
    flow.shapes[graph.inputs[i].name] = graph.inputs[i].shape;
    if (i < dynamic_inputs.size() && dynamic_inputs[i]) flow.dynamic.insert(graph.inputs[i].name);
  }
  for (const LayerSpec& layer : graph.layers) {
    std::vector<Shape> in;
    std::vector<bool> dynamic_in;
    bool any = false;
    for (const std::string& name : layer.inputs) {
      in.push_back(flow.shapes.at(name));
      dynamic_in.push_back(flow.is_dynamic(name));
      any = any || dynamic_in.back();
    }
    std::vector<Shape> out;
    try {
      out = create_layer(layer)->output_shapes(in);
    } catch (const Error& e) {
      throw ModelError("ONNX export: " + where_ + e.what());
    }
    std::vector<bool> dynamic(out.size(), any);
    if (layer.type == "DynamicSlice") {
      dynamic.assign(out.size(), true);
    } else if (layer.type == "If") {
      // The condition's shape does not matter; what the branches make of the captured values does.
      const std::vector<bool> captured(dynamic_in.begin() + 1, dynamic_in.end());
      const Graph &then_graph = subgraph_of(layer, "then_branch"), &else_graph = subgraph_of(layer, "else_branch");
      const Flow then_flow = analyze(then_graph, captured), else_flow = analyze(else_graph, captured);
      for (std::size_t k = 0; k < out.size(); ++k) {
        const std::string &a = then_graph.outputs.at(k), &b = else_graph.outputs.at(k);
        dynamic[k] = then_flow.is_dynamic(a) || else_flow.is_dynamic(b) || then_flow.shapes.at(a) != else_flow.shapes.at(b);
      }
    } else if (layer.type == "Loop") {
      const std::vector<bool> carried = loop_carried_dynamic(layer, dynamic_in);
      for (std::size_t k = 0; k < out.size(); ++k) dynamic[k] = k < carried.size() ? carried[k] : true;  // scans grow
    } else if (layer.type == "Scan") {
      const Graph& body = subgraph_of(layer, "body");
      const std::size_t states = attr_count(layer, "states", 0);
      const Flow body_flow = analyze(body, dynamic_in);
      for (std::size_t k = 0; k < out.size(); ++k) {
        const std::string& o = body.outputs.at(k);
        dynamic[k] = any || body_flow.is_dynamic(o) || (k < states && body_flow.shapes.at(o) != body.inputs.at(k).shape);
      }
    }
    for (std::size_t k = 0; k < out.size() && k < layer.outputs.size(); ++k) {
      flow.shapes[layer.outputs[k]] = out[k];
      if (dynamic[k]) flow.dynamic.insert(layer.outputs[k]);
    }
  }
  flows_.emplace(key, flow);
  return flow;
}

// Which carried values of a Loop may change shape from one iteration to the next: those that come in so,
// and those the body gives back in another shape (or one that changes), until nothing more changes.
std::vector<bool> Exporter::loop_carried_dynamic(const LayerSpec& loop, const std::vector<bool>& dynamic_inputs) const {
  const std::size_t prefix = (loop.attrs.get_int("has_trip_count", 1) != 0 ? 1u : 0u) +
                             (loop.attrs.get_int("has_condition", 1) != 0 ? 1u : 0u);
  const std::size_t carried = attr_count(loop, "carried", 0);
  const Graph& body = subgraph_of(loop, "body");
  std::vector<bool> body_dynamic{false, false};
  body_dynamic.insert(body_dynamic.end(), dynamic_inputs.begin() + static_cast<std::ptrdiff_t>(prefix),
                      dynamic_inputs.end());
  for (bool changed = true; changed;) {
    changed = false;
    const Flow flow = analyze(body, body_dynamic);
    for (std::size_t k = 0; k < carried; ++k) {
      const std::string& o = body.outputs.at(1 + k);
      if (!body_dynamic[2 + k] && (flow.is_dynamic(o) || flow.shapes.at(o) != body.inputs.at(2 + k).shape)) {
        body_dynamic[2 + k] = true;
        changed = true;
      }
    }
  }
  return {body_dynamic.begin() + 2, body_dynamic.begin() + 2 + static_cast<std::ptrdiff_t>(carried)};
}

void Exporter::write_layers(const Graph& graph, const Flow& flow, Scope& scope) {
  prefix_ = scope.prefix;
  for (const LayerSpec& layer : graph.layers) {
    LayerSpec renamed;
    renamed.name = scope.prefix + layer.name;
    renamed.type = layer.type;
    renamed.attrs = layer.attrs;
    renamed.weights = layer.weights;
    std::vector<Shape> in, out;
    std::vector<bool> dynamic;
    for (const std::string& name : layer.inputs) {
      renamed.inputs.push_back(scope.names.at(name));
      in.push_back(flow.shapes.at(name));
      dynamic.push_back(flow.is_dynamic(name));
    }
    for (const std::string& name : layer.outputs) {
      scope.names[name] = scope.prefix + name;
      renamed.outputs.push_back(scope.prefix + name);
      auto shape = flow.shapes.find(name);
      if (shape != flow.shapes.end()) out.push_back(shape->second);
    }
    dynamic_input_ = std::find(dynamic.begin(), dynamic.end(), true) != dynamic.end();
    if (layer.type == "If" || layer.type == "Loop" || layer.type == "Scan") {
      control_flow(renamed, layer, in, out, dynamic);
    } else {
      convert(renamed, in, out);
    }
  }
}

void Exporter::write_subgraph(const LayerSpec& layer, const LayerSpec& original, const std::string& role,
                              onnx::GraphProto* proto, const std::vector<Binding>& inputs,
                              const std::vector<bool>& dynamic_inputs, const std::vector<int>& output_types) {
  const Graph& graph = subgraph_of(original, role);
  onnx::GraphProto* const outer = out_;
  const std::string outer_where = where_, outer_prefix = prefix_;
  where_ += "layer '" + original.name + "' (" + original.type + ") subgraph '" + role + "': ";
  out_ = proto;
  proto->set_name(graph.name.empty() ? role : graph.name);
  Scope scope{layer.name + "/" + role + "/", {}};
  const Flow flow = analyze(graph, dynamic_inputs);
  for (std::size_t k = 0; k < graph.inputs.size(); ++k) {
    const InputSpec& input = graph.inputs[k];
    const Binding& binding = inputs.at(k);
    if (!binding.outer.empty()) {  // a captured value: ONNX reads it from the graph around
      scope.names[input.name] = binding.outer;
      continue;
    }
    const std::string formal = scope.prefix + input.name;
    // The iteration number and the condition are scalars.
    set_value_info(proto->add_input(), formal, binding.type == TP::FLOAT ? input.shape : Shape{}, binding.type,
                   !dynamic_inputs.at(k));
    if (binding.type != TP::FLOAT) types_[formal] = binding.type;
    LayerSpec cast;
    cast.name = formal;
    scope.names[input.name] = typed(formal, TP::FLOAT, cast, "float");
  }
  write_layers(graph, flow, scope);
  // ONNX wants each output made by a node of this graph: values from outside, formal inputs and
  // initializers pass through an Identity, as does an output given twice; a condition is cast to BOOL.
  std::set<std::string> produced, given;
  for (const onnx::NodeProto& n : proto->node())
    for (const std::string& o : n.output()) produced.insert(o);
  for (std::size_t k = 0; k < graph.outputs.size(); ++k) {
    const std::string& name = graph.outputs[k];
    const int type = output_types.at(k);
    std::string value = scope.names.at(name);
    const std::string port = scope.prefix + "output:" + std::to_string(k);
    if (type != TP::FLOAT) {  // a Loop body's condition: a scalar in ONNX, as the one it takes
      LayerSpec reshape;
      reshape.name = port;
      value = scalar(value, flow.shapes.at(name), reshape, "scalar");
    }
    auto known = types_.find(value);
    const int has = known == types_.end() ? static_cast<int>(TP::FLOAT) : known->second;
    if (has != type || !produced.count(value) || given.count(value)) {
      onnx::NodeProto* n = proto->add_node();
      n->set_name(port);
      n->set_op_type(has != type ? "Cast" : "Identity");
      n->add_input(value);
      n->add_output(port);
      if (has != type) set_attr(*n, "to", std::int64_t{type});
      value = port;
    }
    given.insert(value);
    set_value_info(proto->add_output(), value, type == TP::FLOAT ? flow.shapes.at(name) : Shape{}, type,
                   !flow.is_dynamic(name));
  }
  out_ = outer;
  where_ = outer_where;
  prefix_ = outer_prefix;
}

void Exporter::control_flow(const LayerSpec& layer, const LayerSpec& original, const std::vector<Shape>& in,
                            const std::vector<Shape>& out, const std::vector<bool>& dynamic_inputs) {
  const Attributes& a = layer.attrs;
  const std::vector<int> floats(layer.outputs.size(), TP::FLOAT);
  onnx::GraphProto* body = nullptr;
  if (layer.type == "If") {
    // Both branches read the captured values (inputs 1...) from the graph around them.
    auto& n = node(layer, "If", {typed(layer.inputs.at(0), TP::BOOL, layer, "condition")}, layer.outputs);
    std::vector<Binding> captured;
    for (std::size_t i = 1; i < layer.inputs.size(); ++i) captured.push_back({layer.inputs[i]});
    const std::vector<bool> dynamic(dynamic_inputs.begin() + 1, dynamic_inputs.end());
    for (const char* role : {"then_branch", "else_branch"}) {
      set_graph_attr(n, role, &body);
      write_subgraph(layer, original, role, body, captured, dynamic, floats);
    }
  } else if (layer.type == "Loop") {
    // ONNX's body takes (iteration INT64, condition BOOL, carried...) and gives (condition BOOL, carried...,
    // scans...), as ours; our captured inputs become references to the graph around.
    const bool trip = a.get_int("has_trip_count", 1) != 0, condition = a.get_int("has_condition", 1) != 0;
    const std::size_t prefix = (trip ? 1u : 0u) + (condition ? 1u : 0u), carried = attr_count(layer, "carried", 0);
    // The body takes the condition as a scalar (ONNX passes the shape of the first one in).
    std::vector<std::string> inputs{
        trip ? typed(layer.inputs.at(0), TP::INT64, layer, "trip_count") : "",
        condition ? scalar(typed(layer.inputs.at(prefix - 1), TP::BOOL, layer, "condition"), in.at(prefix - 1), layer,
                           "condition_scalar")
                  : ""};
    for (std::size_t k = 0; k < carried; ++k) inputs.push_back(layer.inputs.at(prefix + k));
    auto& n = node(layer, "Loop", inputs, layer.outputs);
    std::vector<Binding> bindings{{"", TP::INT64}, {"", TP::BOOL}};
    std::vector<bool> dynamic{false, false};
    const std::vector<bool> carried_dynamic = loop_carried_dynamic(original, dynamic_inputs);
    dynamic.insert(dynamic.end(), carried_dynamic.begin(), carried_dynamic.end());
    for (std::size_t i = prefix; i < layer.inputs.size(); ++i) {
      bindings.push_back(i < prefix + carried ? Binding{} : Binding{layer.inputs[i]});
      if (i >= prefix + carried) dynamic.push_back(dynamic_inputs[i]);
    }
    std::vector<int> types{TP::BOOL};
    types.insert(types.end(), floats.begin(), floats.end());
    set_graph_attr(n, "body", &body);
    write_subgraph(layer, original, "body", body, bindings, dynamic, types);
  } else if (a.get_int("batched", 0) != 0) {
    batched_scan(layer, original, in, out, dynamic_inputs);
  } else {
    const std::size_t scanned = attr_count(layer, "states", 0) + attr_count(layer, "num_scan_inputs", 1);
    auto& n = node(layer, "Scan",
                   std::vector<std::string>(layer.inputs.begin(),
                                            layer.inputs.begin() + static_cast<std::ptrdiff_t>(scanned)),
                   layer.outputs);
    set_attr(n, "num_scan_inputs", a.get_int("num_scan_inputs", 1));
    for (const char* name : {"scan_input_axes", "scan_input_directions", "scan_output_axes", "scan_output_directions"})
      if (a.has(name)) set_attr(n, name, a.get_ints(name, {}));
    std::vector<Binding> bindings(scanned);
    for (std::size_t i = scanned; i < layer.inputs.size(); ++i) bindings.push_back({layer.inputs[i]});
    set_graph_attr(n, "body", &body);
    write_subgraph(layer, original, "body", body, bindings, dynamic_inputs, floats);
  }
}

// A batched Scan (ONNX Scan-8: states and scan inputs with a batch axis 0) in opset 13, which scans one item:
// a Loop over the batch takes item b of each input (Gather), runs the Scan on it, and stacks the
// results along a new axis 0, which is Scan-8's batch axis.
void Exporter::batched_scan(const LayerSpec& layer, const LayerSpec& original, const std::vector<Shape>& in,
                            const std::vector<Shape>& out, const std::vector<bool>& dynamic_inputs) {
  const Attributes& a = layer.attrs;
  const std::size_t scanned = attr_count(layer, "states", 0) + attr_count(layer, "num_scan_inputs", 1);
  for (std::size_t i = 0; i < scanned; ++i)
    if (dynamic_inputs.at(i)) unsupported(layer, "a batched Scan whose inputs change shape at run time");
  TP* batch = out_->add_initializer();
  batch->set_name(temp(layer, "batch"));
  batch->set_data_type(TP::INT64);
  batch->add_int64_data(in.at(0)[0]);
  auto& loop = node(layer, "Loop", {batch->name(), ""}, layer.outputs);
  onnx::GraphProto* body = nullptr;
  set_graph_attr(loop, "body", &body);

  onnx::GraphProto* const outer = out_;
  out_ = body;
  LayerSpec items;
  items.name = layer.name + "/items";
  items.type = layer.type;
  body->set_name(items.name);
  const std::string iteration = items.name + "/iteration", condition = items.name + "/condition";
  set_value_info(body->add_input(), iteration, Shape{}, TP::INT64);
  set_value_info(body->add_input(), condition, Shape{}, TP::BOOL);
  std::vector<std::string> item_inputs, item_outputs;
  for (std::size_t i = 0; i < scanned; ++i) {
    const std::string item = items.name + "/item" + std::to_string(i);
    set_attr(node(items, "Gather", {layer.inputs[i], iteration}, {item}, "gather" + std::to_string(i)), "axis",
             std::int64_t{0});
    item_inputs.push_back(item);
  }
  for (std::size_t k = 0; k < layer.outputs.size(); ++k) item_outputs.push_back(items.name + "/result" + std::to_string(k));
  auto& scan = node(items, "Scan", item_inputs, item_outputs);
  set_attr(scan, "num_scan_inputs", a.get_int("num_scan_inputs", 1));
  for (const char* name : {"scan_input_axes", "scan_input_directions", "scan_output_axes", "scan_output_directions"})
    if (a.has(name)) set_attr(scan, name, a.get_ints(name, {}));
  std::vector<Binding> bindings(scanned);
  for (std::size_t i = scanned; i < layer.inputs.size(); ++i) bindings.push_back({layer.inputs[i]});
  onnx::GraphProto* scan_body = nullptr;
  set_graph_attr(scan, "body", &scan_body);
  write_subgraph(items, original, "body", scan_body, bindings, dynamic_inputs,
                 std::vector<int>(layer.outputs.size(), TP::FLOAT));
  const std::string condition_out = items.name + "/condition_out";
  node(items, "Identity", {condition}, {condition_out}, "condition");
  set_value_info(body->add_output(), condition_out, Shape{}, TP::BOOL);
  for (std::size_t k = 0; k < item_outputs.size(); ++k) {
    const Dims dims = out.at(k).dims();
    set_value_info(body->add_output(), item_outputs[k], Shape(dims.empty() ? Dims{} : Dims(dims.begin() + 1, dims.end())));
  }
  out_ = outer;
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
  const Flow flow = analyze(graph_, {});
  std::vector<std::string> outputs = graph_.outputs;
  if (outputs.empty()) {
    std::set<std::string> consumed;
    for (const LayerSpec& layer : graph_.layers) consumed.insert(layer.inputs.begin(), layer.inputs.end());
    for (const LayerSpec& layer : graph_.layers) {
      for (const std::string& o : layer.outputs) {
        if (!consumed.count(o)) outputs.push_back(o);
      }
    }
  }
  // A graph input that only conditions, trip counts or sequence lengths read gets ONNX's type for them.
  std::map<std::string, std::set<int>> uses;
  for (const LayerSpec& layer : graph_.layers)
    for (std::size_t i = 0; i < layer.inputs.size(); ++i) uses[layer.inputs[i]].insert(slot_type(layer, i));
  for (const std::string& name : outputs) uses[name].insert(TP::FLOAT);
  Scope scope;
  for (const InputSpec& input : graph_.inputs) {
    const std::set<int>& types = uses[input.name];
    const int type = types.size() == 1 ? *types.begin() : static_cast<int>(TP::FLOAT);
    if (type != TP::FLOAT) types_[input.name] = type;
    set_value_info(out_->add_input(), input.name, input.shape, type);
    scope.names[input.name] = input.name;
  }
  write_layers(graph_, flow, scope);
  for (const std::string& name : outputs)
    set_value_info(out_->add_output(), name, flow.shapes.at(name), TP::FLOAT, !flow.is_dynamic(name));
  return model;
}

}  // namespace

void export_onnx(const Graph& graph, const std::string& path) {
  const onnx::ModelProto model = Exporter(graph).run();
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file || !model.SerializeToOstream(&file)) throw FileError(path + ": cannot write the ONNX model");
}

}  // namespace espresso
