// TensorFlow Lite → Graph. The FlatBuffer is read with the bounds-checked reader in flatbuffer.h;
// field numbers follow TensorFlow Lite's schema (docs/tflite.md lists those used). Operators map onto
// espresso's layer types; rank-4 tensors are tracked in NHWC (the file's order) and NCHW (espresso's)
// and converted only where an operator needs the other one.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <numeric>
#include <set>

#include "core/half.h"
#include "espresso/errors.h"
#include "espresso/limits.h"
#include "espresso/tflite.h"
#include "import/tflite/flatbuffer.h"
#include "layers/control_flow.h"
#include "layers/registry.h"

namespace espresso {
namespace {

using tflite_detail::FlatBuffer;
using tflite_detail::FlatTable;
using Dims = std::vector<std::int64_t>;

// ---- schema facts ------------------------------------------------------------------------------

// BuiltinOperator values, by name (the schema's enum; unknown values print as BUILTIN_<n>).
constexpr const char* kOperatorNames[] = {"ADD",
                                          "AVERAGE_POOL_2D",
                                          "CONCATENATION",
                                          "CONV_2D",
                                          "DEPTHWISE_CONV_2D",
                                          "DEPTH_TO_SPACE",
                                          "DEQUANTIZE",
                                          "EMBEDDING_LOOKUP",
                                          "FLOOR",
                                          "FULLY_CONNECTED",
                                          "HASHTABLE_LOOKUP",
                                          "L2_NORMALIZATION",
                                          "L2_POOL_2D",
                                          "LOCAL_RESPONSE_NORMALIZATION",
                                          "LOGISTIC",
                                          "LSH_PROJECTION",
                                          "LSTM",
                                          "MAX_POOL_2D",
                                          "MUL",
                                          "RELU",
                                          "RELU_N1_TO_1",
                                          "RELU6",
                                          "RESHAPE",
                                          "RESIZE_BILINEAR",
                                          "RNN",
                                          "SOFTMAX",
                                          "SPACE_TO_DEPTH",
                                          "SVDF",
                                          "TANH",
                                          "CONCAT_EMBEDDINGS",
                                          "SKIP_GRAM",
                                          "CALL",
                                          "CUSTOM",
                                          "EMBEDDING_LOOKUP_SPARSE",
                                          "PAD",
                                          "UNIDIRECTIONAL_SEQUENCE_RNN",
                                          "GATHER",
                                          "BATCH_TO_SPACE_ND",
                                          "SPACE_TO_BATCH_ND",
                                          "TRANSPOSE",
                                          "MEAN",
                                          "SUB",
                                          "DIV",
                                          "SQUEEZE",
                                          "UNIDIRECTIONAL_SEQUENCE_LSTM",
                                          "STRIDED_SLICE",
                                          "BIDIRECTIONAL_SEQUENCE_RNN",
                                          "EXP",
                                          "TOPK_V2",
                                          "SPLIT",
                                          "LOG_SOFTMAX",
                                          "DELEGATE",
                                          "BIDIRECTIONAL_SEQUENCE_LSTM",
                                          "CAST",
                                          "PRELU",
                                          "MAXIMUM",
                                          "ARG_MAX",
                                          "MINIMUM",
                                          "LESS",
                                          "NEG",
                                          "PADV2",
                                          "GREATER",
                                          "GREATER_EQUAL",
                                          "LESS_EQUAL",
                                          "SELECT",
                                          "SLICE",
                                          "SIN",
                                          "TRANSPOSE_CONV",
                                          "SPARSE_TO_DENSE",
                                          "TILE",
                                          "EXPAND_DIMS",
                                          "EQUAL",
                                          "NOT_EQUAL",
                                          "LOG",
                                          "SUM",
                                          "SQRT",
                                          "RSQRT",
                                          "SHAPE",
                                          "POW",
                                          "ARG_MIN",
                                          "FAKE_QUANT",
                                          "REDUCE_PROD",
                                          "REDUCE_MAX",
                                          "PACK",
                                          "LOGICAL_OR",
                                          "ONE_HOT",
                                          "LOGICAL_AND",
                                          "LOGICAL_NOT",
                                          "UNPACK",
                                          "REDUCE_MIN",
                                          "FLOOR_DIV",
                                          "REDUCE_ANY",
                                          "SQUARE",
                                          "ZEROS_LIKE",
                                          "FILL",
                                          "FLOOR_MOD",
                                          "RANGE",
                                          "RESIZE_NEAREST_NEIGHBOR",
                                          "LEAKY_RELU",
                                          "SQUARED_DIFFERENCE",
                                          "MIRROR_PAD",
                                          "ABS",
                                          "SPLIT_V",
                                          "UNIQUE",
                                          "CEIL",
                                          "REVERSE_V2",
                                          "ADD_N",
                                          "GATHER_ND",
                                          "COS",
                                          "WHERE",
                                          "RANK",
                                          "ELU",
                                          "REVERSE_SEQUENCE",
                                          "MATRIX_DIAG",
                                          "QUANTIZE",
                                          "MATRIX_SET_DIAG",
                                          "ROUND",
                                          "HARD_SWISH",
                                          "IF",
                                          "WHILE",
                                          "NON_MAX_SUPPRESSION_V4",
                                          "NON_MAX_SUPPRESSION_V5",
                                          "SCATTER_ND",
                                          "SELECT_V2",
                                          "DENSIFY",
                                          "SEGMENT_SUM",
                                          "BATCH_MATMUL",
                                          "PLACEHOLDER_FOR_GREATER_OP_CODES",
                                          "CUMSUM",
                                          "CALL_ONCE",
                                          "BROADCAST_TO",
                                          "RFFT2D",
                                          "CONV_3D",
                                          "IMAG",
                                          "REAL",
                                          "COMPLEX_ABS",
                                          "HASHTABLE",
                                          "HASHTABLE_FIND",
                                          "HASHTABLE_IMPORT",
                                          "HASHTABLE_SIZE",
                                          "REDUCE_ALL",
                                          "CONV_3D_TRANSPOSE",
                                          "VAR_HANDLE",
                                          "READ_VARIABLE",
                                          "ASSIGN_VARIABLE",
                                          "BROADCAST_ARGS",
                                          "RANDOM_STANDARD_NORMAL",
                                          "BUCKETIZE",
                                          "RANDOM_UNIFORM",
                                          "MULTINOMIAL",
                                          "GELU",
                                          "DYNAMIC_UPDATE_SLICE",
                                          "RELU_0_TO_1"};

enum Builtin : int {
  ADD = 0,
  AVERAGE_POOL_2D = 1,
  CONCATENATION = 2,
  CONV_2D = 3,
  DEPTHWISE_CONV_2D = 4,
  DEPTH_TO_SPACE = 5,
  DEQUANTIZE = 6,
  FULLY_CONNECTED = 9,
  LOGISTIC = 14,
  MAX_POOL_2D = 17,
  MUL = 18,
  RELU = 19,
  RELU_N1_TO_1 = 20,
  RELU6 = 21,
  RESHAPE = 22,
  RESIZE_BILINEAR = 23,
  SOFTMAX = 25,
  TANH = 28,
  CUSTOM = 32,
  PAD = 34,
  GATHER = 36,
  TRANSPOSE = 39,
  MEAN = 40,
  SUB = 41,
  DIV = 42,
  SQUEEZE = 43,
  STRIDED_SLICE = 45,
  EXP = 47,
  SPLIT = 49,
  PRELU = 54,
  MAXIMUM = 55,
  MINIMUM = 57,
  NEG = 59,
  PADV2 = 60,
  SLICE = 65,
  TRANSPOSE_CONV = 67,
  EXPAND_DIMS = 70,
  LOG = 73,
  SUM = 74,
  SQRT = 75,
  RSQRT = 76,
  REDUCE_PROD = 81,
  REDUCE_MAX = 82,
  REDUCE_MIN = 89,
  RESIZE_NEAREST_NEIGHBOR = 97,
  LEAKY_RELU = 98,
  SQUARED_DIFFERENCE = 99,
  ABS = 101,
  LESS = 58,
  GREATER = 61,
  GREATER_EQUAL = 62,
  LESS_EQUAL = 63,
  EQUAL = 71,
  NOT_EQUAL = 72,
  IF = 118,
  WHILE = 119,
  QUANTIZE = 114,
  HARD_SWISH = 117,
  DENSIFY = 124,
  BATCH_MATMUL = 126,
  PLACEHOLDER_FOR_GREATER_OP_CODES = 127
};

std::string operator_name(int code) {
  if (code >= 0 && code < static_cast<int>(std::size(kOperatorNames))) return kOperatorNames[code];
  return "BUILTIN_" + std::to_string(code);
}

// TensorType values and their element sizes.
enum TensorType : int {
  FLOAT32 = 0,
  FLOAT16 = 1,
  INT32 = 2,
  UINT8 = 3,
  INT64 = 4,
  BOOL = 6,
  INT16 = 7,
  INT8 = 9
};

std::string type_name(int type) {
  static const std::map<int, std::string> names = {
      {0, "FLOAT32"}, {1, "FLOAT16"}, {2, "INT32"},     {3, "UINT8"}, {4, "INT64"},   {5, "STRING"},
      {6, "BOOL"},    {7, "INT16"},   {8, "COMPLEX64"}, {9, "INT8"},  {10, "FLOAT64"}};
  auto it = names.find(type);
  return it == names.end() ? "type " + std::to_string(type) : it->second;
}

std::size_t element_size(int type) {
  switch (type) {
    case FLOAT32:
    case INT32:
      return 4;
    case FLOAT16:
    case INT16:
      return 2;
    case UINT8:
    case INT8:
    case BOOL:
      return 1;
    case INT64:
      return 8;
    default:
      return 0;
  }
}

// Field numbers of the tables read here.
namespace field {
constexpr int model_operator_codes = 1, model_subgraphs = 2, model_buffers = 4;
constexpr int code_deprecated = 0, code_custom = 1, code_builtin = 3;
constexpr int graph_tensors = 0, graph_inputs = 1, graph_outputs = 2, graph_operators = 3;
constexpr int tensor_shape = 0, tensor_type = 1, tensor_buffer = 2, tensor_name = 3, tensor_quantization = 4,
              tensor_sparsity = 6, tensor_shape_signature = 7;
constexpr int quant_scale = 2, quant_zero_point = 3, quant_details = 5, quant_dimension = 6;
constexpr int op_opcode = 0, op_inputs = 1, op_outputs = 2, op_options = 4;
constexpr int buffer_data = 0, buffer_offset = 1, buffer_size = 2;
constexpr int sparsity_order = 0, sparsity_block_map = 1, sparsity_dims = 2;
constexpr int dim_format = 0, dim_dense_size = 1, dim_segments_type = 2, dim_segments = 3,
              dim_indices_type = 4, dim_indices = 5;
}  // namespace field

// No tensor may claim more elements (keeps every product of dimensions far from overflow).
constexpr std::int64_t kMaxElements = std::int64_t{1} << 40;
// DENSIFY expands at load time, in memory: at most this many elements.
constexpr std::int64_t kMaxDenseElements = std::int64_t{1} << 28;

// ---- layout ------------------------------------------------------------------------------------

// Output axis i of a Transpose is input axis perm[i].
const Dims kToNchw = {0, 3, 1, 2};
const Dims kToNhwc = {0, 2, 3, 1};
// Where NHWC axis a lives in NCHW.
constexpr int kNchwAxisOf[4] = {0, 2, 3, 1};

Dims permuted(const Dims& dims, const Dims& perm) {
  Dims out(perm.size());
  for (std::size_t i = 0; i < perm.size(); ++i) out[i] = dims[static_cast<std::size_t>(perm[i])];
  return out;
}

std::string dims_str(const Dims& dims) { return Shape(dims).str(); }

// A tensor known at load time, in the file's layout. Integers are exact in a double up to 2^53.
struct Const {
  Dims shape;
  std::vector<double> values;
  bool integer = false;

  std::int64_t numel() const { return Shape(shape).numel(); }
  Tensor to_tensor() const {
    std::vector<float> data(values.begin(), values.end());
    return Tensor::from(Shape(shape), data);
  }
  Const permute(const Dims& perm) const {
    Const out{permuted(shape, perm), std::vector<double>(values.size()), integer};
    const int rank = static_cast<int>(shape.size());
    Dims in_strides(shape.size(), 1);
    for (int i = rank - 2; i >= 0; --i)
      in_strides[static_cast<std::size_t>(i)] =
          in_strides[static_cast<std::size_t>(i) + 1] * shape[static_cast<std::size_t>(i) + 1];
    Dims index(shape.size(), 0);
    for (std::size_t flat = 0; flat < out.values.size(); ++flat) {
      std::int64_t source = 0;
      for (int i = 0; i < rank; ++i)
        source += index[static_cast<std::size_t>(i)] *
                  in_strides[static_cast<std::size_t>(perm[static_cast<std::size_t>(i)])];
      out.values[flat] = values[static_cast<std::size_t>(source)];
      for (int i = rank - 1; i >= 0; --i) {
        if (++index[static_cast<std::size_t>(i)] < out.shape[static_cast<std::size_t>(i)]) break;
        index[static_cast<std::size_t>(i)] = 0;
      }
    }
    return out;
  }
};

struct TfTensor {
  std::string name;  // unique in the graph
  Dims shape;
  int type = FLOAT32;
  std::uint32_t buffer = 0;
  FlatTable quantization;
  FlatTable sparsity;
  bool dynamic = false;  // shape_signature holds -1
  Dims signature;        // shape_signature: -1 where a dimension is fixed only at run time
};

struct TfOperator {
  int index = 0;
  int code = 0;
  std::string custom;
  std::vector<int> inputs, outputs;
  FlatTable options;
};

// A tensor computed by the graph: the names of its NHWC (file order) and NCHW versions, either may
// be empty until something needs it. Tensors of other ranks only have `file`.
struct Live {
  std::string file;
  std::string nchw;
};

// What the importer of a subgraph that IF or WHILE runs is told by the operator's importer.
struct Nested {
  int subgraph = 0;
  std::vector<int> around;  // the subgraphs being imported around this one, outermost first
  // Per subgraph input: its value where the operator's operand is a constant (folded into the subgraph,
  // so weights stay constants), and its shape in the file's order.
  std::vector<std::optional<Const>> constants;
  std::vector<Dims> shapes;
};

class Importer {
 public:
  Importer(std::span<const std::byte> bytes, std::string path, TfliteImportOptions options = {})
      : bytes_(bytes), buffer_(bytes, path), path_(std::move(path)), options_(std::move(options)) {}
  Importer(std::span<const std::byte> bytes, std::string path, Nested nested)
      : bytes_(bytes), buffer_(bytes, path), path_(std::move(path)), nested_(std::move(nested)) {}
  Graph run();
  static const std::map<int, void (Importer::*)(const TfOperator&)>& handlers();

 private:
  using Handler = void (Importer::*)(const TfOperator&);

  // Messages.
  std::string where(const TfOperator& op) const {
    std::string out = path_ + ": operator " + std::to_string(op.index) + " (" + operator_name(op.code) + ")";
    if (!op.outputs.empty() && op.outputs[0] >= 0)
      out += " -> '" + tensors_[static_cast<std::size_t>(op.outputs[0])].name + "'";
    return out;
  }
  [[noreturn]] void invalid(const TfOperator& op, const std::string& what) const {
    throw ModelError(where(op) + ": " + what);
  }
  [[noreturn]] void unsupported(const TfOperator& op, const std::string& what) const {
    throw UnsupportedError(where(op) + ": " + what);
  }
  std::string tensor_where(int t) const {
    return path_ + ": tensor " + std::to_string(t) + " '" + tensors_[static_cast<std::size_t>(t)].name + "'";
  }

  // Reading the file.
  void read_model();
  std::span<const std::byte> buffer_bytes(int t);
  Const read_constant(int t);
  void check_supported() const;

  // Operands.
  const TfTensor& info(int t) const { return tensors_[static_cast<std::size_t>(t)]; }
  int input(const TfOperator& op, std::size_t i) const;
  bool has_input(const TfOperator& op, std::size_t i) const {
    return i < op.inputs.size() && op.inputs[i] >= 0;
  }
  bool is_constant(int t) const { return constants_.count(t) != 0; }
  const Const& constant(const TfOperator& op, std::size_t i);
  Dims constant_ints(const TfOperator& op, std::size_t i);
  Dims shape_of(int t) const { return info(t).shape; }
  int rank_of(int t) const { return static_cast<int>(info(t).shape.size()); }
  // Whether tensor t is (or will cheaply be) available in NCHW.
  bool prefers_nchw(int t) const {
    if (rank_of(t) != 4) return false;
    auto it = live_.find(t);
    return it != live_.end() && !it->second.nchw.empty();
  }
  std::string file_order(int t);
  std::string nchw(int t);
  std::string operand(int t, bool in_nchw) { return in_nchw ? nchw(t) : file_order(t); }

  // Emitting layers.
  std::vector<std::string> emit(const TfOperator& op, const std::string& type,
                                std::vector<std::string> inputs, Attributes attrs,
                                std::vector<Tensor> weights, std::vector<std::string> outputs,
                                std::vector<Subgraph> subgraphs = {});
  std::string emit_helper(const TfOperator& op, const std::string& suffix, const std::string& type,
                          std::vector<std::string> inputs, Attributes attrs = {},
                          std::vector<Tensor> weights = {});
  std::string emit_constant(const std::string& name, const Const& value);
  // A layout transpose of `from`; one that only moves size-1 axes of a tensor of fixed shape (not
  // `dynamic`) becomes a Reshape.
  std::string emit_layout(const std::string& from, const Dims& perm, const std::string& to, bool dynamic);
  // The name the output of `op` number `i` gets in layout `in_nchw`.
  std::string output_name(int t, bool in_nchw) const;
  // Records tensor t as computed in `graph_name` and checks its shape against the file's.
  void bind(const TfOperator& op, int t, bool in_nchw, const std::string& graph_name);
  // Emits the op's main layer writing output 0, followed by its fused activation.
  void emit_with_activation(const TfOperator& op, int activation, const std::string& type,
                            std::vector<std::string> inputs, Attributes attrs, std::vector<Tensor> weights,
                            bool in_nchw);
  void set_constant(int t, Const value);

  // Helpers.
  std::pair<Dims, Dims> same_padding(const TfOperator& op, int padding, const Dims& in_hw, const Dims& kernel,
                                     const Dims& stride, const Dims& dilation) const;
  std::string pad_spatial(const TfOperator& op, const std::string& input, const Dims& begin, const Dims& end,
                          double value);
  std::pair<std::vector<std::string>, bool> elementwise_operands(const TfOperator& op);
  void elementwise(const TfOperator& op, const std::string& operation, int activation);
  void unary(const TfOperator& op, const std::string& type, Attributes attrs);
  void reshape_to_output(const TfOperator& op);

  // Handlers.
  void op_conv(const TfOperator& op);
  void op_depthwise(const TfOperator& op);
  void op_transpose_conv(const TfOperator& op);
  void op_pool(const TfOperator& op);
  void op_fully_connected(const TfOperator& op);
  void op_binary(const TfOperator& op);
  void op_squared_difference(const TfOperator& op);
  void op_activation(const TfOperator& op);
  void op_leaky_relu(const TfOperator& op);
  void op_prelu(const TfOperator& op);
  void op_softmax(const TfOperator& op);
  void op_concat(const TfOperator& op);
  void op_pad(const TfOperator& op);
  void op_reshape(const TfOperator& op);
  void op_transpose(const TfOperator& op);
  void op_reduce(const TfOperator& op);
  void op_resize(const TfOperator& op);
  void op_dequantize(const TfOperator& op);
  void op_densify(const TfOperator& op);
  void op_quantize(const TfOperator& op);
  void op_strided_slice(const TfOperator& op);
  void op_slice(const TfOperator& op);
  void op_gather(const TfOperator& op);
  void op_split(const TfOperator& op);
  void op_batch_matmul(const TfOperator& op);
  void op_depth_to_space(const TfOperator& op);
  void op_compare(const TfOperator& op);
  // Control flow (docs/control_flow.md): subgraph `index` imported for `op` with these inputs.
  Graph import_subgraph(const TfOperator& op, std::int32_t index, const std::vector<std::optional<Const>>& constants,
                        const std::vector<Dims>& shapes);
  // Copies `graph`'s layers into graph_ with `prefix` before their names, fed from `inputs`; returns
  // the names its outputs got.
  std::vector<std::string> inline_graph(const Graph& graph, const std::string& prefix,
                                        const std::vector<std::string>& inputs, Graph& into);
  void op_if(const TfOperator& op);
  void op_while(const TfOperator& op);

  std::span<const std::byte> bytes_;
  FlatBuffer buffer_;
  std::string path_;
  TfliteImportOptions options_;
  std::optional<Nested> nested_;
  std::size_t subgraph_count_ = 0;
  std::vector<TfTensor> tensors_;
  std::vector<FlatTable> buffers_;
  std::vector<TfOperator> operators_;
  std::vector<int> inputs_, outputs_;
  std::set<int> graph_outputs_;
  std::map<int, Const> constants_;
  std::map<int, Live> live_;
  std::map<std::string, Shape> shapes_;
  std::map<std::string, std::string> constant_layers_;  // constant tensor name (+ layout) -> graph name
  std::set<std::string> layer_names_;
  Graph graph_;
};

// ---- reading ----------------------------------------------------------------------------------

void Importer::read_model() {
  if (buffer_.identifier() != "TFL3") {
    throw ParseError(path_ + ": not a TensorFlow Lite model (the FlatBuffer identifier is not \"TFL3\")");
  }
  const FlatTable model = buffer_.root();
  std::vector<std::pair<int, std::string>> codes;
  for (const FlatTable& code : model.tables(field::model_operator_codes, "operator_codes")) {
    // The extended code holds the value, unless an older writer left it 0 and used the byte.
    const int deprecated = code.scalar<std::int8_t>(field::code_deprecated, 0);
    const int extended = code.scalar<std::int32_t>(field::code_builtin, 0);
    codes.emplace_back(std::max(deprecated, extended), code.string(field::code_custom));
  }
  const std::vector<FlatTable> graphs = model.tables(field::model_subgraphs, "subgraphs");
  if (graphs.empty()) throw ModelError(path_ + ": the model has no subgraph");
  buffers_ = model.tables(field::model_buffers, "buffers");
  subgraph_count_ = graphs.size();
  const std::size_t index = nested_ ? static_cast<std::size_t>(nested_->subgraph) : 0;
  if (index >= graphs.size()) throw ModelError(path_ + ": subgraph " + std::to_string(index) + " does not exist");
  const FlatTable& graph = graphs[index];
  std::set<std::string> names;
  for (const FlatTable& t : graph.tables(field::graph_tensors, "tensors")) {
    TfTensor tensor;
    tensor.name = t.string(field::tensor_name);
    const std::string base = tensor.name.empty() ? "tensor" + std::to_string(tensors_.size()) : tensor.name;
    tensor.name = base;
    for (int k = 1; !names.insert(tensor.name).second; ++k) tensor.name = base + "#" + std::to_string(k);
    std::int64_t elements = 1;
    for (std::int32_t d : t.ints(field::tensor_shape)) {
      if (d < 0) throw ModelError(path_ + ": tensor '" + tensor.name + "' has a negative dimension");
      tensor.shape.push_back(d);
      if (d != 0 && elements > kMaxElements / d) {
        throw ModelError(path_ + ": tensor '" + tensor.name + "' has more than 2^40 elements");
      }
      elements *= d;
    }
    if (tensor.shape.size() > 8)
      throw UnsupportedError(path_ + ": tensor '" + tensor.name + "' has rank above 8");
    // A -1 in the signature marks a dimension fixed only at run time; a dynamic batch is fine.
    const std::vector<std::int32_t> signature = t.ints(field::tensor_shape_signature);
    for (std::size_t i = 1; i < signature.size(); ++i) tensor.dynamic = tensor.dynamic || signature[i] < 0;
    if (signature.size() == tensor.shape.size()) tensor.signature.assign(signature.begin(), signature.end());
    tensor.type = t.scalar<std::int8_t>(field::tensor_type, 0);
    tensor.buffer = t.scalar<std::uint32_t>(field::tensor_buffer, 0);
    tensor.quantization = t.table(field::tensor_quantization, "quantization");
    tensor.sparsity = t.table(field::tensor_sparsity, "sparsity");
    tensors_.push_back(std::move(tensor));
  }
  auto check_index = [&](std::int32_t t, const std::string& what) {
    if (t < -1 || t >= static_cast<std::int32_t>(tensors_.size())) {
      throw ModelError(path_ + ": " + what + " refers to tensor " + std::to_string(t) + " of " +
                       std::to_string(tensors_.size()));
    }
    return static_cast<int>(t);
  };
  for (std::int32_t t : graph.ints(field::graph_inputs)) inputs_.push_back(check_index(t, "subgraph input"));
  for (std::int32_t t : graph.ints(field::graph_outputs))
    outputs_.push_back(check_index(t, "subgraph output"));
  for (const FlatTable& o : graph.tables(field::graph_operators, "operators")) {
    TfOperator op;
    op.index = static_cast<int>(operators_.size());
    const auto code = o.scalar<std::uint32_t>(field::op_opcode, 0);
    if (code >= codes.size()) {
      throw ModelError(path_ + ": operator " + std::to_string(op.index) + " uses operator code " +
                       std::to_string(code) + " of " + std::to_string(codes.size()));
    }
    op.code = codes[code].first;
    op.custom = codes[code].second;
    const std::string what = "operator " + std::to_string(op.index) + " (" + operator_name(op.code) + ")";
    for (std::int32_t t : o.ints(field::op_inputs)) op.inputs.push_back(check_index(t, what + " input"));
    for (std::int32_t t : o.ints(field::op_outputs)) op.outputs.push_back(check_index(t, what + " output"));
    if (op.outputs.empty() || op.outputs[0] < 0) throw ModelError(path_ + ": " + what + " has no output");
    op.options = o.table(field::op_options, "builtin_options");
    operators_.push_back(std::move(op));
  }
  for (int t : outputs_) {
    if (t < 0) throw ModelError(path_ + ": a subgraph output is -1");
    graph_outputs_.insert(t);
  }
}

std::span<const std::byte> Importer::buffer_bytes(int t) {
  const TfTensor& tensor = info(t);
  if (tensor.buffer >= buffers_.size()) {
    throw ModelError(tensor_where(t) + ": buffer " + std::to_string(tensor.buffer) + " of " +
                     std::to_string(buffers_.size()));
  }
  const FlatTable& b = buffers_[tensor.buffer];
  const auto offset = b.scalar<std::uint64_t>(field::buffer_offset, 0);
  if (offset > 1) {  // data stored after the FlatBuffer (models over 2 GB)
    const auto size = b.scalar<std::uint64_t>(field::buffer_size, 0);
    if (offset > buffer_.size() || size > buffer_.size() - offset) {
      throw ModelError(tensor_where(t) + ": external buffer of " + std::to_string(size) + " bytes at " +
                       std::to_string(offset) + " lies outside the file");
    }
    return {buffer_.data() + offset, static_cast<std::size_t>(size)};
  }
  const tflite_detail::FlatVector v = b.vector(field::buffer_data, 1);
  return {v.base + v.position, v.count};
}

// Values as stored; quantized and fp16 data are converted by the operators that read them.
Const Importer::read_constant(int t) {
  const TfTensor& tensor = info(t);
  const std::size_t size = element_size(tensor.type);
  if (size == 0)
    throw UnsupportedError(tensor_where(t) + ": constant of " + type_name(tensor.type) + " is not supported");
  const std::span<const std::byte> bytes = buffer_bytes(t);
  Const value;
  value.shape = tensor.shape;
  value.integer = tensor.type != FLOAT32 && tensor.type != FLOAT16;
  const std::size_t count = bytes.size() / size;
  if (tensor.sparsity.valid()) {
    // Only the stored elements; DENSIFY expands them.
    value.shape = {static_cast<std::int64_t>(count)};
  }
  if (bytes.size() % size != 0 || static_cast<std::int64_t>(count) != value.numel()) {
    throw ModelError(tensor_where(t) + ": buffer of " + std::to_string(bytes.size()) +
                     " bytes does not hold " + dims_str(tensor.shape) + " " + type_name(tensor.type) +
                     " values");
  }
  value.values.resize(count);
  const std::byte* p = bytes.data();
  for (std::size_t i = 0; i < count; ++i, p += size) {
    switch (tensor.type) {
      case FLOAT32: {
        float v;
        std::memcpy(&v, p, 4);
        value.values[i] = v;
        break;
      }
      case FLOAT16: {
        std::uint16_t v;
        std::memcpy(&v, p, 2);
        value.values[i] = half_to_float(v);
        break;
      }
      case INT32: {
        std::int32_t v;
        std::memcpy(&v, p, 4);
        value.values[i] = v;
        break;
      }
      case INT64: {
        std::int64_t v;
        std::memcpy(&v, p, 8);
        value.values[i] = static_cast<double>(v);
        break;
      }
      case INT16: {
        std::int16_t v;
        std::memcpy(&v, p, 2);
        value.values[i] = v;
        break;
      }
      case INT8:
        value.values[i] = static_cast<std::int8_t>(*p);
        break;
      case UINT8:
      case BOOL:
        value.values[i] = static_cast<std::uint8_t>(*p);
        break;
      default:
        break;
    }
  }
  return value;
}

void Importer::check_supported() const {
  std::map<std::string, int> custom, unknown;
  for (const TfOperator& op : operators_) {
    if (op.code == CUSTOM) {
      ++custom[op.custom.empty() ? "<unnamed>" : op.custom];
    } else if (handlers().count(op.code) == 0) {
      ++unknown[operator_name(op.code)];
    }
  }
  auto list = [](const std::map<std::string, int>& ops) {
    std::string out;
    for (const auto& [name, count] : ops)
      out += (out.empty() ? "" : ", ") + name + " (" + std::to_string(count) + ")";
    return out;
  };
  if (!custom.empty()) {
    throw UnsupportedError(path_ + ": CUSTOM operators are not supported: " + list(custom) +
                           (unknown.empty() ? "" : "; unsupported builtin operators: " + list(unknown)));
  }
  if (!unknown.empty()) throw UnsupportedError(path_ + ": unsupported operators: " + list(unknown));
}

// ---- operands -----------------------------------------------------------------------------------

int Importer::input(const TfOperator& op, std::size_t i) const {
  if (!has_input(op, i)) invalid(op, "input " + std::to_string(i) + " is missing");
  return op.inputs[i];
}

const Const& Importer::constant(const TfOperator& op, std::size_t i) {
  const int t = input(op, i);
  auto it = constants_.find(t);
  if (it == constants_.end()) {
    unsupported(op, "input " + std::to_string(i) + " ('" + info(t).name + "') must be a constant");
  }
  if (info(t).sparsity.valid()) invalid(op, "input '" + info(t).name + "' is sparse; only DENSIFY reads it");
  return it->second;
}

Dims Importer::constant_ints(const TfOperator& op, std::size_t i) {
  const Const& c = constant(op, i);
  Dims out;
  for (double v : c.values) out.push_back(checked_integer(v, where(op) + ": input " + std::to_string(i)));
  return out;
}

std::string Importer::emit_constant(const std::string& name, const Const& value) {
  auto it = constant_layers_.find(name);
  if (it != constant_layers_.end()) return it->second;
  LayerSpec spec;
  spec.name = name;
  while (!layer_names_.insert(spec.name).second) spec.name += "_";
  spec.type = "Constant";
  spec.attrs.set("shape", value.shape);
  spec.weights = {value.to_tensor()};
  spec.outputs = {spec.name};
  shapes_[spec.name] = Shape(value.shape);
  graph_.layers.push_back(std::move(spec));
  return constant_layers_[name] = graph_.layers.back().outputs[0];
}

std::string Importer::emit_layout(const std::string& from, const Dims& perm, const std::string& to, bool dynamic) {
  const Dims from_dims = shapes_.at(from).dims();
  LayerSpec spec;
  spec.name = to;
  while (!layer_names_.insert(spec.name).second) spec.name += "_";
  // A transpose that only moves size-1 axes keeps the memory order: a Reshape is enough.
  Dims moved;
  for (std::int64_t axis : perm) {
    if (from_dims[static_cast<std::size_t>(axis)] != 1) moved.push_back(axis);
  }
  const Dims target = permuted(from_dims, perm);
  if (!dynamic && std::is_sorted(moved.begin(), moved.end())) {
    spec.type = "Reshape";
    Dims shape = target;
    shape[0] = 0;  // keeps the batch flexible
    spec.attrs.set("shape", shape);
  } else {
    spec.type = "Transpose";
    spec.attrs.set("perm", perm);
  }
  spec.inputs = {from};
  spec.outputs = {to};
  shapes_[to] = Shape(target);
  graph_.layers.push_back(std::move(spec));
  return to;
}

std::string Importer::file_order(int t) {
  if (is_constant(t)) {
    if (info(t).sparsity.valid())
      throw ModelError(tensor_where(t) + ": a sparse tensor is read by an operator other than DENSIFY");
    return emit_constant(info(t).name, constants_.at(t));
  }
  auto it = live_.find(t);
  if (it == live_.end()) throw ModelError(tensor_where(t) + ": used before any operator computes it");
  Live& live = it->second;
  if (live.file.empty()) {
    const std::string name = graph_outputs_.count(t) ? info(t).name : info(t).name + "/nhwc";
    live.file = emit_layout(live.nchw, kToNhwc, name, info(t).dynamic);
  }
  return live.file;
}

std::string Importer::nchw(int t) {
  if (rank_of(t) != 4)
    throw ModelError(tensor_where(t) + ": expected rank 4, got " + dims_str(info(t).shape));
  if (is_constant(t)) {
    if (info(t).sparsity.valid())
      throw ModelError(tensor_where(t) + ": a sparse tensor is read by an operator other than DENSIFY");
    return emit_constant(info(t).name + "/nchw", constants_.at(t).permute(kToNchw));
  }
  auto it = live_.find(t);
  if (it == live_.end()) throw ModelError(tensor_where(t) + ": used before any operator computes it");
  Live& live = it->second;
  if (live.nchw.empty()) live.nchw = emit_layout(live.file, kToNchw, info(t).name + "/nchw", info(t).dynamic);
  return live.nchw;
}

std::string Importer::output_name(int t, bool in_nchw) const {
  if (in_nchw && graph_outputs_.count(t)) return info(t).name + "/nchw";
  return info(t).name;
}

void Importer::bind(const TfOperator& op, int t, bool in_nchw, const std::string& graph_name) {
  const TfTensor& tensor = info(t);
  // Booleans (comparisons, conditions of IF and WHILE) are carried as floats 0 and 1.
  if (tensor.type != FLOAT32 && tensor.type != BOOL) {
    if ((tensor.type == INT8 || tensor.type == UINT8 || tensor.type == INT16) &&
        tensor.quantization.valid()) {
      unsupported(op, "output '" + tensor.name + "' is a quantized " + type_name(tensor.type) +
                          " tensor; quantized models are not supported yet");
    }
    unsupported(op, "output '" + tensor.name + "' is " + type_name(tensor.type) +
                        " computed at run time; only FLOAT32 tensors are supported between layers");
  }
  const Shape got = shapes_.at(graph_name);
  if (!tensor.shape.empty() && !tensor.dynamic) {
    const Dims expected = in_nchw ? permuted(tensor.shape, kToNchw) : tensor.shape;
    if (got.dims() != expected) {
      invalid(op, "output '" + tensor.name + "' comes out " + got.str() + " but the file says " +
                      dims_str(tensor.shape) + (in_nchw ? " (NHWC)" : ""));
    }
  }
  Live& live = live_[t];
  (in_nchw ? live.nchw : live.file) = graph_name;
}

void Importer::set_constant(int t, Const value) {
  const TfTensor& tensor = info(t);
  if (!tensor.shape.empty() && Shape(tensor.shape).numel() != value.numel()) {
    throw ModelError(tensor_where(t) + ": computes " + dims_str(value.shape) + " values but the file says " +
                     dims_str(tensor.shape));
  }
  if (!tensor.shape.empty()) value.shape = tensor.shape;
  constants_[t] = std::move(value);
}

// ---- emitting -----------------------------------------------------------------------------------

std::vector<std::string> Importer::emit(const TfOperator& op, const std::string& type,
                                        std::vector<std::string> inputs, Attributes attrs,
                                        std::vector<Tensor> weights, std::vector<std::string> outputs,
                                        std::vector<Subgraph> subgraphs) {
  LayerSpec spec;
  spec.name = outputs.at(0);
  while (!layer_names_.insert(spec.name).second) spec.name += "_";
  spec.type = type;
  spec.inputs = std::move(inputs);
  spec.attrs = std::move(attrs);
  spec.weights = std::move(weights);
  spec.outputs = std::move(outputs);
  spec.subgraphs = std::move(subgraphs);
  std::vector<Shape> in_shapes;
  for (const std::string& in : spec.inputs) in_shapes.push_back(shapes_.at(in));
  std::vector<Shape> out_shapes;
  try {
    out_shapes = create_layer(spec)->output_shapes(in_shapes);
  } catch (const Error& e) {
    invalid(op, e.what());
  }
  for (std::size_t i = 0; i < spec.outputs.size() && i < out_shapes.size(); ++i)
    shapes_[spec.outputs[i]] = out_shapes[i];
  std::vector<std::string> names = spec.outputs;
  graph_.layers.push_back(std::move(spec));
  return names;
}

std::string Importer::emit_helper(const TfOperator& op, const std::string& suffix, const std::string& type,
                                  std::vector<std::string> inputs, Attributes attrs,
                                  std::vector<Tensor> weights) {
  return emit(op, type, std::move(inputs), std::move(attrs), std::move(weights),
              {info(op.outputs[0]).name + "/" + suffix})[0];
}

void Importer::emit_with_activation(const TfOperator& op, int activation, const std::string& type,
                                    std::vector<std::string> inputs, Attributes attrs,
                                    std::vector<Tensor> weights, bool in_nchw) {
  const int out = op.outputs[0];
  const std::string target = output_name(out, in_nchw);
  if (activation == 0) {
    bind(op, out, in_nchw,
         emit(op, type, std::move(inputs), std::move(attrs), std::move(weights), {target})[0]);
    return;
  }
  const std::string linear =
      emit(op, type, std::move(inputs), std::move(attrs), std::move(weights), {target + "/linear"})[0];
  Attributes act;
  std::string act_type = "Activation";
  switch (activation) {
    case 1:
      act_type = "ReLU";
      break;
    case 2:
      act.set("function", std::string("clip"));
      act.set("min", -1.0);
      act.set("max", 1.0);
      break;
    case 3:
      act.set("function", std::string("clip"));
      act.set("min", 0.0);
      act.set("max", 6.0);
      break;
    case 4:
      act.set("function", std::string("tanh"));
      break;
    default:
      unsupported(op, "fused activation " + std::to_string(activation) + " is not supported");
  }
  bind(op, out, in_nchw, emit(op, act_type, {linear}, act, {}, {target})[0]);
}

// ---- handlers -----------------------------------------------------------------------------------

// TensorFlow's SAME padding: the output is ceil(in / stride), the padding split with the extra row at
// the end. VALID pads nothing.
std::pair<Dims, Dims> Importer::same_padding(const TfOperator& op, int padding, const Dims& in_hw,
                                             const Dims& kernel, const Dims& stride,
                                             const Dims& dilation) const {
  Dims begin(2, 0), end(2, 0);
  if (padding == 1) return {begin, end};
  if (padding != 0) invalid(op, "unknown padding " + std::to_string(padding));
  for (std::size_t i = 0; i < 2; ++i) {
    if (stride[i] < 1 || dilation[i] < 1 || kernel[i] < 1)
      invalid(op, "strides, dilations and kernel sizes must be positive");
    const std::int64_t out = (in_hw[i] + stride[i] - 1) / stride[i];
    const std::int64_t total =
        std::max<std::int64_t>(0, (out - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 - in_hw[i]);
    begin[i] = total / 2;
    end[i] = total - begin[i];
  }
  return {begin, end};
}

std::string Importer::pad_spatial(const TfOperator& op, const std::string& input, const Dims& begin,
                                  const Dims& end, double value) {
  Attributes attrs;
  attrs.set("pads", Dims{0, 0, begin[0], begin[1], 0, 0, end[0], end[1]});
  attrs.set("mode", std::string("constant"));
  attrs.set("value", value);
  return emit_helper(op, "pad", "Pad", {input}, attrs);
}

void Importer::op_conv(const TfOperator& op) {
  const int x = input(op, 0);
  const Const& w = constant(op, 1);
  const Dims in = shape_of(x);
  if (in.size() != 4 || w.shape.size() != 4)
    invalid(op, "input " + dims_str(in) + " and filter " + dims_str(w.shape) + " must be rank 4");
  const FlatTable& o = op.options;
  const Dims stride = {o.scalar<std::int32_t>(2, 1), o.scalar<std::int32_t>(1, 1)};
  const Dims dilation = {o.scalar<std::int32_t>(5, 1), o.scalar<std::int32_t>(4, 1)};
  const Dims kernel = {w.shape[1], w.shape[2]};
  if (w.shape[3] < 1 || in[3] % w.shape[3] != 0)
    invalid(op, "input channels " + std::to_string(in[3]) + " do not fit filter " + dims_str(w.shape));
  auto [begin, end] = same_padding(op, o.scalar<std::int8_t>(0, 0), {in[1], in[2]}, kernel, stride, dilation);
  std::string data = nchw(x);
  Dims pad = begin;
  if (begin != end) {
    data = pad_spatial(op, data, begin, end, 0.0);
    pad = {0, 0};
  }
  Attributes attrs;
  attrs.set("num_output", w.shape[0]);
  attrs.set("kernel", kernel);
  attrs.set("stride", stride);
  attrs.set("pad", pad);
  attrs.set("dilation", dilation);
  attrs.set("group", in[3] / w.shape[3]);
  std::vector<Tensor> weights{w.permute(kToNchw).to_tensor()};  // O x KH x KW x I -> O x I x KH x KW
  if (has_input(op, 2)) weights.push_back(constant(op, 2).to_tensor().reshaped(Shape{w.shape[0]}));
  attrs.set("bias", static_cast<std::int64_t>(has_input(op, 2)));
  emit_with_activation(op, o.scalar<std::int8_t>(3, 0), "Convolution", {data}, attrs, weights, true);
}

void Importer::op_depthwise(const TfOperator& op) {
  const int x = input(op, 0);
  const Const& w = constant(op, 1);
  const Dims in = shape_of(x);
  if (in.size() != 4 || w.shape.size() != 4 || w.shape[0] != 1)
    invalid(op, "input " + dims_str(in) + " and filter " + dims_str(w.shape) + " do not fit");
  const std::int64_t channels = in[3], outputs = w.shape[3];
  if (channels < 1 || outputs % channels != 0)
    invalid(op, "filter " + dims_str(w.shape) + " does not fit " + std::to_string(channels) + " channels");
  const FlatTable& o = op.options;
  const Dims stride = {o.scalar<std::int32_t>(2, 1), o.scalar<std::int32_t>(1, 1)};
  const Dims dilation = {o.scalar<std::int32_t>(6, 1), o.scalar<std::int32_t>(5, 1)};
  const Dims kernel = {w.shape[1], w.shape[2]};
  auto [begin, end] = same_padding(op, o.scalar<std::int8_t>(0, 0), {in[1], in[2]}, kernel, stride, dilation);
  std::string data = nchw(x);
  Dims pad = begin;
  if (begin != end) {
    data = pad_spatial(op, data, begin, end, 0.0);
    pad = {0, 0};
  }
  Attributes attrs;
  attrs.set("num_output", outputs);
  attrs.set("kernel", kernel);
  attrs.set("stride", stride);
  attrs.set("pad", pad);
  attrs.set("dilation", dilation);
  attrs.set("group", channels);
  // 1 x KH x KW x (C·M) -> (C·M) x 1 x KH x KW: output channel c·M + m reads input channel c.
  Const weight = w.permute({3, 0, 1, 2});
  std::vector<Tensor> weights{weight.to_tensor()};
  if (has_input(op, 2)) weights.push_back(constant(op, 2).to_tensor().reshaped(Shape{outputs}));
  attrs.set("bias", static_cast<std::int64_t>(has_input(op, 2)));
  emit_with_activation(op, o.scalar<std::int8_t>(4, 0), "Convolution", {data}, attrs, weights, true);
}

void Importer::op_transpose_conv(const TfOperator& op) {
  const Dims out_shape = constant_ints(op, 0);
  const Const& w = constant(op, 1);
  const int x = input(op, 2);
  const Dims in = shape_of(x);
  if (in.size() != 4 || w.shape.size() != 4 || out_shape.size() != 4 || w.shape[3] != in[3]) {
    invalid(op, "input " + dims_str(in) + ", filter " + dims_str(w.shape) + " and output shape do not fit");
  }
  const FlatTable& o = op.options;
  const Dims stride = {o.scalar<std::int32_t>(2, 1), o.scalar<std::int32_t>(1, 1)};
  const Dims kernel = {w.shape[1], w.shape[2]};
  const int padding = o.scalar<std::int8_t>(0, 0);
  Dims pad(2), output_pad(2), crop_ends;
  bool crop = false;
  for (std::size_t i = 0; i < 2; ++i) {
    if (stride[i] < 1) invalid(op, "strides must be positive");
    const std::int64_t size = in[i + 1], target = out_shape[i + 1];
    const std::int64_t full = stride[i] * (size - 1) + kernel[i];
    // The padding TensorFlow Lite takes off the full output: SAME as for the forward convolution
    // from `target` to `size`, VALID none.
    const std::int64_t total =
        padding == 0 ? std::max<std::int64_t>(0, (size - 1) * stride[i] + kernel[i] - target) : 0;
    pad[i] = total / 2;
    const std::int64_t extra = target - (full - 2 * pad[i]);
    if (extra < 0) {
      crop = true;
      output_pad[i] = 0;
    } else {
      output_pad[i] = extra;
    }
    crop_ends.push_back(target);
  }
  Attributes attrs;
  attrs.set("num_output", w.shape[0]);
  attrs.set("kernel", kernel);
  attrs.set("stride", stride);
  attrs.set("pad", pad);
  attrs.set("output_pad", output_pad);
  // O x KH x KW x I -> I x O x KH x KW.
  std::vector<Tensor> weights{w.permute({3, 0, 1, 2}).to_tensor()};
  if (has_input(op, 3)) weights.push_back(constant(op, 3).to_tensor().reshaped(Shape{w.shape[0]}));
  attrs.set("bias", static_cast<std::int64_t>(has_input(op, 3)));
  const int activation = o.scalar<std::int8_t>(3, 0);
  if (!crop) {
    emit_with_activation(op, activation, "Deconvolution", {nchw(x)}, attrs, weights, true);
    return;
  }
  const std::string full = emit_helper(op, "full", "Deconvolution", {nchw(x)}, attrs, weights);
  Attributes cut;
  cut.set("starts", Dims{0, 0});
  cut.set("ends", crop_ends);
  cut.set("axes", Dims{2, 3});
  emit_with_activation(op, activation, "StridedSlice", {full}, cut, {}, true);
}

void Importer::op_pool(const TfOperator& op) {
  const int x = input(op, 0);
  const Dims in = shape_of(x);
  if (in.size() != 4) invalid(op, "input " + dims_str(in) + " must be rank 4");
  const bool max = op.code == MAX_POOL_2D;
  const FlatTable& o = op.options;
  const Dims stride = {o.scalar<std::int32_t>(2, 1), o.scalar<std::int32_t>(1, 1)};
  const Dims kernel = {o.scalar<std::int32_t>(4, 1), o.scalar<std::int32_t>(3, 1)};
  auto [begin, end] = same_padding(op, o.scalar<std::int8_t>(0, 0), {in[1], in[2]}, kernel, stride, {1, 1});
  Attributes attrs;
  attrs.set("method", std::string(max ? "max" : "ave"));
  attrs.set("kernel", kernel);
  attrs.set("stride", stride);
  attrs.set("round", std::string("floor"));
  attrs.set("count_include_pad", std::int64_t{0});
  const int activation = o.scalar<std::int8_t>(5, 0);
  std::string data = nchw(x);
  if (begin == end) {
    attrs.set("pad", begin);
    emit_with_activation(op, activation, "Pooling", {data}, attrs, {}, true);
    return;
  }
  attrs.set("pad", Dims{0, 0});
  if (max) {
    data = pad_spatial(op, data, begin, end, -std::numeric_limits<double>::infinity());
    emit_with_activation(op, activation, "Pooling", {data}, attrs, {}, true);
    return;
  }
  // The average over the real elements only: window sums over the zero-padded input divided by the
  // number of real elements in each window, both pooled alike so that Pooling's own divisor cancels.
  const std::int64_t ph = in[1] + begin[0] + end[0], pw = in[2] + begin[1] + end[1];
  Const mask{{1, 1, ph, pw}, std::vector<double>(static_cast<std::size_t>(ph * pw), 0.0), false};
  for (std::int64_t h = 0; h < in[1]; ++h)
    for (std::int64_t w = 0; w < in[2]; ++w)
      mask.values[static_cast<std::size_t>((h + begin[0]) * pw + w + begin[1])] = 1.0;
  const std::string counts =
      emit_helper(op, "counts", "Pooling", {emit_constant(info(op.outputs[0]).name + "/mask", mask)}, attrs);
  const std::string sums =
      emit_helper(op, "sums", "Pooling", {pad_spatial(op, data, begin, end, 0.0)}, attrs);
  Attributes div;
  div.set("operation", std::string("div"));
  emit_with_activation(op, activation, "Binary", {sums, counts}, div, {}, true);
}

void Importer::op_fully_connected(const TfOperator& op) {
  const int x = input(op, 0);
  const Const& w = constant(op, 1);
  const FlatTable& o = op.options;
  if (o.scalar<std::int8_t>(1, 0) != 0) unsupported(op, "shuffled weights are not supported");
  const bool keep_dims = o.scalar<std::uint8_t>(2, 0) != 0;
  const Dims in = shape_of(x);
  if (w.shape.size() != 2 || in.empty())
    invalid(op, "input " + dims_str(in) + " and weights " + dims_str(w.shape) + " do not fit");
  const std::int64_t units = w.shape[0], depth = w.shape[1];
  const std::int64_t count = Shape(in).numel();
  if (depth < 1 || count % depth != 0)
    invalid(op, "input " + dims_str(in) + " does not hold rows of " + std::to_string(depth));
  std::string data = file_order(x);
  Attributes attrs;
  attrs.set("num_output", units);
  if (keep_dims) {
    if (in.back() != depth)
      invalid(op, "keep_num_dims needs the last input axis to be " + std::to_string(depth));
    attrs.set("axis", static_cast<std::int64_t>(in.size()) - 1);
  } else {
    if (in.size() != 2 || in[1] != depth) {
      Attributes reshape;
      reshape.set("shape", Dims{-1, depth});
      data = emit_helper(op, "rows", "Reshape", {data}, reshape);
    }
    attrs.set("axis", std::int64_t{1});
  }
  std::vector<Tensor> weights{w.to_tensor()};
  const bool bias = has_input(op, 2);
  if (bias) weights.push_back(constant(op, 2).to_tensor().reshaped(Shape{units}));
  attrs.set("bias", static_cast<std::int64_t>(bias));
  emit_with_activation(op, o.scalar<std::int8_t>(0, 0), "InnerProduct", {data}, attrs, weights, false);
}

// The operands of an element-wise operator: rank-4 operands run in NCHW when one of them is already
// there and every operand can follow (constants are permuted, lower-rank constants first brought to
// rank 4 as numpy's broadcasting would). Returns the graph names and whether they are NCHW.
std::pair<std::vector<std::string>, bool> Importer::elementwise_operands(const TfOperator& op) {
  bool in_nchw = rank_of(op.outputs[0]) == 4;
  bool any_nchw = false;
  for (std::size_t i = 0; i < op.inputs.size(); ++i) {
    const int t = input(op, i);
    if (prefers_nchw(t)) any_nchw = true;
    if (is_constant(t) ? rank_of(t) > 4 : rank_of(t) != 4) in_nchw = false;
  }
  in_nchw = in_nchw && any_nchw;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < op.inputs.size(); ++i) {
    const int t = input(op, i);
    if (in_nchw && is_constant(t) && rank_of(t) != 4) {
      Const c = constant(op, i);
      c.shape.insert(c.shape.begin(), static_cast<std::size_t>(4 - rank_of(t)), 1);
      names.push_back(emit_constant(info(t).name + "/nchw", c.permute(kToNchw)));
    } else {
      names.push_back(operand(t, in_nchw));
    }
  }
  return {names, in_nchw};
}

void Importer::elementwise(const TfOperator& op, const std::string& operation, int activation) {
  auto [names, in_nchw] = elementwise_operands(op);
  Attributes attrs;
  attrs.set("operation", operation);
  emit_with_activation(op, activation, "Binary", names, attrs, {}, in_nchw);
}

void Importer::op_binary(const TfOperator& op) {
  static const std::map<int, std::string> operations = {{ADD, "add"}, {SUB, "sub"},     {MUL, "mul"},
                                                        {DIV, "div"}, {MAXIMUM, "max"}, {MINIMUM, "min"}};
  if (op.inputs.size() != 2) invalid(op, "needs two inputs");
  const bool fused = op.code == ADD || op.code == SUB || op.code == MUL || op.code == DIV;
  elementwise(op, operations.at(op.code), fused ? op.options.scalar<std::int8_t>(0, 0) : 0);
}

void Importer::op_squared_difference(const TfOperator& op) {
  if (op.inputs.size() != 2) invalid(op, "needs two inputs");
  auto [names, in_nchw] = elementwise_operands(op);
  Attributes attrs;
  attrs.set("operation", std::string("sub"));
  const std::string difference = emit_helper(op, "difference", "Binary", names, attrs);
  attrs.set("operation", std::string("mul"));
  emit_with_activation(op, 0, "Binary", {difference, difference}, attrs, {}, in_nchw);
}

void Importer::unary(const TfOperator& op, const std::string& type, Attributes attrs) {
  const int x = input(op, 0);
  const bool in_nchw = prefers_nchw(x);
  emit_with_activation(op, 0, type, {operand(x, in_nchw)}, std::move(attrs), {}, in_nchw);
}

void Importer::op_activation(const TfOperator& op) {
  // Builtin operators that map onto one function of the Activation layer.
  static const std::map<int, const char*> functions = {
      {LOGISTIC, "sigmoid"}, {TANH, "tanh"}, {HARD_SWISH, "hard_swish"}, {EXP, "exp"},
      {LOG, "log"},          {SQRT, "sqrt"}, {ABS, "abs"},               {NEG, "neg"}};
  Attributes attrs;
  auto clip = [&](double min, double max) {
    attrs.set("function", std::string("clip"));
    attrs.set("min", min);
    attrs.set("max", max);
    unary(op, "Activation", attrs);
  };
  if (const auto found = functions.find(op.code); found != functions.end()) {
    attrs.set("function", std::string(found->second));
    return unary(op, "Activation", attrs);
  }
  switch (op.code) {
    case RELU:
      return unary(op, "ReLU", attrs);
    case RELU6:
      return clip(0.0, 6.0);
    case RELU_N1_TO_1:
      return clip(-1.0, 1.0);
    case RSQRT: {
      // 1 / sqrt(x) as two layers.
      const int x = input(op, 0);
      const bool in_nchw = prefers_nchw(x);
      Attributes sqrt;
      sqrt.set("function", std::string("sqrt"));
      const std::string root = emit_helper(op, "sqrt", "Activation", {operand(x, in_nchw)}, sqrt);
      Attributes reciprocal;
      reciprocal.set("function", std::string("reciprocal"));
      return emit_with_activation(op, 0, "Activation", {root}, reciprocal, {}, in_nchw);
    }
    default:
      invalid(op, "not an activation");
  }
}

void Importer::op_leaky_relu(const TfOperator& op) {
  Attributes attrs;
  attrs.set("negative_slope", static_cast<double>(op.options.scalar<float>(0, 0.0f)));
  unary(op, "ReLU", attrs);
}

void Importer::op_prelu(const TfOperator& op) {
  const int x = input(op, 0);
  const Const& alpha = constant(op, 1);
  const Dims in = shape_of(x);
  const std::int64_t channels = in.empty() ? 1 : in.back();
  // One slope per channel (the last NHWC axis) or one for all.
  const std::int64_t count = alpha.numel();
  for (std::size_t i = 0; i + 1 < alpha.shape.size(); ++i) {
    if (alpha.shape[i] != 1)
      unsupported(op, "slopes " + dims_str(alpha.shape) + " vary over more than the channel axis");
  }
  if (count != 1 && count != channels)
    unsupported(op,
                "slopes " + dims_str(alpha.shape) + " do not fit " + std::to_string(channels) + " channels");
  const bool in_nchw = rank_of(x) == 4;
  if (!in_nchw && in.size() != 2 && count != 1)
    unsupported(op, "per-channel slopes need a rank-2 or rank-4 input");
  Attributes attrs;
  attrs.set("channel_shared", static_cast<std::int64_t>(count == 1));
  const Tensor slopes = alpha.to_tensor().reshaped(Shape{count});
  emit_with_activation(op, 0, "PReLU", {operand(x, in_nchw)}, attrs, {slopes}, in_nchw);
}

void Importer::op_softmax(const TfOperator& op) {
  const int x = input(op, 0);
  const double beta = op.options.scalar<float>(0, 0.0f);
  const bool in_nchw = prefers_nchw(x);
  std::string data = operand(x, in_nchw);
  if (beta != 1.0) {
    Attributes mul;
    mul.set("operation", std::string("mul"));
    data = emit_helper(
        op, "beta", "Binary",
        {data, emit_constant(info(op.outputs[0]).name + "/beta_value", Const{{1}, {beta}, false})}, mul);
  }
  Attributes attrs;
  attrs.set("axis", static_cast<std::int64_t>(in_nchw ? 1 : rank_of(x) - 1));
  emit_with_activation(op, 0, "Softmax", {data}, attrs, {}, in_nchw);
}

void Importer::op_concat(const TfOperator& op) {
  const int out = op.outputs[0];
  const int rank = rank_of(out);
  std::int64_t axis = op.options.scalar<std::int32_t>(0, 0);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) invalid(op, "axis " + std::to_string(axis) + " out of range");
  bool any_nchw = false;
  for (int t : op.inputs) any_nchw = any_nchw || (t >= 0 && prefers_nchw(t));
  const bool in_nchw = rank == 4 && any_nchw;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < op.inputs.size(); ++i) names.push_back(operand(input(op, i), in_nchw));
  Attributes attrs;
  attrs.set("axis", static_cast<std::int64_t>(in_nchw ? kNchwAxisOf[axis] : axis));
  emit_with_activation(op, op.options.scalar<std::int8_t>(1, 0), "Concat", names, attrs, {}, in_nchw);
}

void Importer::op_pad(const TfOperator& op) {
  const int x = input(op, 0);
  const Dims pads = constant_ints(op, 1);
  const int rank = rank_of(x);
  if (pads.size() != static_cast<std::size_t>(2 * rank))
    invalid(op, "paddings need " + std::to_string(rank) + " x 2 values");
  double value = 0.0;
  if (op.code == PADV2 && has_input(op, 2)) {
    const Const& c = constant(op, 2);
    if (c.values.size() != 1) invalid(op, "the padding value must be a scalar");
    value = c.values[0];
  }
  const bool in_nchw = rank == 4;
  Dims attr(static_cast<std::size_t>(2 * rank));
  for (int a = 0; a < rank; ++a) {
    const int to = in_nchw ? kNchwAxisOf[a] : a;
    attr[static_cast<std::size_t>(to)] = pads[static_cast<std::size_t>(2 * a)];
    attr[static_cast<std::size_t>(rank + to)] = pads[static_cast<std::size_t>(2 * a + 1)];
  }
  for (std::int64_t p : attr)
    if (p < 0) invalid(op, "negative padding");
  Attributes attrs;
  attrs.set("pads", attr);
  attrs.set("mode", std::string("constant"));
  attrs.set("value", value);
  emit_with_activation(op, 0, "Pad", {operand(x, in_nchw)}, attrs, {}, in_nchw);
}

// RESHAPE, SQUEEZE and EXPAND_DIMS: the output's shape is the file's; the data keep their order.
void Importer::reshape_to_output(const TfOperator& op) {
  const int x = input(op, 0);
  const int out = op.outputs[0];
  Dims target = shape_of(out);
  // A shape known only at run time: the signature's fixed dimensions, the batch copied (0) and one
  // other dimension inferred (-1), so the layer fits every input length.
  const Dims& signature = info(out).signature;
  const auto unknown = std::count_if(signature.begin() + (signature.empty() ? 0 : 1), signature.end(),
                                     [](std::int64_t d) { return d < 0; });
  if (info(out).dynamic && !signature.empty() && unknown <= 1 && !is_constant(x)) {
    Dims shape = signature;
    if (shape[0] < 0) shape[0] = 0;
    Attributes attrs;
    attrs.set("shape", shape);
    emit_with_activation(op, 0, "Reshape", {file_order(x)}, attrs, {}, false);
    return;
  }
  if (info(out).dynamic || target.empty()) {
    if (op.code != RESHAPE) unsupported(op, "the output shape is not known at load time");
    target = has_input(op, 1) && is_constant(op.inputs[1]) ? constant_ints(op, 1) : Dims();
    for (std::int32_t d : op.options.ints(0)) target.push_back(d);
  }
  if (is_constant(x)) {
    Const c = constants_.at(x);
    if (info(x).sparsity.valid()) invalid(op, "input is sparse");
    set_constant(out, c);
    return;
  }
  Dims shape = target;
  const Dims in = shape_of(x);
  if (!shape.empty() && !in.empty() && shape[0] == in[0]) shape[0] = 0;
  Attributes attrs;
  attrs.set("shape", shape);
  emit_with_activation(op, 0, "Reshape", {file_order(x)}, attrs, {}, false);
}

void Importer::op_reshape(const TfOperator& op) { reshape_to_output(op); }

void Importer::op_transpose(const TfOperator& op) {
  const int x = input(op, 0);
  const Dims perm = constant_ints(op, 1);
  const int rank = rank_of(x);
  Dims sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  Dims identity(static_cast<std::size_t>(rank));
  std::iota(identity.begin(), identity.end(), 0);
  if (sorted != identity)
    invalid(op, "perm " + dims_str(perm) + " is not a permutation of " + std::to_string(rank) + " axes");
  if (is_constant(x)) {
    set_constant(op.outputs[0], constants_.at(x).permute(perm));
    return;
  }
  // On an NCHW input the layout change and the operator's permutation fold into one Transpose.
  Dims applied = perm;
  std::string data;
  if (prefers_nchw(x)) {
    data = nchw(x);
    for (std::size_t i = 0; i < perm.size(); ++i) applied[i] = kNchwAxisOf[perm[i]];
  } else {
    data = file_order(x);
  }
  Attributes attrs;
  attrs.set("perm", applied);
  emit_with_activation(op, 0, "Transpose", {data}, attrs, {}, false);
}

void Importer::op_reduce(const TfOperator& op) {
  static const std::map<int, std::string> operations = {
      {MEAN, "mean"}, {SUM, "sum"}, {REDUCE_MAX, "max"}, {REDUCE_MIN, "min"}, {REDUCE_PROD, "prod"}};
  const int x = input(op, 0);
  const int rank = rank_of(x);
  Dims axes = constant_ints(op, 1);
  for (auto& a : axes) {
    if (a < 0) a += rank;
    if (a < 0 || a >= rank) invalid(op, "axis out of range");
  }
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  const bool keep = op.options.scalar<std::uint8_t>(0, 0) != 0;
  // In NCHW when the kept axes come out in the same order as in NHWC.
  bool in_nchw = prefers_nchw(x);
  if (in_nchw && !keep) {
    const bool channel_kept = std::find(axes.begin(), axes.end(), 3) == axes.end();
    const bool spatial_kept = std::find(axes.begin(), axes.end(), 1) == axes.end() ||
                              std::find(axes.begin(), axes.end(), 2) == axes.end();
    in_nchw = !(channel_kept && spatial_kept);
  }
  Dims mapped = axes;
  if (in_nchw)
    for (auto& a : mapped) a = kNchwAxisOf[a];
  std::sort(mapped.begin(), mapped.end());
  Attributes attrs;
  attrs.set("operation", operations.at(op.code));
  attrs.set("axes", mapped);
  attrs.set("keepdims", static_cast<std::int64_t>(keep));
  emit_with_activation(op, 0, "Reduce", {operand(x, in_nchw)}, attrs, {}, in_nchw && keep);
}

void Importer::op_resize(const TfOperator& op) {
  const int x = input(op, 0);
  const Dims in = shape_of(x);
  const Dims size = constant_ints(op, 1);
  if (in.size() != 4 || size.size() != 2) invalid(op, "needs a rank-4 input and two sizes");
  const bool bilinear = op.code == RESIZE_BILINEAR;
  const bool align_corners = op.options.scalar<std::uint8_t>(bilinear ? 2 : 0, 0) != 0;
  const bool half_pixel = op.options.scalar<std::uint8_t>(bilinear ? 3 : 1, 0) != 0;
  Attributes attrs;
  attrs.set("mode", std::string(bilinear ? "linear" : "nearest"));
  // Scales rather than sizes keep the batch free. Each is out / in, nudged up where rounding would
  // make floor(in · scale) fall short of the size asked for.
  std::vector<double> scales = {1.0, 1.0};
  for (std::size_t i = 0; i < 2; ++i) {
    const std::int64_t from = in[i + 1], to = size[i];
    if (from < 1 || to < 1) invalid(op, "sizes must be positive");
    double scale = static_cast<double>(to) / static_cast<double>(from);
    while (std::floor(static_cast<double>(from) * scale) < static_cast<double>(to))
      scale = std::nextafter(scale, 2 * scale);
    scales.push_back(scale);
  }
  attrs.set("scales", scales);
  std::string transform = "asymmetric";
  if (align_corners)
    transform = "align_corners";
  else if (half_pixel)
    transform = bilinear ? "half_pixel" : "tf_half_pixel_for_nn";
  attrs.set("coordinate_transformation_mode", transform);
  if (!bilinear) attrs.set("nearest_mode", std::string(align_corners ? "round_prefer_ceil" : "floor"));
  emit_with_activation(op, 0, "Resize", {nchw(x)}, attrs, {}, true);
}

// Dequantizes constants at load time: fp16 to fp32, int8/uint8 by scale and zero point (per tensor
// or per channel).
void Importer::op_dequantize(const TfOperator& op) {
  const int x = input(op, 0);
  if (!is_constant(x)) {
    unsupported(op, "dequantizing '" + info(x).name + "' (" + type_name(info(x).type) +
                        ") at run time needs the quantized path, which is not supported yet");
  }
  if (info(x).sparsity.valid()) invalid(op, "input is sparse; DENSIFY must come first");
  Const value = constants_.at(x);
  value.integer = false;
  const int type = info(x).type;
  if (type != FLOAT16 && type != FLOAT32) {
    const FlatTable& q = info(x).quantization;
    const std::vector<float> scales = q.valid() ? q.floats(field::quant_scale) : std::vector<float>{};
    const std::vector<std::int64_t> zeros =
        q.valid() ? q.longs(field::quant_zero_point) : std::vector<std::int64_t>{};
    if (scales.empty()) invalid(op, "'" + info(x).name + "' has no quantization scale");
    if (q.has(field::quant_details))
      unsupported(op, "custom quantization of '" + info(x).name + "' is not supported");
    const std::int64_t axis = q.scalar<std::int32_t>(field::quant_dimension, 0);
    std::int64_t inner = 1, channels = 1;
    if (scales.size() > 1) {
      if (axis < 0 || axis >= static_cast<std::int64_t>(value.shape.size()) ||
          value.shape[static_cast<std::size_t>(axis)] != static_cast<std::int64_t>(scales.size())) {
        invalid(op, std::to_string(scales.size()) + " scales do not fit axis " + std::to_string(axis) +
                        " of " + dims_str(value.shape));
      }
      channels = static_cast<std::int64_t>(scales.size());
      inner = Shape(value.shape).count(static_cast<int>(axis) + 1);
    }
    if (!zeros.empty() && zeros.size() != scales.size())
      invalid(op, "scales and zero points differ in number");
    for (std::size_t i = 0; i < value.values.size(); ++i) {
      const auto c = static_cast<std::size_t>((static_cast<std::int64_t>(i) / inner) % channels);
      value.values[i] = scales[c] * (value.values[i] - static_cast<double>(zeros.empty() ? 0 : zeros[c]));
    }
  }
  set_constant(op.outputs[0], std::move(value));
}

void Importer::op_quantize(const TfOperator& op) {
  unsupported(op, "quantizing '" + info(input(op, 0)).name +
                      "' needs the quantized path, which is not supported yet");
}

// Expands a sparse constant (TensorFlow Lite's TACO-like format: a traversal order over the dense and
// block dimensions, each dense or compressed like CSR) into a dense one.
void Importer::op_densify(const TfOperator& op) {
  const int x = input(op, 0);
  const TfTensor& tensor = info(x);
  if (!is_constant(x) || !tensor.sparsity.valid())
    invalid(op, "input '" + tensor.name + "' is not a sparse constant");
  const Const& stored = constants_.at(x);
  const FlatTable& s = tensor.sparsity;
  const Dims dense = tensor.shape;
  const std::size_t n = dense.size();
  std::vector<std::int32_t> order = s.ints(field::sparsity_order);
  std::vector<std::int32_t> block_map = s.ints(field::sparsity_block_map);
  const std::vector<FlatTable> dims = s.tables(field::sparsity_dims, "dim_metadata");
  const std::size_t levels = order.size();
  if (levels != n + block_map.size() || dims.size() != levels || levels > 16) {
    invalid(op, "sparsity of '" + tensor.name + "' does not fit " + dims_str(dense));
  }
  if (Shape(dense).numel() > kMaxDenseElements)
    unsupported(op, "'" + tensor.name + "' is too large to densify at load time");
  struct Level {
    bool sparse = false;
    std::int64_t size = 0;
    std::vector<std::int64_t> segments, indices;
  };
  auto read_indices = [&](const FlatTable& d, int type_field, int value_field) {
    const int type = d.scalar<std::uint8_t>(type_field, 0);
    const FlatTable v = d.table(value_field, "indices");
    std::vector<std::int64_t> out;
    if (!v.valid()) return out;
    if (type == 1) {
      for (std::int32_t i : v.ints(0)) out.push_back(i);
    } else if (type == 2) {
      const auto raw = v.vector(0, 2);
      for (std::uint32_t i = 0; i < raw.count; ++i) {
        std::uint16_t value;
        std::memcpy(&value, raw.base + raw.position + 2 * i, 2);
        out.push_back(value);
      }
    } else if (type == 3) {
      const auto raw = v.vector(0, 1);
      for (std::uint32_t i = 0; i < raw.count; ++i)
        out.push_back(static_cast<std::uint8_t>(raw.base[raw.position + i]));
    } else {
      invalid(op, "unknown sparse index vector type " + std::to_string(type));
    }
    return out;
  };
  std::vector<Level> level(levels);
  // Size of each original dimension's block (1 when not blocked).
  Dims block(n, 1);
  for (std::size_t l = 0; l < levels; ++l) {
    const int original = order[l];
    if (original < 0 || static_cast<std::size_t>(original) >= levels) invalid(op, "bad traversal order");
    level[l].sparse = dims[l].scalar<std::int8_t>(field::dim_format, 0) == 1;
    if (level[l].sparse) {
      level[l].segments = read_indices(dims[l], field::dim_segments_type, field::dim_segments);
      level[l].indices = read_indices(dims[l], field::dim_indices_type, field::dim_indices);
    } else {
      level[l].size = dims[l].scalar<std::int32_t>(field::dim_dense_size, 0);
      if (level[l].size < 0) invalid(op, "negative dense size");
    }
    if (static_cast<std::size_t>(original) >= n) {
      const std::size_t b = static_cast<std::size_t>(original) - n;
      if (b >= block_map.size() || block_map[b] < 0 || static_cast<std::size_t>(block_map[b]) >= n ||
          level[l].sparse)
        invalid(op, "bad block map");
      block[static_cast<std::size_t>(block_map[b])] = level[l].size;
    }
  }
  Const out{dense, std::vector<double>(static_cast<std::size_t>(Shape(dense).numel()), 0.0), stored.integer};
  Dims strides(n, 1);
  for (std::size_t i = n; i-- > 1;) strides[i - 1] = strides[i] * dense[i];
  std::size_t next = 0;
  Dims coord(n, 0);
  std::function<void(std::size_t, std::int64_t)> walk = [&](std::size_t l, std::int64_t parent) {
    if (l == levels) {
      std::int64_t flat = 0;
      for (std::size_t d = 0; d < n; ++d) {
        if (coord[d] < 0 || coord[d] >= dense[d]) invalid(op, "sparse index outside " + dims_str(dense));
        flat += coord[d] * strides[d];
      }
      if (next >= stored.values.size()) invalid(op, "fewer stored values than the sparsity describes");
      out.values[static_cast<std::size_t>(flat)] = stored.values[next++];
      return;
    }
    const std::size_t original = static_cast<std::size_t>(order[l]);
    const std::size_t d = original < n ? original : static_cast<std::size_t>(block_map[original - n]);
    const std::int64_t scale = original < n ? block[d] : 1;
    auto visit = [&](std::int64_t index, std::int64_t position) {
      coord[d] += index * scale;
      walk(l + 1, position);
      coord[d] -= index * scale;
    };
    const Level& lv = level[l];
    if (!lv.sparse) {
      for (std::int64_t i = 0; i < lv.size; ++i) visit(i, parent * lv.size + i);
      return;
    }
    if (parent < 0 || static_cast<std::size_t>(parent) + 1 >= lv.segments.size())
      invalid(op, "sparse segment out of range");
    const std::int64_t from = lv.segments[static_cast<std::size_t>(parent)],
                       to = lv.segments[static_cast<std::size_t>(parent) + 1];
    if (from < 0 || to < from || static_cast<std::size_t>(to) > lv.indices.size())
      invalid(op, "bad sparse segments");
    for (std::int64_t j = from; j < to; ++j) visit(lv.indices[static_cast<std::size_t>(j)], j);
  };
  walk(0, 0);
  if (next != stored.values.size()) invalid(op, "more stored values than the sparsity describes");
  // DENSIFY keeps the stored type; fp16 values were already widened when read.
  out.integer = false;
  set_constant(op.outputs[0], std::move(out));
}

void Importer::op_strided_slice(const TfOperator& op) {
  const int x = input(op, 0);
  const Dims begin = constant_ints(op, 1), end = constant_ints(op, 2);
  const Dims steps = has_input(op, 3) ? constant_ints(op, 3) : Dims(begin.size(), 1);
  const FlatTable& o = op.options;
  const std::int32_t begin_mask = o.scalar<std::int32_t>(0, 0), end_mask = o.scalar<std::int32_t>(1, 0);
  if (o.scalar<std::int32_t>(2, 0) != 0 || o.scalar<std::int32_t>(3, 0) != 0)
    unsupported(op, "ellipsis and new-axis masks are not supported");
  const bool offset = o.scalar<std::uint8_t>(5, 0) != 0;
  const std::size_t rank = static_cast<std::size_t>(rank_of(x));
  if (begin.size() != end.size() || begin.size() != steps.size() || begin.size() > rank)
    invalid(op, "begin, end and strides do not fit");
  Dims starts, ends, axes, strides;
  for (std::size_t i = 0; i < begin.size(); ++i) {
    if (steps[i] == 0) invalid(op, "zero stride");
    const bool forward = steps[i] > 0;
    const std::int64_t big = std::numeric_limits<std::int32_t>::max();
    starts.push_back((begin_mask >> i) & 1 ? (forward ? 0 : big) : begin[i]);
    std::int64_t e = offset ? begin[i] + end[i] : end[i];
    if ((end_mask >> i) & 1) e = forward ? big : -big;
    ends.push_back(e);
    axes.push_back(static_cast<std::int64_t>(i));
    strides.push_back(steps[i]);
  }
  Attributes attrs;
  attrs.set("starts", starts);
  attrs.set("ends", ends);
  attrs.set("axes", axes);
  attrs.set("steps", strides);
  // Shrunk axes are dropped by a Reshape to the file's output shape.
  if (o.scalar<std::int32_t>(4, 0) != 0) {
    const std::string sliced = emit_helper(op, "slice", "StridedSlice", {file_order(x)}, attrs);
    Attributes reshape;
    reshape.set("shape", shape_of(op.outputs[0]));
    emit_with_activation(op, 0, "Reshape", {sliced}, reshape, {}, false);
    return;
  }
  emit_with_activation(op, 0, "StridedSlice", {file_order(x)}, attrs, {}, false);
}

void Importer::op_slice(const TfOperator& op) {
  const int x = input(op, 0);
  const Dims begin = constant_ints(op, 1), size = constant_ints(op, 2);
  const Dims in = shape_of(x);
  if (begin.size() != in.size() || size.size() != in.size())
    invalid(op, "begin and size need one value per axis");
  Dims starts, ends, axes;
  for (std::size_t i = 0; i < in.size(); ++i) {
    starts.push_back(begin[i]);
    ends.push_back(size[i] < 0 ? in[i] : begin[i] + size[i]);
    axes.push_back(static_cast<std::int64_t>(i));
  }
  Attributes attrs;
  attrs.set("starts", starts);
  attrs.set("ends", ends);
  attrs.set("axes", axes);
  emit_with_activation(op, 0, "StridedSlice", {file_order(x)}, attrs, {}, false);
}

void Importer::op_gather(const TfOperator& op) {
  const int x = input(op, 0);
  const Const& indices = constant(op, 1);
  if (op.options.scalar<std::int32_t>(1, 0) != 0) unsupported(op, "batch_dims is not supported");
  std::int64_t axis = op.options.scalar<std::int32_t>(0, 0);
  if (axis < 0) axis += rank_of(x);
  Attributes attrs;
  attrs.set("axis", axis);
  Const index_values = indices;
  index_values.integer = false;
  emit_with_activation(op, 0, "Gather", {file_order(x), emit_constant(info(op.inputs[1]).name, index_values)},
                       attrs, {}, false);
}

void Importer::op_split(const TfOperator& op) {
  const Dims axis_value = constant_ints(op, 0);
  const int x = input(op, 1);
  if (axis_value.size() != 1) invalid(op, "the axis must be a scalar");
  std::int64_t axis = axis_value[0];
  if (axis < 0) axis += rank_of(x);
  const bool in_nchw = prefers_nchw(x);
  Attributes attrs;
  attrs.set("axis", in_nchw ? static_cast<std::int64_t>(kNchwAxisOf[axis]) : axis);
  std::vector<std::string> outputs;
  for (int t : op.outputs) outputs.push_back(output_name(t, in_nchw));
  const auto names = emit(op, "Slice", {operand(x, in_nchw)}, attrs, {}, outputs);
  for (std::size_t i = 0; i < op.outputs.size(); ++i) bind(op, op.outputs[i], in_nchw, names[i]);
}

void Importer::op_batch_matmul(const TfOperator& op) {
  const bool adj[2] = {op.options.scalar<std::uint8_t>(0, 0) != 0,
                       op.options.scalar<std::uint8_t>(1, 0) != 0};
  std::vector<std::string> names;
  for (std::size_t i = 0; i < 2; ++i) {
    const int t = input(op, i);
    std::string name = file_order(t);
    if (adj[i]) {
      const int rank = rank_of(t);
      if (rank < 2) invalid(op, "an adjoint operand needs rank 2 or more");
      Dims perm(static_cast<std::size_t>(rank));
      std::iota(perm.begin(), perm.end(), 0);
      std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
      Attributes attrs;
      attrs.set("perm", perm);
      name = emit_helper(op, i == 0 ? "adj_x" : "adj_y", "Transpose", {name}, attrs);
    }
    names.push_back(name);
  }
  emit_with_activation(op, 0, "MatMul", names, {}, {}, false);
}

void Importer::op_depth_to_space(const TfOperator& op) {
  const int x = input(op, 0);
  const Dims in = shape_of(x);
  const std::int64_t b = op.options.scalar<std::int32_t>(0, 0);
  if (in.size() != 4 || b < 1 || in[3] % (b * b) != 0)
    invalid(op, "block size " + std::to_string(b) + " does not fit " + dims_str(in));
  const std::int64_t c = in[3] / (b * b);
  // NCHW: channel (i·b + j)·C' + c goes to row h·b + i, column w·b + j.
  Attributes split;
  split.set("shape", Dims{0, b, b, c, in[1], in[2]});
  const std::string blocks = emit_helper(op, "blocks", "Reshape", {nchw(x)}, split);
  Attributes perm;
  perm.set("perm", Dims{0, 3, 4, 1, 5, 2});
  const std::string moved = emit_helper(op, "moved", "Transpose", {blocks}, perm);
  Attributes merge;
  merge.set("shape", Dims{0, c, in[1] * b, in[2] * b});
  emit_with_activation(op, 0, "Reshape", {moved}, merge, {}, true);
}

// ---- comparisons and control flow ---------------------------------------------------------------

void Importer::op_compare(const TfOperator& op) {
  if (op.inputs.size() != 2) invalid(op, "needs two inputs");
  // Not a structured binding: the lambda below reads `names`, which clang 14 (the fuzz build) cannot capture.
  const std::pair<std::vector<std::string>, bool> operands = elementwise_operands(op);
  const std::vector<std::string>& names = operands.first;
  const bool in_nchw = operands.second;
  // a >= b is clip(floor(a - b) + 1, 0, 1): a - b is 0 only where a = b and has the sign of a - b
  // elsewhere, so the result is exactly 1 or 0. The other comparisons follow from it.
  const std::string one = emit_constant(info(op.outputs[0]).name + "/one", Const{{}, {1.0}, false});
  Attributes clip;
  clip.set("function", std::string("clip"));
  clip.set("min", 0.0);
  clip.set("max", 1.0);
  // floor(a - b) + 1, to be clipped.
  auto shifted = [&](std::size_t a, std::size_t b, const std::string& suffix) {
    Attributes attrs;
    attrs.set("operation", std::string("sub"));
    const std::string difference = emit_helper(op, suffix + "difference", "Binary", {names[a], names[b]}, attrs);
    Attributes floor;
    floor.set("function", std::string("floor"));
    const std::string floored = emit_helper(op, suffix + "floor", "Activation", {difference}, floor);
    attrs.set("operation", std::string("add"));
    return emit_helper(op, suffix + "shifted", "Binary", {floored, one}, attrs);
  };
  auto ge = [&](std::size_t a, std::size_t b, const std::string& suffix) {
    return emit_helper(op, suffix + "ge", "Activation", {shifted(a, b, suffix)}, clip);
  };
  Attributes attrs;
  if (op.code == GREATER_EQUAL || op.code == LESS_EQUAL) {
    const std::string value = op.code == GREATER_EQUAL ? shifted(0, 1, "") : shifted(1, 0, "");
    emit_with_activation(op, 0, "Activation", {value}, clip, {}, in_nchw);
  } else if (op.code == GREATER || op.code == LESS) {
    // a > b is 1 - (b >= a).
    const std::string reverse = op.code == GREATER ? ge(1, 0, "") : ge(0, 1, "");
    attrs.set("operation", std::string("sub"));
    emit_with_activation(op, 0, "Binary", {one, reverse}, attrs, {}, in_nchw);
  } else {
    // a = b is (a >= b)·(b >= a); a ≠ b is 1 minus that.
    const std::string forward = ge(0, 1, "forward_"), backward = ge(1, 0, "backward_");
    attrs.set("operation", std::string("mul"));
    if (op.code == EQUAL) {
      emit_with_activation(op, 0, "Binary", {forward, backward}, attrs, {}, in_nchw);
      return;
    }
    const std::string equal = emit_helper(op, "equal", "Binary", {forward, backward}, attrs);
    attrs.set("operation", std::string("sub"));
    emit_with_activation(op, 0, "Binary", {one, equal}, attrs, {}, in_nchw);
  }
}

Graph Importer::import_subgraph(const TfOperator& op, std::int32_t index,
                                const std::vector<std::optional<Const>>& constants, const std::vector<Dims>& shapes) {
  if (index < 0 || static_cast<std::size_t>(index) >= subgraph_count_) {
    invalid(op, "subgraph index " + std::to_string(index) + " is out of range (the model has " +
                    std::to_string(subgraph_count_) + " subgraphs)");
  }
  Nested inner;
  inner.subgraph = index;
  inner.around = nested_ ? nested_->around : std::vector<int>{};
  inner.around.push_back(nested_ ? nested_->subgraph : 0);
  if (std::find(inner.around.begin(), inner.around.end(), index) != inner.around.end()) {
    std::string chain;
    for (int k : inner.around) chain += std::to_string(k) + " -> ";
    invalid(op, "subgraph " + std::to_string(index) + " includes itself (" + chain + std::to_string(index) + ")");
  }
  if (static_cast<int>(inner.around.size()) > limits().max_subgraph_depth) {
    throw LimitError(where(op) + ": subgraphs nested " + std::to_string(inner.around.size()) +
                     " deep exceed the limit of " + std::to_string(limits().max_subgraph_depth) +
                     " (Limits::max_subgraph_depth)");
  }
  inner.constants = constants;
  inner.shapes = shapes;
  Importer importer(bytes_, path_ + " (subgraph " + std::to_string(index) + ")", std::move(inner));
  try {
    return importer.run();
  } catch (const LimitError& e) {
    throw LimitError(where(op) + ": " + e.what());
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(where(op) + ": " + e.what());
  } catch (const ModelError& e) {
    throw ModelError(where(op) + ": " + e.what());
  }
}

std::vector<std::string> Importer::inline_graph(const Graph& graph, const std::string& prefix,
                                                const std::vector<std::string>& inputs, Graph& into) {
  std::map<std::string, std::string> renamed;
  for (std::size_t i = 0; i < graph.inputs.size(); ++i) renamed[graph.inputs[i].name] = inputs[i];
  for (LayerSpec layer : graph.layers) {
    layer.name = prefix + layer.name;
    for (std::string& name : layer.inputs) name = renamed.at(name);
    for (std::string& name : layer.outputs) name = renamed[name] = prefix + name;
    into.layers.push_back(std::move(layer));
  }
  std::vector<std::string> outputs;
  for (const std::string& name : graph.outputs) outputs.push_back(renamed.at(name));
  return outputs;
}

void Importer::op_if(const TfOperator& op) {
  if (!has_input(op, 0)) invalid(op, "needs the condition as input 0");
  std::vector<std::optional<Const>> constants;
  std::vector<Dims> shapes;
  std::vector<std::string> inputs{file_order(input(op, 0))};
  for (std::size_t i = 1; i < op.inputs.size(); ++i) {
    const int t = input(op, i);
    if (is_constant(t)) {
      constants.emplace_back(constants_.at(t));
      shapes.push_back(constants_.at(t).shape);
    } else {
      constants.emplace_back(std::nullopt);
      inputs.push_back(file_order(t));
      shapes.push_back(shapes_.at(inputs.back()).dims());
    }
  }
  Graph then_branch = import_subgraph(op, op.options.scalar<std::int32_t>(0, 0), constants, shapes);
  Graph else_branch = import_subgraph(op, op.options.scalar<std::int32_t>(1, 0), constants, shapes);
  for (const Graph* branch : {&then_branch, &else_branch}) {
    if (branch->outputs.size() != op.outputs.size())
      invalid(op, "a branch gives " + std::to_string(branch->outputs.size()) + " outputs for the operator's " +
                      std::to_string(op.outputs.size()));
  }
  std::vector<std::string> outputs;
  for (int t : op.outputs) outputs.push_back(output_name(t, false));
  emit(op, "If", inputs, {}, {}, outputs,
       {{"then_branch", std::move(then_branch)}, {"else_branch", std::move(else_branch)}});
  for (std::size_t k = 0; k < op.outputs.size(); ++k) bind(op, op.outputs[k], false, outputs[k]);
}

void Importer::op_while(const TfOperator& op) {
  // The loop values vary, so inside the subgraphs none is a constant.
  std::vector<std::string> values;
  std::vector<Dims> shapes;
  for (std::size_t i = 0; i < op.inputs.size(); ++i) {
    values.push_back(file_order(input(op, i)));
    shapes.push_back(shapes_.at(values.back()).dims());
  }
  if (op.outputs.size() != values.size())
    invalid(op, "has " + std::to_string(values.size()) + " loop values but " + std::to_string(op.outputs.size()) + " outputs");
  const std::vector<std::optional<Const>> constants(values.size());
  const Graph condition = import_subgraph(op, op.options.scalar<std::int32_t>(0, 0), constants, shapes);
  const Graph body = import_subgraph(op, op.options.scalar<std::int32_t>(1, 0), constants, shapes);
  if (condition.outputs.size() != 1) invalid(op, "the condition subgraph should give one output");
  if (body.outputs.size() != values.size()) invalid(op, "the body subgraph should give one output per loop value");
  const std::string base = info(op.outputs[0]).name + "/while";
  // The condition on the initial values, here; the loop body runs the body, then the condition on its
  // results, as a Loop without a trip count.
  const std::string first = inline_graph(condition, base + "/condition0/", values, graph_)[0];
  {
    std::vector<Shape> in;
    for (const Dims& d : shapes) in.push_back(Shape(d));
    shapes_[first] = infer_graph_shapes(condition, in).at(0);
  }
  Graph loop;
  loop.name = body.name;
  loop.inputs = {{base + "/iteration", Shape{}}, {base + "/condition", Shape{}}};
  loop.inputs.insert(loop.inputs.end(), body.inputs.begin(), body.inputs.end());
  std::vector<std::string> body_inputs;
  for (const InputSpec& input : body.inputs) body_inputs.push_back(input.name);
  const std::vector<std::string> results = inline_graph(body, "", body_inputs, loop);
  const std::string next = inline_graph(condition, "condition/", results, loop)[0];
  loop.outputs = {next};
  loop.outputs.insert(loop.outputs.end(), results.begin(), results.end());
  Attributes attrs;
  attrs.set("has_trip_count", std::int64_t{0});
  attrs.set("has_condition", std::int64_t{1});
  attrs.set("carried", static_cast<std::int64_t>(values.size()));
  std::vector<std::string> inputs{first};
  inputs.insert(inputs.end(), values.begin(), values.end());
  std::vector<std::string> outputs;
  for (int t : op.outputs) outputs.push_back(output_name(t, false));
  emit(op, "Loop", inputs, attrs, {}, outputs, {{"body", std::move(loop)}});
  for (std::size_t k = 0; k < op.outputs.size(); ++k) bind(op, op.outputs[k], false, outputs[k]);
}

const std::map<int, Importer::Handler>& Importer::handlers() {
  static const std::map<int, Handler> table = {
      {ADD, &Importer::op_binary},
      {AVERAGE_POOL_2D, &Importer::op_pool},
      {CONCATENATION, &Importer::op_concat},
      {CONV_2D, &Importer::op_conv},
      {DEPTHWISE_CONV_2D, &Importer::op_depthwise},
      {DEPTH_TO_SPACE, &Importer::op_depth_to_space},
      {DEQUANTIZE, &Importer::op_dequantize},
      {FULLY_CONNECTED, &Importer::op_fully_connected},
      {EQUAL, &Importer::op_compare},
      {GREATER, &Importer::op_compare},
      {GREATER_EQUAL, &Importer::op_compare},
      {IF, &Importer::op_if},
      {LESS, &Importer::op_compare},
      {LESS_EQUAL, &Importer::op_compare},
      {NOT_EQUAL, &Importer::op_compare},
      {WHILE, &Importer::op_while},
      {LOGISTIC, &Importer::op_activation},
      {MAX_POOL_2D, &Importer::op_pool},
      {MUL, &Importer::op_binary},
      {RELU, &Importer::op_activation},
      {RELU_N1_TO_1, &Importer::op_activation},
      {RELU6, &Importer::op_activation},
      {RESHAPE, &Importer::op_reshape},
      {RESIZE_BILINEAR, &Importer::op_resize},
      {SOFTMAX, &Importer::op_softmax},
      {TANH, &Importer::op_activation},
      {PAD, &Importer::op_pad},
      {GATHER, &Importer::op_gather},
      {TRANSPOSE, &Importer::op_transpose},
      {MEAN, &Importer::op_reduce},
      {SUB, &Importer::op_binary},
      {DIV, &Importer::op_binary},
      {SQUEEZE, &Importer::op_reshape},
      {STRIDED_SLICE, &Importer::op_strided_slice},
      {EXP, &Importer::op_activation},
      {SPLIT, &Importer::op_split},
      {PRELU, &Importer::op_prelu},
      {MAXIMUM, &Importer::op_binary},
      {MINIMUM, &Importer::op_binary},
      {NEG, &Importer::op_activation},
      {PADV2, &Importer::op_pad},
      {SLICE, &Importer::op_slice},
      {TRANSPOSE_CONV, &Importer::op_transpose_conv},
      {EXPAND_DIMS, &Importer::op_reshape},
      {LOG, &Importer::op_activation},
      {SUM, &Importer::op_reduce},
      {SQRT, &Importer::op_activation},
      {RSQRT, &Importer::op_activation},
      {REDUCE_PROD, &Importer::op_reduce},
      {REDUCE_MAX, &Importer::op_reduce},
      {REDUCE_MIN, &Importer::op_reduce},
      {RESIZE_NEAREST_NEIGHBOR, &Importer::op_resize},
      {LEAKY_RELU, &Importer::op_leaky_relu},
      {SQUARED_DIFFERENCE, &Importer::op_squared_difference},
      {ABS, &Importer::op_activation},
      {QUANTIZE, &Importer::op_quantize},
      {HARD_SWISH, &Importer::op_activation},
      {DENSIFY, &Importer::op_densify},
      {BATCH_MATMUL, &Importer::op_batch_matmul},
  };
  return table;
}

// ---- model --------------------------------------------------------------------------------------

Graph Importer::run() {
  read_model();
  check_supported();
  std::set<int> inputs(inputs_.begin(), inputs_.end());
  if (nested_ && nested_->shapes.size() != inputs_.size()) {
    throw ModelError(path_ + ": the subgraph takes " + std::to_string(inputs_.size()) + " inputs, the operator gives " +
                     std::to_string(nested_->shapes.size()));
  }
  for (std::size_t i = 0; nested_ && i < inputs_.size(); ++i) {
    // A subgraph's inputs keep the file's order; constants of the operator stay constants here.
    const int t = inputs_[i];
    if (nested_->constants[i]) {
      constants_[t] = *nested_->constants[i];
      continue;
    }
    const std::string name = output_name(t, false);
    if (shapes_.count(name)) continue;  // the same tensor twice
    shapes_[name] = Shape(nested_->shapes[i]);
    graph_.inputs.push_back({name, shapes_[name]});
    live_[t].file = name;
  }
  for (int t : nested_ ? std::vector<int>{} : inputs_) {
    const TfTensor& tensor = info(t);
    if (tensor.type != FLOAT32) {
      throw UnsupportedError(tensor_where(t) + ": the input is " + type_name(tensor.type) +
                             (tensor.quantization.valid() ? " (quantized)" : "") +
                             "; only FLOAT32 inputs are supported");
    }
    // A dynamic input takes the shape the options give it (in the file's order), else the file's.
    Dims dims = tensor.shape;
    if (auto given = options_.input_shapes.find(tensor.name); given != options_.input_shapes.end()) {
      dims = given->second.dims();
      bool fits = dims.size() == tensor.shape.size();
      for (std::size_t i = 0; fits && i < dims.size(); ++i) {
        const std::int64_t fixed = i < tensor.signature.size() ? tensor.signature[i] : tensor.shape[i];
        fits = fixed < 0 || i == 0 || dims[i] == fixed;
      }
      if (!fits)
        throw ModelError(tensor_where(t) + ": the shape " + dims_str(dims) + " given for it does not fit " +
                         dims_str(tensor.signature.empty() ? tensor.shape : tensor.signature));
      checked_numel(dims, sizeof(float), tensor_where(t));
    }
    const bool in_nchw = dims.size() == 4;
    InputSpec spec;
    spec.name = output_name(t, false);
    spec.shape = Shape(in_nchw ? permuted(dims, kToNchw) : dims);
    shapes_[spec.name] = spec.shape;
    graph_.inputs.push_back(spec);
    (in_nchw ? live_[t].nchw : live_[t].file) = spec.name;
  }
  // Every tensor with data that no operator writes is a constant.
  std::set<int> written(inputs.begin(), inputs.end());
  for (const TfOperator& op : operators_) written.insert(op.outputs.begin(), op.outputs.end());
  for (int t = 0; t < static_cast<int>(tensors_.size()); ++t) {
    if (written.count(t)) continue;
    const TfTensor& tensor = info(t);
    if (tensor.buffer == 0) continue;
    if (buffer_bytes(t).empty()) {
      // A shape tensor with no elements (RESHAPE to a scalar) has an empty buffer.
      if (!tensor.shape.empty() && Shape(tensor.shape).numel() == 0)
        constants_[t] = Const{tensor.shape, {}, tensor.type != FLOAT32 && tensor.type != FLOAT16};
      continue;
    }
    constants_[t] = read_constant(t);
  }
  for (const TfOperator& op : operators_) {
    for (int t : op.outputs) {
      if (t >= 0 && (live_.count(t) || constants_.count(t)))
        invalid(op, "output '" + info(t).name + "' is written twice");
    }
    for (std::size_t i = 0; i < op.inputs.size(); ++i) {
      const int t = op.inputs[i];
      if (t < 0 || constants_.count(t) || live_.count(t)) continue;
      invalid(op, "input '" + info(t).name + "' is neither a constant nor computed before");
    }
    for (std::size_t i = 0; i < op.inputs.size(); ++i) {
      const int t = op.inputs[i];
      if (t < 0 || !constants_.count(t) || op.code == DEQUANTIZE || op.code == DENSIFY) continue;
      const int type = info(t).type;
      if ((type == INT8 || type == UINT8) && info(t).quantization.valid() &&
          !info(t).quantization.floats(field::quant_scale).empty()) {
        unsupported(op, "input '" + info(t).name + "' is quantized " + type_name(type) +
                            "; quantized models are not supported yet");
      }
    }
    (this->*handlers().at(op.code))(op);
  }
  for (int t : outputs_) {
    if (is_constant(t)) {
      graph_.outputs.push_back(emit_constant(info(t).name, constants_.at(t)));
    } else {
      graph_.outputs.push_back(file_order(t));
    }
  }
  graph_.metadata.source_format = "tflite";
  graph_.validate();
  return std::move(graph_);
}

}  // namespace

bool is_tflite(std::span<const std::byte> bytes) {
  return bytes.size() >= 8 && std::memcmp(bytes.data() + 4, "TFL3", 4) == 0;
}

Graph load_tflite(std::span<const std::byte> bytes, const std::string& name) { return load_tflite(bytes, name, {}); }

Graph load_tflite(std::span<const std::byte> bytes, const std::string& name, const TfliteImportOptions& options) {
  Importer importer(bytes, name, options);
  Graph graph = importer.run();
  const std::size_t slash = name.find_last_of('/');
  std::string stem = slash == std::string::npos ? name : name.substr(slash + 1);
  if (stem.size() > 7 && stem.ends_with(".tflite")) stem.resize(stem.size() - 7);
  graph.name = stem;
  return graph;
}

Graph load_tflite(const std::string& path) { return load_tflite(path, TfliteImportOptions{}); }

Graph load_tflite(const std::string& path, const TfliteImportOptions& options) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw FileError(path + ": cannot open");
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) throw FileError(path + ": cannot read");
  return load_tflite(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()), path, options);
}

std::vector<std::string> tflite_supported_ops() {
  std::vector<std::string> ops;
  for (const auto& entry : Importer::handlers()) ops.push_back(operator_name(entry.first));
  std::sort(ops.begin(), ops.end());
  return ops;
}

}  // namespace espresso
