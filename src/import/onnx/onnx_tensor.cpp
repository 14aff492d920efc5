#include "import/onnx/onnx_tensor.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/half.h"
#include "espresso/errors.h"
#include "espresso/limits.h"

namespace espresso::onnx_detail {
namespace {

using TP = onnx::TensorProto;
namespace fs = std::filesystem;

std::size_t element_size(int type) {
  switch (type) {
    case TP::FLOAT:
    case TP::INT32:
    case TP::UINT32:
      return 4;
    case TP::UINT8:
    case TP::INT8:
    case TP::BOOL:
      return 1;
    case TP::UINT16:
    case TP::INT16:
    case TP::FLOAT16:
    case TP::BFLOAT16:
      return 2;
    case TP::INT64:
    case TP::UINT64:
    case TP::DOUBLE:
      return 8;
    default:
      return 0;
  }
}

template <class T>
double load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return static_cast<double>(v);
}

double decode_raw(int type, const char* p) {
  switch (type) {
    case TP::FLOAT:
      return load<float>(p);
    case TP::INT32:
      return load<std::int32_t>(p);
    case TP::UINT32:
      return load<std::uint32_t>(p);
    case TP::UINT8:
      return load<std::uint8_t>(p);
    case TP::INT8:
      return load<std::int8_t>(p);
    case TP::BOOL:
      return p[0] != 0 ? 1.0 : 0.0;
    case TP::UINT16:
      return load<std::uint16_t>(p);
    case TP::INT16:
      return load<std::int16_t>(p);
    case TP::FLOAT16: {
      std::uint16_t bits;
      std::memcpy(&bits, p, 2);
      return half_to_float(bits);
    }
    case TP::BFLOAT16: {
      std::uint16_t bits;
      std::memcpy(&bits, p, 2);
      return bf16_to_float(bits);
    }
    case TP::INT64:
      return load<std::int64_t>(p);
    case TP::UINT64:
      return load<std::uint64_t>(p);
    case TP::DOUBLE:
      return load<double>(p);
    default:
      return 0;
  }
}

// The bytes of a tensor stored outside the model. The location is untrusted: it must name a regular file
// inside the model's folder, without '..' or an absolute path, and the path with every symlink resolved
// must still lie inside the (resolved) folder; that resolved path is the one read.
std::string read_external(const TP& proto, const std::string& model_dir, const std::string& where,
                          std::int64_t expected_bytes) {
  std::string location;
  std::int64_t offset = 0, length = -1;
  for (const auto& entry : proto.external_data()) {
    try {
      if (entry.key() == "location") location = entry.value();
      if (entry.key() == "offset") offset = std::stoll(entry.value());
      if (entry.key() == "length") length = std::stoll(entry.value());
    } catch (const std::exception&) {
      throw ParseError(where + ": external data '" + entry.key() + "' is not a number: '" + entry.value() +
                       "'");
    }
  }
  if (location.empty()) throw ParseError(where + ": external data has no location");
  if (model_dir.empty()) {
    throw FileError(where + ": external data '" + location +
                    "' needs the model's folder; load the model from its file");
  }
  check_name_length(location.size(), where + ": external data location");
  if (location.find('\0') != std::string::npos)
    throw FileError(where + ": external data path holds a NUL character");
  const fs::path relative(location);
  if (relative.is_absolute() || relative.has_root_name() || relative.has_root_directory())
    throw FileError(where + ": external data path '" + location + "' is absolute");
  for (const fs::path& part : relative) {
    if (part == "..") throw FileError(where + ": external data path '" + location + "' contains '..'");
  }
  std::error_code error;
  const fs::path base = fs::canonical(fs::path(model_dir), error);
  if (error) throw FileError(where + ": the model's folder '" + model_dir + "' cannot be resolved");
  // Symlinks are resolved here, so a link inside the folder that points outside is caught below.
  const fs::path full = fs::weakly_canonical(base / relative, error);
  if (error) throw FileError(where + ": external data path '" + location + "' cannot be resolved");
  const auto [end, _] = std::mismatch(base.begin(), base.end(), full.begin(), full.end());
  if (end != base.end()) {
    throw FileError(where + ": external data path '" + location + "' leads out of the model's folder (to '" +
                    full.string() + "')");
  }
  const auto file_size = static_cast<std::int64_t>(fs::file_size(full, error));
  if (error || !fs::is_regular_file(full))
    throw FileError(where + ": external data file '" + full.string() + "' is missing or not a regular file");
  if (offset < 0 || offset > file_size) {
    throw FileError(where + ": external data offset " + std::to_string(offset) + " is past the end of '" +
                    full.string() + "' (" + std::to_string(file_size) + " bytes)");
  }
  if (length < 0) length = file_size - offset;
  if (length > file_size - offset) {
    throw FileError(where + ": external data range " + std::to_string(offset) + "+" + std::to_string(length) +
                    " is past the end of '" + full.string() + "' (" + std::to_string(file_size) + " bytes)");
  }
  if (length != expected_bytes) {
    throw ParseError(where + ": external data holds " + std::to_string(length) + " bytes, the shape needs " +
                     std::to_string(expected_bytes));
  }
  std::ifstream in(full, std::ios::binary);
  std::string bytes(static_cast<std::size_t>(length), '\0');
  in.seekg(offset);
  in.read(bytes.data(), length);
  if (!in) throw FileError(where + ": cannot read external data from '" + full.string() + "'");
  return bytes;
}

}  // namespace

bool Value::is_integer() const {
  return type != TP::FLOAT && type != TP::DOUBLE && type != TP::FLOAT16 && type != TP::BFLOAT16;
}

Tensor Value::to_tensor() const { return Tensor::from(shape, std::vector<float>(data.begin(), data.end())); }

std::string type_name(int type) {
  if (TP::DataType_IsValid(type)) return TP::DataType_Name(static_cast<TP::DataType>(type));
  return "type " + std::to_string(type);
}

Value decode_tensor(const TP& proto, const std::string& model_dir, const std::string& where) {
  Value value;
  value.type = proto.data_type();
  for (std::int64_t d : proto.dims()) {
    if (d < 0) throw ParseError(where + ": negative dimension " + std::to_string(d));
  }
  const std::size_t size = element_size(value.type);
  if (size == 0)
    throw UnsupportedError(where + ": tensors of type " + type_name(value.type) + " are not supported");
  const std::vector<std::int64_t> dims(proto.dims().begin(), proto.dims().end());
  // Values are decoded into doubles: the limit applies to those.
  const auto count = static_cast<std::size_t>(checked_numel(dims, sizeof(double), where));
  value.shape = Shape(dims);
  if (proto.has_segment()) throw UnsupportedError(where + ": segmented tensors are not supported");

  const bool external = proto.data_location() == TP::EXTERNAL;
  if (external || proto.has_raw_data()) {
    const std::string bytes = external ? read_external(proto, model_dir, where, static_cast<std::int64_t>(count * size))
                                       : proto.raw_data();
    if (bytes.size() != count * size) {
      throw ParseError(where + ": holds " + std::to_string(bytes.size()) + " bytes, shape " +
                       value.shape.str() + " of " + type_name(value.type) + " needs " +
                       std::to_string(count * size));
    }
    value.data.resize(count);
    for (std::size_t i = 0; i < count; ++i) value.data[i] = decode_raw(value.type, bytes.data() + i * size);
    return value;
  }
  auto take = [&](const auto& field, auto convert) {
    if (static_cast<std::size_t>(field.size()) != count) {
      throw ParseError(where + ": holds " + std::to_string(field.size()) + " values, shape " +
                       value.shape.str() + " needs " + std::to_string(count));
    }
    value.data.reserve(count);
    for (const auto& v : field) value.data.push_back(convert(v));
  };
  auto plain = [](auto v) { return static_cast<double>(v); };
  switch (value.type) {
    case TP::FLOAT:
      take(proto.float_data(), plain);
      break;
    case TP::DOUBLE:
      take(proto.double_data(), plain);
      break;
    case TP::INT64:
      take(proto.int64_data(), plain);
      break;
    case TP::UINT32:
    case TP::UINT64:
      take(proto.uint64_data(), plain);
      break;
    case TP::FLOAT16:
      take(proto.int32_data(), [](std::int32_t bits) {
        return static_cast<double>(half_to_float(static_cast<std::uint16_t>(bits)));
      });
      break;
    case TP::BFLOAT16:
      take(proto.int32_data(), [](std::int32_t bits) {
        return static_cast<double>(bf16_to_float(static_cast<std::uint16_t>(bits)));
      });
      break;
    default:
      take(proto.int32_data(), plain);
      break;
  }
  return value;
}

}  // namespace espresso::onnx_detail
