#include "serve/protocol.h"

#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>

#include "serve/errors.h"

namespace espresso::serve {

using nlohmann::json;

namespace {

// The datatypes a request may carry, with their width in the binary extension.
struct DataType {
  const char* name;
  std::size_t size;
  bool integer;
  bool is_signed;
};

constexpr DataType kDataTypes[] = {
    {"FP32", 4, false, true},   {"FP64", 8, false, true},   {"INT8", 1, true, true},
    {"INT16", 2, true, true},   {"INT32", 4, true, true},   {"INT64", 8, true, true},
    {"UINT8", 1, true, false},  {"UINT16", 2, true, false}, {"UINT32", 4, true, false},
    {"UINT64", 8, true, false},
};

const DataType* find_datatype(std::string_view name) {
  for (const DataType& type : kDataTypes) {
    if (name == type.name) return &type;
  }
  return nullptr;
}

int datatype_index(const DataType* type) { return static_cast<int>(type - kDataTypes); }

// Elements a shape holds; refuses negative dimensions and products past what a request may carry.
std::int64_t checked_elements(const std::vector<std::int64_t>& dims, const std::string& field) {
  constexpr std::int64_t kMaxElements = std::int64_t{1} << 31;
  std::int64_t count = 1;
  for (std::int64_t d : dims) {
    if (d < 0) throw RequestError(field + ": dimensions must not be negative");
    if (d != 0 && count > kMaxElements / d)
      throw RequestError(field + ": the shape holds more than 2^31 elements");
    count *= d;
  }
  return count;
}

// Row-major JSON data, flat or nested, into `out`; checks each value against the datatype.
void flatten(const json& value, const DataType& type, const std::string& field, std::vector<float>& out,
             std::size_t limit) {
  if (value.is_array()) {
    for (const json& element : value) flatten(element, type, field, out, limit);
    return;
  }
  if (out.size() >= limit) throw RequestError(field + ": more values than the shape holds");
  if (!value.is_number())
    throw RequestError(field + ": values must be numbers, got " + std::string(value.type_name()));
  if (type.integer) {
    if (!value.is_number_integer()) throw RequestError(field + ": " + type.name + " values must be integers");
    if (!type.is_signed && value.is_number_integer() && !value.is_number_unsigned() &&
        value.get<std::int64_t>() < 0)
      throw RequestError(field + ": " + type.name + " values must not be negative");
    const double v = value.get<double>();
    const double bits = static_cast<double>(type.size * 8);
    const double high = type.is_signed ? std::ldexp(1.0, static_cast<int>(bits) - 1)
                                       : std::ldexp(1.0, static_cast<int>(bits));
    const double low = type.is_signed ? -high : 0.0;
    if (v < low || v >= high) throw RequestError(field + ": a value is out of range for " + type.name);
    out.push_back(static_cast<float>(v));
    return;
  }
  const double v = value.get<double>();
  if (!std::isfinite(v)) throw RequestError(field + ": values must be finite");
  out.push_back(static_cast<float>(v));
}

template <typename T>
void convert_elements(const unsigned char* bytes, std::int64_t count, float* out) {
  for (std::int64_t i = 0; i < count; ++i) {
    T v;
    std::memcpy(&v, bytes + static_cast<std::size_t>(i) * sizeof(T), sizeof v);
    out[i] = static_cast<float>(v);
  }
}

// Little-endian raw elements into floats (the host is little-endian: x86-64 and arm64 Linux). The
// datatype is dispatched once per tensor, not per element; FP32 is one copy.
void decode_binary(const unsigned char* bytes, std::int64_t count, const DataType& type, float* out) {
  const std::string_view name = type.name;
  if (name == "FP32")
    std::memcpy(out, bytes, static_cast<std::size_t>(count) * sizeof(float));
  else if (name == "FP64")
    convert_elements<double>(bytes, count, out);
  else if (name == "INT8")
    convert_elements<std::int8_t>(bytes, count, out);
  else if (name == "INT16")
    convert_elements<std::int16_t>(bytes, count, out);
  else if (name == "INT32")
    convert_elements<std::int32_t>(bytes, count, out);
  else if (name == "INT64")
    convert_elements<std::int64_t>(bytes, count, out);
  else if (name == "UINT8")
    convert_elements<std::uint8_t>(bytes, count, out);
  else if (name == "UINT16")
    convert_elements<std::uint16_t>(bytes, count, out);
  else if (name == "UINT32")
    convert_elements<std::uint32_t>(bytes, count, out);
  else
    convert_elements<std::uint64_t>(bytes, count, out);
}

const json* parameter(const json& object, const char* key, const std::string& field) {
  if (!object.contains("parameters")) return nullptr;
  const json& parameters = object["parameters"];
  if (!parameters.is_object()) throw RequestError(field + ".parameters must be an object");
  return parameters.contains(key) ? &parameters[key] : nullptr;
}

}  // namespace

bool readable_datatype(std::string_view datatype) { return find_datatype(datatype) != nullptr; }

void decode_input(const RequestedInput& input, float* out) {
  if (input.tensor.defined() && input.binary.empty()) {
    std::memcpy(out, input.tensor.data<float>(), input.tensor.bytes());
    return;
  }
  const std::int64_t count = input.shape.numel();
  if (input.datatype < 0 || input.datatype >= static_cast<int>(std::size(kDataTypes)) ||
      input.binary.size() != static_cast<std::size_t>(count) * kDataTypes[input.datatype].size)
    throw RequestError("inputs: '" + input.name + "' holds no values to decode");
  decode_binary(reinterpret_cast<const unsigned char*>(input.binary.data()), count, kDataTypes[input.datatype],
                out);
}

InferRequest parse_infer_request(std::string_view body, std::optional<std::size_t> header_length,
                                 bool defer_binary) {
  std::string_view header = body;
  std::string_view binary;
  if (header_length) {
    if (*header_length > body.size())
      throw RequestError("Inference-Header-Content-Length: " + std::to_string(*header_length) +
                         " is more than the body's " + std::to_string(body.size()) + " bytes");
    header = body.substr(0, *header_length);
    binary = body.substr(*header_length);
  }
  json request = json::parse(header, nullptr, false);
  if (request.is_discarded()) throw RequestError("body: not valid JSON");
  if (!request.is_object()) throw RequestError("body: the request must be a JSON object");
  InferRequest out;
  if (request.contains("id")) {
    if (!request["id"].is_string()) throw RequestError("id must be a string");
    out.id = request["id"].get<std::string>();
  }
  if (const json* all = parameter(request, "binary_data_output", "request")) {
    if (!all->is_boolean()) throw RequestError("parameters.binary_data_output must be a boolean");
    out.binary_outputs = all->get<bool>();
  }
  if (!request.contains("inputs")) throw RequestError("inputs: missing");
  if (!request["inputs"].is_array() || request["inputs"].empty())
    throw RequestError("inputs: must be a non-empty array");
  std::size_t binary_used = 0;
  const json& inputs = request["inputs"];
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::string field = "inputs[" + std::to_string(i) + "]";
    const json& input = inputs[i];
    if (!input.is_object()) throw RequestError(field + ": must be an object");
    if (!input.contains("name") || !input["name"].is_string())
      throw RequestError(field + ".name: missing or not a string");
    RequestedInput parsed;
    parsed.name = input["name"].get<std::string>();
    for (const RequestedInput& earlier : out.inputs) {
      if (earlier.name == parsed.name)
        throw RequestError(field + ".name: '" + parsed.name + "' is given twice");
    }
    if (!input.contains("datatype") || !input["datatype"].is_string())
      throw RequestError(field + ".datatype: missing or not a string");
    const std::string datatype = input["datatype"].get<std::string>();
    const DataType* type = find_datatype(datatype);
    if (type == nullptr)
      throw RequestError(field + ".datatype: '" + datatype +
                         "' is not supported (FP32, FP64, INT8/16/32/64, UINT8/16/32/64)");
    if (!input.contains("shape") || !input["shape"].is_array())
      throw RequestError(field + ".shape: missing or not an array");
    std::vector<std::int64_t> dims;
    for (const json& d : input["shape"]) {
      if (!d.is_number_integer()) throw RequestError(field + ".shape: dimensions must be integers");
      dims.push_back(d.get<std::int64_t>());
    }
    if (dims.size() > 8) throw RequestError(field + ".shape: more than 8 dimensions");
    const std::int64_t count = checked_elements(dims, field + ".shape");
    parsed.shape = Shape(dims);
    parsed.datatype = datatype_index(type);
    const json* binary_size = parameter(input, "binary_data_size", field);
    if (binary_size != nullptr) {
      if (!binary_size->is_number_unsigned())
        throw RequestError(field + ".parameters.binary_data_size must be a non-negative integer");
      if (!header_length)
        throw RequestError(
            field + ".parameters.binary_data_size: given without the Inference-Header-Content-Length header");
      if (input.contains("data")) throw RequestError(field + ": has both data and binary_data_size");
      const std::uint64_t size = binary_size->get<std::uint64_t>();
      const std::uint64_t expected = static_cast<std::uint64_t>(count) * type->size;
      if (size != expected)
        throw RequestError(field + ".parameters.binary_data_size: " + std::to_string(size) +
                           " bytes, but shape " + Shape(dims).str() + " of " + datatype + " needs " +
                           std::to_string(expected));
      if (size > binary.size() - binary_used)
        throw RequestError(field + ".parameters.binary_data_size: the body ends before this tensor's bytes");
      parsed.binary = binary.substr(binary_used, static_cast<std::size_t>(size));
      if (!defer_binary) {
        parsed.tensor = Tensor::empty(parsed.shape);
        decode_input(parsed, parsed.tensor.data<float>());
        parsed.binary = {};
      }
      binary_used += size;
    } else {
      if (!input.contains("data")) throw RequestError(field + ".data: missing");
      std::vector<float> flat;
      flat.reserve(static_cast<std::size_t>(count));
      flatten(input["data"], *type, field + ".data", flat, static_cast<std::size_t>(count));
      if (static_cast<std::int64_t>(flat.size()) != count)
        throw RequestError(field + ".data: " + std::to_string(flat.size()) + " values, but shape " +
                           Shape(dims).str() + " holds " + std::to_string(count));
      parsed.tensor = Tensor::empty(parsed.shape);
      std::copy(flat.begin(), flat.end(), parsed.tensor.data<float>());
    }
    out.inputs.push_back(std::move(parsed));
  }
  if (binary_used != binary.size())
    throw RequestError("body: " + std::to_string(binary.size() - binary_used) +
                       " bytes of binary data after the JSON header that no input's binary_data_size claims");
  if (request.contains("outputs")) {
    const json& outputs = request["outputs"];
    if (!outputs.is_array()) throw RequestError("outputs: must be an array");
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      const std::string field = "outputs[" + std::to_string(i) + "]";
      if (!outputs[i].is_object() || !outputs[i].contains("name") || !outputs[i]["name"].is_string())
        throw RequestError(field + ".name: missing or not a string");
      RequestedOutput wanted{outputs[i]["name"].get<std::string>(), out.binary_outputs};
      if (const json* flag = parameter(outputs[i], "binary_data", field)) {
        if (!flag->is_boolean()) throw RequestError(field + ".parameters.binary_data must be a boolean");
        wanted.binary = flag->get<bool>();
      }
      out.outputs.push_back(std::move(wanted));
    }
  }
  return out;
}

InferResponse encode_infer_response(const std::string& model, const std::string& version,
                                    const InferRequest& request,
                                    const std::vector<std::pair<std::string, Tensor>>& outputs) {
  json answer = {{"model_name", model}, {"model_version", version}};
  if (!request.id.empty()) answer["id"] = request.id;
  json list = json::array();
  std::string binary;
  for (const auto& [name, tensor] : outputs) {
    bool as_binary = request.binary_outputs;
    for (const RequestedOutput& wanted : request.outputs) {
      if (wanted.name == name) as_binary = wanted.binary;
    }
    json dims = json::array();
    for (std::int64_t d : tensor.shape().dims()) dims.push_back(d);
    json entry = {{"name", name}, {"datatype", "FP32"}, {"shape", dims}};
    const float* values = tensor.data<float>();
    if (as_binary) {
      entry["parameters"] = {{"binary_data_size", tensor.bytes()}};
      binary.append(reinterpret_cast<const char*>(values), tensor.bytes());
    } else {
      entry["data"] = std::vector<float>(values, values + tensor.numel());
    }
    list.push_back(std::move(entry));
  }
  answer["outputs"] = std::move(list);
  InferResponse response;
  response.body = answer.dump();
  if (!binary.empty()) {
    response.header_length = response.body.size();
    response.body += binary;
  }
  return response;
}

}  // namespace espresso::serve
