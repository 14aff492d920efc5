// ONNX → Graph. Nodes are mapped onto espresso's layer types (docs/layers.md, docs/onnx.md);
// whatever can be computed at load time (constants, shape arithmetic) is folded into constants.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <numeric>
#include <set>

#include "data/proto_parse.h"
#include "espresso/errors.h"
#include "espresso/limits.h"
#include "espresso/onnx.h"
#include "import/onnx/onnx_tensor.h"
#include "layers/activation.h"
#include "layers/control_flow.h"
#include "layers/quantize.h"
#include "layers/registry.h"

namespace espresso {
namespace {

using onnx_detail::Value;
using TP = onnx::TensorProto;
using Dims = std::vector<std::int64_t>;

class Importer;

// One node being converted, with checked access to its attributes and inputs.
struct Node {
  const onnx::NodeProto& proto;
  std::string name;
  std::map<std::string, const onnx::AttributeProto*> attrs;

  const std::string& op() const { return proto.op_type(); }
  bool has(const std::string& attr) const { return attrs.count(attr) != 0; }
  bool has_input(int i) const { return i < proto.input_size() && !proto.input(i).empty(); }
  // "" past the node's inputs, as for an omitted optional input (protobuf aborts on an index past the end).
  const std::string& input(int i) const {
    static const std::string none;
    return i >= 0 && i < proto.input_size() ? proto.input(i) : none;
  }
  int outputs() const {
    int n = 0;
    for (int i = 0; i < proto.output_size(); ++i) n = proto.output(i).empty() ? n : i + 1;
    return n;
  }
};

onnx::AttributeProto onnx_attribute(const std::string& name, std::int64_t value) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(value);
  return a;
}

onnx::AttributeProto onnx_attribute(const std::string& name, double value) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::FLOAT);
  a.set_f(static_cast<float>(value));
  return a;
}

class Importer {
 public:
  // `path` names the model in messages; `dir` is the folder external data may come from (empty: the
  // model came from memory and may have none).
  Importer(std::string path, std::string dir, OnnxImportOptions options)
      : path_(std::move(path)), dir_(std::move(dir)), options_(std::move(options)) {}
  // The importer of a subgraph of `parent`'s node: outer names resolve through the parent.
  Importer(Importer& parent, const Node& owner)
      : path_(parent.path_), dir_(parent.dir_), opset_(parent.opset_), parent_(&parent), owner_(&owner),
        depth_(parent.depth_ + 1) {
    options_.dims = parent.options_.dims;
    options_.default_dim = parent.options_.default_dim;
  }
  Graph run(const std::string& bytes);
  static std::vector<std::string> supported() {
    std::vector<std::string> ops;
    for (const auto& entry : handlers()) ops.push_back(entry.first);
    for (const auto& entry : microsoft_handlers()) ops.push_back("com.microsoft." + entry.first);
    return ops;
  }

 private:
  using Handler = void (Importer::*)(const Node&);
  static const std::map<std::string, Handler>& handlers();
  // The operators of ONNX Runtime's contrib domain we import (its quantizer's QOperator format).
  static const std::map<std::string, Handler>& microsoft_handlers();
  // The node's handler by its domain, or nullptr.
  static Handler handler_for(const onnx::NodeProto& node);

  // Messages and errors.
  std::string where(const Node& n) const { return scope() + "node '" + n.name + "' (" + n.op() + ")"; }
  // "model.onnx: " or, inside a subgraph, "model.onnx: node 'loop' (Loop) subgraph: ".
  std::string scope() const { return parent_ ? parent_->where(*owner_) + " subgraph: " : path_ + ": "; }
  [[noreturn]] void unsupported(const Node& n, const std::string& what) const {
    throw UnsupportedError(where(n) + ": " + what);
  }
  [[noreturn]] void invalid(const Node& n, const std::string& what) const {
    throw ModelError(where(n) + ": " + what);
  }

  // Attributes.
  const onnx::AttributeProto* attr(const Node& n, const std::string& name,
                                   onnx::AttributeProto::AttributeType type) const;
  std::int64_t attr_int(const Node& n, const std::string& name, std::int64_t fallback) const;
  double attr_float(const Node& n, const std::string& name, double fallback) const;
  std::string attr_string(const Node& n, const std::string& name, const std::string& fallback) const;
  Dims attr_ints(const Node& n, const std::string& name, const Dims& fallback) const;
  std::vector<double> attr_floats(const Node& n, const std::string& name) const;

  // Tensors: ONNX names resolve to constants or to graph tensors.
  std::string resolve(const std::string& name) const {
    auto it = aliases_.find(name);
    return it == aliases_.end() ? name : it->second;
  }
  bool is_constant(const std::string& name) const { return constants_.count(resolve(name)) != 0; }
  bool is_constant(const Node& n, int i) const { return n.has_input(i) && is_constant(n.input(i)); }
  const Value& constant(const Node& n, int i);
  Dims constant_ints(const Node& n, int i);
  // The graph tensor for an input, emitting a Constant layer for a constant.
  std::string tensor(const Node& n, int i);
  std::string tensor_of(const std::string& name);
  Shape shape(const Node& n, int i) const;

  // Outputs.
  void set_constant(const Node& n, int output, Value value);
  void alias(const Node& n, int output, const std::string& graph_name) {
    if (output >= n.proto.output_size()) invalid(n, "has no output " + std::to_string(output));
    aliases_[n.proto.output(output)] = graph_name;
  }
  // Adds a layer and infers its output shapes. `outputs` default to the node's outputs; an empty
  // `suffix` marks the node's main layer, others are helpers named after the node.
  std::vector<std::string> emit(const Node& n, const std::string& type, std::vector<std::string> inputs,
                                Attributes attrs = {}, std::vector<Tensor> weights = {},
                                const std::string& suffix = "", int outputs = 1,
                                std::vector<Subgraph> subgraphs = {});
  std::string emit_reshape(const Node& n, const std::string& input, const Dims& target,
                           const std::string& suffix = "");
  std::string emit_constant(const std::string& name, const Value& value);
  // Evaluates a layer on constant inputs at load time.
  Value fold(const Node& n, const std::string& type, const std::vector<Value>& inputs, Attributes attrs = {});

  void declare_inputs(const onnx::GraphProto& graph, const std::set<std::string>& initializers);
  void check_supported(const onnx::GraphProto& graph) const;
  void import_nodes(const onnx::GraphProto& graph);
  void import_node(const onnx::NodeProto& proto);
  // Imports the standard-domain node `op` made for `from` (named from.name/suffix, with `attrs`) as if the
  // model held it; `opset` (when > 0) is the operator set its meaning follows.
  void import_standard(const Node& from, const std::string& op, const std::string& suffix,
                       const std::vector<std::string>& inputs, const std::vector<std::string>& outputs,
                       std::vector<onnx::AttributeProto> attrs = {}, int opset = 0);

  // Control flow (docs/control_flow.md). A subgraph's free names become inputs of its Graph, fed from
  // the outer graph's tensors (`captures_`: outer tensor, subgraph input); outer constants are copied in.
  bool capture(const std::string& name);
  Graph import_subgraph(const onnx::GraphProto& graph, const std::vector<Shape>& input_shapes);
  const onnx::GraphProto& graph_attr(const Node& n, const std::string& name);
  // Imports subgraph `name` of `n` with these formal input shapes; its captures go after `inputs`.
  // `dynamic` tells which of its outputs have value-dependent shapes.
  Graph subgraph(const Node& n, const std::string& name, const std::vector<Shape>& input_shapes,
                 std::vector<std::pair<std::string, std::string>>& captures, std::vector<bool>& dynamic);
  void op_if(const Node& n);
  void op_compare(const Node& n);
  void op_loop(const Node& n);
  void op_scan(const Node& n);

  // Helpers shared by handlers.
  int rank_of(const Node& n, int i) const { return shape(n, i).rank(); }
  Dims spatial_pads(const Node& n, const Shape& in, const Dims& kernel, const Dims& strides,
                    const Dims& dilations);
  std::string pad_input(const Node& n, const std::string& input, int rank, const Dims& begin, const Dims& end,
                        double value);
  void elementwise(const Node& n, const std::string& op);
  void activation(const Node& n, const std::string& function, Attributes attrs);

  // Handlers, one per ONNX operator (or family).
  void op_constant(const Node& n);
  void op_identity(const Node& n);
  // Output 0 is input 0 itself (Identity, and ops that change nothing).
  void pass_through(const Node& n);
  void op_cast(const Node& n);
  void op_shape(const Node& n);
  void op_constant_of_shape(const Node& n);
  void op_gather(const Node& n);
  void op_concat(const Node& n);
  void op_squeeze(const Node& n);
  void op_unsqueeze(const Node& n);
  void op_reshape(const Node& n);
  void op_flatten(const Node& n);
  void op_transpose(const Node& n);
  void op_slice(const Node& n);
  void op_split(const Node& n);
  void op_conv(const Node& n);
  void op_conv_transpose(const Node& n);
  void op_pool(const Node& n);
  void op_global_pool(const Node& n);
  void op_relu(const Node& n);
  void op_leaky_relu(const Node& n);
  void op_prelu(const Node& n);
  void op_activation(const Node& n);
  void op_clip(const Node& n);
  void op_softmax(const Node& n);
  void op_gemm(const Node& n);
  void op_matmul(const Node& n);
  void op_binary(const Node& n);
  void op_variadic(const Node& n);
  void op_batch_norm(const Node& n);
  void op_lrn(const Node& n);
  void op_pad(const Node& n);
  void op_resize(const Node& n);
  void dilated_max_pool(const Node& n, const Shape& in, const Dims& kernel, const Dims& strides,
                        const Dims& dilations, const Dims& begin, const Dims& end);
  void op_reduce(const Node& n);
  void op_recurrent(const Node& n);
  void op_expand(const Node& n);
  // Quantized operators (docs/int8.md).
  void op_quantize(const Node& n);
  void op_dequantize(const Node& n);
  void op_dynamic_quantize(const Node& n);
  void op_qlinear_conv(const Node& n);
  void op_qlinear_matmul(const Node& n);
  void op_matmul_integer(const Node& n);
  // com.microsoft's QLinear* element-wise, pooling, reduction and Concat operators, and QGemm.
  void op_microsoft_qlinear(const Node& n);
  void op_qgemm(const Node& n);
  // DequantizeLinear of the (x, scale, zero point) inputs from index `x` on, per tensor (the contrib
  // operators' own rule; `axis` >= 0 lets the scale run along that axis): the float tensor's name.
  std::string dequantized_input(const Node& n, int x, std::int64_t axis = -1);
  // QuantizeLinear of `real` into the node's output with the scale and zero point at inputs `scale` and
  // scale + 1; without a zero point, 0 of `type` (the contrib operators keep their input's type).
  void quantized_output(const Node& n, const std::string& real, int scale, int type);
  // ModelError unless each of these constant inputs holds one value (a per-tensor scale or zero point).
  void require_one_value(const Node& n, std::initializer_list<int> inputs);
  // A name for a tensor made here, after n.name, that no tensor of the model has (`model_names_`) or had.
  std::string fresh_name(const Node& n, const std::string& suffix);
  // The element type of input i: a constant's, a graph input's, or `fallback` when unknown.
  int elem_type(const Node& n, int i, int fallback) const;
  // Checks constant scales (positive, finite) and zero points (inside `type`'s range), naming the field.
  void check_quant_constants(const Node& n, int scale, int zero_point, int type);
  std::string quant_type_name(const Node& n, int type) const;
  // Conv's geometry attributes; `input` becomes the (maybe padded, with `pad_value`) input tensor.
  Attributes conv_attrs(const Node& n, const Shape& in, const Value& w, std::string& input, double pad_value);
  // A Conv whose input is DequantizeLinear's output (per tensor) and whose weights are a dequantized
  // constant (per tensor or per output channel), as QDQ models write it: one QuantizedConvolution on
  // the quantized input. False when the pattern does not hold.
  bool qdq_conv(const Node& n);
  // DequantizeLinear of integers nothing else reads, with the constants they were made with: after a
  // QLinearConv (a QuantizedConvolution writing integers), or a QuantizeLinear of a QuantizedConvolution's
  // real output (as QDQ models end each convolution), that convolution dequantizes in its own last pass;
  // after another QuantizeLinear (around a QDQ model's other operators), that Quantize layer dequantizes
  // again in the same pass.
  void fold_output_requantization();

  std::string path_, dir_;
  OnnxImportOptions options_;
  std::int64_t opset_ = 1;
  Graph graph_;
  std::map<std::string, Value> constants_;
  std::map<std::string, Shape> shapes_;                   // graph tensors
  std::map<std::string, int> input_types_;                // graph inputs' element types
  std::map<std::string, std::string> aliases_;            // ONNX name → graph tensor or constant name
  std::map<std::string, std::string> emitted_constants_;  // constant name → graph tensor
  struct QuantizedConstant {  // a constant DequantizeLinear folded: its integers, scale, zero point
    Value q, scale, zero;
    std::int64_t axis = 1;
  };
  std::map<std::string, QuantizedConstant> dequantized_constants_;
  struct DequantizedTensor {  // DequantizeLinear of a graph tensor with per-tensor constants
    std::string quantized;
    double scale = 1, zero = 0;
    int type = TP::UINT8;
  };
  std::map<std::string, DequantizedTensor> dequantized_tensors_;
  struct QuantizedTensor {  // QuantizeLinear of a graph tensor with per-tensor constants
    std::string real;
    double scale = 1, zero = 0;
    int type = TP::UINT8;
  };
  std::map<std::string, QuantizedTensor> quantized_tensors_;
  // Every tensor name of the model's graphs met so far (node outputs), and those fresh_name made.
  std::set<std::string> model_names_;
  std::set<std::string> layer_names_;
  int unnamed_ = 0;
  Importer* parent_ = nullptr;     // for a subgraph: the importer of the graph around it
  const Node* owner_ = nullptr;    // and the node that holds it
  int depth_ = 0;                  // subgraph nesting
  std::vector<std::pair<std::string, std::string>> captures_;  // (outer tensor, input of this subgraph)
  std::set<std::string> dynamic_;  // tensors whose shapes depend on values (outputs of control flow)
};

// ---- attributes -------------------------------------------------------------------------------

const onnx::AttributeProto* Importer::attr(const Node& n, const std::string& name,
                                           onnx::AttributeProto::AttributeType type) const {
  auto it = n.attrs.find(name);
  if (it == n.attrs.end()) return nullptr;
  const onnx::AttributeProto& a = *it->second;
  // Old writers leave `type` unset; accept them when the expected field is present.
  if (a.has_type() && a.type() != type) {
    invalid(n, "attribute '" + name + "' should be " + onnx::AttributeProto::AttributeType_Name(type) +
                   ", is " + onnx::AttributeProto::AttributeType_Name(a.type()));
  }
  return &a;
}

std::int64_t Importer::attr_int(const Node& n, const std::string& name, std::int64_t fallback) const {
  const auto* a = attr(n, name, onnx::AttributeProto::INT);
  return a ? a->i() : fallback;
}

double Importer::attr_float(const Node& n, const std::string& name, double fallback) const {
  const auto* a = attr(n, name, onnx::AttributeProto::FLOAT);
  return a ? static_cast<double>(a->f()) : fallback;
}

std::string Importer::attr_string(const Node& n, const std::string& name, const std::string& fallback) const {
  const auto* a = attr(n, name, onnx::AttributeProto::STRING);
  return a ? a->s() : fallback;
}

Dims Importer::attr_ints(const Node& n, const std::string& name, const Dims& fallback) const {
  const auto* a = attr(n, name, onnx::AttributeProto::INTS);
  return a ? Dims(a->ints().begin(), a->ints().end()) : fallback;
}

std::vector<double> Importer::attr_floats(const Node& n, const std::string& name) const {
  const auto* a = attr(n, name, onnx::AttributeProto::FLOATS);
  return a ? std::vector<double>(a->floats().begin(), a->floats().end()) : std::vector<double>{};
}

// ---- tensors ----------------------------------------------------------------------------------

const Value& Importer::constant(const Node& n, int i) {
  if (n.has_input(i) && !is_constant(n, i)) {
    auto bound = options_.input_values.find(resolve(n.input(i)));
    if (bound != options_.input_values.end()) {
      Value value;
      value.type = input_types_.count(bound->first) ? input_types_.at(bound->first) : TP::FLOAT;
      value.shape = bound->second.shape();
      for (float v : bound->second.to_vector()) value.data.push_back(v);
      constants_[bound->first] = std::move(value);
    }
  }
  if (!is_constant(n, i))
    unsupported(n, "input " + std::to_string(i) + " ('" + (n.has_input(i) ? n.input(i) : "") +
                       "') must be a constant");
  return constants_.at(resolve(n.input(i)));
}

Dims Importer::constant_ints(const Node& n, int i) {
  const Value& v = constant(n, i);
  Dims out;
  for (double d : v.data) out.push_back(checked_integer(d, where(n) + ": input " + std::to_string(i)));
  return out;
}

std::string Importer::tensor_of(const std::string& onnx_name) {
  const std::string name = resolve(onnx_name);
  if (shapes_.count(name)) return name;  // a graph input bound as a load-time value stays an input
  if (auto c = constants_.find(name); c != constants_.end()) {
    auto it = emitted_constants_.find(name);
    if (it != emitted_constants_.end()) return it->second;
    return emitted_constants_[name] = emit_constant(name, c->second);
  }
  if (!shapes_.count(name)) {
    throw ModelError(path_ + ": tensor '" + onnx_name +
                     "' is not produced by any node, initializer or graph input");
  }
  return name;
}

std::string Importer::tensor(const Node& n, int i) {
  if (!n.has_input(i)) invalid(n, "input " + std::to_string(i) + " is missing");
  try {
    return tensor_of(n.input(i));
  } catch (const ModelError& e) {
    invalid(n, "input '" + n.input(i) + "' is not produced by any node, initializer or graph input");
  }
}

Shape Importer::shape(const Node& n, int i) const {
  if (!n.has_input(i)) invalid(n, "input " + std::to_string(i) + " is missing");
  const std::string name = resolve(n.input(i));
  if (auto c = constants_.find(name); c != constants_.end()) return c->second.shape;
  auto it = shapes_.find(name);
  if (it == shapes_.end())
    invalid(n, "input '" + n.input(i) + "' is not produced by any node, initializer or graph input");
  return it->second;
}

void Importer::set_constant(const Node& n, int output, Value value) {
  if (output >= n.proto.output_size() || n.proto.output(output).empty()) return;
  constants_[n.proto.output(output)] = std::move(value);
}

std::string Importer::emit_constant(const std::string& name, const Value& value) {
  LayerSpec spec;
  spec.name = name + "/constant";
  while (!layer_names_.insert(spec.name).second) spec.name += "_";
  spec.type = "Constant";
  spec.outputs = {name};
  spec.attrs.set("shape", value.shape.dims());
  spec.weights.push_back(value.to_tensor());
  shapes_[name] = value.shape;
  graph_.layers.push_back(std::move(spec));
  return name;
}

std::vector<std::string> Importer::emit(const Node& n, const std::string& type,
                                        std::vector<std::string> inputs, Attributes attrs,
                                        std::vector<Tensor> weights, const std::string& suffix, int outputs,
                                        std::vector<Subgraph> subgraphs) {
  LayerSpec spec;
  spec.name = suffix.empty() ? n.name : n.name + "/" + suffix;
  while (!layer_names_.insert(spec.name).second) spec.name += "_";
  spec.type = type;
  spec.inputs = std::move(inputs);
  spec.attrs = std::move(attrs);
  spec.weights = std::move(weights);
  spec.subgraphs = std::move(subgraphs);
  for (int i = 0; i < outputs; ++i) {
    const bool main = suffix.empty() && i < n.proto.output_size() && !n.proto.output(i).empty();
    spec.outputs.push_back(main ? n.proto.output(i) : spec.name + ":" + std::to_string(i));
  }
  std::vector<Shape> in_shapes;
  for (const std::string& input : spec.inputs) in_shapes.push_back(shapes_.at(input));
  std::vector<Shape> out_shapes;
  try {
    out_shapes = create_layer(spec)->output_shapes(in_shapes);
    for (const Shape& shape : out_shapes) checked_numel(shape.dims(), sizeof(float), "output shape");
  } catch (const LimitError& e) {
    throw LimitError(where(n) + ": " + e.what());
  } catch (const Error& e) {
    invalid(n, e.what());
  }
  for (std::size_t i = 0; i < spec.outputs.size() && i < out_shapes.size(); ++i)
    shapes_[spec.outputs[i]] = out_shapes[i];
  // What is computed from a tensor of value-dependent shape has one too.
  if (std::any_of(spec.inputs.begin(), spec.inputs.end(), [&](const std::string& in) { return dynamic_.count(in) != 0; }))
    dynamic_.insert(spec.outputs.begin(), spec.outputs.end());
  std::vector<std::string> names = spec.outputs;
  graph_.layers.push_back(std::move(spec));
  return names;
}

std::string Importer::emit_reshape(const Node& n, const std::string& input, const Dims& target,
                                   const std::string& suffix) {
  // Keep the batch flexible when it stays in front: Reshape's 0 copies the input's dimension.
  Dims shape = target;
  const Shape& in = shapes_.at(input);
  if (in.rank() > 0 && !shape.empty() && shape[0] == in[0] && in[0] != 0) shape[0] = 0;
  Attributes attrs;
  attrs.set("shape", shape);
  return emit(n, "Reshape", {input}, attrs, {}, suffix)[0];
}

Value Importer::fold(const Node& n, const std::string& type, const std::vector<Value>& inputs,
                     Attributes attrs) {
  LayerSpec spec;
  spec.name = n.name;
  spec.type = type;
  spec.attrs = std::move(attrs);
  std::vector<Shape> in_shapes;
  std::vector<Tensor> in_tensors;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    spec.inputs.push_back("in" + std::to_string(i));
    in_shapes.push_back(inputs[i].shape);
    in_tensors.push_back(inputs[i].to_tensor());
  }
  spec.outputs = {"out"};
  try {
    auto layer = create_layer(spec);
    std::vector<Tensor> out{Tensor::zeros(layer->output_shapes(in_shapes).at(0))};
    layer->forward(in_tensors, out);
    Value value;
    value.type = inputs.empty() ? TP::FLOAT : inputs[0].type;
    value.shape = out[0].shape();
    for (float v : out[0].to_vector())
      value.data.push_back(value.is_integer() ? std::trunc(static_cast<double>(v)) : v);
    return value;
  } catch (const Error& e) {
    invalid(n, e.what());
  }
}

// ---- model ------------------------------------------------------------------------------------

const std::map<std::string, Importer::Handler>& Importer::handlers() {
  static const std::map<std::string, Handler> table = {
      {"Abs", &Importer::op_activation},
      {"Add", &Importer::op_binary},
      {"AveragePool", &Importer::op_pool},
      {"BatchNormalization", &Importer::op_batch_norm},
      {"Cast", &Importer::op_cast},
      {"ConvInteger", &Importer::op_qlinear_conv},
      {"DequantizeLinear", &Importer::op_dequantize},
      {"DynamicQuantizeLinear", &Importer::op_dynamic_quantize},
      {"Ceil", &Importer::op_activation},
      {"Clip", &Importer::op_clip},
      {"Concat", &Importer::op_concat},
      {"Constant", &Importer::op_constant},
      {"ConstantOfShape", &Importer::op_constant_of_shape},
      {"Conv", &Importer::op_conv},
      {"ConvTranspose", &Importer::op_conv_transpose},
      {"Div", &Importer::op_binary},
      {"Dropout", &Importer::op_identity},
      {"Elu", &Importer::op_activation},
      {"Equal", &Importer::op_compare},
      {"Exp", &Importer::op_activation},
      {"Expand", &Importer::op_expand},
      {"Flatten", &Importer::op_flatten},
      {"Floor", &Importer::op_activation},
      {"Gather", &Importer::op_gather},
      {"GRU", &Importer::op_recurrent},
      {"If", &Importer::op_if},
      {"Gemm", &Importer::op_gemm},
      {"Greater", &Importer::op_compare},
      {"GreaterOrEqual", &Importer::op_compare},
      {"GlobalAveragePool", &Importer::op_global_pool},
      {"GlobalMaxPool", &Importer::op_global_pool},
      {"HardSigmoid", &Importer::op_activation},
      {"HardSwish", &Importer::op_activation},
      {"Identity", &Importer::op_identity},
      {"LRN", &Importer::op_lrn},
      {"LSTM", &Importer::op_recurrent},
      {"Loop", &Importer::op_loop},
      {"LeakyRelu", &Importer::op_leaky_relu},
      {"Less", &Importer::op_compare},
      {"LessOrEqual", &Importer::op_compare},
      {"Log", &Importer::op_activation},
      {"LogSoftmax", &Importer::op_softmax},
      {"MatMul", &Importer::op_matmul},
      {"MatMulInteger", &Importer::op_matmul_integer},
      {"Max", &Importer::op_variadic},
      {"MaxPool", &Importer::op_pool},
      {"Mean", &Importer::op_variadic},
      {"Min", &Importer::op_variadic},
      {"Mul", &Importer::op_binary},
      {"Neg", &Importer::op_activation},
      {"Not", &Importer::op_compare},
      {"PRelu", &Importer::op_prelu},
      {"QLinearConv", &Importer::op_qlinear_conv},
      {"QLinearMatMul", &Importer::op_qlinear_matmul},
      {"QuantizeLinear", &Importer::op_quantize},
      {"Pad", &Importer::op_pad},
      {"Pow", &Importer::op_binary},
      {"RNN", &Importer::op_recurrent},
      {"Reciprocal", &Importer::op_activation},
      {"ReduceL1", &Importer::op_reduce},
      {"ReduceL2", &Importer::op_reduce},
      {"ReduceLogSum", &Importer::op_reduce},
      {"ReduceLogSumExp", &Importer::op_reduce},
      {"ReduceMax", &Importer::op_reduce},
      {"ReduceMean", &Importer::op_reduce},
      {"ReduceMin", &Importer::op_reduce},
      {"ReduceProd", &Importer::op_reduce},
      {"ReduceSum", &Importer::op_reduce},
      {"ReduceSumSquare", &Importer::op_reduce},
      {"Relu", &Importer::op_relu},
      {"Reshape", &Importer::op_reshape},
      {"Resize", &Importer::op_resize},
      {"Scan", &Importer::op_scan},
      {"Selu", &Importer::op_activation},
      {"Shape", &Importer::op_shape},
      {"Sigmoid", &Importer::op_activation},
      {"Slice", &Importer::op_slice},
      {"Softmax", &Importer::op_softmax},
      {"Softplus", &Importer::op_activation},
      {"Softsign", &Importer::op_activation},
      {"Split", &Importer::op_split},
      {"Sqrt", &Importer::op_activation},
      {"Squeeze", &Importer::op_squeeze},
      {"Sub", &Importer::op_binary},
      {"Sum", &Importer::op_variadic},
      {"Tanh", &Importer::op_activation},
      {"Transpose", &Importer::op_transpose},
      {"Unsqueeze", &Importer::op_unsqueeze},
  };
  return table;
}

const std::map<std::string, Importer::Handler>& Importer::microsoft_handlers() {
  static const std::map<std::string, Handler> table = {
      {"DequantizeLinear", &Importer::op_dequantize},
      {"QGemm", &Importer::op_qgemm},
      {"QLinearAdd", &Importer::op_microsoft_qlinear},
      {"QLinearAveragePool", &Importer::op_microsoft_qlinear},
      {"QLinearConcat", &Importer::op_microsoft_qlinear},
      {"QLinearConv", &Importer::op_qlinear_conv},
      {"QLinearGlobalAveragePool", &Importer::op_microsoft_qlinear},
      {"QLinearLeakyRelu", &Importer::op_microsoft_qlinear},
      {"QLinearMul", &Importer::op_microsoft_qlinear},
      {"QLinearSigmoid", &Importer::op_microsoft_qlinear},
      {"QLinearSoftmax", &Importer::op_microsoft_qlinear},
      {"QuantizeLinear", &Importer::op_quantize},
  };
  return table;
}

Importer::Handler Importer::handler_for(const onnx::NodeProto& node) {
  const std::map<std::string, Handler>* table = nullptr;
  if (node.domain().empty() || node.domain() == "ai.onnx") table = &handlers();
  if (node.domain() == "com.microsoft") table = &microsoft_handlers();
  if (!table) return nullptr;
  const auto it = table->find(node.op_type());
  return it == table->end() ? nullptr : it->second;
}

void Importer::check_supported(const onnx::GraphProto& graph) const {
  std::string missing;
  int count = 0;
  for (int i = 0; i < graph.node_size(); ++i) {
    const onnx::NodeProto& node = graph.node(i);
    if (handler_for(node)) continue;
    ++count;
    missing += (missing.empty() ? "" : "; ") +
               ("node '" + (node.name().empty() ? "#" + std::to_string(i) : node.name()) + "' " +
                node.op_type() + " (domain '" + node.domain() + "', opset " + std::to_string(opset_) + ")");
  }
  if (count)
    throw UnsupportedError(path_ + ": " + std::to_string(count) +
                           " unsupported ONNX operator(s): " + missing);
}

void Importer::declare_inputs(const onnx::GraphProto& graph, const std::set<std::string>& initializers) {
  for (const onnx::ValueInfoProto& input : graph.input()) {
    if (initializers.count(input.name())) continue;  // IR < 4 lists initializers as inputs too
    const std::string where = path_ + ": graph input '" + input.name() + "'";
    Shape shape;
    if (auto it = options_.input_shapes.find(input.name()); it != options_.input_shapes.end()) {
      shape = it->second;
    } else {
      if (!input.type().has_tensor_type()) throw UnsupportedError(where + " is not a tensor");
      if (!input.type().tensor_type().has_shape())
        throw ModelError(where + " has no shape; give one in the import options");
      Dims dims;
      for (const auto& d : input.type().tensor_type().shape().dim()) {
        if (d.has_dim_value()) {
          dims.push_back(d.dim_value());
        } else {
          auto named = options_.dims.find(d.dim_param());
          dims.push_back(named != options_.dims.end() ? named->second : options_.default_dim);
        }
      }
      checked_numel(dims, sizeof(float), where);
      shape = Shape(dims);
    }
    if (input.type().has_tensor_type()) {
      const int type = input.type().tensor_type().elem_type();
      input_types_[input.name()] = type;
      if (type == TP::STRING || type == TP::COMPLEX64 || type == TP::COMPLEX128) {
        throw UnsupportedError(where + " has type " + onnx_detail::type_name(type));
      }
    }
    graph_.inputs.push_back({input.name(), shape});
    shapes_[input.name()] = shape;
  }
}

void Importer::import_nodes(const onnx::GraphProto& graph) {
  for (const onnx::NodeProto& node : graph.node())
    model_names_.insert(node.output().begin(), node.output().end());
  for (int i = 0; i < graph.node_size(); ++i) import_node(graph.node(i));
}

void Importer::import_node(const onnx::NodeProto& proto) {
  Node node{proto, proto.name(), {}};
  if (node.name.empty()) {
    node.name = proto.output_size() > 0 && !proto.output(0).empty()
                    ? proto.output(0)
                    : proto.op_type() + "_" + std::to_string(unnamed_++);
  }
  for (const auto& a : proto.attribute()) node.attrs[a.name()] = &a;
  if (proto.output_size() == 0) invalid(node, "has no outputs");
  for (const std::string& input : proto.input()) {
    if (!input.empty() && !capture(input)) {
      invalid(node, "input '" + input + "' is not produced by any earlier node, initializer or graph input" +
                        (parent_ ? " of this subgraph or the graphs around it" : ""));
    }
  }
  (this->*handler_for(proto))(node);
}

void Importer::import_standard(const Node& from, const std::string& op, const std::string& suffix,
                               const std::vector<std::string>& inputs,
                               const std::vector<std::string>& outputs,
                               std::vector<onnx::AttributeProto> attrs, int opset) {
  onnx::NodeProto proto;
  proto.set_name(from.name + "/" + suffix);
  proto.set_op_type(op);
  for (const std::string& input : inputs) proto.add_input(input);
  for (const std::string& output : outputs) proto.add_output(output);
  for (onnx::AttributeProto& a : attrs) *proto.add_attribute() = std::move(a);
  struct Restore {
    std::int64_t& opset;
    std::int64_t outer;
    ~Restore() { opset = outer; }
  } restore{opset_, opset_};
  if (opset > 0) opset_ = opset;
  import_node(proto);
}

std::string Importer::fresh_name(const Node& n, const std::string& suffix) {
  std::string name = n.name + "/" + suffix;
  while (model_names_.count(name) || constants_.count(name) || shapes_.count(name) || aliases_.count(name))
    name += "_";
  model_names_.insert(name);
  return name;
}

// a >= b is clip(floor(a - b) + 1, 0, 1): a - b is 0 only where a = b and has the sign of a - b
// elsewhere, so the result is exactly 1 or 0 (runtime booleans are floats). The rest follow from it.
void Importer::op_compare(const Node& n) {
  const std::string& op = n.op();
  const std::string one = emit_constant(n.name + "/one", Value{TP::FLOAT, Shape{}, {1.0}});
  Attributes clip;
  clip.set("function", std::string("clip"));
  clip.set("min", 0.0);
  clip.set("max", 1.0);
  Attributes sub, mul;
  sub.set("operation", std::string("sub"));
  mul.set("operation", std::string("mul"));
  if (op == "Not") {
    emit(n, "Binary", {one, tensor(n, 0)}, sub);
    return;
  }
  const std::vector<std::string> in{tensor(n, 0), tensor(n, 1)};
  auto shifted = [&](std::size_t a, std::size_t b, const std::string& suffix) {
    Attributes floor, add;
    floor.set("function", std::string("floor"));
    add.set("operation", std::string("add"));
    const std::string d = emit(n, "Binary", {in[a], in[b]}, sub, {}, suffix + "difference")[0];
    const std::string f = emit(n, "Activation", {d}, floor, {}, suffix + "floor")[0];
    return emit(n, "Binary", {f, one}, add, {}, suffix + "shifted")[0];
  };
  auto ge = [&](std::size_t a, std::size_t b, const std::string& suffix) {
    return emit(n, "Activation", {shifted(a, b, suffix)}, clip, {}, suffix + "ge")[0];
  };
  if (op == "GreaterOrEqual" || op == "LessOrEqual") {
    emit(n, "Activation", {op == "GreaterOrEqual" ? shifted(0, 1, "") : shifted(1, 0, "")}, clip);
  } else if (op == "Greater" || op == "Less") {
    emit(n, "Binary", {one, op == "Greater" ? ge(1, 0, "") : ge(0, 1, "")}, sub);
  } else {
    emit(n, "Binary", {ge(0, 1, "forward_"), ge(1, 0, "backward_")}, mul);
  }
}

// ---- control flow -----------------------------------------------------------------------------

bool Importer::capture(const std::string& name) {
  if (is_constant(name) || shapes_.count(resolve(name))) return true;
  if (!parent_) return false;
  if (parent_->is_constant(name)) {
    constants_[name] = parent_->constants_.at(parent_->resolve(name));
    return true;
  }
  if (!parent_->capture(name)) return false;
  // Constants the parent got from its own parent are copied; tensors become inputs of this subgraph.
  if (parent_->is_constant(name)) {
    constants_[name] = parent_->constants_.at(parent_->resolve(name));
    return true;
  }
  const std::string outer = parent_->tensor_of(name);
  graph_.inputs.push_back({name, parent_->shapes_.at(outer)});
  shapes_[name] = parent_->shapes_.at(outer);
  if (parent_->dynamic_.count(outer)) dynamic_.insert(name);
  captures_.emplace_back(outer, name);
  return true;
}

Graph Importer::import_subgraph(const onnx::GraphProto& graph, const std::vector<Shape>& input_shapes) {
  if (depth_ > limits().max_subgraph_depth) {
    throw LimitError(scope() + "subgraphs nested " + std::to_string(depth_) + " deep exceed the limit of " +
                     std::to_string(limits().max_subgraph_depth) + " (Limits::max_subgraph_depth)");
  }
  graph_.name = graph.name();
  check_supported(graph);
  std::set<std::string> initializers;
  for (const TP& init : graph.initializer()) {
    constants_[init.name()] = onnx_detail::decode_tensor(init, dir_, scope() + "initializer '" + init.name() + "'");
    initializers.insert(init.name());
  }
  std::size_t formal = 0;
  for (const onnx::ValueInfoProto& input : graph.input()) {
    if (initializers.count(input.name())) continue;
    if (formal >= input_shapes.size()) break;
    if (input.type().has_tensor_type()) input_types_[input.name()] = input.type().tensor_type().elem_type();
    graph_.inputs.push_back({input.name(), input_shapes[formal]});
    shapes_[input.name()] = input_shapes[formal++];
  }
  if (formal != input_shapes.size()) {
    throw ModelError(scope() + "the subgraph declares " + std::to_string(formal) + " inputs, should declare " +
                     std::to_string(input_shapes.size()));
  }
  import_nodes(graph);
  for (const onnx::ValueInfoProto& output : graph.output()) {
    if (!capture(output.name())) throw ModelError(scope() + "subgraph output '" + output.name() + "' is never produced");
    graph_.outputs.push_back(tensor_of(output.name()));
  }
  return std::move(graph_);
}

const onnx::GraphProto& Importer::graph_attr(const Node& n, const std::string& name) {
  const auto* a = attr(n, name, onnx::AttributeProto::GRAPH);
  if (a == nullptr || !a->has_g()) invalid(n, "attribute '" + name + "' (a graph) is missing");
  return a->g();
}

Graph Importer::subgraph(const Node& n, const std::string& name, const std::vector<Shape>& input_shapes,
                         std::vector<std::pair<std::string, std::string>>& captures, std::vector<bool>& dynamic) {
  Importer inner(*this, n);
  Graph graph = inner.import_subgraph(graph_attr(n, name), input_shapes);
  if (graph.name.empty()) graph.name = name;
  captures = inner.captures_;
  dynamic.clear();
  for (const std::string& output : graph.outputs) dynamic.push_back(inner.dynamic_.count(output) != 0);
  return graph;
}

void Importer::op_if(const Node& n) {
  std::vector<std::pair<std::string, std::string>> then_captures, else_captures;
  std::vector<Graph> branches;
  std::vector<bool> then_dynamic, else_dynamic;
  branches.push_back(subgraph(n, "then_branch", {}, then_captures, then_dynamic));
  branches.push_back(subgraph(n, "else_branch", {}, else_captures, else_dynamic));
  if (branches[0].outputs.size() != branches[1].outputs.size())
    invalid(n, "the branches give " + std::to_string(branches[0].outputs.size()) + " and " +
                   std::to_string(branches[1].outputs.size()) + " outputs");
  // Both branches take every value either captures, in one order.
  std::vector<std::string> outer;
  for (const auto* list : {&then_captures, &else_captures})
    for (const auto& [tensor, inner] : *list)
      if (std::find(outer.begin(), outer.end(), tensor) == outer.end()) outer.push_back(tensor);
  for (std::size_t b = 0; b < 2; ++b) {
    const auto& list = b == 0 ? then_captures : else_captures;
    std::vector<InputSpec> inputs;
    for (const std::string& tensor : outer) {
      auto it = std::find_if(list.begin(), list.end(), [&](const auto& c) { return c.first == tensor; });
      inputs.push_back({it != list.end() ? it->second : "captured:" + tensor, shapes_.at(tensor)});
    }
    branches[b].inputs = std::move(inputs);
  }
  std::vector<std::string> inputs{tensor(n, 0)};
  inputs.insert(inputs.end(), outer.begin(), outer.end());
  const std::vector<Shape> then_shapes = infer_graph_shapes(branches[0], [&] {
    std::vector<Shape> s;
    for (const auto& t : outer) s.push_back(shapes_.at(t));
    return s;
  }());
  const int outputs = static_cast<int>(branches[0].outputs.size());
  std::vector<Shape> else_shapes;
  try {
    std::vector<Shape> s;
    for (const auto& t : outer) s.push_back(shapes_.at(t));
    else_shapes = infer_graph_shapes(branches[1], s);
  } catch (const Error&) {
    else_shapes = then_shapes;
  }
  const std::vector<std::string> names =
      emit(n, "If", inputs, {}, {}, "", outputs,
           {{"then_branch", std::move(branches[0])}, {"else_branch", std::move(branches[1])}});
  for (int k = 0; k < outputs; ++k)
    if (then_shapes[static_cast<std::size_t>(k)] != else_shapes[static_cast<std::size_t>(k)] ||
        then_dynamic[static_cast<std::size_t>(k)] || else_dynamic[static_cast<std::size_t>(k)])
      dynamic_.insert(names[static_cast<std::size_t>(k)]);
}

void Importer::op_loop(const Node& n) {
  const int carried = n.proto.input_size() - 2;
  if (carried < 0) invalid(n, "needs the trip count and condition inputs (empty names where absent)");
  const bool has_trip_count = n.has_input(0), has_condition = n.has_input(1);
  if (!has_trip_count && !has_condition)
    invalid(n, "has neither a trip count nor a condition: the loop would never end");
  std::vector<Shape> body_inputs{Shape{}, Shape{}};
  std::vector<std::string> inputs;
  if (has_trip_count) inputs.push_back(tensor(n, 0));
  if (has_condition) inputs.push_back(tensor(n, 1));
  for (int k = 0; k < carried; ++k) {
    body_inputs.push_back(shape(n, 2 + k));
    inputs.push_back(tensor(n, 2 + k));
  }
  std::vector<std::pair<std::string, std::string>> captures;
  std::vector<bool> dynamic;
  Graph body = subgraph(n, "body", body_inputs, captures, dynamic);
  for (const auto& [tensor, inner] : captures) inputs.push_back(tensor);
  const int outputs = static_cast<int>(body.outputs.size()) - 1;
  if (outputs < carried)
    invalid(n, "the body gives " + std::to_string(body.outputs.size()) + " outputs, fewer than 1 + " +
                   std::to_string(carried) + " carried values");
  Attributes attrs;
  attrs.set("has_trip_count", std::int64_t{has_trip_count ? 1 : 0});
  attrs.set("has_condition", std::int64_t{has_condition ? 1 : 0});
  attrs.set("carried", std::int64_t{carried});
  std::vector<Shape> before;
  for (const std::string& input : inputs) before.push_back(shapes_.at(input));
  const std::vector<std::string> names = emit(n, "Loop", inputs, attrs, {}, "", outputs, {{"body", std::move(body)}});
  // The scan outputs grow with the iteration count; a carried value may change shape as it goes.
  const std::size_t prefix = (has_trip_count ? 1 : 0) + (has_condition ? 1 : 0);
  for (int k = 0; k < outputs; ++k) {
    const auto u = static_cast<std::size_t>(k);
    if (k >= carried || shapes_.at(names[u]) != before[prefix + u] || dynamic[1 + u]) dynamic_.insert(names[u]);
  }
}

void Importer::op_scan(const Node& n) {
  // Scan-8 has a batch axis 0 on states and scan inputs (the sequence is axis 1) and sequence_lens first.
  const bool batched = opset_ < 9;
  const int first = batched ? 1 : 0;
  const std::int64_t scans = attr_int(n, "num_scan_inputs", -1);
  const int count = n.proto.input_size() - first;
  if (scans < 1 || scans > count) invalid(n, "attribute 'num_scan_inputs' should lie in [1, " + std::to_string(count) + "]");
  const int states = count - static_cast<int>(scans);
  if (batched && n.has_input(0)) {
    // Only sequence lengths that are the whole sequence (axis 1 of the scan inputs) are supported.
    if (!is_constant(n, 0)) unsupported(n, "sequence_lens computed at run time is not supported");
    const Shape scanned = shape(n, first + states);
    for (double length : constant(n, 0).data)
      if (scanned.rank() < 2 || static_cast<std::int64_t>(length) != scanned[1])
        unsupported(n, "sequence_lens shorter than the sequence are not supported");
  }
  const Dims axes = attr_ints(n, "scan_input_axes", Dims(static_cast<std::size_t>(scans), 0));
  if (axes.size() != static_cast<std::size_t>(scans)) invalid(n, "attribute 'scan_input_axes' needs one axis per scan input");
  std::vector<Shape> body_inputs;
  std::vector<std::string> inputs;
  for (int i = 0; i < count; ++i) {
    inputs.push_back(tensor(n, first + i));
    Shape s = shape(n, first + i);
    if (batched) {
      if (s.rank() == 0) invalid(n, "input '" + n.input(first + i) + "' has no batch axis");
      Dims dims = s.dims();
      dims.erase(dims.begin());
      s = Shape(dims);
    }
    if (i >= states) {
      const std::int64_t axis = axes[static_cast<std::size_t>(i - states)];
      const std::int64_t a = axis < 0 ? axis + s.rank() : axis;
      if (a < 0 || a >= s.rank()) invalid(n, "scan axis " + std::to_string(axis) + " is outside input '" + n.input(first + i) + "'");
      Dims dims = s.dims();
      dims.erase(dims.begin() + a);
      s = Shape(dims);
    }
    body_inputs.push_back(s);
  }
  std::vector<std::pair<std::string, std::string>> captures;
  std::vector<bool> dynamic;
  Graph body = subgraph(n, "body", body_inputs, captures, dynamic);
  for (const auto& [tensor, inner] : captures) inputs.push_back(tensor);
  if (std::find(dynamic.begin(), dynamic.end(), true) != dynamic.end())
    unsupported(n, "the body's outputs have shapes that depend on values at run time");
  Attributes attrs;
  attrs.set("states", std::int64_t{states});
  attrs.set("num_scan_inputs", scans);
  for (const char* name : {"scan_input_axes", "scan_input_directions", "scan_output_axes", "scan_output_directions"})
    if (n.has(name)) attrs.set(name, attr_ints(n, name, {}));
  if (batched) {
    attrs.set("batched", std::int64_t{1});
    if (n.has("directions")) attrs.set("scan_input_directions", attr_ints(n, "directions", {}));
  }
  const int outputs = static_cast<int>(body.outputs.size());
  emit(n, "Scan", inputs, attrs, {}, "", outputs, {{"body", std::move(body)}});
}

Graph Importer::run(const std::string& bytes) {
  if (bytes.empty()) throw FileError(path_ + ": the model is empty");
  onnx::ModelProto model;
  data::parse_binary_proto(bytes, model, path_, "ONNX model");
  if (!model.has_graph()) throw ParseError(path_ + ": the model has no graph");
  if (model.graph().node_size() > limits().max_layers) {
    throw LimitError(path_ + ": " + std::to_string(model.graph().node_size()) + " nodes exceed the limit of " +
                     std::to_string(limits().max_layers) + " (Limits::max_layers)");
  }
  for (const auto& op : model.opset_import()) {
    if (op.domain().empty() || op.domain() == "ai.onnx") opset_ = op.version();
  }
  if (opset_ > 18) throw UnsupportedError(path_ + ": opset " + std::to_string(opset_) + " is newer than 18");
  const onnx::GraphProto& graph = model.graph();
  graph_.name = graph.name();
  graph_.metadata.source_format = "onnx";
  graph_.metadata.name = graph.name();
  graph_.metadata.description = model.doc_string();
  graph_.metadata.producer = model.producer_version().empty() ? model.producer_name()
                                                              : model.producer_name() + " " + model.producer_version();
  check_supported(graph);

  std::set<std::string> initializers;
  for (const TP& init : graph.initializer()) {
    constants_[init.name()] =
        onnx_detail::decode_tensor(init, dir_, path_ + ": initializer '" + init.name() + "'");
    initializers.insert(init.name());
  }
  declare_inputs(graph, initializers);

  import_nodes(graph);

  for (const onnx::ValueInfoProto& output : graph.output()) {
    if (!is_constant(output.name()) && !shapes_.count(resolve(output.name()))) {
      throw ModelError(path_ + ": graph output '" + output.name() + "' is never produced");
    }
    const std::string name = tensor_of(output.name());
    graph_.outputs.push_back(name);
    if (name != output.name()) graph_.aliases[output.name()] = name;
  }
  fold_output_requantization();
  // Dequantize layers whose only readers became QuantizedConvolutions (qdq_conv) read nothing now,
  // and then neither may the Quantize layers before them.
  for (const char* folded : {"Dequantize", "Quantize"}) {
    std::set<std::string> read(graph_.outputs.begin(), graph_.outputs.end());
    for (const LayerSpec& layer : graph_.layers) read.insert(layer.inputs.begin(), layer.inputs.end());
    std::erase_if(graph_.layers, [&](const LayerSpec& layer) {
      return layer.type == folded && std::none_of(layer.outputs.begin(), layer.outputs.end(),
                                                  [&](const std::string& o) { return read.count(o) != 0; });
    });
  }
  graph_.validate();
  return std::move(graph_);
}

// ---- constants and shape arithmetic -----------------------------------------------------------

void Importer::op_constant(const Node& n) {
  Value value;
  if (const auto* t = attr(n, "value", onnx::AttributeProto::TENSOR)) {
    value = onnx_detail::decode_tensor(t->t(), dir_, where(n));
  } else if (n.has("value_float")) {
    value = {TP::FLOAT, Shape{}, {attr_float(n, "value_float", 0)}};
  } else if (n.has("value_floats")) {
    value.data = attr_floats(n, "value_floats");
    value.shape = Shape{static_cast<std::int64_t>(value.data.size())};
  } else if (n.has("value_int")) {
    value = {TP::INT64, Shape{}, {static_cast<double>(attr_int(n, "value_int", 0))}};
  } else if (n.has("value_ints")) {
    value.type = TP::INT64;
    for (std::int64_t v : attr_ints(n, "value_ints", {})) value.data.push_back(static_cast<double>(v));
    value.shape = Shape{static_cast<std::int64_t>(value.data.size())};
  } else {
    unsupported(n, "only tensor, float and int values are supported");
  }
  set_constant(n, 0, std::move(value));
}

void Importer::op_identity(const Node& n) {
  if (n.op() == "Dropout") {
    // Training mode drops at random unless the ratio is 0; otherwise nothing is dropped and the
    // mask keeps every element.
    const bool training = n.has_input(2) && constant(n, 2).data.at(0) != 0;
    const double ratio = n.has_input(1) ? constant(n, 1).data.at(0) : 0.5;
    if (training && ratio != 0) unsupported(n, "training mode with a nonzero ratio is not supported");
    if (n.outputs() > 1) {
      const Shape in = shape(n, 0);
      set_constant(n, 1, Value{TP::BOOL, in, std::vector<double>(static_cast<std::size_t>(in.numel()), 1.0)});
    }
  }
  pass_through(n);
}

void Importer::pass_through(const Node& n) {
  if (is_constant(n, 0)) {
    set_constant(n, 0, constant(n, 0));
  } else {
    alias(n, 0, tensor(n, 0));
  }
}

void Importer::op_cast(const Node& n) {
  const auto to = static_cast<int>(attr_int(n, "to", TP::FLOAT));
  if (is_constant(n, 0)) {
    Value value = constant(n, 0);
    value.type = to;
    for (double& v : value.data) {
      if (to == TP::FLOAT16) {
        v = round_to_float16(static_cast<float>(v));
      } else if (to == TP::FLOAT || to == TP::BFLOAT16) {
        v = static_cast<float>(v);
      } else if (to == TP::BOOL) {
        v = v != 0;
      } else if (to != TP::DOUBLE) {
        v = std::trunc(v);
      }
    }
    set_constant(n, 0, std::move(value));
  } else if (to == TP::FLOAT || to == TP::DOUBLE) {
    alias(n, 0, tensor(n, 0));  // runtime tensors are f32 already
  } else if (to == TP::BOOL) {
    // Runtime booleans are floats 0 and 1: x ≠ 0.
    const std::string zero = emit_constant(n.name + "/zero", Value{TP::FLOAT, Shape{}, {0.0}});
    const std::string one = emit_constant(n.name + "/one", Value{TP::FLOAT, Shape{}, {1.0}});
    Attributes attrs;
    attrs.set("operation", std::string("sub"));
    const std::string x = tensor(n, 0);
    // (x ≥ 0)·(0 ≥ x) is 1 where x = 0 (see op_compare).
    auto ge = [&](const std::string& a, const std::string& b, const std::string& suffix) {
      Attributes sub, floor, add, clip;
      sub.set("operation", std::string("sub"));
      floor.set("function", std::string("floor"));
      add.set("operation", std::string("add"));
      clip.set("function", std::string("clip"));
      clip.set("min", 0.0);
      clip.set("max", 1.0);
      const std::string d = emit(n, "Binary", {a, b}, sub, {}, suffix + "difference")[0];
      const std::string f = emit(n, "Activation", {d}, floor, {}, suffix + "floor")[0];
      return emit(n, "Activation", {emit(n, "Binary", {f, one}, add, {}, suffix + "shifted")[0]}, clip, {}, suffix + "ge")[0];
    };
    Attributes mul;
    mul.set("operation", std::string("mul"));
    const std::string is_zero = emit(n, "Binary", {ge(x, zero, "forward_"), ge(zero, x, "backward_")}, mul, {}, "zero")[0];
    emit(n, "Binary", {one, is_zero}, attrs);
  } else if (to == TP::FLOAT16) {
    // Every float16 value is an fp32 value: the tensor stays fp32, rounded to float16's values.
    Attributes attrs;
    attrs.set("function", std::string("float16"));
    emit(n, "Activation", {tensor(n, 0)}, attrs);
  } else if (to == TP::INT64 || to == TP::INT32 || to == TP::INT16 || to == TP::INT8) {
    // Runtime integers are floats with whole values: x rounded toward zero, as the cast does, is
    // floor(x) + (ceil(x) − floor(x))·(x < 0), with x < 0 as 1 − clip(floor(x) + 1, 0, 1) (see op_compare).
    const std::string one = emit_constant(n.name + "/one", Value{TP::FLOAT, Shape{}, {1.0}});
    auto layer = [&](const std::string& type, std::vector<std::string> in, const char* key, const std::string& value,
                     const std::string& suffix) {
      Attributes attrs;
      attrs.set(key, value);
      if (value == "clip") {
        attrs.set("min", 0.0);
        attrs.set("max", 1.0);
      }
      return emit(n, type, std::move(in), attrs, {}, suffix)[0];
    };
    const std::string x = tensor(n, 0);
    const std::string down = layer("Activation", {x}, "function", "floor", "floor");
    const std::string up = layer("Activation", {x}, "function", "ceil", "ceil");
    const std::string gap = layer("Binary", {up, down}, "operation", "sub", "gap");
    const std::string shifted = layer("Binary", {down, one}, "operation", "add", "shifted");
    const std::string nonnegative = layer("Activation", {shifted}, "function", "clip", "nonnegative");
    const std::string negative = layer("Binary", {one, nonnegative}, "operation", "sub", "negative");
    const std::string step = layer("Binary", {gap, negative}, "operation", "mul", "step");
    Attributes add;
    add.set("operation", std::string("add"));
    emit(n, "Binary", {down, step}, add);
  } else {
    unsupported(n, "a runtime cast to " + onnx_detail::type_name(to) + " is not supported");
  }
}

void Importer::op_shape(const Node& n) {
  if (n.has_input(0) && dynamic_.count(resolve(n.input(0))))
    unsupported(n, "the shape of '" + n.input(0) + "' depends on values at run time (it comes from control flow), "
                   "so it cannot be folded at load time");
  const Shape in = shape(n, 0);
  const int rank = in.rank();
  auto clamp_axis = [&](std::int64_t a) { return std::clamp<std::int64_t>(a < 0 ? a + rank : a, 0, rank); };
  const std::int64_t start = clamp_axis(attr_int(n, "start", 0)), end = clamp_axis(attr_int(n, "end", rank));
  Value value{TP::INT64, Shape{std::max<std::int64_t>(0, end - start)}, {}};
  for (std::int64_t i = start; i < end; ++i)
    value.data.push_back(static_cast<double>(in[static_cast<int>(i)]));
  set_constant(n, 0, std::move(value));
}

void Importer::op_constant_of_shape(const Node& n) {
  Value value{TP::FLOAT, Shape(constant_ints(n, 0)), {}};
  double fill = 0;
  if (const auto* t = attr(n, "value", onnx::AttributeProto::TENSOR)) {
    const Value v = onnx_detail::decode_tensor(t->t(), dir_, where(n));
    if (v.data.size() != 1) invalid(n, "'value' must hold one element");
    fill = v.data[0];
    value.type = v.type;
  }
  value.data.assign(static_cast<std::size_t>(value.shape.numel()), fill);
  set_constant(n, 0, std::move(value));
}

void Importer::op_gather(const Node& n) {
  Attributes attrs;
  attrs.set("axis", attr_int(n, "axis", 0));
  if (is_constant(n, 0) && is_constant(n, 1)) {
    Value value = fold(n, "Gather", {constant(n, 0), constant(n, 1)}, attrs);
    set_constant(n, 0, std::move(value));
    return;
  }
  emit(n, "Gather", {tensor(n, 0), tensor(n, 1)}, attrs);
}

void Importer::op_concat(const Node& n) {
  const int rank = rank_of(n, 0);
  std::int64_t axis = attr_int(n, "axis", opset_ < 4 ? 1 : 0);
  if (axis < -rank || axis >= rank) invalid(n, "axis " + std::to_string(axis) + " is out of range");
  if (axis < 0) axis += rank;
  bool all_constant = true;
  for (int i = 0; i < n.proto.input_size(); ++i) all_constant = all_constant && is_constant(n, i);
  if (all_constant) {
    // Constant concatenation (shape arithmetic): outer blocks of each input in turn.
    Value out = constant(n, 0);
    Dims dims = out.shape.dims();
    dims[static_cast<std::size_t>(axis)] = 0;
    const std::int64_t outer = out.shape.count(0, static_cast<int>(axis));
    std::vector<double> data;
    for (std::int64_t o = 0; o < outer; ++o) {
      for (int i = 0; i < n.proto.input_size(); ++i) {
        const Value& v = constant(n, i);
        const std::int64_t block = v.shape.count(static_cast<int>(axis));
        data.insert(data.end(), v.data.begin() + o * block, v.data.begin() + (o + 1) * block);
      }
    }
    for (int i = 0; i < n.proto.input_size(); ++i)
      dims[static_cast<std::size_t>(axis)] += constant(n, i).shape[static_cast<int>(axis)];
    out.shape = Shape(dims);
    out.data = std::move(data);
    if (static_cast<std::int64_t>(out.data.size()) != out.shape.numel())
      invalid(n, "inputs do not fit together");
    set_constant(n, 0, std::move(out));
    return;
  }
  std::vector<std::string> inputs;
  for (int i = 0; i < n.proto.input_size(); ++i) inputs.push_back(tensor(n, i));
  Attributes attrs;
  attrs.set("axis", axis);
  emit(n, "Concat", inputs, attrs);
}

namespace {

Dims normalized_axes(const Dims& axes, int rank) {
  Dims out;
  for (std::int64_t a : axes) out.push_back(a < 0 ? a + rank : a);
  return out;
}

}  // namespace

void Importer::op_squeeze(const Node& n) {
  const Shape in = shape(n, 0);
  Dims axes = opset_ >= 13 ? (n.has_input(1) ? constant_ints(n, 1) : Dims{}) : attr_ints(n, "axes", {});
  axes = normalized_axes(axes, in.rank());
  Dims dims;
  for (int i = 0; i < in.rank(); ++i) {
    const bool listed = std::find(axes.begin(), axes.end(), i) != axes.end();
    if (listed && in[i] != 1) invalid(n, "cannot squeeze axis " + std::to_string(i) + " of " + in.str());
    if (listed || (axes.empty() && in[i] == 1)) continue;
    dims.push_back(in[i]);
  }
  if (is_constant(n, 0)) {
    Value v = constant(n, 0);
    v.shape = Shape(dims);
    set_constant(n, 0, std::move(v));
  } else {
    emit_reshape(n, tensor(n, 0), dims);
  }
}

void Importer::op_unsqueeze(const Node& n) {
  const Shape in = shape(n, 0);
  Dims axes = opset_ >= 13 ? constant_ints(n, 1) : attr_ints(n, "axes", {});
  const int rank = in.rank() + static_cast<int>(axes.size());
  axes = normalized_axes(axes, rank);
  Dims dims;
  for (int i = 0, k = 0; i < rank; ++i) {
    if (std::find(axes.begin(), axes.end(), i) != axes.end()) {
      dims.push_back(1);
    } else {
      if (k >= in.rank()) invalid(n, "axes do not fit input " + in.str());
      dims.push_back(in[k++]);
    }
  }
  if (is_constant(n, 0)) {
    Value v = constant(n, 0);
    v.shape = Shape(dims);
    set_constant(n, 0, std::move(v));
  } else {
    emit_reshape(n, tensor(n, 0), dims);
  }
}

void Importer::op_reshape(const Node& n) {
  const Shape in = shape(n, 0);
  const Dims request = opset_ < 5 ? attr_ints(n, "shape", {}) : constant_ints(n, 1);
  const bool allow_zero = attr_int(n, "allowzero", 0) != 0;
  Dims dims;
  int inferred = -1;
  for (std::size_t i = 0; i < request.size(); ++i) {
    std::int64_t d = request[i];
    if (d == 0 && !allow_zero) {
      if (static_cast<int>(i) >= in.rank())
        invalid(n, "0 in shape copies a dimension that " + in.str() + " lacks");
      d = in[static_cast<int>(i)];
    } else if (d == -1) {
      if (inferred >= 0) invalid(n, "shape has more than one -1");
      inferred = static_cast<int>(i);
      d = 1;
    } else if (d < 0) {
      invalid(n, "shape has a negative dimension " + std::to_string(d));
    }
    dims.push_back(d);
  }
  const std::int64_t known = Shape(dims).numel();
  if (inferred >= 0) {
    if (known == 0 || in.numel() % known != 0)
      invalid(n, "cannot reshape " + in.str() + " to " + Shape(request).str());
    dims[static_cast<std::size_t>(inferred)] = in.numel() / known;
  }
  if (Shape(dims).numel() != in.numel())
    invalid(n, "cannot reshape " + in.str() + " to " + Shape(dims).str());
  if (is_constant(n, 0)) {
    Value v = constant(n, 0);
    v.shape = Shape(dims);
    set_constant(n, 0, std::move(v));
    return;
  }
  if (allow_zero && std::find(request.begin(), request.end(), 0) != request.end()) {
    unsupported(n, "allowzero with a zero dimension (an empty tensor) is not supported");
  }
  emit_reshape(n, tensor(n, 0), dims);
}

void Importer::op_flatten(const Node& n) {
  const Shape in = shape(n, 0);
  std::int64_t axis = attr_int(n, "axis", 1);
  if (axis < -in.rank() || axis > in.rank())
    invalid(n, "axis " + std::to_string(axis) + " is out of range for " + in.str());
  if (axis < 0) axis += in.rank();
  const Dims dims{in.count(0, static_cast<int>(axis)), in.count(static_cast<int>(axis))};
  if (is_constant(n, 0)) {
    Value v = constant(n, 0);
    v.shape = Shape(dims);
    set_constant(n, 0, std::move(v));
  } else if (axis == 1) {
    Attributes attrs;
    attrs.set("axis", std::int64_t{1});
    emit(n, "Flatten", {tensor(n, 0)}, attrs);
  } else {
    emit_reshape(n, tensor(n, 0), dims);
  }
}

void Importer::op_transpose(const Node& n) {
  Attributes attrs;
  if (n.has("perm")) attrs.set("perm", attr_ints(n, "perm", {}));
  if (is_constant(n, 0)) {
    set_constant(n, 0, fold(n, "Transpose", {constant(n, 0)}, attrs));
  } else {
    emit(n, "Transpose", {tensor(n, 0)}, attrs);
  }
}

void Importer::op_slice(const Node& n) {
  Attributes attrs;
  Dims starts, ends, axes, steps;
  if (opset_ < 10) {
    starts = attr_ints(n, "starts", {});
    ends = attr_ints(n, "ends", {});
    axes = attr_ints(n, "axes", {});
  } else {
    // Starts or ends computed at run time (a Loop body slicing at the iteration number): DynamicSlice.
    auto known = [&](int i) { return is_constant(n, i) || options_.input_values.count(resolve(n.input(i))) != 0; };
    if (!known(1) || !known(2)) {
      Attributes dynamic;
      if (n.has_input(3)) dynamic.set("axes", constant_ints(n, 3));
      if (n.has_input(4)) dynamic.set("steps", constant_ints(n, 4));
      const std::string out = emit(n, "DynamicSlice", {tensor(n, 0), tensor(n, 1), tensor(n, 2)}, dynamic)[0];
      dynamic_.insert(out);
      return;
    }
    starts = constant_ints(n, 1);
    ends = constant_ints(n, 2);
    if (n.has_input(3)) axes = constant_ints(n, 3);
    if (n.has_input(4)) steps = constant_ints(n, 4);
  }
  attrs.set("starts", starts);
  attrs.set("ends", ends);
  if (!axes.empty()) attrs.set("axes", axes);
  if (!steps.empty()) attrs.set("steps", steps);
  if (is_constant(n, 0)) {
    set_constant(n, 0, fold(n, "StridedSlice", {constant(n, 0)}, attrs));
  } else {
    emit(n, "StridedSlice", {tensor(n, 0)}, attrs);
  }
}

void Importer::op_split(const Node& n) {
  const Shape in = shape(n, 0);
  std::int64_t axis = attr_int(n, "axis", 0);
  if (axis < -in.rank() || axis >= in.rank())
    invalid(n, "axis " + std::to_string(axis) + " is out of range for " + in.str());
  if (axis < 0) axis += in.rank();
  const std::int64_t size = in[static_cast<int>(axis)];
  const int parts = n.proto.output_size();
  Dims split = opset_ >= 13 ? (n.has_input(1) ? constant_ints(n, 1) : Dims{}) : attr_ints(n, "split", {});
  if (split.empty()) {
    const std::int64_t chunk = (size + parts - 1) / parts;  // the last part may be smaller (opset 18)
    for (int i = 0; i < parts; ++i) split.push_back(std::min(chunk, size - chunk * i));
  }
  if (static_cast<int>(split.size()) != parts ||
      std::accumulate(split.begin(), split.end(), std::int64_t{0}) != size) {
    invalid(n, "split sizes do not add up to axis " + std::to_string(axis) + " of " + in.str());
  }
  std::int64_t start = 0;
  for (int i = 0; i < parts; ++i) {
    Attributes attrs;
    attrs.set("starts", Dims{start});
    attrs.set("ends", Dims{start + split[static_cast<std::size_t>(i)]});
    attrs.set("axes", Dims{axis});
    start += split[static_cast<std::size_t>(i)];
    if (n.proto.output(i).empty()) continue;
    if (is_constant(n, 0)) {
      set_constant(n, i, fold(n, "StridedSlice", {constant(n, 0)}, attrs));
    } else {
      const std::string out =
          emit(n, "StridedSlice", {tensor(n, 0)}, attrs, {}, "part" + std::to_string(i))[0];
      alias(n, i, out);
    }
  }
}

// ---- convolution and pooling ------------------------------------------------------------------

Dims Importer::spatial_pads(const Node& n, const Shape& in, const Dims& kernel, const Dims& strides,
                            const Dims& dilations) {
  const std::size_t spatial = kernel.size();
  for (const auto& [name, values] : {std::pair{"strides", &strides}, std::pair{"dilations", &dilations}}) {
    if (values->size() != spatial) invalid(n, "'" + std::string(name) + "' needs one value per spatial axis");
    for (std::int64_t v : *values)
      if (v < 1) invalid(n, "'" + std::string(name) + "' must be positive, not " + std::to_string(v));
  }
  const std::string auto_pad = attr_string(n, "auto_pad", "NOTSET");
  Dims pads = attr_ints(n, "pads", Dims(2 * spatial, 0));
  if (pads.size() != 2 * spatial) invalid(n, "'pads' needs " + std::to_string(2 * spatial) + " values");
  if (auto_pad == "VALID") return Dims(2 * spatial, 0);
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (std::size_t i = 0; i < spatial; ++i) {
      const std::int64_t size = in[static_cast<int>(i) + 2];
      const std::int64_t out = (size + strides[i] - 1) / strides[i];
      const std::int64_t total =
          std::max<std::int64_t>(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size);
      const std::int64_t small = total / 2;
      pads[i] = auto_pad == "SAME_UPPER" ? small : total - small;
      pads[i + spatial] = total - pads[i];
    }
  } else if (auto_pad != "NOTSET") {
    invalid(n, "unknown auto_pad '" + auto_pad + "'");
  }
  return pads;
}

std::string Importer::pad_input(const Node& n, const std::string& input, int rank, const Dims& begin,
                                const Dims& end, double value) {
  Dims pads(static_cast<std::size_t>(2 * rank), 0);
  const std::size_t offset = static_cast<std::size_t>(rank) - begin.size();
  for (std::size_t i = 0; i < begin.size(); ++i) {
    pads[offset + i] = begin[i];
    pads[static_cast<std::size_t>(rank) + offset + i] = end[i];
  }
  Attributes attrs;
  attrs.set("pads", pads);
  attrs.set("mode", std::string("constant"));
  attrs.set("value", value);
  return emit(n, "Pad", {input}, attrs, {}, "pad")[0];
}

Attributes Importer::conv_attrs(const Node& n, const Shape& in, const Value& w, std::string& input, double pad_value) {
  const std::size_t spatial = static_cast<std::size_t>(in.rank() - 2);
  const Dims kernel = attr_ints(n, "kernel_shape", Dims(w.shape.dims().begin() + 2, w.shape.dims().end()));
  const Dims strides = attr_ints(n, "strides", Dims(spatial, 1));
  const Dims dilations = attr_ints(n, "dilations", Dims(spatial, 1));
  if (kernel.size() != spatial || strides.size() != spatial || dilations.size() != spatial)
    invalid(n, "kernel_shape, strides and dilations need one value per spatial axis");
  const Dims pads = spatial_pads(n, in, kernel, strides, dilations);
  const Dims begin(pads.begin(), pads.begin() + static_cast<long>(spatial)),
      end(pads.begin() + static_cast<long>(spatial), pads.end());
  Dims pad = begin;
  if (begin != end) {
    input = pad_input(n, input, in.rank(), begin, end, pad_value);
    pad.assign(spatial, 0);
  }
  Attributes attrs;
  attrs.set("num_output", w.shape[0]);
  attrs.set("kernel", kernel);
  attrs.set("stride", strides);
  attrs.set("pad", pad);
  attrs.set("dilation", dilations);
  attrs.set("group", attr_int(n, "group", 1));
  return attrs;
}

bool Importer::qdq_conv(const Node& n) {
  if (!n.has_input(1)) return false;
  const auto x = dequantized_tensors_.find(resolve(n.input(0)));
  const auto w = dequantized_constants_.find(resolve(n.input(1)));
  if (x == dequantized_tensors_.end() || w == dequantized_constants_.end()) return false;
  const QuantizedConstant& qw = w->second;
  const Shape in = shapes_.at(x->second.quantized);
  if (in.rank() < 3 || qw.q.shape.rank() != in.rank()) return false;
  const std::int64_t out_channels = qw.q.shape[0];
  const bool per_channel = qw.scale.data.size() > 1;
  if (per_channel && (static_cast<std::int64_t>(qw.scale.data.size()) != out_channels || qw.axis != 0)) return false;
  if (qw.zero.data.size() != 1 && qw.zero.data.size() != qw.scale.data.size()) return false;
  // Where the integers come from a QuantizeLinear with the same scale, zero point and type, the
  // convolution quantizes the real tensor itself (in its vector loop; the Quantize layer is dropped if
  // nothing else reads it): the same integers, one pass over memory fewer.
  std::string input = x->second.quantized;
  double pad_value = x->second.zero;
  const auto q = quantized_tensors_.find(input);
  const bool real = q != quantized_tensors_.end() && q->second.scale == x->second.scale &&
                    q->second.zero == x->second.zero && q->second.type == x->second.type;
  if (real) {
    input = q->second.real;
    pad_value = 0;  // quantizes to the zero point
  }
  Attributes attrs = conv_attrs(n, in, qw.q, input, pad_value);
  attrs.set("input", std::string(real ? "real" : "quantized"));
  attrs.set("input_type", quant_type_name(n, x->second.type));
  attrs.set("input_scale", x->second.scale);
  attrs.set("input_zero_point", static_cast<std::int64_t>(x->second.zero));
  attrs.set("weight_type", quant_type_name(n, qw.q.type));
  std::vector<float> scale(static_cast<std::size_t>(out_channels)), zero(scale.size());
  for (std::size_t c = 0; c < scale.size(); ++c) {
    scale[c] = static_cast<float>(qw.scale.data[per_channel ? c : 0]);
    zero[c] = static_cast<float>(qw.zero.data[qw.zero.data.size() > 1 ? c : 0]);
  }
  std::vector<Tensor> weights{qw.q.to_tensor(), Tensor::from(Shape{out_channels}, scale), Tensor::from(Shape{out_channels}, zero)};
  if (n.has_input(2)) weights.push_back(constant(n, 2).to_tensor().reshaped(Shape{out_channels}));
  attrs.set("bias", static_cast<std::int64_t>(n.has_input(2)));
  emit(n, "QuantizedConvolution", {input}, attrs, weights);
  return true;
}

void Importer::fold_output_requantization() {
  std::map<std::string, int> readers;
  for (const std::string& output : graph_.outputs) ++readers[output];
  for (const LayerSpec& layer : graph_.layers)
    for (const std::string& input : layer.inputs) ++readers[input];
  std::map<std::string, std::size_t> producer;
  for (std::size_t i = 0; i < graph_.layers.size(); ++i)
    for (const std::string& output : graph_.layers[i].outputs) producer[output] = i;
  std::set<std::size_t> folded;
  for (std::size_t d = 0; d < graph_.layers.size(); ++d) {
    LayerSpec& dequantize = graph_.layers[d];
    if (dequantize.type != "Dequantize") continue;
    const auto deq = dequantized_tensors_.find(dequantize.outputs[0]);
    if (deq == dequantized_tensors_.end() || readers[deq->second.quantized] != 1) continue;
    // A QLinearConv (a QuantizedConvolution writing integers) that alone feeds it with the same constants:
    // the convolution writes the real values of its integers itself.
    const std::string type = deq->second.type == TP::INT8 ? "int8" : "uint8";
    if (const auto made = producer.find(deq->second.quantized); made != producer.end()) {
      LayerSpec& conv = graph_.layers[made->second];
      if (conv.type == "QuantizedConvolution" && conv.attrs.get_string("output", "real") == "quantized" &&
          conv.attrs.get_float("output_scale", 0) == deq->second.scale &&
          conv.attrs.get_int("output_zero_point", 0) == static_cast<std::int64_t>(deq->second.zero) &&
          conv.attrs.get_string("output_type", "uint8") == type) {
        conv.attrs.set("output", std::string("dequantized"));
        conv.outputs[0] = dequantize.outputs[0];
        folded.insert(d);
        continue;
      }
    }
    const auto q = quantized_tensors_.find(deq->second.quantized);
    if (q == quantized_tensors_.end() || q->second.scale != deq->second.scale ||
        q->second.zero != deq->second.zero || q->second.type != deq->second.type)
      continue;
    const auto quantize = producer.find(deq->second.quantized);
    if (quantize == producer.end() || graph_.layers[quantize->second].type != "Quantize") continue;
    const auto c = producer.find(q->second.real);
    LayerSpec* conv =
        c != producer.end() && readers[q->second.real] == 1 ? &graph_.layers[c->second] : nullptr;
    if (conv && (conv->type != "QuantizedConvolution" || conv->attrs.get_string("output", "real") != "real" ||
                 conv->attrs.get_int("relu", 0) != 0))
      conv = nullptr;
    folded.insert(d);
    if (!conv) {  // the Quantize layer rounds to the grid and dequantizes in the same pass
      LayerSpec& round_trip = graph_.layers[quantize->second];
      round_trip.attrs.set("dequantize", std::int64_t{1});
      round_trip.outputs[0] = dequantize.outputs[0];
      continue;
    }
    conv->attrs.set("output", std::string("dequantized"));
    conv->attrs.set("output_scale", q->second.scale);
    conv->attrs.set("output_zero_point", static_cast<std::int64_t>(q->second.zero));
    conv->attrs.set("output_type", type);
    conv->outputs[0] = dequantize.outputs[0];
    folded.insert(quantize->second);
  }
  std::vector<LayerSpec> kept;
  for (std::size_t i = 0; i < graph_.layers.size(); ++i)
    if (!folded.count(i)) kept.push_back(std::move(graph_.layers[i]));
  graph_.layers = std::move(kept);
}

void Importer::op_conv(const Node& n) {
  if (qdq_conv(n)) return;
  const Shape in = shape(n, 0);
  const Value& w = constant(n, 1);
  if (in.rank() < 3 || w.shape.rank() != in.rank())
    invalid(n, "input " + in.str() + " and weights " + w.shape.str() + " do not fit");
  std::string input = tensor(n, 0);
  Attributes attrs = conv_attrs(n, in, w, input, 0.0);
  std::vector<Tensor> weights{w.to_tensor()};
  if (n.has_input(2)) weights.push_back(constant(n, 2).to_tensor().reshaped(Shape{w.shape[0]}));
  attrs.set("bias", static_cast<std::int64_t>(n.has_input(2)));
  emit(n, "Convolution", {input}, attrs, weights);
}

void Importer::op_conv_transpose(const Node& n) {
  const Shape in = shape(n, 0);
  const Value& w = constant(n, 1);
  if (in.rank() < 3 || w.shape.rank() != in.rank())
    invalid(n, "input " + in.str() + " and weights " + w.shape.str() + " do not fit");
  const std::size_t spatial = static_cast<std::size_t>(in.rank() - 2);
  const std::int64_t group = attr_int(n, "group", 1);
  const Dims kernel = attr_ints(n, "kernel_shape", Dims(w.shape.dims().begin() + 2, w.shape.dims().end()));
  const Dims strides = attr_ints(n, "strides", Dims(spatial, 1));
  const Dims dilations = attr_ints(n, "dilations", Dims(spatial, 1));
  Dims output_padding = attr_ints(n, "output_padding", Dims(spatial, 0));
  Dims pads = attr_ints(n, "pads", Dims(2 * spatial, 0));
  const std::string auto_pad = attr_string(n, "auto_pad", "NOTSET");
  const Dims output_shape = attr_ints(n, "output_shape", {});
  if (!output_shape.empty() || auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (std::size_t i = 0; i < spatial; ++i) {
      const std::int64_t size = in[static_cast<int>(i) + 2];
      const std::int64_t target =
          output_shape.empty() ? size * strides[i] : output_shape[output_shape.size() - spatial + i];
      const std::int64_t total =
          strides[i] * (size - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1 - target;
      if (total < 0) {
        output_padding[i] -= total;
        pads[i] = pads[i + spatial] = 0;
        continue;
      }
      const bool lower = auto_pad == "SAME_LOWER";
      pads[i] = lower ? total - total / 2 : total / 2;
      pads[i + spatial] = total - pads[i];
    }
  } else if (auto_pad == "VALID") {
    pads.assign(2 * spatial, 0);
  }
  Dims pad(spatial), crop_axes, crop_ends;
  for (std::size_t i = 0; i < spatial; ++i) {
    // The extra rows of output_pad are computed, not zero-filled, so a larger begin pad becomes
    // output padding at the end; a larger end pad crops the end of the output instead.
    pad[i] = pads[i];
    output_padding[i] += pads[i] - pads[i + spatial];
    if (output_padding[i] < 0) {
      const std::int64_t full =
          strides[i] * (in[static_cast<int>(i) + 2] - 1) + (kernel[i] - 1) * dilations[i] + 1 - 2 * pads[i];
      crop_axes.push_back(static_cast<std::int64_t>(i) + 2);
      crop_ends.push_back(full + output_padding[i]);
      output_padding[i] = 0;
    }
  }
  Attributes attrs;
  attrs.set("num_output", w.shape[1] * group);
  attrs.set("kernel", kernel);
  attrs.set("stride", strides);
  attrs.set("pad", pad);
  attrs.set("dilation", dilations);
  attrs.set("group", group);
  attrs.set("output_pad", output_padding);
  std::vector<Tensor> weights{w.to_tensor()};
  if (n.has_input(2)) weights.push_back(constant(n, 2).to_tensor().reshaped(Shape{w.shape[1] * group}));
  attrs.set("bias", static_cast<std::int64_t>(n.has_input(2)));
  if (crop_axes.empty()) {
    emit(n, "Deconvolution", {tensor(n, 0)}, attrs, weights);
    return;
  }
  const std::string full = emit(n, "Deconvolution", {tensor(n, 0)}, attrs, weights, "full")[0];
  Attributes crop;
  crop.set("starts", Dims(crop_axes.size(), 0));
  crop.set("ends", crop_ends);
  crop.set("axes", crop_axes);
  emit(n, "StridedSlice", {full}, crop);
}

void Importer::op_pool(const Node& n) {
  const Shape in = shape(n, 0);
  if (n.outputs() > 1) unsupported(n, "the Indices output is not supported");
  if (in.rank() < 3) invalid(n, "input " + in.str() + " needs a batch, channel and spatial axes");
  const std::size_t spatial = static_cast<std::size_t>(in.rank() - 2);
  const bool max = n.op() == "MaxPool";
  const Dims kernel = attr_ints(n, "kernel_shape", {});
  if (kernel.size() != spatial) invalid(n, "'kernel_shape' needs one value per spatial axis");
  const Dims strides = attr_ints(n, "strides", Dims(spatial, 1));
  const Dims dilations = attr_ints(n, "dilations", Dims(spatial, 1));
  const bool count_include_pad = attr_int(n, "count_include_pad", 0) != 0;
  const Dims pads = spatial_pads(n, in, kernel, strides, dilations);
  const Dims begin(pads.begin(), pads.begin() + static_cast<long>(spatial)),
      end(pads.begin() + static_cast<long>(spatial), pads.end());
  if (std::any_of(dilations.begin(), dilations.end(), [](std::int64_t d) { return d != 1; })) {
    if (!max) unsupported(n, "dilated average pooling is not supported");
    dilated_max_pool(n, in, kernel, strides, dilations, begin, end);
    return;
  }
  std::string input = tensor(n, 0);
  Dims pad = begin;
  // Padded explicitly when the ends differ, which Pooling's symmetric pads cannot express.
  const bool explicit_pad = begin != end;
  if (explicit_pad) {
    input = pad_input(n, input, in.rank(), begin, end, max ? -std::numeric_limits<double>::infinity() : 0.0);
    pad.assign(spatial, 0);
  }
  Attributes attrs;
  attrs.set("method", std::string(max ? "max" : "ave"));
  attrs.set("kernel", kernel);
  attrs.set("stride", strides);
  attrs.set("pad", pad);
  attrs.set("round", std::string(attr_int(n, "ceil_mode", 0) ? "ceil" : "floor"));
  attrs.set("count_include_pad", static_cast<std::int64_t>(count_include_pad));
  if (max || count_include_pad || !explicit_pad) {
    emit(n, "Pooling", {input}, attrs);
    return;
  }
  // Averages over the real elements only: the windows' sums over the zero-padded input, divided by
  // how many real elements each window holds, both taken with the same Pooling so that its own
  // divisor cancels. The counts come from pooling a padded mask of ones at load time.
  Dims mask_dims(static_cast<std::size_t>(in.rank()), 1);
  std::copy(in.dims().begin() + 2, in.dims().end(), mask_dims.begin() + 2);
  const Shape mask_shape(mask_dims);
  Attributes pad_attrs;
  Dims mask_pads(static_cast<std::size_t>(2 * in.rank()), 0);
  for (std::size_t i = 0; i < spatial; ++i) {
    mask_pads[2 + i] = begin[i];
    mask_pads[static_cast<std::size_t>(in.rank()) + 2 + i] = end[i];
  }
  pad_attrs.set("pads", mask_pads);
  const Value ones{TP::FLOAT, mask_shape,
                   std::vector<double>(static_cast<std::size_t>(mask_shape.numel()), 1.0)};
  const std::string counts = n.name + "/counts";
  constants_[counts] = fold(n, "Pooling", {fold(n, "Pad", {ones}, pad_attrs)}, attrs);
  const std::string sums = emit(n, "Pooling", {input}, attrs, {}, "sums")[0];
  Attributes div;
  div.set("operation", std::string("div"));
  emit(n, "Binary", {sums, tensor_of(counts)}, div);
}

void Importer::dilated_max_pool(const Node& n, const Shape& in, const Dims& kernel, const Dims& strides,
                                const Dims& dilations, const Dims& begin, const Dims& end) {
  // The maximum over the kernel's taps, each tap a strided slice of the input padded with -inf.
  const std::size_t spatial = kernel.size();
  const bool ceil = attr_int(n, "ceil_mode", 0) != 0;
  Dims out(spatial), padded_end = end;
  for (std::size_t i = 0; i < spatial; ++i) {
    const std::int64_t size = in[static_cast<int>(i) + 2] + begin[i] + end[i];
    const std::int64_t reach = (kernel[i] - 1) * dilations[i] + 1;
    if (size < reach) invalid(n, "the dilated kernel is larger than the padded input " + in.str());
    const std::int64_t span = size - reach;
    out[i] = (ceil ? (span + strides[i] - 1) / strides[i] : span / strides[i]) + 1;
    // ONNX drops a last ceil-mode window that would start in the end padding.
    if (ceil && (out[i] - 1) * strides[i] >= in[static_cast<int>(i) + 2] + begin[i]) --out[i];
    // Ceil mode may let the last window run past the padded input: pad that with -inf too.
    padded_end[i] += std::max<std::int64_t>(0, (out[i] - 1) * strides[i] + reach - size);
  }
  const std::string padded =
      pad_input(n, tensor(n, 0), in.rank(), begin, padded_end, -std::numeric_limits<double>::infinity());
  std::int64_t taps = 1;
  for (std::int64_t k : kernel) taps *= k;
  std::string result;
  for (std::int64_t t = 0; t < taps; ++t) {
    Dims starts(spatial), ends(spatial), axes(spatial), steps(spatial);
    for (std::size_t i = spatial, rest = static_cast<std::size_t>(t); i-- > 0;) {
      const std::int64_t offset = static_cast<std::int64_t>(rest) % kernel[i] * dilations[i];
      rest /= static_cast<std::size_t>(kernel[i]);
      starts[i] = offset;
      ends[i] = offset + (out[i] - 1) * strides[i] + 1;
      axes[i] = static_cast<std::int64_t>(i) + 2;
      steps[i] = strides[i];
    }
    Attributes slice;
    slice.set("starts", starts);
    slice.set("ends", ends);
    slice.set("axes", axes);
    slice.set("steps", steps);
    const std::string tap = emit(n, "StridedSlice", {padded}, slice, {}, "tap" + std::to_string(t))[0];
    if (result.empty()) {
      result = tap;
      continue;
    }
    Attributes maximum;
    maximum.set("operation", std::string("max"));
    result = t + 1 == taps ? emit(n, "Binary", {result, tap}, maximum)[0]
                           : emit(n, "Binary", {result, tap}, maximum, {}, "max" + std::to_string(t))[0];
  }
  if (taps == 1) alias(n, 0, result);
}

void Importer::op_global_pool(const Node& n) {
  Attributes attrs;
  attrs.set("method", std::string(n.op() == "GlobalMaxPool" ? "max" : "ave"));
  attrs.set("global", std::int64_t{1});
  emit(n, "Pooling", {tensor(n, 0)}, attrs);
}

// ---- element-wise -----------------------------------------------------------------------------

void Importer::op_relu(const Node& n) { emit(n, "ReLU", {tensor(n, 0)}); }

void Importer::op_leaky_relu(const Node& n) {
  Attributes attrs;
  attrs.set("negative_slope", attr_float(n, "alpha", 0.01));
  emit(n, "ReLU", {tensor(n, 0)}, attrs);
}

void Importer::op_prelu(const Node& n) {
  const Shape in = shape(n, 0);
  const Value& slope = constant(n, 1);
  // Per channel when the slope, aligned to the input's last axes as numpy does, varies only along axis 1.
  const int offset = in.rank() - slope.shape.rank();
  bool per_channel = in.rank() >= 2 && offset >= 0;
  for (int i = 0; per_channel && i < slope.shape.rank(); ++i) {
    per_channel = i + offset == 1 ? slope.shape[i] == in[1] : slope.shape[i] == 1;
  }
  // Before opset 7 a slope of C values was per channel whatever its shape.
  per_channel = per_channel || (opset_ < 7 && in.rank() >= 2 && slope.shape.numel() == in[1]);
  Attributes attrs;
  if (slope.data.size() == 1) {
    attrs.set("channel_shared", std::int64_t{1});
    emit(n, "PReLU", {tensor(n, 0)}, attrs, {slope.to_tensor().reshaped(Shape{1})});
  } else if (per_channel) {
    emit(n, "PReLU", {tensor(n, 0)}, attrs, {slope.to_tensor().reshaped(Shape{in[1]})});
  } else {
    // Any other broadcast: y = max(x, 0) + slope · min(x, 0).
    const std::string x = tensor(n, 0), zero = n.name + "/zero";
    constants_[zero] = Value{TP::FLOAT, Shape{}, {0.0}};
    auto binary = [&](const std::string& op, const std::string& a, const std::string& b,
                      const std::string& suffix) {
      Attributes a_attrs;
      a_attrs.set("operation", op);
      return emit(n, "Binary", {a, b}, a_attrs, {}, suffix)[0];
    };
    const std::string positive = binary("max", x, tensor_of(zero), "positive");
    const std::string negative = binary("min", x, tensor_of(zero), "negative");
    const std::string scaled = binary("mul", negative, tensor(n, 1), "scaled");
    binary("add", positive, scaled, "");
  }
}

void Importer::activation(const Node& n, const std::string& function, Attributes attrs) {
  attrs.set("function", function);
  if (is_constant(n, 0)) {
    set_constant(n, 0, fold(n, "Activation", {constant(n, 0)}, attrs));
  } else {
    emit(n, "Activation", {tensor(n, 0)}, attrs);
  }
}

void Importer::op_activation(const Node& n) {
  static const std::map<std::string, std::string> kFunctions = {{"Abs", "abs"},
                                                                {"Ceil", "ceil"},
                                                                {"Elu", "elu"},
                                                                {"Exp", "exp"},
                                                                {"Floor", "floor"},
                                                                {"HardSigmoid", "hard_sigmoid"},
                                                                {"HardSwish", "hard_swish"},
                                                                {"Log", "log"},
                                                                {"Neg", "neg"},
                                                                {"Reciprocal", "reciprocal"},
                                                                {"Selu", "selu"},
                                                                {"Sigmoid", "sigmoid"},
                                                                {"Softplus", "softplus"},
                                                                {"Softsign", "softsign"},
                                                                {"Sqrt", "sqrt"},
                                                                {"Tanh", "tanh"}};
  Attributes attrs;
  const std::string& function = kFunctions.at(n.op());
  if (n.op() == "HardSigmoid") {
    attrs.set("alpha", attr_float(n, "alpha", 0.2));
    attrs.set("beta", attr_float(n, "beta", 0.5));
  } else if (n.op() == "Elu") {
    attrs.set("alpha", attr_float(n, "alpha", 1.0));
  } else if (n.op() == "Selu") {
    attrs.set("alpha", attr_float(n, "alpha", 1.67326319217681884765625));
    attrs.set("gamma", attr_float(n, "gamma", 1.05070102214813232421875));
  }
  activation(n, function, attrs);
}

void Importer::op_clip(const Node& n) {
  Attributes attrs;
  if (opset_ < 11) {
    if (n.has("min")) attrs.set("min", attr_float(n, "min", 0));
    if (n.has("max")) attrs.set("max", attr_float(n, "max", 0));
  } else {
    if (n.has_input(1)) attrs.set("min", constant(n, 1).data.at(0));
    if (n.has_input(2)) attrs.set("max", constant(n, 2).data.at(0));
  }
  activation(n, "clip", attrs);
}

void Importer::op_softmax(const Node& n) {
  const Shape in = shape(n, 0);
  const bool log = n.op() == "LogSoftmax";
  std::int64_t axis = attr_int(n, "axis", opset_ >= 13 ? -1 : 1);
  if (axis < -in.rank() || axis >= in.rank())
    invalid(n, "axis " + std::to_string(axis) + " is out of range for " + in.str());
  if (axis < 0) axis += in.rank();
  Attributes attrs;
  if (opset_ >= 13 || axis == in.rank() - 1) {
    attrs.set("axis", axis);
    emit(n, log ? "LogSoftmax" : "Softmax", {tensor(n, 0)}, attrs);
    return;
  }
  // Before opset 13 the input is seen as a matrix split at `axis`, normalized per row.
  const std::string rows = emit_reshape(n, tensor(n, 0), {-1, in.count(static_cast<int>(axis))}, "rows");
  attrs.set("axis", std::int64_t{1});
  const std::string normalized =
      emit(n, log ? "LogSoftmax" : "Softmax", {rows}, attrs, {}, "rows_normalized")[0];
  Dims back = in.dims();
  back[0] = -1;
  Attributes reshape;
  reshape.set("shape", back);
  emit(n, "Reshape", {normalized}, reshape);
}

void Importer::op_binary(const Node& n) {
  static const std::map<std::string, std::string> kOps = {
      {"Add", "add"}, {"Sub", "sub"}, {"Mul", "mul"}, {"Div", "div"}, {"Pow", "pow"}};
  elementwise(n, kOps.at(n.op()));
}

void Importer::elementwise(const Node& n, const std::string& op) {
  Attributes attrs;
  attrs.set("operation", op);
  const Shape a = shape(n, 0);
  Shape b = shape(n, 1);
  // Opset < 7: `broadcast` with `axis` aligns B's axes with A's starting at `axis`.
  const bool legacy = opset_ < 7 && attr_int(n, "broadcast", 0) != 0 && n.has("axis");
  std::string b_name;
  Value b_value;
  if (legacy) {
    std::int64_t axis = attr_int(n, "axis", 0);
    if (axis < 0) axis += a.rank();
    Dims dims = b.dims();
    if (axis + b.rank() > a.rank())
      invalid(n, "B " + b.str() + " does not fit A " + a.str() + " at axis " + std::to_string(axis));
    dims.resize(static_cast<std::size_t>(a.rank() - axis), 1);
    if (!is_constant(n, 1)) unsupported(n, "legacy broadcasting of a runtime B is not supported");
    b_value = constant(n, 1);
    b_value.shape = Shape(dims);
  }
  const bool b_constant = is_constant(n, 1);
  if (is_constant(n, 0) && b_constant) {
    set_constant(n, 0, fold(n, "Binary", {constant(n, 0), legacy ? b_value : constant(n, 1)}, attrs));
    return;
  }
  const std::string a_name = tensor(n, 0);
  if (legacy) {
    b_name = n.name + "/broadcast_b";
    constants_[b_name] = b_value;
    b_name = tensor_of(b_name);
  } else {
    b_name = tensor(n, 1);
  }
  emit(n, "Binary", {a_name, b_name}, attrs);
}

void Importer::op_variadic(const Node& n) {
  const int count = n.proto.input_size();
  if (count == 0) invalid(n, "needs at least one input");
  const std::string op = n.op() == "Max" ? "max" : n.op() == "Min" ? "min" : "add";
  std::string acc = tensor(n, 0);
  Attributes attrs;
  attrs.set("operation", op);
  const bool mean = n.op() == "Mean";
  for (int i = 1; i < count; ++i) {
    const bool last = i == count - 1 && !mean;
    acc = emit(n, "Binary", {acc, tensor(n, i)}, attrs, {}, last ? "" : "step" + std::to_string(i))[0];
  }
  if (mean) {
    const std::string scale = n.name + "/inverse_count";
    constants_[scale] = Value{TP::FLOAT, Shape{}, {1.0 / count}};
    Attributes mul;
    mul.set("operation", std::string("mul"));
    emit(n, "Binary", {acc, tensor_of(scale)}, mul);
  } else if (count == 1) {
    alias(n, 0, acc);
  }
}

void Importer::op_batch_norm(const Node& n) {
  if (n.outputs() > 1) unsupported(n, "training outputs (running statistics) are not supported");
  if (attr_int(n, "training_mode", 0) != 0) unsupported(n, "training mode is not supported");
  const Shape in = shape(n, 0);
  const Value &scale = constant(n, 1), &bias = constant(n, 2), &mean = constant(n, 3), &var = constant(n, 4);
  if (in.rank() < 2) invalid(n, "input " + in.str() + " has no channel axis");
  const std::int64_t channels = in[1];
  for (const Value* v : {&scale, &bias, &mean, &var}) {
    if (v->shape.numel() != channels)
      invalid(n, "parameters need " + std::to_string(channels) + " values, one per channel");
  }
  // Folded into one per-channel affine map, computed in double: y = x·s + (beta − mean·s).
  const double eps = attr_float(n, "epsilon", 1e-5);
  std::vector<float> s(static_cast<std::size_t>(channels)), b(static_cast<std::size_t>(channels));
  for (std::size_t c = 0; c < s.size(); ++c) {
    const double factor = scale.data[c] / std::sqrt(var.data[c] + eps);
    s[c] = static_cast<float>(factor);
    b[c] = static_cast<float>(bias.data[c] - mean.data[c] * factor);
  }
  Attributes attrs;
  attrs.set("axis", std::int64_t{1});
  attrs.set("num_axes", std::int64_t{1});
  attrs.set("bias", std::int64_t{1});
  emit(n, "Scale", {tensor(n, 0)}, attrs,
       {Tensor::from(Shape{channels}, s), Tensor::from(Shape{channels}, b)});
}

void Importer::op_lrn(const Node& n) {
  if (!n.has("size")) invalid(n, "attribute 'size' is required");
  Attributes attrs;
  attrs.set("size", attr_int(n, "size", 0));
  attrs.set("alpha", attr_float(n, "alpha", 1e-4));
  attrs.set("beta", attr_float(n, "beta", 0.75));
  attrs.set("k", attr_float(n, "bias", 1.0));
  attrs.set("region", std::string("across"));
  emit(n, "LRN", {tensor(n, 0)}, attrs);
}

// ---- matrix products --------------------------------------------------------------------------

namespace {

// B (K x N) as the N x K matrix that InnerProduct expects.
Tensor transposed_matrix(const Value& b, double factor) {
  const std::int64_t k = b.shape[0], n = b.shape[1];
  std::vector<float> w(static_cast<std::size_t>(k * n));
  for (std::int64_t i = 0; i < k; ++i) {
    for (std::int64_t j = 0; j < n; ++j)
      w[static_cast<std::size_t>(j * k + i)] =
          static_cast<float>(factor * b.data[static_cast<std::size_t>(i * n + j)]);
  }
  return Tensor::from(Shape{n, k}, w);
}

}  // namespace

void Importer::op_gemm(const Node& n) {
  const double alpha = attr_float(n, "alpha", 1.0), beta = attr_float(n, "beta", 1.0);
  const bool trans_a = attr_int(n, "transA", 0) != 0, trans_b = attr_int(n, "transB", 0) != 0;
  if (rank_of(n, 0) != 2 || rank_of(n, 1) != 2) invalid(n, "A and B must be matrices");
  std::string a = tensor(n, 0);
  if (trans_a) a = emit(n, "Transpose", {a}, {}, {}, "transpose_a")[0];
  const bool has_c = n.has_input(2);
  Attributes add;
  add.set("operation", std::string("add"));
  if (is_constant(n, 1)) {
    Value b = constant(n, 1);
    Tensor w;
    if (trans_b) {
      std::vector<float> scaled;
      for (double v : b.data) scaled.push_back(static_cast<float>(alpha * v));
      w = Tensor::from(b.shape, scaled);
    } else {
      w = transposed_matrix(b, alpha);
    }
    const std::int64_t outputs = w.shape()[0];
    // A C that is a scalar or one row becomes the bias; any other C is added after.
    const bool c_is_bias = has_c && is_constant(n, 2) && constant(n, 2).shape.numel() == outputs &&
                           (constant(n, 2).shape.rank() == 1 || constant(n, 2).shape[0] == 1);
    const bool c_is_scalar = has_c && is_constant(n, 2) && constant(n, 2).shape.numel() == 1;
    Attributes attrs;
    attrs.set("num_output", outputs);
    attrs.set("axis", std::int64_t{1});
    std::vector<Tensor> weights{w};
    if (c_is_bias || c_is_scalar) {
      const Value& c = constant(n, 2);
      std::vector<float> bias(static_cast<std::size_t>(outputs));
      for (std::size_t j = 0; j < bias.size(); ++j)
        bias[j] = static_cast<float>(beta * c.data[c_is_scalar ? 0 : j]);
      weights.push_back(Tensor::from(Shape{outputs}, bias));
    }
    attrs.set("bias", static_cast<std::int64_t>(weights.size() == 2));
    if (!has_c || weights.size() == 2) {
      emit(n, "InnerProduct", {a}, attrs, weights);
      return;
    }
    const std::string product = emit(n, "InnerProduct", {a}, attrs, weights, "product")[0];
    std::string c = tensor(n, 2);
    if (beta != 1.0) {
      const std::string factor = n.name + "/beta";
      constants_[factor] = Value{TP::FLOAT, Shape{}, {beta}};
      Attributes mul;
      mul.set("operation", std::string("mul"));
      c = emit(n, "Binary", {c, tensor_of(factor)}, mul, {}, "scaled_c")[0];
    }
    emit(n, "Binary", {product, c}, add);
    return;
  }
  std::string b = tensor(n, 1);
  if (trans_b) b = emit(n, "Transpose", {b}, {}, {}, "transpose_b")[0];
  const bool scaled = alpha != 1.0;
  std::string product = emit(n, "MatMul", {a, b}, {}, {}, scaled || has_c ? "product" : "")[0];
  Attributes mul;
  mul.set("operation", std::string("mul"));
  if (scaled) {
    const std::string factor = n.name + "/alpha";
    constants_[factor] = Value{TP::FLOAT, Shape{}, {alpha}};
    product = emit(n, "Binary", {product, tensor_of(factor)}, mul, {}, has_c ? "scaled" : "")[0];
  }
  if (has_c) {
    std::string c = tensor(n, 2);
    if (beta != 1.0) {
      const std::string factor = n.name + "/beta";
      constants_[factor] = Value{TP::FLOAT, Shape{}, {beta}};
      c = emit(n, "Binary", {c, tensor_of(factor)}, mul, {}, "scaled_c")[0];
    }
    emit(n, "Binary", {product, c}, add);
  }
}

void Importer::op_matmul(const Node& n) {
  const Shape a = shape(n, 0);
  if (is_constant(n, 1) && constant(n, 1).shape.rank() == 2 && a.rank() >= 2 && !is_constant(n, 0)) {
    const Value& b = constant(n, 1);
    if (b.shape[0] != a[a.rank() - 1]) invalid(n, "cannot multiply " + a.str() + " by " + b.shape.str());
    Attributes attrs;
    attrs.set("num_output", b.shape[1]);
    attrs.set("axis", static_cast<std::int64_t>(a.rank() - 1));
    attrs.set("bias", std::int64_t{0});
    emit(n, "InnerProduct", {tensor(n, 0)}, attrs, {transposed_matrix(b, 1.0)});
    return;
  }
  emit(n, "MatMul", {tensor(n, 0), tensor(n, 1)});
}

// ---- quantized operators ----------------------------------------------------------------------

int Importer::elem_type(const Node& n, int i, int fallback) const {
  if (!n.has_input(i)) return fallback;
  const std::string name = resolve(n.input(i));
  if (auto c = constants_.find(name); c != constants_.end()) return c->second.type;
  if (auto t = input_types_.find(name); t != input_types_.end()) return t->second;
  return fallback;
}

std::string Importer::quant_type_name(const Node& n, int type) const {
  if (type == TP::UINT8) return "uint8";
  if (type == TP::INT8) return "int8";
  if (type == TP::INT32) return "int32";
  unsupported(n, "quantized type " + onnx_detail::type_name(type) + " is not supported (uint8, int8)");
}

void Importer::check_quant_constants(const Node& n, int scale, int zero_point, int type) {
  const std::string opset = " (opset " + std::to_string(opset_) + ")";
  if (scale >= 0 && is_constant(n, scale)) {
    const Value& s = constant(n, scale);
    for (std::size_t i = 0; i < s.data.size(); ++i) {
      if (!(s.data[i] > 0) || !std::isfinite(s.data[i]))
        invalid(n, "input " + std::to_string(scale) + " ('" + n.input(scale) + "', the scale) holds " +
                       std::to_string(s.data[i]) + " at " + std::to_string(i) + "; scales must be positive" + opset);
    }
  }
  if (zero_point >= 0 && is_constant(n, zero_point)) {
    const Value& z = constant(n, zero_point);
    const QuantRange range = QuantRange::of(quant_type_name(n, type));
    for (std::size_t i = 0; i < z.data.size(); ++i) {
      if (z.data[i] < range.lo || z.data[i] > range.hi)
        invalid(n, "input " + std::to_string(zero_point) + " ('" + n.input(zero_point) + "', the zero point) holds " +
                       std::to_string(z.data[i]) + ", outside " + quant_type_name(n, type) + opset);
    }
  }
}

void Importer::op_quantize(const Node& n) {
  const int type = elem_type(n, 2, TP::UINT8);
  check_quant_constants(n, 1, n.has_input(2) ? 2 : -1, type);
  Attributes attrs;
  attrs.set("axis", attr_int(n, "axis", 1));
  attrs.set("type", quant_type_name(n, type));
  std::vector<std::string> inputs;
  if (is_constant(n, 0) && is_constant(n, 1) && (!n.has_input(2) || is_constant(n, 2))) {
    std::vector<Value> values{constant(n, 0), constant(n, 1)};
    if (n.has_input(2)) values.push_back(constant(n, 2));
    Value v = fold(n, "Quantize", values, attrs);
    v.type = type;
    set_constant(n, 0, std::move(v));
    return;
  }
  inputs = {tensor(n, 0), tensor(n, 1)};
  if (n.has_input(2)) inputs.push_back(tensor(n, 2));
  const std::string out = emit(n, "Quantize", inputs, attrs)[0];
  const bool per_tensor = is_constant(n, 1) && constant(n, 1).data.size() == 1 &&
                          (!n.has_input(2) || (is_constant(n, 2) && constant(n, 2).data.size() == 1));
  if (per_tensor) quantized_tensors_[out] = {inputs[0], constant(n, 1).data[0], n.has_input(2) ? constant(n, 2).data[0] : 0.0, type};
}

void Importer::op_dequantize(const Node& n) {
  const int type = elem_type(n, 0, elem_type(n, 2, TP::UINT8));
  if (type != TP::INT32) check_quant_constants(n, 1, n.has_input(2) ? 2 : -1, type);
  Attributes attrs;
  attrs.set("axis", attr_int(n, "axis", 1));
  if (is_constant(n, 0) && is_constant(n, 1) && (!n.has_input(2) || is_constant(n, 2))) {
    // Quantized weights: dequantized once at load (fold() keeps input 0's type, and so would truncate
    // an integer type's results).
    std::vector<Value> values{constant(n, 0), constant(n, 1)};
    values[0].type = TP::FLOAT;
    if (n.has_input(2)) values.push_back(constant(n, 2));
    Value v = fold(n, "Dequantize", values, attrs);
    v.type = TP::FLOAT;
    set_constant(n, 0, std::move(v));
    if (type == TP::INT8 || type == TP::UINT8) {
      QuantizedConstant folded{constant(n, 0), constant(n, 1), n.has_input(2) ? constant(n, 2) : Value{type, Shape{}, {0.0}},
                               attr_int(n, "axis", 1)};
      folded.q.type = type;
      dequantized_constants_[n.proto.output(0)] = std::move(folded);
    }
    return;
  }
  std::vector<std::string> inputs{tensor(n, 0), tensor(n, 1)};
  if (n.has_input(2)) inputs.push_back(tensor(n, 2));
  const std::string out = emit(n, "Dequantize", inputs, attrs)[0];
  const bool per_tensor = is_constant(n, 1) && constant(n, 1).data.size() == 1 &&
                          (!n.has_input(2) || (is_constant(n, 2) && constant(n, 2).data.size() == 1));
  if (per_tensor && (type == TP::INT8 || type == TP::UINT8)) {
    dequantized_tensors_[out] = {inputs[0], constant(n, 1).data[0], n.has_input(2) ? constant(n, 2).data[0] : 0.0, type};
  }
}

void Importer::op_dynamic_quantize(const Node& n) {
  emit(n, "DynamicQuantize", {tensor(n, 0)}, {}, {}, "", 3);
}

// QLinearConv (x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B) and
// ConvInteger (x, w, x_zero_point, w_zero_point) as one QuantizedConvolution.
void Importer::op_qlinear_conv(const Node& n) {
  const bool qlinear = n.op() == "QLinearConv";
  if (attr_int(n, "channels_last", 0) != 0) unsupported(n, "channels_last=1 (NHWC) is not supported");
  const int xi = 0, wi = qlinear ? 3 : 1, xz = qlinear ? 2 : 2, wz = qlinear ? 5 : 3;
  const Shape in = shape(n, xi);
  const Value& w = constant(n, wi);
  if (in.rank() < 3 || w.shape.rank() != in.rank())
    invalid(n, "input " + in.str() + " and weights " + w.shape.str() + " do not fit");
  const int x_type = elem_type(n, xz, elem_type(n, xi, TP::UINT8));
  const int w_type = elem_type(n, wz, w.type);
  if (qlinear) {
    check_quant_constants(n, 1, 2, x_type);
    check_quant_constants(n, 4, 5, w_type);
    check_quant_constants(n, 6, n.has_input(7) ? 7 : -1, elem_type(n, 7, TP::UINT8));
  } else {
    check_quant_constants(n, -1, n.has_input(2) ? 2 : -1, x_type);
    check_quant_constants(n, -1, n.has_input(3) ? 3 : -1, w_type);
  }
  const std::int64_t out_channels = w.shape[0];
  // Per-tensor or per-output-channel values as one per channel; `what` names the field.
  auto per_channel = [&](int i, double fallback, const char* what) {
    std::vector<float> v(static_cast<std::size_t>(out_channels), static_cast<float>(fallback));
    if (!n.has_input(i)) return v;
    const Value& c = constant(n, i);
    if (c.data.size() != 1 && static_cast<std::int64_t>(c.data.size()) != out_channels)
      invalid(n, std::string(what) + " has " + std::to_string(c.data.size()) + " values for " +
                     std::to_string(out_channels) + " output channels");
    for (std::size_t k = 0; k < v.size(); ++k) v[k] = static_cast<float>(c.data[c.data.size() == 1 ? 0 : k]);
    return v;
  };
  auto scalar = [&](int i, double fallback, const char* what) {
    if (!n.has_input(i)) return fallback;
    const Value& c = constant(n, i);
    if (c.data.size() != 1) invalid(n, std::string(what) + " must be one value (per-tensor), has " + std::to_string(c.data.size()));
    return c.data[0];
  };
  const double x_scale = qlinear ? scalar(1, 1.0, "x_scale") : 1.0;
  const double x_zero = scalar(xz, 0.0, "x_zero_point");
  const std::vector<float> w_scale = qlinear ? per_channel(4, 1.0, "w_scale") : std::vector<float>(static_cast<std::size_t>(out_channels), 1.0f);
  const std::vector<float> w_zero = per_channel(wz, 0.0, "w_zero_point");

  const std::size_t spatial = static_cast<std::size_t>(in.rank() - 2);
  const Dims kernel = attr_ints(n, "kernel_shape", Dims(w.shape.dims().begin() + 2, w.shape.dims().end()));
  const Dims strides = attr_ints(n, "strides", Dims(spatial, 1));
  const Dims dilations = attr_ints(n, "dilations", Dims(spatial, 1));
  if (kernel.size() != spatial || strides.size() != spatial || dilations.size() != spatial)
    invalid(n, "kernel_shape, strides and dilations need one value per spatial axis");
  const Dims pads = spatial_pads(n, in, kernel, strides, dilations);
  std::string input = tensor(n, xi);
  const Dims begin(pads.begin(), pads.begin() + static_cast<long>(spatial)),
      end(pads.begin() + static_cast<long>(spatial), pads.end());
  Dims pad = begin;
  if (begin != end) {
    // Padding holds the zero point, which stands for a real 0.
    input = pad_input(n, input, in.rank(), begin, end, x_zero);
    pad.assign(spatial, 0);
  }
  Attributes attrs;
  attrs.set("num_output", out_channels);
  attrs.set("kernel", kernel);
  attrs.set("stride", strides);
  attrs.set("pad", pad);
  attrs.set("dilation", dilations);
  attrs.set("group", attr_int(n, "group", 1));
  attrs.set("input", std::string("quantized"));
  attrs.set("input_type", quant_type_name(n, x_type));
  attrs.set("input_scale", x_scale);
  attrs.set("input_zero_point", static_cast<std::int64_t>(x_zero));
  attrs.set("weight_type", quant_type_name(n, w_type));
  const bool has_bias = qlinear && n.has_input(8);
  attrs.set("bias", static_cast<std::int64_t>(has_bias));
  if (qlinear) {
    attrs.set("output", std::string("quantized"));
    attrs.set("output_type", quant_type_name(n, elem_type(n, 7, TP::UINT8)));
    attrs.set("output_scale", scalar(6, 1.0, "y_scale"));
    attrs.set("output_zero_point", static_cast<std::int64_t>(scalar(7, 0.0, "y_zero_point")));
  } else {
    attrs.set("output", std::string("accumulator"));
  }
  std::vector<Tensor> weights{w.to_tensor(), Tensor::from(Shape{out_channels}, w_scale),
                              Tensor::from(Shape{out_channels}, w_zero)};
  if (has_bias) {
    // B is int32 in units of x_scale · w_scale.
    const Value& b = constant(n, 8);
    if (static_cast<std::int64_t>(b.data.size()) != out_channels)
      invalid(n, "B has " + std::to_string(b.data.size()) + " values for " + std::to_string(out_channels) + " output channels");
    std::vector<float> bias(static_cast<std::size_t>(out_channels));
    for (std::size_t c = 0; c < bias.size(); ++c) bias[c] = static_cast<float>(b.data[c] * x_scale * w_scale[c]);
    weights.push_back(Tensor::from(Shape{out_channels}, bias));
  }
  emit(n, "QuantizedConvolution", {input}, attrs, weights);
}

// QLinearMatMul: dequantize both sides, multiply in fp32 (exact integer sums below 2^24 before the
// scales), quantize the product.
void Importer::op_qlinear_matmul(const Node& n) {
  check_quant_constants(n, 1, 2, elem_type(n, 2, elem_type(n, 0, TP::UINT8)));
  check_quant_constants(n, 4, 5, elem_type(n, 5, elem_type(n, 3, TP::UINT8)));
  const int y_type = elem_type(n, 7, TP::UINT8);
  check_quant_constants(n, 6, 7, y_type);
  auto dequantized = [&](int x, int scale, int zero, const char* suffix) {
    Attributes attrs;
    attrs.set("axis", std::int64_t{-1});
    const Shape xs = shape(n, x), ss = shape(n, scale);
    // Per-row scales of A (ONNX: one per row M) broadcast along the last axis as a column.
    if (ss.numel() > 1 && xs.rank() >= 2 && ss[0] == xs[xs.rank() - 2] && std::string(suffix) == "a")
      attrs.set("axis", std::int64_t{xs.rank() - 2});
    return emit(n, "Dequantize", {tensor(n, x), tensor(n, scale), tensor(n, zero)}, attrs, {}, suffix)[0];
  };
  const std::string a = dequantized(0, 1, 2, "a"), b = dequantized(3, 4, 5, "b");
  const std::string product = emit(n, "MatMul", {a, b}, {}, {}, "product")[0];
  Attributes attrs;
  attrs.set("axis", std::int64_t{1});
  attrs.set("type", quant_type_name(n, y_type));
  emit(n, "Quantize", {product, tensor(n, 6), tensor(n, 7)}, attrs);
}

// MatMulInteger: (A − a_zero_point) · (B − b_zero_point) as int32, in fp32 (exact below 2^24).
void Importer::op_matmul_integer(const Node& n) {
  Attributes sub;
  sub.set("operation", std::string("sub"));
  std::string a = tensor(n, 0), b = tensor(n, 1);
  if (n.has_input(2)) {
    const Shape za = shape(n, 2), sa = shape(n, 0);
    std::string zero = tensor(n, 2);
    // A per-row zero point (length M) subtracts along rows.
    if (za.numel() > 1) zero = emit_reshape(n, zero, {za.numel(), 1}, "a_zero_column");
    if (za.numel() > 1 && sa.rank() >= 2 && za.numel() != sa[sa.rank() - 2])
      invalid(n, "a_zero_point has " + std::to_string(za.numel()) + " values for " + std::to_string(sa[sa.rank() - 2]) + " rows");
    a = emit(n, "Binary", {a, zero}, sub, {}, "a_centered")[0];
  }
  if (n.has_input(3)) b = emit(n, "Binary", {b, tensor(n, 3)}, sub, {}, "b_centered")[0];
  emit(n, "MatMul", {a, b});
}

// ---- com.microsoft's quantized operators --------------------------------------------------------
// ONNX Runtime's quantizer (QOperator format) writes these: each is defined as its float operator between
// DequantizeLinear of its quantized inputs and QuantizeLinear of its output, and is imported as those
// standard nodes (which fold constants and fuse as in QDQ models).

void Importer::require_one_value(const Node& n, std::initializer_list<int> inputs) {
  for (int i : inputs) {
    if (is_constant(n, i) && constant(n, i).data.size() != 1)
      invalid(n, "input " + std::to_string(i) + " ('" + n.input(i) + "') has " +
                     std::to_string(constant(n, i).data.size()) + " values; it must be one (per tensor)");
  }
}

std::string Importer::dequantized_input(const Node& n, int x, std::int64_t axis) {
  if (!n.has_input(x + 1))
    invalid(n,
            "input " + std::to_string(x + 1) + " (the scale of input " + std::to_string(x) + ") is missing");
  if (axis < 0) require_one_value(n, {x + 1, x + 2});
  check_quant_constants(n, x + 1, n.has_input(x + 2) ? x + 2 : -1,
                        elem_type(n, x + 2, elem_type(n, x, TP::UINT8)));
  const std::string out = fresh_name(n, "dequantized_" + std::to_string(x));
  std::vector<std::string> inputs{n.input(x), n.input(x + 1)};
  if (n.has_input(x + 2)) inputs.push_back(n.input(x + 2));
  std::vector<onnx::AttributeProto> attrs;
  if (axis >= 0) attrs.push_back(onnx_attribute("axis", axis));
  import_standard(n, "DequantizeLinear", "dequantize_" + std::to_string(x), inputs, {out}, std::move(attrs));
  return out;
}

void Importer::quantized_output(const Node& n, const std::string& real, int scale, int type) {
  if (!n.has_input(scale)) invalid(n, "input " + std::to_string(scale) + " (the output's scale) is missing");
  require_one_value(n, {scale, scale + 1});
  if (n.has_input(scale + 1)) type = elem_type(n, scale + 1, type);
  check_quant_constants(n, scale, n.has_input(scale + 1) ? scale + 1 : -1, type);
  std::string zero = n.input(scale + 1);
  if (!n.has_input(scale + 1)) {
    zero = fresh_name(n, "output_zero_point");
    constants_[zero] = Value{type, Shape{}, {0.0}};
  }
  import_standard(n, "QuantizeLinear", "quantize", {real, n.input(scale), zero}, {n.proto.output(0)});
}

void Importer::op_microsoft_qlinear(const Node& n) {
  // The float operator, the first input of each (tensor, scale, zero point) triple, and where y_scale is.
  struct Form {
    const char* op;
    std::vector<int> quantized;
    int y;
  };
  static const std::map<std::string, Form> forms = {
      {"QLinearAdd", {"Add", {0, 3}, 6}},
      {"QLinearMul", {"Mul", {0, 3}, 6}},
      {"QLinearAveragePool", {"AveragePool", {0}, 3}},
      {"QLinearGlobalAveragePool", {"GlobalAveragePool", {0}, 3}},
      {"QLinearLeakyRelu", {"LeakyRelu", {0}, 3}},
      {"QLinearSigmoid", {"Sigmoid", {0}, 3}},
      {"QLinearSoftmax", {"Softmax", {0}, 3}},
      {"QLinearConcat", {"Concat", {}, 0}},
  };
  Form form = forms.at(n.op());
  if (n.op() == "QLinearConcat") {
    // Y_scale, Y_zero_point, then a (tensor, scale, zero point) triple per input.
    if (n.proto.input_size() < 5 || (n.proto.input_size() - 2) % 3 != 0)
      invalid(n, "has " + std::to_string(n.proto.input_size()) +
                     " inputs; it takes Y_scale, Y_zero_point and (tensor, scale, zero point) triples");
    for (int i = 2; i < n.proto.input_size(); i += 3) form.quantized.push_back(i);
  }
  if (attr_int(n, "channels_last", 0) != 0) unsupported(n, "channels_last=1 (NHWC) is not supported");
  std::vector<std::string> floats;
  for (int x : form.quantized) floats.push_back(dequantized_input(n, x));
  const std::string result = fresh_name(n, "float");
  // QLinearSoftmax's meaning follows the Softmax of its `opset` attribute.
  const int opset = n.op() == "QLinearSoftmax" ? static_cast<int>(attr_int(n, "opset", opset_)) : 0;
  std::vector<onnx::AttributeProto> attrs;  // the float operator's: all but the contrib operator's own
  for (const onnx::AttributeProto& a : n.proto.attribute()) {
    if (a.name() != "channels_last" && a.name() != "opset") attrs.push_back(a);
  }
  import_standard(n, form.op, "float", floats, {result}, std::move(attrs), opset);
  const int x = form.quantized.front();
  quantized_output(n, result, form.y, elem_type(n, x + 2, elem_type(n, x, TP::UINT8)));
}

// QGemm: Y = alpha·A·B + C with A and B dequantized (B per tensor or per column), C int32 in units of
// alpha·a_scale·b_scale; Y quantized with y_scale and y_zero_point when they are given, else float.
void Importer::op_qgemm(const Node& n) {
  const bool trans_b = attr_int(n, "transB", 0) != 0;
  const double alpha = attr_float(n, "alpha", 1.0);
  const Shape b_shape = shape(n, 3);
  if (b_shape.rank() != 2) invalid(n, "B must be a matrix, has shape " + b_shape.str());
  const std::int64_t columns = trans_b ? b_shape[0] : b_shape[1];
  const std::string a = dequantized_input(n, 0);
  const bool b_per_column = is_constant(n, 4) && constant(n, 4).data.size() > 1;
  if (b_per_column && static_cast<std::int64_t>(constant(n, 4).data.size()) != columns)
    invalid(n, "b_scale has " + std::to_string(constant(n, 4).data.size()) + " values for " +
                   std::to_string(columns) + " columns of B");
  const std::string b = dequantized_input(n, 3, b_per_column ? (trans_b ? 0 : 1) : -1);
  std::vector<std::string> inputs{a, b};
  if (n.has_input(6)) {
    if (!is_constant(n, 6) || !is_constant(n, 1) || !is_constant(n, 4))
      unsupported(n, "C, a_scale and b_scale must be constants");
    Value c = constant(n, 6);
    const std::vector<double>& b_scale = constant(n, 4).data;
    const double a_scale = constant(n, 1).data.at(0);
    if (b_per_column && (c.shape.rank() == 0 || c.shape[c.shape.rank() - 1] != columns)) {
      if (c.data.size() != 1)
        invalid(n, "C of shape " + c.shape.str() + " does not run along B's " + std::to_string(columns) +
                       " columns, which b_scale scales apart");
      c = Value{c.type, Shape{columns}, std::vector<double>(static_cast<std::size_t>(columns), c.data[0])};
    }
    for (std::size_t i = 0; i < c.data.size(); ++i)
      c.data[i] *= alpha * a_scale * b_scale[b_per_column ? i % static_cast<std::size_t>(columns) : 0];
    c.type = TP::FLOAT;
    const std::string bias = fresh_name(n, "bias");
    constants_[bias] = std::move(c);
    inputs.push_back(bias);
  }
  // ONNX Runtime quantizes Y only with y_zero_point, and then divides by y_scale; a y_scale alone is refused.
  if (n.has_input(7) != n.has_input(8))
    unsupported(n, "y_scale and y_zero_point must be given together (a float Y has neither)");
  const bool quantized = n.has_input(7);
  const std::string result = quantized ? fresh_name(n, "float") : n.proto.output(0);
  import_standard(n, "Gemm", "float", inputs, {result},
                  {onnx_attribute("alpha", alpha), onnx_attribute("transA", attr_int(n, "transA", 0)),
                   onnx_attribute("transB", std::int64_t{trans_b ? 1 : 0})});
  if (quantized) quantized_output(n, result, 7, TP::UINT8);
}

// ---- padding, resizing, reductions ------------------------------------------------------------

void Importer::op_pad(const Node& n) {
  const Shape in = shape(n, 0);
  const std::string mode = attr_string(n, "mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge")
    unsupported(n, "mode '" + mode + "' is not supported");
  Dims pads;
  double value = 0;
  if (opset_ < 11) {
    pads = attr_ints(n, opset_ < 2 ? "paddings" : "pads", {});
    value = attr_float(n, "value", 0.0);
  } else {
    pads = constant_ints(n, 1);
    if (n.has_input(2)) value = constant(n, 2).data.at(0);
    if (n.has_input(3)) {
      // Opset 18: pads for the listed axes only.
      const Dims axes = normalized_axes(constant_ints(n, 3), in.rank());
      Dims full(static_cast<std::size_t>(2 * in.rank()), 0);
      for (std::size_t i = 0; i < axes.size(); ++i) {
        full[static_cast<std::size_t>(axes[i])] = pads.at(i);
        full[static_cast<std::size_t>(axes[i] + in.rank())] = pads.at(i + axes.size());
      }
      pads = full;
    }
  }
  // PyTorch exports a Pad of nothing before some pooling layers (NIN's): no layer, no copy.
  if (std::all_of(pads.begin(), pads.end(), [](std::int64_t p) { return p == 0; })) return pass_through(n);
  Attributes attrs;
  attrs.set("pads", pads);
  attrs.set("mode", mode);
  attrs.set("value", value);
  if (is_constant(n, 0)) {
    set_constant(n, 0, fold(n, "Pad", {constant(n, 0)}, attrs));
  } else {
    emit(n, "Pad", {tensor(n, 0)}, attrs);
  }
}

void Importer::op_resize(const Node& n) {
  const Shape in = shape(n, 0);
  std::string mode = attr_string(n, "mode", "nearest");
  if (mode != "nearest" && mode != "linear" && mode != "cubic")
    unsupported(n, "mode '" + mode + "' is not supported");
  Attributes attrs;
  attrs.set("mode", mode);
  std::vector<double> scales;
  Dims sizes;
  if (opset_ < 11) {
    attrs.set("coordinate_transformation_mode", std::string("asymmetric"));
    attrs.set("nearest_mode", std::string("floor"));
    scales = constant(n, 1).data;
  } else {
    const std::string coordinates = attr_string(n, "coordinate_transformation_mode", "half_pixel");
    if (coordinates == "tf_crop_and_resize") {
      if (!n.has_input(1)) invalid(n, "tf_crop_and_resize needs input 'roi'");
      attrs.set("roi", constant(n, 1).data);
      attrs.set("extrapolation_value", attr_float(n, "extrapolation_value", 0.0));
    }
    attrs.set("exclude_outside", attr_int(n, "exclude_outside", 0));
    attrs.set("cubic_coeff_a", attr_float(n, "cubic_coeff_a", -0.75));
    if (attr_int(n, "antialias", 0) != 0) unsupported(n, "antialias is not supported");
    if (n.has("axes") || n.has("keep_aspect_ratio_policy"))
      unsupported(n, "axes and keep_aspect_ratio_policy are not supported");
    attrs.set("coordinate_transformation_mode", coordinates);
    attrs.set("nearest_mode", attr_string(n, "nearest_mode", "round_prefer_floor"));
    if (n.has_input(2) && constant(n, 2).shape.numel() > 0) scales = constant(n, 2).data;
    if (n.has_input(3)) sizes = constant_ints(n, 3);
  }
  if (!sizes.empty()) {
    attrs.set("sizes", sizes);
  } else if (!scales.empty()) {
    attrs.set("scales", scales);
  } else {
    invalid(n, "needs scales or sizes");
  }
  if (static_cast<int>(std::max(sizes.size(), scales.size())) != in.rank()) {
    invalid(n, "needs one scale or size per axis of " + in.str());
  }
  emit(n, "Resize", {tensor(n, 0)}, attrs);
}

void Importer::op_reduce(const Node& n) {
  static const std::map<std::string, std::string> kOps = {
      {"ReduceL1", "l1"},          {"ReduceL2", "l2"},
      {"ReduceLogSum", "log_sum"}, {"ReduceLogSumExp", "log_sum_exp"},
      {"ReduceMax", "max"},        {"ReduceMean", "mean"},
      {"ReduceMin", "min"},        {"ReduceProd", "prod"},
      {"ReduceSum", "sum"},        {"ReduceSumSquare", "sum_square"}};
  // Axes moved from an attribute to an input: ReduceSum in opset 13, the others in 18.
  const bool axes_input = opset_ >= 18 || (n.op() == "ReduceSum" && opset_ >= 13);
  const Dims axes = axes_input ? (n.has_input(1) ? constant_ints(n, 1) : Dims{}) : attr_ints(n, "axes", {});
  if (axes.empty() && attr_int(n, "noop_with_empty_axes", 0) != 0) {
    if (is_constant(n, 0)) {
      set_constant(n, 0, constant(n, 0));
    } else {
      alias(n, 0, tensor(n, 0));
    }
    return;
  }
  Attributes attrs;
  attrs.set("operation", kOps.at(n.op()));
  if (!axes.empty()) attrs.set("axes", axes);
  attrs.set("keepdims", attr_int(n, "keepdims", 1));
  if (is_constant(n, 0)) {
    set_constant(n, 0, fold(n, "Reduce", {constant(n, 0)}, attrs));
  } else {
    emit(n, "Reduce", {tensor(n, 0)}, attrs);
  }
}

// Expand: numpy broadcasting of the input to a shape (exporters make initial states this way).
void Importer::op_expand(const Node& n) {
  const Shape in = shape(n, 0);
  const Dims target = constant_ints(n, 1);
  const std::size_t rank = std::max(target.size(), static_cast<std::size_t>(in.rank()));
  Dims out(rank), in_dims(rank, 1), to(rank, 1);
  std::copy(in.dims().begin(), in.dims().end(), in_dims.begin() + static_cast<long>(rank - static_cast<std::size_t>(in.rank())));
  std::copy(target.begin(), target.end(), to.begin() + static_cast<long>(rank - target.size()));
  for (std::size_t a = 0; a < rank; ++a) {
    if (in_dims[a] != to[a] && in_dims[a] != 1 && to[a] != 1)
      invalid(n, "cannot broadcast " + in.str() + " to " + Shape(target).str());
    out[a] = in_dims[a] == 1 ? to[a] : in_dims[a];
  }
  const Shape out_shape(out);
  if (!is_constant(n, 0)) {
    // Adding zeros of the target shape broadcasts the same way.
    const std::string zeros = n.name + "/zeros";
    constants_[zeros] = Value{TP::FLOAT, Shape(to), std::vector<double>(static_cast<std::size_t>(Shape(to).numel()), 0.0)};
    Attributes add;
    add.set("operation", std::string("add"));
    emit(n, "Binary", {tensor(n, 0), tensor_of(zeros)}, add);
    return;
  }
  const Value& v = constant(n, 0);
  Value result{v.type, out_shape, std::vector<double>(static_cast<std::size_t>(out_shape.numel()))};
  for (std::int64_t i = 0; i < out_shape.numel(); ++i) {
    std::int64_t rest = i, from = 0, stride = 1;
    for (std::size_t a = rank; a-- > 0;) {
      const std::int64_t coordinate = rest % out[a];
      rest /= out[a];
      if (in_dims[a] != 1) from += coordinate * stride;
      stride *= in_dims[a];
    }
    result.data[static_cast<std::size_t>(i)] = v.data[static_cast<std::size_t>(from)];
  }
  set_constant(n, 0, std::move(result));
}

// ---- recurrent layers -------------------------------------------------------------------------

void Importer::op_recurrent(const Node& n) {
  const std::string& op = n.op();
  const std::int64_t gates = op == "LSTM" ? 4 : op == "GRU" ? 3 : 1;
  const Shape x = shape(n, 0);
  const std::int64_t layout = attr_int(n, "layout", 0);
  if (layout != 0 && layout != 1) invalid(n, "layout must be 0 or 1, is " + std::to_string(layout));
  if (x.rank() != 3) invalid(n, "X must have rank 3, has shape " + x.str());
  const std::int64_t steps = layout ? x[1] : x[0], batch = layout ? x[0] : x[1];
  const Value& w = constant(n, 1);
  const Value& r = constant(n, 2);
  if (w.shape.rank() != 3 || r.shape.rank() != 3) {
    invalid(n, "W and R must have rank 3, have shapes " + w.shape.str() + " and " + r.shape.str());
  }
  const std::string direction = attr_string(n, "direction", "forward");
  const std::int64_t directions = direction == "bidirectional" ? 2 : 1;
  if (direction != "forward" && direction != "reverse" && direction != "bidirectional")
    invalid(n, "direction '" + direction + "' is none of forward, reverse, bidirectional");
  const std::int64_t hidden = attr_int(n, "hidden_size", r.shape[2]);
  const Shape w_expected{directions, gates * hidden, x[2]}, r_expected{directions, gates * hidden, hidden};
  if (w.shape != w_expected || r.shape != r_expected) {
    invalid(n, "inconsistent hidden sizes: hidden_size " + std::to_string(hidden) + ", " +
                   std::to_string(directions) + " direction(s) and X " + x.str() + " need W " + w_expected.str() +
                   " and R " + r_expected.str() + ", got " + w.shape.str() + " and " + r.shape.str());
  }
  Attributes attrs;
  attrs.set("hidden_size", hidden);
  attrs.set("direction", direction);
  attrs.set("layout", layout);
  if (const auto* a = attr(n, "activations", onnx::AttributeProto::STRINGS)) {
    std::string list;
    for (const std::string& name : a->strings()) list += (list.empty() ? "" : ",") + name;
    attrs.set("activations", list);
  }
  if (n.has("activation_alpha")) attrs.set("activation_alpha", attr_floats(n, "activation_alpha"));
  if (n.has("activation_beta")) attrs.set("activation_beta", attr_floats(n, "activation_beta"));
  if (n.has("clip")) {
    const double clip = attr_float(n, "clip", 0);
    if (!(clip > 0)) invalid(n, "clip must be positive, is " + std::to_string(clip));
    attrs.set("clip", clip);
  }
  if (op == "LSTM") attrs.set("input_forget", attr_int(n, "input_forget", 0) != 0 ? std::int64_t{1} : std::int64_t{0});
  if (op == "GRU")
    attrs.set("linear_before_reset", attr_int(n, "linear_before_reset", 0) != 0 ? std::int64_t{1} : std::int64_t{0});

  std::vector<Tensor> weights{w.to_tensor(), r.to_tensor()};
  if (n.has_input(3)) {
    const Value& b = constant(n, 3);
    if (b.shape != Shape{directions, 2 * gates * hidden})
      invalid(n, "B must have shape " + Shape{directions, 2 * gates * hidden}.str() + ", has " + b.shape.str());
    weights.push_back(b.to_tensor());
  }
  attrs.set("bias", std::int64_t{n.has_input(3) ? 1 : 0});
  if (op == "LSTM") {
    if (n.has_input(7)) {
      const Value& p = constant(n, 7);
      if (p.shape != Shape{directions, 3 * hidden})
        invalid(n, "P must have shape " + Shape{directions, 3 * hidden}.str() + ", has " + p.shape.str());
      weights.push_back(p.to_tensor());
    }
    attrs.set("peepholes", std::int64_t{n.has_input(7) ? 1 : 0});
  }

  std::vector<std::string> inputs{tensor(n, 0)};
  if (n.has_input(4)) {
    if (is_constant(n, 4)) {
      const Value& lengths = constant(n, 4);
      for (std::size_t b = 0; b < lengths.data.size(); ++b) {
        if (lengths.data[b] < 0 || lengths.data[b] > static_cast<double>(steps)) {
          invalid(n, "sequence_lens[" + std::to_string(b) + "] is " + std::to_string(static_cast<std::int64_t>(lengths.data[b])) +
                         ", past the input's " + std::to_string(steps) + " steps");
        }
      }
    }
    attrs.set("sequence_lens", std::int64_t{1});
    inputs.push_back(tensor(n, 4));
  }
  const int states = op == "LSTM" ? 2 : 1;
  bool any_state = false;
  for (int s = 0; s < states; ++s) any_state = any_state || n.has_input(5 + s);
  if (any_state) {
    attrs.set("initial_state", std::int64_t{1});
    const Shape state = layout ? Shape{batch, directions, hidden} : Shape{directions, batch, hidden};
    for (int s = 0; s < states; ++s) {
      if (n.has_input(5 + s)) {
        inputs.push_back(tensor(n, 5 + s));
      } else {
        // The other state was given: this one starts at zero.
        const std::string zeros = n.name + (s == 0 ? "/initial_h" : "/initial_c");
        constants_[zeros] = Value{TP::FLOAT, state, std::vector<double>(static_cast<std::size_t>(state.numel()), 0.0)};
        inputs.push_back(tensor_of(zeros));
      }
    }
  }
  emit(n, op, inputs, attrs, weights, "", std::max(1, n.outputs()));
}

}  // namespace

Graph load_onnx(const std::string& path, const OnnxImportOptions& options) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw FileError(path + ": cannot open the ONNX model");
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return Importer(path, dir.empty() ? "." : dir, options).run(bytes);
}

Graph load_onnx(std::span<const std::byte> bytes, const std::string& name, const OnnxImportOptions& options) {
  return Importer(name, "", options).run(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

std::vector<std::string> onnx_supported_ops() { return Importer::supported(); }

}  // namespace espresso

