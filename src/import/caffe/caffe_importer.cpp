// Caffe nets to Graphs: phase filtering, layer parameters to docs/layers.md attributes, in-place
// tops to unique tensor names, and caffemodel blobs to weights matched by layer name.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/limits.h"
#include "import/caffe/caffe_format.h"
#include "layers/binary.h"
#include "layers/registry.h"

namespace espresso {
namespace {

using Ints = std::vector<std::int64_t>;

// Caffe types that are another espresso type: the SSD fork's Permute, and the element-wise functions that
// are Activation's (their parameters mapped in map_attributes). Eltwise becomes a chain (eltwise_as_binary).
const std::map<std::string, std::string> kRenamed = {{"Permute", "Transpose"},
                                                     {"AbsVal", "Activation"},
                                                     {"Sigmoid", "Activation"},
                                                     {"TanH", "Activation"},
                                                     {"Power", "Activation"}};

// Data-source layers: kept under their Caffe type with their settings, for the data pipeline.
const std::set<std::string> kDataTypes = {"Data",      "DummyData",  "HDF5Data",
                                          "ImageData", "MemoryData", "WindowData"};

class LayerContext {
 public:
  LayerContext(const std::string& file, const caffe::LayerParameter& layer) : file_(file), layer_(layer) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw ModelError(file_ + ": layer '" + layer_.name() + "' (" + layer_.type() + "): " + what);
  }

  // A spatial list given either as a repeated field or as the 2-D *_h/*_w pair.
  std::optional<Ints> spatial(const char* field, const google::protobuf::RepeatedField<std::uint32_t>& values,
                              bool has_h, std::uint32_t h, bool has_w, std::uint32_t w) const {
    if (has_h != has_w) fail(std::string(field) + "_h and " + field + "_w must be given together");
    if (has_h) {
      if (!values.empty()) fail(std::string("give either ") + field + " or " + field + "_h/" + field + "_w");
      return Ints{h, w};
    }
    if (values.empty()) return std::nullopt;
    return Ints(values.begin(), values.end());
  }

  const caffe::LayerParameter& layer() const { return layer_; }

 private:
  const std::string& file_;
  const caffe::LayerParameter& layer_;
};

void set_if(Attributes& attrs, const char* name, const std::optional<Ints>& values) {
  if (values) attrs.set(name, *values);
}

// Deconvolution has the same Caffe parameters (Caffe has no output padding).
void map_convolution(const LayerContext& ctx, Attributes& attrs) {
  const caffe::ConvolutionParameter& p = ctx.layer().convolution_param();
  if (!p.has_num_output()) ctx.fail("convolution_param.num_output is required");
  if (p.axis() != 1) ctx.fail("convolution_param.axis other than 1 is not supported");
  attrs.set("num_output", static_cast<std::int64_t>(p.num_output()));
  const auto kernel =
      ctx.spatial("kernel", p.kernel_size(), p.has_kernel_h(), p.kernel_h(), p.has_kernel_w(), p.kernel_w());
  if (!kernel) ctx.fail("convolution_param.kernel_size (or kernel_h/kernel_w) is required");
  attrs.set("kernel", *kernel);
  set_if(attrs, "stride",
         ctx.spatial("stride", p.stride(), p.has_stride_h(), p.stride_h(), p.has_stride_w(), p.stride_w()));
  // Caffe lets pad_h/pad_w be given alone, the other one defaulting to 0.
  const bool pad_hw = p.has_pad_h() || p.has_pad_w();
  set_if(attrs, "pad", ctx.spatial("pad", p.pad(), pad_hw, p.pad_h(), pad_hw, p.pad_w()));
  if (!p.dilation().empty()) attrs.set("dilation", Ints(p.dilation().begin(), p.dilation().end()));
  if (p.has_group()) attrs.set("group", static_cast<std::int64_t>(p.group()));
  attrs.set("bias", static_cast<std::int64_t>(p.bias_term()));
}

void map_pooling(const LayerContext& ctx, Attributes& attrs) {
  const caffe::PoolingParameter& p = ctx.layer().pooling_param();
  switch (p.pool()) {
    case caffe::PoolingParameter::MAX:
      attrs.set("method", std::string("max"));
      break;
    case caffe::PoolingParameter::AVE:
      attrs.set("method", std::string("ave"));
      break;
    default:
      ctx.fail("pooling method " + caffe::PoolingParameter::PoolMethod_Name(p.pool()) + " is not supported");
  }
  // Pooling spells each setting as one optional value; give it the repeated form spatial() reads.
  auto field = [](bool has, std::uint32_t value) {
    google::protobuf::RepeatedField<std::uint32_t> values;
    if (has) values.Add(value);
    return values;
  };
  const auto kernel = ctx.spatial("kernel", field(p.has_kernel_size(), p.kernel_size()), p.has_kernel_h(),
                                  p.kernel_h(), p.has_kernel_w(), p.kernel_w());
  if (p.global_pooling()) {
    if (kernel) ctx.fail("global_pooling cannot be combined with a kernel size");
    attrs.set("global", std::int64_t{1});
  } else {
    if (!kernel) ctx.fail("pooling_param.kernel_size (or kernel_h/kernel_w) is required");
    attrs.set("kernel", *kernel);
  }
  set_if(attrs, "stride",
         ctx.spatial("stride", field(p.has_stride(), p.stride()), p.has_stride_h(), p.stride_h(),
                     p.has_stride_w(), p.stride_w()));
  const bool pad_hw = p.has_pad_h() || p.has_pad_w();
  set_if(attrs, "pad", ctx.spatial("pad", field(p.has_pad(), p.pad()), pad_hw, p.pad_h(), pad_hw, p.pad_w()));
  attrs.set("round", std::string(p.round_mode() == caffe::PoolingParameter::FLOOR ? "floor" : "ceil"));
}

// A FillerParameter as `<prefix>.type`, `<prefix>.value`, ... (docs/layers.md); Net fills the blobs a
// model does not provide from these when it trains.
void map_filler(const caffe::FillerParameter& f, const std::string& prefix, Attributes& attrs) {
  attrs.set(prefix + ".type", f.type());
  attrs.set(prefix + ".value", double{f.value()});
  attrs.set(prefix + ".min", double{f.min()});
  attrs.set(prefix + ".max", double{f.max()});
  attrs.set(prefix + ".mean", double{f.mean()});
  attrs.set(prefix + ".std", double{f.std()});
  attrs.set(prefix + ".sparse", std::int64_t{f.sparse()});
  const char* norm = f.variance_norm() == caffe::FillerParameter::FAN_OUT   ? "fan_out"
                     : f.variance_norm() == caffe::FillerParameter::AVERAGE ? "average"
                                                                            : "fan_in";
  attrs.set(prefix + ".variance_norm", std::string(norm));
}

// Caffe's own default when a layer names no filler: a constant.
void map_filler_or_constant(bool given, const caffe::FillerParameter& f, double value,
                            const std::string& prefix, Attributes& attrs) {
  if (given) {
    map_filler(f, prefix, attrs);
  } else {
    attrs.set(prefix + ".type", std::string("constant"));
    attrs.set(prefix + ".value", value);
  }
}

void map_fillers(const caffe::LayerParameter& layer, Attributes& attrs) {
  const std::string& type = layer.type();
  if (type == "Convolution" || type == "Deconvolution") {
    const caffe::ConvolutionParameter& p = layer.convolution_param();
    if (p.has_weight_filler()) map_filler(p.weight_filler(), "weight_filler", attrs);
    if (p.has_bias_filler()) map_filler(p.bias_filler(), "bias_filler", attrs);
  } else if (type == "InnerProduct") {
    const caffe::InnerProductParameter& p = layer.inner_product_param();
    if (p.has_weight_filler()) map_filler(p.weight_filler(), "weight_filler", attrs);
    if (p.has_bias_filler()) map_filler(p.bias_filler(), "bias_filler", attrs);
  } else if (type == "Scale") {
    const caffe::ScaleParameter& p = layer.scale_param();
    map_filler_or_constant(p.has_filler(), p.filler(), 1.0, "weight_filler", attrs);
    if (p.has_bias_filler()) map_filler(p.bias_filler(), "bias_filler", attrs);
  } else if (type == "PReLU") {
    map_filler_or_constant(layer.prelu_param().has_filler(), layer.prelu_param().filler(), 0.25,
                           "weight_filler", attrs);
  } else if (type == "Bias") {
    if (layer.bias_param().has_filler()) map_filler(layer.bias_param().filler(), "weight_filler", attrs);
  } else if (type == "LSTM" || type == "RNN") {
    // Blob 1 of espresso's layers is the recurrent matrix R, which takes the weight filler too; the
    // biases start at 0 (Caffe's default bias filler).
    const caffe::RecurrentParameter& p = layer.recurrent_param();
    if (p.has_weight_filler()) {
      map_filler(p.weight_filler(), "weight_filler", attrs);
      map_filler(p.weight_filler(), "bias_filler", attrs);
    }
  } else if (type == "Embed") {
    const caffe::EmbedParameter& p = layer.embed_param();
    if (p.has_weight_filler()) map_filler(p.weight_filler(), "weight_filler", attrs);
    if (p.has_bias_filler()) map_filler(p.bias_filler(), "bias_filler", attrs);
  } else if (type == "Normalize") {
    // The SSD fork's Normalize scales by 1 unless told otherwise.
    map_filler_or_constant(layer.normalize_param().has_scale_filler(), layer.normalize_param().scale_filler(),
                           1.0, "weight_filler", attrs);
  }
}

void map_loss(const caffe::LayerParameter& layer, Attributes& attrs) {
  const caffe::LossParameter& p = layer.loss_param();
  if (p.has_ignore_label()) attrs.set("ignore_label", static_cast<std::int64_t>(p.ignore_label()));
  std::string normalization = "valid";
  if (p.has_normalization()) {
    switch (p.normalization()) {
      case caffe::LossParameter::FULL:
        normalization = "full";
        break;
      case caffe::LossParameter::VALID:
        normalization = "valid";
        break;
      case caffe::LossParameter::BATCH_SIZE:
        normalization = "batch_size";
        break;
      case caffe::LossParameter::NONE:
        normalization = "none";
        break;
    }
  } else if (p.has_normalize()) {
    // The older boolean: false meant dividing by the batch size.
    normalization = p.normalize() ? "valid" : "batch_size";
  }
  attrs.set("normalization", normalization);
}

void map_data_source(const LayerContext& ctx, Attributes& attrs) {
  const caffe::LayerParameter& layer = ctx.layer();
  const caffe::TransformationParameter& t = layer.transform_param();
  auto transform = [&](bool legacy_has_scale, float legacy_scale, const std::string& legacy_mean,
                       std::uint32_t legacy_crop, bool legacy_mirror) {
    if (t.has_scale() || legacy_has_scale)
      attrs.set("scale", double{t.has_scale() ? t.scale() : legacy_scale});
    const std::string mean_file = t.has_mean_file() ? t.mean_file() : legacy_mean;
    if (!mean_file.empty()) attrs.set("mean_file", mean_file);
    if (!t.mean_value().empty())
      attrs.set("mean_value", std::vector<double>(t.mean_value().begin(), t.mean_value().end()));
    const std::uint32_t crop = t.crop_size() != 0 ? t.crop_size() : legacy_crop;
    if (crop != 0) attrs.set("crop_size", static_cast<std::int64_t>(crop));
    if (t.mirror() || legacy_mirror) attrs.set("mirror", std::int64_t{1});
  };
  const std::string& type = layer.type();
  if (type == "Data") {
    const caffe::DataParameter& p = layer.data_param();
    attrs.set("source", p.source());
    attrs.set("batch_size", static_cast<std::int64_t>(p.batch_size()));
    attrs.set("backend", std::string(p.backend() == caffe::DataParameter::LMDB ? "lmdb" : "leveldb"));
    transform(p.has_scale(), p.scale(), p.mean_file(), p.crop_size(), p.mirror());
  } else if (type == "ImageData") {
    const caffe::ImageDataParameter& p = layer.image_data_param();
    attrs.set("source", p.source());
    attrs.set("batch_size", static_cast<std::int64_t>(p.batch_size()));
    if (!p.root_folder().empty()) attrs.set("root_folder", p.root_folder());
    if (p.new_height() != 0) attrs.set("new_height", static_cast<std::int64_t>(p.new_height()));
    if (p.new_width() != 0) attrs.set("new_width", static_cast<std::int64_t>(p.new_width()));
    attrs.set("is_color", static_cast<std::int64_t>(p.is_color()));
    attrs.set("shuffle", static_cast<std::int64_t>(p.shuffle()));
    transform(p.has_scale(), p.scale(), p.mean_file(), p.crop_size(), p.mirror());
  } else if (type == "WindowData") {
    const caffe::WindowDataParameter& p = layer.window_data_param();
    attrs.set("source", p.source());
    attrs.set("batch_size", static_cast<std::int64_t>(p.batch_size()));
    transform(p.has_scale(), p.scale(), p.mean_file(), p.crop_size(), p.mirror());
  } else if (type == "HDF5Data") {
    const caffe::HDF5DataParameter& p = layer.hdf5_data_param();
    attrs.set("source", p.source());
    attrs.set("batch_size", static_cast<std::int64_t>(p.batch_size()));
    attrs.set("shuffle", static_cast<std::int64_t>(p.shuffle()));
  } else if (type == "MemoryData") {
    const caffe::MemoryDataParameter& p = layer.memory_data_param();
    attrs.set("batch_size", static_cast<std::int64_t>(p.batch_size()));
    attrs.set("shape", Ints{p.channels(), p.height(), p.width()});
    transform(false, 1.0f, "", 0, false);
  } else if (type == "DummyData") {
    // One shape per top: "shape" for the first, then "shape1", "shape2"...
    const caffe::DummyDataParameter& p = layer.dummy_data_param();
    const int tops = layer.top_size();
    // Each list holds one entry for every top, or a single entry shared by all of them.
    auto entry = [&](const char* field, int size, int top) {
      if (size != 1 && size != tops) {
        ctx.fail(std::string("dummy_data_param.") + field + " needs 1 or " + std::to_string(tops) +
                 " entries, found " + std::to_string(size));
      }
      return size == 1 ? 0 : top;
    };
    for (int top = 0; top < tops; ++top) {
      Ints dims;
      if (p.shape_size() > 0) {
        const auto& shape = p.shape(entry("shape", p.shape_size(), top)).dim();
        dims.assign(shape.begin(), shape.end());
      } else {
        dims = {p.num(entry("num", p.num_size(), top)), p.channels(entry("channels", p.channels_size(), top)),
                p.height(entry("height", p.height_size(), top)),
                p.width(entry("width", p.width_size(), top))};
      }
      attrs.set(top == 0 ? "shape" : "shape" + std::to_string(top), dims);
    }
  }
}

// "DetectionOutput" -> "detection_output": the stem of Caffe's `<stem>_param` field for a layer type.
std::string snake_case(const std::string& type) {
  std::string out;
  for (std::size_t i = 0; i < type.size(); ++i) {
    const auto c = static_cast<unsigned char>(type[i]);
    if (std::isupper(c) && i > 0) out += '_';
    out += static_cast<char>(std::tolower(c));
  }
  return out;
}

// The generic rule for an espresso layer type that has no case of its own in map_attributes: every
// field of its `<snake_case_type>_param` message becomes the attribute of the same name, so that new
// layers need no importer code. Scalars become int/float/string, bools 0/1, enums their lower-case
// name, repeated numbers lists, and a nested message's fields `<message field>.<field>` (for example
// `nms_param.nms_threshold`). A field the file leaves out is copied only when the schema gives it a
// default, so that a layer can still tell "not given" from zero (PriorBox's step, DetectionOutput's
// confidence_threshold).
void map_message(const LayerContext& ctx, const google::protobuf::Message& message, const std::string& prefix,
                 Attributes& attrs) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  const google::protobuf::Reflection* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    const std::string name = prefix + std::string(field->name());
    if (field->is_repeated()) {
      const int size = reflection->FieldSize(message, field);
      if (size == 0) continue;
      std::vector<std::int64_t> ints;
      std::vector<double> floats;
      for (int k = 0; k < size; ++k) {
        switch (field->cpp_type()) {
          case FieldDescriptor::CPPTYPE_INT32:
            ints.push_back(reflection->GetRepeatedInt32(message, field, k));
            break;
          case FieldDescriptor::CPPTYPE_UINT32:
            ints.push_back(reflection->GetRepeatedUInt32(message, field, k));
            break;
          case FieldDescriptor::CPPTYPE_INT64:
            ints.push_back(reflection->GetRepeatedInt64(message, field, k));
            break;
          case FieldDescriptor::CPPTYPE_BOOL:
            ints.push_back(reflection->GetRepeatedBool(message, field, k) ? 1 : 0);
            break;
          case FieldDescriptor::CPPTYPE_FLOAT:
            floats.push_back(reflection->GetRepeatedFloat(message, field, k));
            break;
          case FieldDescriptor::CPPTYPE_DOUBLE:
            floats.push_back(reflection->GetRepeatedDouble(message, field, k));
            break;
          default:
            ctx.fail("repeated field " + name + " has a kind espresso attributes cannot hold");
        }
      }
      if (floats.empty()) {
        attrs.set(name, ints);
      } else {
        attrs.set(name, floats);
      }
      continue;
    }
    const bool given = reflection->HasField(message, field);
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      // Fillers are training attributes, which map_fillers names (Normalize's scale_filler: weight_filler).
      if (field->message_type() == caffe::FillerParameter::descriptor()) continue;
      if (given) map_message(ctx, reflection->GetMessage(message, field), name + ".", attrs);
      continue;
    }
    if (!given && !field->has_default_value()) continue;
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        attrs.set(name, std::int64_t{reflection->GetInt32(message, field)});
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        attrs.set(name, std::int64_t{reflection->GetUInt32(message, field)});
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        attrs.set(name, std::int64_t{reflection->GetInt64(message, field)});
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        attrs.set(name, static_cast<std::int64_t>(reflection->GetUInt64(message, field)));
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        attrs.set(name, std::int64_t{reflection->GetBool(message, field) ? 1 : 0});
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        attrs.set(name, double{reflection->GetFloat(message, field)});
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        attrs.set(name, reflection->GetDouble(message, field));
        break;
      case FieldDescriptor::CPPTYPE_STRING:
        attrs.set(name, reflection->GetString(message, field));
        break;
      case FieldDescriptor::CPPTYPE_ENUM: {
        std::string value(reflection->GetEnum(message, field)->name());
        for (char& c : value) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        attrs.set(name, value);
        break;
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;  // handled above
    }
  }
}

// The generic rule (map_message) applied to the layer's own parameter message, if its type has one.
void map_reflected(const LayerContext& ctx, Attributes& attrs) {
  const caffe::LayerParameter& layer = ctx.layer();
  const google::protobuf::FieldDescriptor* field =
      layer.GetDescriptor()->FindFieldByName(snake_case(layer.type()) + "_param");
  if (field == nullptr || field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) return;
  // A message the file leaves out reads as the default instance: its schema defaults are still copied.
  map_message(ctx, layer.GetReflection()->GetMessage(layer, field), "", attrs);
}

// The docs/layers.md attributes of one supported layer.
Attributes map_attributes(const LayerContext& ctx) {
  const caffe::LayerParameter& layer = ctx.layer();
  const std::string& type = layer.type();
  Attributes attrs;
  if (type == "Convolution" || type == "Deconvolution") {
    map_convolution(ctx, attrs);
  } else if (type == "Pooling") {
    map_pooling(ctx, attrs);
  } else if (type == "ReLU") {
    if (layer.relu_param().has_negative_slope()) {
      attrs.set("negative_slope", double{layer.relu_param().negative_slope()});
    }
  } else if (type == "PReLU") {
    attrs.set("channel_shared", static_cast<std::int64_t>(layer.prelu_param().channel_shared()));
  } else if (type == "AbsVal" || type == "Sigmoid" || type == "TanH") {
    attrs.set("function", std::string(type == "AbsVal" ? "abs" : type == "Sigmoid" ? "sigmoid" : "tanh"));
  } else if (type == "Power") {
    const caffe::PowerParameter& p = layer.power_param();
    attrs.set("function", std::string("power"));
    attrs.set("alpha", double{p.scale()});
    attrs.set("beta", double{p.shift()});
    attrs.set("gamma", double{p.power()});
  } else if (type == "Softmax") {
    attrs.set("axis", static_cast<std::int64_t>(layer.softmax_param().axis()));
  } else if (type == "LSTM" || type == "RNN") {
    const caffe::RecurrentParameter& p = layer.recurrent_param();
    if (p.num_output() == 0) ctx.fail("recurrent_param.num_output is required");
    if (p.expose_hidden()) ctx.fail("recurrent_param.expose_hidden is not supported");
    if (layer.bottom_size() > 2) ctx.fail("the static input (a third bottom) is not supported");
    attrs.set("hidden_size", static_cast<std::int64_t>(p.num_output()));
    // Caffe needs cont; without it every sequence starts at step 0 and runs to the end.
    if (layer.bottom_size() == 2) attrs.set("continuation", std::int64_t{1});
  } else if (type == "InnerProduct") {
    const caffe::InnerProductParameter& p = layer.inner_product_param();
    if (!p.has_num_output()) ctx.fail("inner_product_param.num_output is required");
    attrs.set("num_output", static_cast<std::int64_t>(p.num_output()));
    attrs.set("bias", static_cast<std::int64_t>(p.bias_term()));
    attrs.set("axis", static_cast<std::int64_t>(p.axis()));
    attrs.set("transpose", static_cast<std::int64_t>(p.transpose()));
  } else if (type == "LRN") {
    const caffe::LRNParameter& p = layer.lrn_param();
    attrs.set("size", static_cast<std::int64_t>(p.local_size()));
    attrs.set("alpha", double{p.alpha()});
    attrs.set("beta", double{p.beta()});
    attrs.set("k", double{p.k()});
    attrs.set("region",
              std::string(p.norm_region() == caffe::LRNParameter::WITHIN_CHANNEL ? "within" : "across"));
  } else if (type == "BatchNorm") {
    const caffe::BatchNormParameter& p = layer.batch_norm_param();
    attrs.set("eps", double{p.eps()});
    attrs.set("moving_average_fraction", double{p.moving_average_fraction()});
    if (p.has_use_global_stats()) attrs.set("use_global_stats", std::int64_t{p.use_global_stats()});
  } else if (type == "Scale") {
    const caffe::ScaleParameter& p = layer.scale_param();
    attrs.set("axis", static_cast<std::int64_t>(p.axis()));
    attrs.set("num_axes", static_cast<std::int64_t>(p.num_axes()));
    attrs.set("bias", static_cast<std::int64_t>(p.bias_term()));
  } else if (type == "Bias") {
    attrs.set("axis", static_cast<std::int64_t>(layer.bias_param().axis()));
    attrs.set("num_axes", static_cast<std::int64_t>(layer.bias_param().num_axes()));
  } else if (type == "Concat") {
    const caffe::ConcatParameter& p = layer.concat_param();
    attrs.set("axis",
              static_cast<std::int64_t>(p.has_axis() || !p.has_concat_dim() ? p.axis() : p.concat_dim()));
  } else if (type == "Slice") {
    const caffe::SliceParameter& p = layer.slice_param();
    attrs.set("axis",
              static_cast<std::int64_t>(p.has_axis() || !p.has_slice_dim() ? p.axis() : p.slice_dim()));
    if (!p.slice_point().empty())
      attrs.set("slice_points", Ints(p.slice_point().begin(), p.slice_point().end()));
  } else if (type == "Flatten") {
    attrs.set("axis", static_cast<std::int64_t>(layer.flatten_param().axis()));
    attrs.set("end_axis", static_cast<std::int64_t>(layer.flatten_param().end_axis()));
  } else if (type == "Reshape") {
    const caffe::ReshapeParameter& p = layer.reshape_param();
    if (!p.has_shape()) ctx.fail("reshape_param.shape is required");
    attrs.set("shape", Ints(p.shape().dim().begin(), p.shape().dim().end()));
    attrs.set("axis", static_cast<std::int64_t>(p.axis()));
    attrs.set("num_axes", static_cast<std::int64_t>(p.num_axes()));
  } else if (type == "Permute") {
    // The SSD fork's Permute is a Transpose; Transpose completes a short order as the fork does.
    // No order keeps the axes as they are ({0} completes to the identity).
    const caffe::PermuteParameter& p = layer.permute_param();
    attrs.set("perm", p.order().empty() ? Ints{0} : Ints(p.order().begin(), p.order().end()));
  } else if (type == "Dropout") {
    attrs.set("ratio", double{layer.dropout_param().dropout_ratio()});
  } else if (type == "Accuracy") {
    const caffe::AccuracyParameter& p = layer.accuracy_param();
    attrs.set("top_k", static_cast<std::int64_t>(p.top_k()));
    attrs.set("axis", static_cast<std::int64_t>(p.axis()));
    if (p.has_ignore_label()) attrs.set("ignore_label", static_cast<std::int64_t>(p.ignore_label()));
  } else if (type == "SoftmaxWithLoss") {
    map_loss(layer, attrs);
    // Only the softmax loss has an axis; SigmoidCrossEntropyLoss takes none.
    if (layer.softmax_param().has_axis())
      attrs.set("axis", static_cast<std::int64_t>(layer.softmax_param().axis()));
  } else if (type == "SigmoidCrossEntropyLoss") {
    map_loss(layer, attrs);
    // Caffe's default for this layer, unlike SoftmaxWithLoss, divides by the batch size.
    const caffe::LossParameter& p = layer.loss_param();
    if (!p.has_normalization() && !p.has_normalize()) attrs.set("normalization", std::string("batch_size"));
  } else if (type == "DistillationLoss") {
    // Labels and the class axis as for SoftmaxWithLoss; temperature and alpha from its own message.
    if (layer.loss_param().has_ignore_label())
      attrs.set("ignore_label", static_cast<std::int64_t>(layer.loss_param().ignore_label()));
    if (layer.softmax_param().has_axis())
      attrs.set("axis", static_cast<std::int64_t>(layer.softmax_param().axis()));
    map_reflected(ctx, attrs);
  } else if (kDataTypes.count(type)) {
    map_data_source(ctx, attrs);
  } else if (is_known_layer_type(type)) {
    map_reflected(ctx, attrs);
  }
  return attrs;
}

// Caffe's rule matching against a net state of (phase, level, stages).
bool meets_rule(const caffe::NetStateRule& rule, const caffe::NetState& state) {
  if (rule.has_phase() && rule.phase() != state.phase()) return false;
  if (rule.has_min_level() && state.level() < rule.min_level()) return false;
  if (rule.has_max_level() && state.level() > rule.max_level()) return false;
  const auto has_stage = [&](const std::string& stage) {
    return std::find(state.stage().begin(), state.stage().end(), stage) != state.stage().end();
  };
  for (const std::string& stage : rule.stage()) {
    if (!has_stage(stage)) return false;
  }
  for (const std::string& stage : rule.not_stage()) {
    if (has_stage(stage)) return false;
  }
  return true;
}

bool is_included(const caffe::LayerParameter& layer, const caffe::NetState& state, const std::string& file) {
  if (layer.include_size() > 0 && layer.exclude_size() > 0) {
    throw ModelError(file + ": layer '" + layer.name() + "' has both include and exclude rules");
  }
  if (layer.include_size() > 0) {
    for (const caffe::NetStateRule& rule : layer.include()) {
      if (meets_rule(rule, state)) return true;
    }
    return false;
  }
  for (const caffe::NetStateRule& rule : layer.exclude()) {
    if (meets_rule(rule, state)) return false;
  }
  return true;
}

// Caffe's LSTM and RNN as espresso's layers. Caffe's output is h [T, N, H]; espresso's Y is
// [T, 1, N, H], reshaped after. Caffe's blobs: LSTM W_xc [4H, I], b_c [4H], W_hc [4H, H] with gates
// i, f, o, g (espresso: i, o, f, c); RNN W_xh, b_h, W_hh, W_ho, b_o, where Caffe's RNN adds an output
// layer o = tanh(W_ho·h + b_o), here an InnerProduct and a TanH after the RNN. Snapshots espresso wrote
// hold its own layouts (W of rank 3) and the RNN's output layer under "<name>/output": `output_blobs`.
template <class Fresh>
std::vector<LayerSpec> caffe_recurrent(const LayerContext& ctx, LayerSpec spec, Fresh& fresh,
                                       std::vector<Tensor> output_blobs) {
  const bool lstm = spec.type == "LSTM";
  const std::int64_t hidden = spec.attrs.require_int("hidden_size");
  const std::string top = spec.outputs.at(0);
  std::vector<Tensor> blobs = std::move(spec.weights);
  spec.weights.clear();
  spec.params.clear();  // Caffe's per-blob settings follow its own blob order
  LayerSpec output_layer;
  if (!blobs.empty() && blobs[0].shape().rank() == 3) {
    spec.weights = std::move(blobs);
    if (!lstm) {
      if (output_blobs.size() != 2) ctx.fail("the snapshot has no blobs for the output layer '" + spec.name + "/output'");
      output_layer.weights = std::move(output_blobs);
    }
  } else if (!blobs.empty()) {
    if (blobs.size() != (lstm ? 3u : 5u)) {
      ctx.fail("expected " + std::to_string(lstm ? 3 : 5) + " blobs, found " + std::to_string(blobs.size()));
    }
    const std::int64_t gates = lstm ? 4 : 1;
    const std::vector<float> w_x = blobs[0].to_vector(), bias = blobs[1].to_vector(), w_h = blobs[2].to_vector();
    const std::int64_t input = static_cast<std::int64_t>(w_x.size()) / (gates * hidden);
    if (static_cast<std::int64_t>(w_h.size()) != gates * hidden * hidden ||
        static_cast<std::int64_t>(bias.size()) != gates * hidden || input * gates * hidden != static_cast<std::int64_t>(w_x.size())) {
      ctx.fail("blob shapes do not fit num_output " + std::to_string(hidden));
    }
    // espresso's gate k is Caffe's gate order[k].
    const std::vector<std::int64_t> order = lstm ? std::vector<std::int64_t>{0, 2, 1, 3} : std::vector<std::int64_t>{0};
    std::vector<float> w(w_x.size()), r(w_h.size()), b(static_cast<std::size_t>(2 * gates * hidden), 0.0f);
    for (std::int64_t k = 0; k < gates; ++k) {
      const std::int64_t from = order[static_cast<std::size_t>(k)] * hidden;
      std::copy_n(w_x.begin() + from * input, hidden * input, w.begin() + k * hidden * input);
      std::copy_n(w_h.begin() + from * hidden, hidden * hidden, r.begin() + k * hidden * hidden);
      std::copy_n(bias.begin() + from, hidden, b.begin() + k * hidden);
    }
    spec.weights = {Tensor::from(Shape{1, gates * hidden, input}, w), Tensor::from(Shape{1, gates * hidden, hidden}, r),
                    Tensor::from(Shape{1, 2 * gates * hidden}, b)};
    if (!lstm) output_layer.weights = {blobs[3].reshaped(Shape{hidden, hidden}), blobs[4].reshaped(Shape{hidden})};
  }
  std::vector<LayerSpec> parts;
  const std::string name = spec.name;
  spec.outputs = {fresh(name + "/y")};
  LayerSpec reshape;
  reshape.name = fresh(name + "/reshape");
  reshape.type = "Reshape";
  reshape.inputs = spec.outputs;
  reshape.outputs = {lstm ? top : fresh(name + "/h")};
  reshape.attrs.set("shape", std::vector<std::int64_t>{0, -1, hidden});
  Attributes fillers = spec.attrs;
  parts.push_back(std::move(spec));
  parts.push_back(std::move(reshape));
  if (!lstm) {
    output_layer.name = fresh(name + "/output");
    output_layer.type = "InnerProduct";
    output_layer.inputs = parts.back().outputs;
    output_layer.outputs = {fresh(name + "/o")};
    output_layer.attrs.set("num_output", hidden);
    output_layer.attrs.set("axis", std::int64_t{2});
    for (const auto& [key, value] : fillers.all()) {
      if (key.rfind("weight_filler.", 0) == 0) output_layer.attrs.set(key, value);
    }
    LayerSpec tanh;
    tanh.name = fresh(name + "/tanh");
    tanh.type = "Activation";
    tanh.inputs = output_layer.outputs;
    tanh.outputs = {top};
    tanh.attrs.set("function", std::string("tanh"));
    parts.push_back(std::move(output_layer));
    parts.push_back(std::move(tanh));
  }
  return parts;
}

// Whether a layer must find learned blobs in a caffemodel.
bool needs_weights(const caffe::LayerParameter& layer) {
  const std::string& type = layer.type();
  if (type == "Convolution" || type == "Deconvolution" || type == "InnerProduct" || type == "PReLU" ||
      type == "BatchNorm" || type == "Normalize" || type == "Embed" || type == "LSTM" || type == "RNN") {
    return true;
  }
  // With a second input the scale or bias is that input, not a learned blob.
  return (type == "Scale" || type == "Bias") && layer.bottom_size() == 1;
}

// The rank docs/layers.md gives blob `index` of a layer, or nullopt to keep the stored shape.
std::optional<int> documented_rank(const caffe::LayerParameter& layer, int index) {
  const std::string& type = layer.type();
  if (type == "Convolution" || type == "Deconvolution")
    return index == 0 ? std::nullopt : std::optional<int>(1);
  if (type == "InnerProduct") return index == 0 ? 2 : 1;
  if (type == "PReLU" || type == "BatchNorm") return 1;
  if (type == "Scale" || type == "Bias") {
    const int num_axes = type == "Scale" ? layer.scale_param().num_axes() : layer.bias_param().num_axes();
    return num_axes >= 0 ? std::optional<int>(num_axes) : std::nullopt;
  }
  return std::nullopt;
}

// One stored blob as an f32 tensor. Blobs in the old 4-D form (e.g. InnerProduct weights as
// 1x1xOUTxIN) are brought to the documented rank: leading 1s are dropped, then trailing axes merged.
Tensor blob_to_tensor(const caffe::BlobProto& blob, const caffe::LayerParameter& layer, int index,
                      const std::string& file) {
  const std::string where = file + ": layer '" + layer.name() + "' blob " + std::to_string(index);
  Ints dims;
  const bool legacy = !blob.has_shape();
  if (!legacy) {
    dims.assign(blob.shape().dim().begin(), blob.shape().dim().end());
  } else if (blob.has_num() || blob.has_channels() || blob.has_height() || blob.has_width()) {
    dims = {blob.num(), blob.channels(), blob.height(), blob.width()};
  } else {
    throw ParseError(where + " has no shape");
  }
  const std::int64_t values = blob.data_size() > 0 ? blob.data_size() : blob.double_data_size();
  std::int64_t count = 1;
  for (std::int64_t d : dims) {
    // Checked against the values actually present, so that corrupt dims cannot overflow.
    if (d < 0 || (d > 0 && count > values / d)) {
      throw ParseError(where + " has shape " + Shape(dims).str() + " but " + std::to_string(values) +
                       " values");
    }
    count *= d;
  }
  if (count != values) {
    throw ParseError(where + " has shape " + Shape(dims).str() + " (" + std::to_string(count) +
                     " values) but holds " + std::to_string(values) + " values");
  }
  if (const std::optional<int> rank = documented_rank(layer, index); legacy && rank) {
    while (static_cast<int>(dims.size()) > *rank && !dims.empty() && dims.front() == 1)
      dims.erase(dims.begin());
    if (*rank == 0) {
      if (count != 1)
        throw ModelError(where + ": a scalar was expected, found " + std::to_string(count) + " values");
      dims.clear();
    } else if (static_cast<int>(dims.size()) > *rank) {
      std::int64_t merged = 1;
      for (std::size_t i = static_cast<std::size_t>(*rank - 1); i < dims.size(); ++i) merged *= dims[i];
      dims.resize(static_cast<std::size_t>(*rank));
      dims.back() = merged;
    }
  }
  std::vector<float> data;
  if (blob.data_size() > 0) {
    data.assign(blob.data().begin(), blob.data().end());
  } else {
    data.reserve(static_cast<std::size_t>(values));
    for (double v : blob.double_data()) data.push_back(static_cast<float>(v));
  }
  return Tensor::from(Shape(dims), data);
}

std::vector<ParamSpec> param_specs(const caffe::LayerParameter& layer) {
  std::vector<ParamSpec> specs;
  for (const caffe::ParamSpec& p : layer.param()) specs.push_back({p.name(), p.lr_mult(), p.decay_mult()});
  return specs;
}

void add_inputs(const caffe::NetParameter& net, const std::string& file, Graph& graph) {
  if (net.input_size() == 0) return;
  if (net.input_shape_size() > 0) {
    if (net.input_shape_size() != net.input_size()) {
      throw ModelError(file + ": " + std::to_string(net.input_size()) + " inputs but " +
                       std::to_string(net.input_shape_size()) + " input_shape entries");
    }
    for (int i = 0; i < net.input_size(); ++i) {
      const auto& dims = net.input_shape(i).dim();
      const Ints shape(dims.begin(), dims.end());
      checked_numel(shape, sizeof(float), file + ": input '" + net.input(i) + "' input_shape");
      graph.inputs.push_back({net.input(i), Shape(shape)});
    }
    return;
  }
  if (net.input_dim_size() != 4 * net.input_size()) {
    throw ModelError(file + ": " + std::to_string(net.input_size()) + " inputs need " +
                     std::to_string(4 * net.input_size()) + " input_dim values, found " +
                     std::to_string(net.input_dim_size()));
  }
  for (int i = 0; i < net.input_size(); ++i) {
    const Ints shape{net.input_dim(4 * i), net.input_dim(4 * i + 1), net.input_dim(4 * i + 2),
                     net.input_dim(4 * i + 3)};
    checked_numel(shape, sizeof(float), file + ": input '" + net.input(i) + "' input_dim");
    graph.inputs.push_back({net.input(i), Shape(shape)});
  }
}

void add_input_layer(const caffe::LayerParameter& layer, const std::string& file, Graph& graph) {
  const caffe::InputParameter& p = layer.input_param();
  if (p.shape_size() != 1 && p.shape_size() != layer.top_size()) {
    throw ModelError(file + ": Input layer '" + layer.name() + "' has " + std::to_string(layer.top_size()) +
                     " tops but " + std::to_string(p.shape_size()) + " shapes");
  }
  for (int top = 0; top < layer.top_size(); ++top) {
    const auto& dims = p.shape(p.shape_size() == 1 ? 0 : top).dim();
    const Ints shape(dims.begin(), dims.end());
    checked_numel(shape, sizeof(float), file + ": Input layer '" + layer.name() + "' shape of '" + layer.top(top) + "'");
    graph.inputs.push_back({layer.top(top), Shape(shape)});
  }
}

// Layers of the model file by name; a name given twice (train and test copies) keeps the one with blobs.
std::map<std::string, const caffe::LayerParameter*> index_by_name(const caffe::NetParameter& model) {
  std::map<std::string, const caffe::LayerParameter*> layers;
  for (const caffe::LayerParameter& layer : model.layer()) {
    auto [it, added] = layers.emplace(layer.name(), &layer);
    if (!added && it->second->blobs_size() == 0) it->second = &layer;
  }
  return layers;
}

void throw_unsupported(const std::vector<const caffe::LayerParameter*>& kept, const std::string& file) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::string>> names;
  for (const caffe::LayerParameter* layer : kept) {
    const std::string& type = layer->type();
    if (type == "Input" || type == "Eltwise" || kRenamed.count(type) || is_known_layer_type(type) ||
        kDataTypes.count(type))
      continue;
    if (!names.count(type)) order.push_back(type);
    names[type].push_back(layer->name());
  }
  if (order.empty()) return;
  std::string text;
  for (const std::string& type : order) {
    text += (text.empty() ? "" : "; ") + ("'" + type + "' (layer" + (names[type].size() > 1 ? "s" : ""));
    for (std::size_t i = 0; i < names[type].size(); ++i) text += (i ? ", '" : " '") + names[type][i] + "'";
    text += ")";
  }
  throw ModelError(file + ": unsupported Caffe layer types: " + text);
}

}  // namespace

namespace {

// The graph of `net` (named `prototxt_path` in messages) with the blobs of `weights` when given; both
// are brought to the current layer form in place.
Graph import_net(caffe::NetParameter& net, const std::string& prototxt_path, caffe::NetParameter* weights,
                 const std::string& caffemodel_path, Phase phase) {
  caffe_format::upgrade_v1_layers(net, prototxt_path);
  const std::int64_t max_layers = limits().max_layers;
  if (net.layer_size() > max_layers) {
    throw LimitError(prototxt_path + ": " + std::to_string(net.layer_size()) + " layers exceed the limit of " +
                     std::to_string(max_layers) + " (Limits::max_layers)");
  }
  std::map<std::string, const caffe::LayerParameter*> stored;
  if (weights != nullptr) {
    caffe_format::upgrade_v1_layers(*weights, caffemodel_path);
    stored = index_by_name(*weights);
  }

  caffe::NetState state = net.state();
  state.set_phase(phase == Phase::train ? caffe::TRAIN : caffe::TEST);
  std::vector<const caffe::LayerParameter*> kept;
  for (const caffe::LayerParameter& layer : net.layer()) {
    if (is_included(layer, state, prototxt_path)) kept.push_back(&layer);
  }
  throw_unsupported(kept, prototxt_path);

  Graph graph;
  graph.name = net.name();
  add_inputs(net, prototxt_path, graph);
  // Caffe blob name -> the tensor that currently carries it; in-place layers write a new tensor.
  std::map<std::string, std::string> current;
  std::set<std::string> tensors;
  for (const InputSpec& input : graph.inputs) {
    current[input.name] = input.name;
    tensors.insert(input.name);
  }
  // Names for the layers an importer adds (Eltwise's chain): unused as a layer and as a tensor, now and
  // by any layer of the file.
  std::set<std::string> layer_names;
  for (const caffe::LayerParameter* layer : kept) {
    layer_names.insert(layer->name());
    for (const std::string& top : layer->top()) layer_names.insert(top);
  }
  auto fresh = [&](const std::string& base) {
    std::string name = base;
    for (int n = 2; layer_names.count(name) || tensors.count(name); ++n)
      name = base + "_" + std::to_string(n);
    layer_names.insert(name);
    tensors.insert(name);
    return name;
  };
  for (const caffe::LayerParameter* layer : kept) {
    if (layer->type() == "Input") {
      const std::size_t first = graph.inputs.size();
      add_input_layer(*layer, prototxt_path, graph);
      for (std::size_t i = first; i < graph.inputs.size(); ++i) {
        current[graph.inputs[i].name] = graph.inputs[i].name;
        tensors.insert(graph.inputs[i].name);
      }
      continue;
    }
    const LayerContext ctx(prototxt_path, *layer);
    if (layer->name().empty())
      throw ModelError(prototxt_path + ": a " + layer->type() + " layer has no name");
    LayerSpec spec;
    spec.name = layer->name();
    const auto renamed = kRenamed.find(layer->type());
    spec.type = renamed == kRenamed.end() ? layer->type() : renamed->second;
    spec.attrs = map_attributes(ctx);
    spec.params = param_specs(*layer);
    map_fillers(*layer, spec.attrs);
    if (layer->loss_weight_size() > 0) {
      spec.attrs.set("loss_weight",
                     std::vector<double>(layer->loss_weight().begin(), layer->loss_weight().end()));
    }
    for (const std::string& bottom : layer->bottom()) {
      auto it = current.find(bottom);
      if (it == current.end())
        ctx.fail("input '" + bottom + "' is not produced by any earlier layer or input");
      spec.inputs.push_back(it->second);
    }
    for (const std::string& top : layer->top()) {
      std::string name = top;
      if (tensors.count(name)) {
        // Written again (in place): a fresh name, and an alias from Caffe's name to it.
        name = top + "/" + layer->name();
        for (int n = 2; tensors.count(name); ++n) name = top + "/" + layer->name() + "_" + std::to_string(n);
        graph.aliases[top] = name;
      }
      tensors.insert(name);
      current[top] = name;
      spec.outputs.push_back(name);
    }
    if (weights != nullptr && needs_weights(*layer)) {
      auto it = stored.find(layer->name());
      if (it == stored.end() || it->second->blobs_size() == 0) {
        ctx.fail("no weights for this layer in " + caffemodel_path);
      }
      for (int i = 0; i < it->second->blobs_size(); ++i) {
        spec.weights.push_back(blob_to_tensor(it->second->blobs(i), *layer, i, caffemodel_path));
      }
    }
    if (layer->type() == "LSTM" || layer->type() == "RNN") {
      std::vector<Tensor> output_blobs;
      if (auto it = stored.find(layer->name() + "/output"); weights != nullptr && it != stored.end()) {
        for (int i = 0; i < it->second->blobs_size(); ++i) {
          output_blobs.push_back(blob_to_tensor(it->second->blobs(i), *it->second, i, caffemodel_path));
        }
      }
      for (LayerSpec& part : caffe_recurrent(ctx, std::move(spec), fresh, std::move(output_blobs)))
        graph.layers.push_back(std::move(part));
    } else if (layer->type() == "Eltwise") {
      const caffe::EltwiseParameter& p = layer->eltwise_param();
      const std::string operation = p.operation() == caffe::EltwiseParameter::MAX    ? "max"
                                    : p.operation() == caffe::EltwiseParameter::PROD ? "prod"
                                                                                     : "sum";
      try {
        for (LayerSpec& part : eltwise_as_binary(
                 std::move(spec), operation, std::vector<double>(p.coeff().begin(), p.coeff().end()), fresh))
          graph.layers.push_back(std::move(part));
      } catch (const ModelError& e) {
        throw ModelError(prototxt_path + ": " + e.what());
      }
    } else {
      graph.layers.push_back(std::move(spec));
    }
  }
  // Like Caffe: the tensors no layer reads are the net's outputs (Eltwise's chain reads its own).
  std::set<std::string> consumed;
  for (const LayerSpec& spec : graph.layers) consumed.insert(spec.inputs.begin(), spec.inputs.end());
  for (const LayerSpec& spec : graph.layers) {
    for (const std::string& out : spec.outputs) {
      if (!consumed.count(out)) graph.outputs.push_back(out);
    }
  }
  try {
    graph.validate();
  } catch (const ModelError& e) {
    throw ModelError(prototxt_path + ": " + e.what());
  }
  return graph;
}

}  // namespace

Graph load_caffe(const std::string& prototxt_path, const std::string& caffemodel_path, Phase phase) {
  caffe::NetParameter net = caffe_format::read_prototxt(prototxt_path);
  if (caffemodel_path.empty()) return import_net(net, prototxt_path, nullptr, "", phase);
  caffe::NetParameter model = caffe_format::read_caffemodel(caffemodel_path);
  return import_net(net, prototxt_path, &model, caffemodel_path, phase);
}

Graph load_caffe(std::string_view prototxt, std::span<const std::byte> caffemodel, const std::string& name,
                 Phase phase) {
  caffe::NetParameter net = caffe_format::parse_prototxt(std::string(prototxt), name);
  if (caffemodel.empty()) return import_net(net, name, nullptr, "", phase);
  caffe::NetParameter model = caffe_format::parse_caffemodel(
      std::string(reinterpret_cast<const char*>(caffemodel.data()), caffemodel.size()), name + " (weights)");
  return import_net(net, name, &model, name + " (weights)", phase);
}

}  // namespace espresso
