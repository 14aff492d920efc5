#include "import/caffe/caffe_format.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

#include "data/proto_parse.h"
#include "espresso/errors.h"
#include "espresso/limits.h"

namespace espresso::caffe_format {
namespace {

std::string read_file(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) throw FileError(path + ": no such file");
  const auto size = std::filesystem::file_size(path, error);
  if (error) throw FileError(path + ": cannot read the file size: " + error.message());
  // Protobuf counts message bytes in an int; larger files cannot be a valid Caffe message.
  if (size > static_cast<std::uintmax_t>(INT_MAX)) {
    throw ParseError(path + ": " + std::to_string(size) +
                     " bytes is larger than a Caffe file can be (2 GiB)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path + ": cannot open the file");
  std::string bytes(static_cast<std::size_t>(size), '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (static_cast<std::uintmax_t>(in.gcount()) != size)
    throw FileError(path + ": the file could not be read fully");
  return bytes;
}

// Keeps every syntax error with its position; protobuf's lines and columns count from 0.
class TextErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit TextErrors(std::string path) : path_(std::move(path)) {}

  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (!text_.empty()) text_ += "\n";
    text_ += path_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message;
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}

  const std::string& text() const { return text_; }

 private:
  std::string path_;
  std::string text_;
};

// Current type names of the V1 enum values.
const char* v1_type_name(caffe::V1LayerParameter::LayerType type) {
  using V1 = caffe::V1LayerParameter;
  switch (type) {
    case V1::NONE:
      return "";
    case V1::ABSVAL:
      return "AbsVal";
    case V1::ACCURACY:
      return "Accuracy";
    case V1::ARGMAX:
      return "ArgMax";
    case V1::BNLL:
      return "BNLL";
    case V1::CONCAT:
      return "Concat";
    case V1::CONTRASTIVE_LOSS:
      return "ContrastiveLoss";
    case V1::CONVOLUTION:
      return "Convolution";
    case V1::DATA:
      return "Data";
    case V1::DECONVOLUTION:
      return "Deconvolution";
    case V1::DROPOUT:
      return "Dropout";
    case V1::DUMMY_DATA:
      return "DummyData";
    case V1::EUCLIDEAN_LOSS:
      return "EuclideanLoss";
    case V1::ELTWISE:
      return "Eltwise";
    case V1::EXP:
      return "Exp";
    case V1::FLATTEN:
      return "Flatten";
    case V1::HDF5_DATA:
      return "HDF5Data";
    case V1::HDF5_OUTPUT:
      return "HDF5Output";
    case V1::HINGE_LOSS:
      return "HingeLoss";
    case V1::IM2COL:
      return "Im2col";
    case V1::IMAGE_DATA:
      return "ImageData";
    case V1::INFOGAIN_LOSS:
      return "InfogainLoss";
    case V1::INNER_PRODUCT:
      return "InnerProduct";
    case V1::LRN:
      return "LRN";
    case V1::MEMORY_DATA:
      return "MemoryData";
    case V1::MULTINOMIAL_LOGISTIC_LOSS:
      return "MultinomialLogisticLoss";
    case V1::MVN:
      return "MVN";
    case V1::POOLING:
      return "Pooling";
    case V1::POWER:
      return "Power";
    case V1::RELU:
      return "ReLU";
    case V1::SIGMOID:
      return "Sigmoid";
    case V1::SIGMOID_CROSS_ENTROPY_LOSS:
      return "SigmoidCrossEntropyLoss";
    case V1::SILENCE:
      return "Silence";
    case V1::SOFTMAX:
      return "Softmax";
    case V1::SOFTMAX_LOSS:
      return "SoftmaxWithLoss";
    case V1::SPLIT:
      return "Split";
    case V1::SLICE:
      return "Slice";
    case V1::TANH:
      return "TanH";
    case V1::WINDOW_DATA:
      return "WindowData";
    case V1::THRESHOLD:
      return "Threshold";
  }
  return "";
}

caffe::LayerParameter upgrade(caffe::V1LayerParameter& v1, const std::string& path) {
  caffe::LayerParameter layer;
  layer.set_name(v1.name());
  const std::string type = v1_type_name(v1.type());
  if (type.empty()) {
    throw ModelError(path + ": V1 layer '" + v1.name() + "' has no type (" +
                     caffe::V1LayerParameter::LayerType_Name(v1.type()) + ")");
  }
  layer.set_type(type);
  layer.mutable_bottom()->Swap(v1.mutable_bottom());
  layer.mutable_top()->Swap(v1.mutable_top());
  layer.mutable_include()->Swap(v1.mutable_include());
  layer.mutable_exclude()->Swap(v1.mutable_exclude());
  layer.mutable_loss_weight()->Swap(v1.mutable_loss_weight());
  // Weights can be large: move them rather than copy.
  layer.mutable_blobs()->Swap(v1.mutable_blobs());

  const int specs = std::max({v1.param_size(), v1.blobs_lr_size(), v1.weight_decay_size()});
  for (int i = 0; i < specs; ++i) {
    caffe::ParamSpec* spec = layer.add_param();
    if (i < v1.param_size()) spec->set_name(v1.param(i));
    if (i < v1.blob_share_mode_size()) {
      spec->set_share_mode(static_cast<caffe::ParamSpec::DimCheckMode>(v1.blob_share_mode(i)));
    }
    if (i < v1.blobs_lr_size()) spec->set_lr_mult(v1.blobs_lr(i));
    if (i < v1.weight_decay_size()) spec->set_decay_mult(v1.weight_decay(i));
  }

  // The parameter messages are shared between both formats; only their field numbers differ.
  if (v1.has_accuracy_param()) layer.mutable_accuracy_param()->Swap(v1.mutable_accuracy_param());
  if (v1.has_argmax_param()) layer.mutable_argmax_param()->Swap(v1.mutable_argmax_param());
  if (v1.has_concat_param()) layer.mutable_concat_param()->Swap(v1.mutable_concat_param());
  if (v1.has_contrastive_loss_param()) {
    layer.mutable_contrastive_loss_param()->Swap(v1.mutable_contrastive_loss_param());
  }
  if (v1.has_convolution_param()) layer.mutable_convolution_param()->Swap(v1.mutable_convolution_param());
  if (v1.has_data_param()) layer.mutable_data_param()->Swap(v1.mutable_data_param());
  if (v1.has_dropout_param()) layer.mutable_dropout_param()->Swap(v1.mutable_dropout_param());
  if (v1.has_dummy_data_param()) layer.mutable_dummy_data_param()->Swap(v1.mutable_dummy_data_param());
  if (v1.has_eltwise_param()) layer.mutable_eltwise_param()->Swap(v1.mutable_eltwise_param());
  if (v1.has_exp_param()) layer.mutable_exp_param()->Swap(v1.mutable_exp_param());
  if (v1.has_hdf5_data_param()) layer.mutable_hdf5_data_param()->Swap(v1.mutable_hdf5_data_param());
  if (v1.has_hdf5_output_param()) layer.mutable_hdf5_output_param()->Swap(v1.mutable_hdf5_output_param());
  if (v1.has_hinge_loss_param()) layer.mutable_hinge_loss_param()->Swap(v1.mutable_hinge_loss_param());
  if (v1.has_image_data_param()) layer.mutable_image_data_param()->Swap(v1.mutable_image_data_param());
  if (v1.has_infogain_loss_param()) {
    layer.mutable_infogain_loss_param()->Swap(v1.mutable_infogain_loss_param());
  }
  if (v1.has_inner_product_param()) {
    layer.mutable_inner_product_param()->Swap(v1.mutable_inner_product_param());
  }
  if (v1.has_lrn_param()) layer.mutable_lrn_param()->Swap(v1.mutable_lrn_param());
  if (v1.has_memory_data_param()) layer.mutable_memory_data_param()->Swap(v1.mutable_memory_data_param());
  if (v1.has_mvn_param()) layer.mutable_mvn_param()->Swap(v1.mutable_mvn_param());
  if (v1.has_pooling_param()) layer.mutable_pooling_param()->Swap(v1.mutable_pooling_param());
  if (v1.has_power_param()) layer.mutable_power_param()->Swap(v1.mutable_power_param());
  if (v1.has_relu_param()) layer.mutable_relu_param()->Swap(v1.mutable_relu_param());
  if (v1.has_sigmoid_param()) layer.mutable_sigmoid_param()->Swap(v1.mutable_sigmoid_param());
  if (v1.has_softmax_param()) layer.mutable_softmax_param()->Swap(v1.mutable_softmax_param());
  if (v1.has_slice_param()) layer.mutable_slice_param()->Swap(v1.mutable_slice_param());
  if (v1.has_tanh_param()) layer.mutable_tanh_param()->Swap(v1.mutable_tanh_param());
  if (v1.has_threshold_param()) layer.mutable_threshold_param()->Swap(v1.mutable_threshold_param());
  if (v1.has_window_data_param()) layer.mutable_window_data_param()->Swap(v1.mutable_window_data_param());
  if (v1.has_transform_param()) layer.mutable_transform_param()->Swap(v1.mutable_transform_param());
  if (v1.has_loss_param()) layer.mutable_loss_param()->Swap(v1.mutable_loss_param());
  return layer;
}

}  // namespace

namespace {

// `what` names the message in the error when protobuf reports no position; `path` names the text.
void parse_text(const std::string& text, const std::string& path, google::protobuf::Message& message,
                const std::string& what) {
  TextErrors errors(path);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  // Protobuf's text parser allows any nesting unless told; deep nesting would exhaust the stack.
  parser.SetRecursionLimit(limits().max_nesting_depth);
  if (!parser.ParseFromString(text, &message)) {
    throw ParseError(errors.text().empty() ? path + ": not a valid " + what : errors.text());
  }
}

}  // namespace

caffe::NetParameter parse_prototxt(const std::string& text, const std::string& name) {
  caffe::NetParameter net;
  parse_text(text, name, net, "Caffe text-format net");
  return net;
}

caffe::NetParameter read_prototxt(const std::string& path) { return parse_prototxt(read_file(path), path); }

caffe::SolverParameter parse_solver(const std::string& text, const std::string& name) {
  caffe::SolverParameter solver;
  parse_text(text, name, solver, "solver file");
  return solver;
}

caffe::SolverParameter read_solver(const std::string& path) { return parse_solver(read_file(path), path); }

caffe::NetParameter read_caffemodel(const std::string& path) { return parse_caffemodel(read_file(path), path); }

caffe::NetParameter parse_caffemodel(const std::string& bytes, const std::string& path) {
  caffe::NetParameter net;
  data::parse_binary_proto(bytes, net, path, "caffemodel (binary NetParameter)");
  return net;
}

void upgrade_v1_layers(caffe::NetParameter& net, const std::string& path) {
  if (net.layers_size() == 0) return;
  if (net.layer_size() != 0) {
    throw ModelError(path + ": the net mixes V1 `layers` and current `layer` entries");
  }
  for (caffe::V1LayerParameter& v1 : *net.mutable_layers()) *net.add_layer() = upgrade(v1, path);
  net.clear_layers();
}

}  // namespace espresso::caffe_format
