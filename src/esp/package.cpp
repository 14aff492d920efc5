// Writes and reads .esp packages (docs/format.md).
#include "espresso/package.h"

#include <span>

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>
#include <xxhash.h>
#include <zlib.h>

#include "core/half.h"
#include "core/mapped_file.h"
#include "core/parallel.h"
#include "esp/weight_codec.h"
#include "espresso/errors.h"
#include "espresso/limits.h"
#include "layers/binary.h"
#include "layers/registry.h"

namespace espresso {
namespace {

static_assert(std::endian::native == std::endian::little, ".esp is little-endian; add byte swapping");

using nlohmann::json;

constexpr unsigned char kMagic[8] = {0x89, 'E', 'S', 'P', '\r', '\n', 0x1a, '\n'};
// Version 2 added compressed tensors ("encoding"), version 3 the deflated manifest (header flag below),
// version 4 layers' subgraphs (control flow); a package is written with the lowest version that holds
// what it uses, so older readers keep reading it, and refuse by its version one they could not.
constexpr std::uint32_t kFormatVersion = 4;
constexpr std::uint32_t kSubgraphsVersion = 4;
// Header flags. Bit 0: the manifest is stored as a zlib stream (RFC 1950) of the JSON text (version 3).
constexpr std::uint32_t kFlagDeflatedManifest = 1;
constexpr std::uint32_t kKnownFlags = kFlagDeflatedManifest;
// The most bytes a deflated manifest may inflate to: a few stored bytes may stand for many.
constexpr std::uint64_t kMaxManifestBytes = std::uint64_t{256} << 20;
constexpr std::size_t kHeaderBytes = 64;
// The most elements a compressed tensor may decode to (4 GiB of f32).
constexpr std::uint64_t kMaxDecodedElements = std::uint64_t{1} << 30;
constexpr std::uint64_t kAlignment = 64;

struct Header {
  std::uint32_t version = kFormatVersion;
  std::uint32_t flags = 0;
  std::uint64_t manifest_offset = kHeaderBytes;
  std::uint64_t manifest_bytes = 0;
  std::uint64_t data_offset = 0;
  std::uint64_t data_bytes = 0;
  std::uint64_t manifest_checksum = 0;
};

std::uint64_t align_up(std::uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

std::string hex64(std::uint64_t value) {
  static const char digits[] = "0123456789abcdef";
  std::string text(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4) text[static_cast<std::size_t>(i)] = digits[value & 15];
  return text;
}

template <class T>
void put(unsigned char* at, T value) {
  std::memcpy(at, &value, sizeof value);
}

template <class T>
T get(const std::byte* at) {
  T value;
  std::memcpy(&value, at, sizeof value);
  return value;
}

// ---- writing -------------------------------------------------------------------------------

json attr_to_json(const std::string& layer, const std::string& name, const AttrValue& value) {
  return std::visit(
      [&](const auto& v) -> json {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, double>) {
          if (!std::isfinite(v)) throw ModelError("layer '" + layer + "': attribute '" + name + "' is not finite");
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          for (double d : v) {
            if (!std::isfinite(d)) throw ModelError("layer '" + layer + "': attribute '" + name + "' is not finite");
          }
        }
        return json(v);
      },
      value);
}

json metadata_to_json(const ModelMetadata& m) {
  return {{"name", m.name},
          {"version", m.version},
          {"description", m.description},
          {"task", m.task},
          {"labels", m.labels},
          {"preprocessing",
           {{"size", m.preprocessing.size},
            {"scale", m.preprocessing.scale},
            {"mean", m.preprocessing.mean},
            {"channel_order", m.preprocessing.channel_order}}},
          {"license", m.license},
          {"author", m.author},
          {"metrics", m.metrics},
          {"source_format", m.source_format},
          {"created", m.created}};
}

// The zlib stream of `text` at the best compression, or nullopt when it would not be shorter.
std::optional<std::string> deflate_text(const std::string& text) {
  uLongf length = compressBound(static_cast<uLong>(text.size()));
  std::string out(length, '\0');
  if (compress2(reinterpret_cast<Bytef*>(out.data()), &length, reinterpret_cast<const Bytef*>(text.data()),
                static_cast<uLong>(text.size()), Z_BEST_COMPRESSION) != Z_OK ||
      length >= text.size()) {
    return std::nullopt;
  }
  out.resize(length);
  return out;
}

}  // namespace

namespace {

// What writing a package collects while it walks the graph and its subgraphs.
struct PackageWriter {
  explicit PackageWriter(const PackageSaveOptions& save_options) : options(save_options) {}

  const PackageSaveOptions& options;
  json tensors = json::array();
  // The bytes of each tensor as stored: the tensor's own, or its encoding held in `encoded`.
  std::vector<std::span<const std::byte>> data;
  // (Moving a vector into a list keeps its buffer where it is, so the spans stay valid.)
  std::vector<std::vector<std::byte>> encoded;
  std::uint32_t version = 1;
  std::uint64_t data_bytes = 0;
  std::set<std::string> names;  // of the tensors so far

  // A table name for `wanted` that no tensor has yet (a subgraph's layer may be named like an outer one).
  std::string unique_name(const std::string& wanted) {
    std::string name = wanted;
    for (int n = 2; !names.insert(name).second; ++n) name = wanted + "~" + std::to_string(n);
    return name;
  }

  // Adds `w` to the table; its name there.
  std::string add_tensor(const LayerSpec& layer, const Tensor& w, const std::string& wanted) {
    if (w.dtype() != DType::f32 || !w.device().is_cpu()) {
      throw UnsupportedError("layer '" + layer.name + "': only f32 CPU weights can be written to a package");
    }
    const std::string name = unique_name(wanted);
    std::span<const std::byte> stored(static_cast<const std::byte*>(w.raw()), w.bytes());
    std::optional<codec::Encoded> packed;
    if (options.compress) {
      packed = codec::encode(std::span(w.data<float>(), static_cast<std::size_t>(w.numel())));
    }
    json entry = {{"name", name}, {"dtype", dtype_name(w.dtype())}, {"shape", w.shape().dims()}, {"offset", data_bytes}};
    if (packed) {
      const codec::Encoding& e = packed->encoding;
      entry["encoding"] = {{"kind", "codebook"},
                           {"codebook_size", e.codebook_size},
                           {"gap_bits", e.gap_bits},
                           {"entries", e.entries},
                           {"coding", e.huffman ? "huffman" : "packed"}};
      encoded.push_back(std::move(packed->bytes));
      stored = std::span<const std::byte>(encoded.back().data(), encoded.back().size());
      version = std::max<std::uint32_t>(version, 2);
    }
    entry["bytes"] = stored.size();
    entry["checksum"] = hex64(XXH3_64bits(stored.data(), stored.size()));
    tensors.push_back(std::move(entry));
    data.push_back(stored);
    data_bytes = align_up(data_bytes + stored.size());
    return name;
  }

  // The layers of `graph`; weights named PREFIX + layer + "/" + index in the table.
  json layers(const Graph& graph, const std::string& prefix) {
    json out = json::array();
    for (const LayerSpec& layer : graph.layers) {
      json attrs = json::object();
      for (const auto& [name, value] : layer.attrs.all()) attrs[name] = attr_to_json(layer.name, name, value);
      json weight_names = json::array();
      for (std::size_t i = 0; i < layer.weights.size(); ++i)
        weight_names.push_back(add_tensor(layer, layer.weights[i], prefix + layer.name + "/" + std::to_string(i)));
      json params = json::array();
      for (const ParamSpec& p : layer.params) {
        params.push_back({{"name", p.name}, {"lr_mult", p.lr_mult}, {"decay_mult", p.decay_mult}});
      }
      json entry = {{"name", layer.name},        {"type", layer.type},   {"inputs", layer.inputs},
                    {"outputs", layer.outputs},  {"attrs", attrs},       {"weights", weight_names},
                    {"params", params}};
      if (!layer.subgraphs.empty()) {
        version = std::max(version, kSubgraphsVersion);
        json subgraphs = json::array();
        for (const Subgraph& subgraph : layer.subgraphs) {
          subgraphs.push_back(
              {{"role", subgraph.role},
               {"graph", graph_body(subgraph.graph, prefix + layer.name + "/" + subgraph.role + "/")}});
        }
        entry["subgraphs"] = std::move(subgraphs);
      }
      out.push_back(std::move(entry));
    }
    return out;
  }

  // A graph's name, inputs, outputs and layers (a subgraph has no aliases or metadata).
  json graph_body(const Graph& graph, const std::string& prefix) {
    json inputs = json::array();
    for (const InputSpec& in : graph.inputs) inputs.push_back({{"name", in.name}, {"shape", in.shape.dims()}});
    return {{"name", graph.name}, {"inputs", inputs}, {"outputs", graph.outputs}, {"layers", layers(graph, prefix)}};
  }
};

}  // namespace

void save_package(const Graph& graph, const std::string& path, const PackageSaveOptions& options) {
  graph.validate();
  PackageWriter writer(options);
  json body = writer.graph_body(graph, "");
  body["aliases"] = graph.aliases;
  std::uint32_t version = writer.version;
  const std::uint64_t data_bytes = writer.data_bytes;
  const std::vector<std::span<const std::byte>>& data = writer.data;
  const json manifest = {
      {"format", "espresso-model"},
      {"format_version", version},
      {"producer", std::string("espresso ") + ESPRESSO_VERSION},
      {"metadata", metadata_to_json(graph.metadata)},
      {"graph", std::move(body)},
      {"tensors", std::move(writer.tensors)}};
  std::string text = manifest.dump();
  Header header;
  if (options.compress) {
    // Deflated, the manifest needs version 3, which its JSON then says too.
    json versioned = manifest;
    versioned["format_version"] = std::max<std::uint32_t>(version, 3);
    if (std::optional<std::string> deflated = deflate_text(versioned.dump())) {
      text = std::move(*deflated);
      version = std::max<std::uint32_t>(version, 3);
      header.flags = kFlagDeflatedManifest;
    }
  }
  header.version = version;
  header.manifest_bytes = text.size();
  header.data_offset = align_up(kHeaderBytes + text.size());
  header.data_bytes = data_bytes;
  header.manifest_checksum = XXH3_64bits(text.data(), text.size());
  unsigned char head[kHeaderBytes] = {};
  std::memcpy(head, kMagic, sizeof kMagic);
  put(head + 8, header.version);
  put(head + 12, header.flags);
  put(head + 16, header.manifest_offset);
  put(head + 24, header.manifest_bytes);
  put(head + 32, header.data_offset);
  put(head + 40, header.data_bytes);
  put(head + 48, header.manifest_checksum);
  put(head + 56, static_cast<std::uint64_t>(XXH3_64bits(head, 56)));

  const std::string temporary = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) throw FileError(path + ": cannot write (" + std::strerror(errno) + ")");
    const std::string zeros(kAlignment, '\0');
    out.write(reinterpret_cast<const char*>(head), kHeaderBytes);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.write(zeros.data(), static_cast<std::streamsize>(header.data_offset - kHeaderBytes - text.size()));
    std::uint64_t written = 0;
    for (const std::span<const std::byte> t : data) {
      out.write(reinterpret_cast<const char*>(t.data()), static_cast<std::streamsize>(t.size()));
      written += t.size();
      out.write(zeros.data(), static_cast<std::streamsize>(align_up(written) - written));
      written = align_up(written);
    }
    out.flush();
    if (!out) {
      std::filesystem::remove(temporary);
      throw FileError(path + ": write failed (disk full?)");
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    std::filesystem::remove(temporary);
    throw FileError(path + ": cannot move the new package into place: " + error.message());
  }
}

// ---- reading -------------------------------------------------------------------------------

namespace {

// Typed access to the manifest that names the offending field on failure.
class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& what) const { throw ParseError(path_ + ": " + what); }
  [[noreturn]] void fail_limit(const std::string& what) const { throw LimitError(path_ + ": " + what); }

  const json& field(const json& object, const std::string& key, const std::string& where) const {
    if (!object.is_object()) fail("manifest: '" + where + "' should be an object");
    auto it = object.find(key);
    if (it == object.end()) fail("manifest: '" + where + "." + key + "' is missing");
    return *it;
  }
  std::string string(const json& object, const std::string& key, const std::string& where) const {
    const json& v = field(object, key, where);
    if (!v.is_string()) fail("manifest: '" + where + "." + key + "' should be a string");
    return v.get<std::string>();
  }
  std::string optional_string(const json& object, const std::string& key, const std::string& where) const {
    return object.is_object() && object.contains(key) ? string(object, key, where) : std::string();
  }
  std::uint64_t unsigned_int(const json& object, const std::string& key, const std::string& where) const {
    const json& v = field(object, key, where);
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0)) {
      fail("manifest: '" + where + "." + key + "' should be a non-negative integer");
    }
    return v.get<std::uint64_t>();
  }
  double number(const json& v, const std::string& where) const {
    if (!v.is_number()) fail("manifest: '" + where + "' should be a number");
    return v.get<double>();
  }
  const json& array(const json& object, const std::string& key, const std::string& where) const {
    const json& v = field(object, key, where);
    if (!v.is_array()) fail("manifest: '" + where + "." + key + "' should be an array");
    return v;
  }
  std::vector<std::string> strings(const json& object, const std::string& key, const std::string& where) const {
    std::vector<std::string> out;
    for (const json& v : array(object, key, where)) {
      if (!v.is_string()) fail("manifest: '" + where + "." + key + "' should hold strings");
      out.push_back(v.get<std::string>());
    }
    return out;
  }
  Shape shape(const json& object, const std::string& where) const {
    std::vector<std::int64_t> dims;
    std::int64_t count = 1;
    for (const json& v : array(object, "shape", where)) {
      if (!v.is_number_integer() || v.get<std::int64_t>() < 0) fail("manifest: '" + where + ".shape' has a bad dimension");
      const std::int64_t d = v.get<std::int64_t>();
      if (d != 0 && count > std::numeric_limits<std::int64_t>::max() / 8 / d) fail("manifest: '" + where + ".shape' is too large");
      count *= d;
      dims.push_back(d);
    }
    return Shape(std::move(dims));
  }
  AttrValue attr(const json& v, const std::string& where) const {
    if (v.is_number_integer()) return v.get<std::int64_t>();
    if (v.is_number_float()) return v.get<double>();
    if (v.is_string()) return v.get<std::string>();
    if (v.is_array()) {
      bool any_float = false;
      for (const json& e : v) {
        if (!e.is_number()) fail("manifest: '" + where + "' should hold numbers");
        any_float = any_float || e.is_number_float();
      }
      if (any_float) return v.get<std::vector<double>>();
      return v.get<std::vector<std::int64_t>>();
    }
    fail("manifest: '" + where + "' has an unsupported kind of value");
  }

 private:
  std::string path_;
};

ModelMetadata read_metadata(const Reader& r, const json& m) {
  ModelMetadata meta;
  if (!m.is_object()) return meta;
  const std::string where = "metadata";
  meta.name = r.optional_string(m, "name", where);
  meta.version = r.optional_string(m, "version", where);
  meta.description = r.optional_string(m, "description", where);
  meta.task = r.optional_string(m, "task", where);
  meta.license = r.optional_string(m, "license", where);
  meta.author = r.optional_string(m, "author", where);
  meta.source_format = r.optional_string(m, "source_format", where);
  meta.created = r.optional_string(m, "created", where);
  if (m.contains("labels")) meta.labels = r.strings(m, "labels", where);
  if (m.contains("metrics")) {
    const json& metrics = r.field(m, "metrics", where);
    if (!metrics.is_object()) r.fail("manifest: 'metadata.metrics' should be an object");
    for (const auto& [key, value] : metrics.items()) meta.metrics[key] = r.number(value, "metadata.metrics." + key);
  }
  if (m.contains("preprocessing")) {
    const json& p = r.field(m, "preprocessing", where);
    const std::string pw = "metadata.preprocessing";
    if (p.contains("size")) {
      for (const json& v : r.array(p, "size", pw)) meta.preprocessing.size.push_back(static_cast<std::int64_t>(r.number(v, pw + ".size")));
    }
    if (p.contains("scale")) meta.preprocessing.scale = r.number(r.field(p, "scale", pw), pw + ".scale");
    if (p.contains("mean")) {
      for (const json& v : r.array(p, "mean", pw)) meta.preprocessing.mean.push_back(r.number(v, pw + ".mean"));
    }
    if (p.contains("channel_order")) meta.preprocessing.channel_order = r.string(p, "channel_order", pw);
  }
  return meta;
}

Tensor widen(const std::byte* source, const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape);
  float* out = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    const auto half = get<std::uint16_t>(source + 2 * i);
    out[i] = dtype == DType::f16 ? half_to_float(half) : bf16_to_float(half);
  }
  return t;
}


// The JSON text of a deflated manifest: a complete zlib stream filling `bytes` exactly, inflating to at most
// kMaxManifestBytes.
std::string inflate_manifest(const Reader& r, const char* stored, std::uint64_t bytes) {
  z_stream stream{};
  if (inflateInit(&stream) != Z_OK) r.fail("manifest: cannot start zlib");
  std::string text;
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(stored));
  int status = Z_OK;
  std::uint64_t left = bytes;
  char chunk[16384];
  while (status == Z_OK) {
    if (stream.avail_in == 0 && left > 0) {
      stream.avail_in = static_cast<uInt>(std::min<std::uint64_t>(left, std::numeric_limits<uInt>::max()));
      left -= stream.avail_in;
    }
    stream.next_out = reinterpret_cast<Bytef*>(chunk);
    stream.avail_out = sizeof chunk;
    status = inflate(&stream, Z_NO_FLUSH);
    text.append(chunk, sizeof chunk - stream.avail_out);
    if (text.size() > kMaxManifestBytes) status = Z_MEM_ERROR;
    // No progress possible: the input ended before the stream did.
    if (status == Z_BUF_ERROR || (status == Z_OK && stream.avail_in == 0 && left == 0 && stream.avail_out != 0)) break;
  }
  const bool complete = status == Z_STREAM_END && stream.avail_in == 0 && left == 0;
  inflateEnd(&stream);
  if (text.size() > kMaxManifestBytes) {
    r.fail("manifest: inflates to more than " + std::to_string(kMaxManifestBytes) + " bytes");
  }
  if (!complete) {
    r.fail(status == Z_STREAM_END ? "manifest: bytes after the end of its zlib stream"
                                  : "manifest: not a complete zlib stream (truncated or corrupt)");
  }
  return text;
}

// Packages written before AbsVal, Sigmoid, TanH, Power and Eltwise became Activation functions and Binary
// chains hold those types: they are rewritten as the layers that compute the same now.
void upgrade_layer_types(Graph& graph) {
  static const std::map<std::string, std::string> kFunctions = {
      {"AbsVal", "abs"}, {"Sigmoid", "sigmoid"}, {"TanH", "tanh"}, {"Power", "power"}};
  // Power's attributes under Activation's names.
  static const std::map<std::string, std::string> kPowerAttributes = {
      {"scale", "alpha"}, {"shift", "beta"}, {"power", "gamma"}};
  std::set<std::string> names;
  for (const InputSpec& input : graph.inputs) names.insert(input.name);
  for (const LayerSpec& spec : graph.layers) {
    names.insert(spec.name);
    names.insert(spec.outputs.begin(), spec.outputs.end());
  }
  auto fresh = [&](const std::string& base) {
    std::string name = base;
    for (int n = 2; names.count(name); ++n) name = base + "_" + std::to_string(n);
    names.insert(name);
    return name;
  };
  std::vector<LayerSpec> layers;
  for (LayerSpec& spec : graph.layers) {
    if (spec.type == "Eltwise") {
      const std::string operation = spec.attrs.get_string("operation", "sum");
      const std::vector<double> coeffs = spec.attrs.get_floats("coeffs", {});
      for (LayerSpec& part : eltwise_as_binary(std::move(spec), operation, coeffs, fresh))
        layers.push_back(std::move(part));
      continue;
    }
    if (auto function = kFunctions.find(spec.type); function != kFunctions.end()) {
      Attributes attrs;
      for (const auto& [name, value] : spec.attrs.all()) {
        auto renamed = kPowerAttributes.find(name);
        attrs.set(spec.type == "Power" && renamed != kPowerAttributes.end() ? renamed->second : name, value);
      }
      attrs.set("function", function->second);
      spec.type = "Activation";
      spec.attrs = std::move(attrs);
    }
    layers.push_back(std::move(spec));
  }
  graph.layers = std::move(layers);
  for (LayerSpec& spec : graph.layers) {
    for (Subgraph& subgraph : spec.subgraphs) upgrade_layer_types(subgraph.graph);
  }
}

}  // namespace

namespace {

// The package in `file` (a mapped file, or bytes given in memory); its tensors point into it.
// The header (checked) and the manifest's JSON, inflated where it is deflated, of the package in `file`.
json read_manifest(const MappedFile& file, const Reader& r, Header& h) {
  const std::string& path = file.path();
  const std::byte* base = file.data();
  const std::uint64_t size = file.size();
  if (size < kHeaderBytes) r.fail("too short to be an .esp package (" + std::to_string(size) + " bytes)");
  if (std::memcmp(base, kMagic, sizeof kMagic) != 0) r.fail("not an .esp package (bad magic)");
  if (get<std::uint64_t>(base + 56) != XXH3_64bits(base, 56)) r.fail("header checksum mismatch (corrupt file)");
  h.version = get<std::uint32_t>(base + 8);
  h.flags = get<std::uint32_t>(base + 12);
  h.manifest_offset = get<std::uint64_t>(base + 16);
  h.manifest_bytes = get<std::uint64_t>(base + 24);
  h.data_offset = get<std::uint64_t>(base + 32);
  h.data_bytes = get<std::uint64_t>(base + 40);
  h.manifest_checksum = get<std::uint64_t>(base + 48);
  if (h.version == 0 || h.version > kFormatVersion) {
    throw UnsupportedError(path + ": format version " + std::to_string(h.version) +
                           " is not supported (this espresso reads up to " + std::to_string(kFormatVersion) + ")");
  }
  if (h.manifest_offset < kHeaderBytes || h.manifest_offset > size || h.manifest_bytes > size - h.manifest_offset) {
    r.fail("manifest lies outside the file");
  }
  if (h.data_offset % kAlignment != 0 || h.data_offset < h.manifest_offset + h.manifest_bytes || h.data_offset > size ||
      h.data_bytes != size - h.data_offset) {
    r.fail("data section does not match the file (" + std::to_string(size) + " bytes; truncated?)");
  }
  const char* manifest_text = reinterpret_cast<const char*>(base + h.manifest_offset);
  if (XXH3_64bits(manifest_text, h.manifest_bytes) != h.manifest_checksum) r.fail("manifest checksum mismatch (corrupt file)");
  if ((h.flags & ~kKnownFlags) != 0) {
    throw UnsupportedError(path + ": header flags 0x" + hex64(h.flags).substr(8) + " are not supported");
  }
  std::string inflated;
  if (h.flags & kFlagDeflatedManifest) {
    if (h.version < 3) r.fail("a deflated manifest needs format version 3");
    inflated = inflate_manifest(r, manifest_text, h.manifest_bytes);
  }
  const std::string_view manifest_view =
      h.flags & kFlagDeflatedManifest ? std::string_view(inflated) : std::string_view(manifest_text, h.manifest_bytes);

  json manifest;
  // Subgraphs nest the manifest's JSON (five levels each); deeper JSON than subgraphs within
  // Limits::max_subgraph_depth can make is refused while it is parsed, before it is built in memory.
  const int max_json_depth = 16 + 8 * limits().max_subgraph_depth;
  const json::parser_callback_t bounded = [&](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth > max_json_depth) {
      r.fail_limit("manifest: JSON nested more than " + std::to_string(max_json_depth) +
                   " deep (subgraphs nest at most Limits::max_subgraph_depth = " +
                   std::to_string(limits().max_subgraph_depth) + " deep)");
    }
    return true;
  };
  try {
    manifest = json::parse(manifest_view.begin(), manifest_view.end(), bounded);
  } catch (const json::exception& e) {
    r.fail(std::string("manifest is not valid JSON: ") + e.what());
  }
  if (r.string(manifest, "format", "manifest") != "espresso-model") r.fail("manifest: not an espresso model");

  return manifest;
}

// One entry of the tensor table, checked against the header.
struct TableEntry {
  std::string name, dtype_text;
  DType dtype = DType::f32;
  Shape shape;
  std::uint64_t offset = 0, bytes = 0;
  std::optional<codec::Encoding> encoding;
};

TableEntry read_table_entry(const Reader& r, const Header& h, const json& entry, const std::string& where) {
  TableEntry t;
  t.name = r.string(entry, "name", where);
  const std::string& name = t.name;
  t.dtype_text = r.string(entry, "dtype", where);
  const std::string& dtype_text = t.dtype_text;
  DType& dtype = t.dtype;
  if (dtype_text == "f32") dtype = DType::f32;
  else if (dtype_text == "f16") dtype = DType::f16;
  else if (dtype_text == "bf16") dtype = DType::bf16;
  else r.fail("manifest: '" + where + ".dtype' is '" + dtype_text + "' (expected f32, f16 or bf16)");
  t.shape = r.shape(entry, where);
  t.offset = r.unsigned_int(entry, "offset", where);
  t.bytes = r.unsigned_int(entry, "bytes", where);
  const Shape& shape = t.shape;
  const std::uint64_t offset = t.offset, bytes = t.bytes;
  std::optional<codec::Encoding>& encoding = t.encoding;
  if (entry.contains("encoding")) {
    const json& e = r.field(entry, "encoding", where);
    const std::string ew = where + ".encoding";
    if (h.version < 2) r.fail("manifest: '" + ew + "' needs format version 2");
    if (r.string(e, "kind", ew) != "codebook") r.fail("manifest: '" + ew + ".kind' should be \"codebook\"");
    if (dtype != DType::f32) r.fail("tensor '" + name + "': compressed tensors decode to f32");
    const std::string coding = r.string(e, "coding", ew);
    if (coding != "packed" && coding != "huffman") r.fail("manifest: '" + ew + ".coding' should be packed or huffman");
    const std::uint64_t k = r.unsigned_int(e, "codebook_size", ew);
    const std::uint64_t gap_bits = r.unsigned_int(e, "gap_bits", ew);
    if (k == 0 || k > codec::kMaxCodebook) r.fail("tensor '" + name + "': codebook size " + std::to_string(k) + " (1 to 256)");
    if (gap_bits > codec::kMaxGapBits) r.fail("tensor '" + name + "': gap_bits " + std::to_string(gap_bits) + " (0 to 8)");
    encoding = codec::Encoding{static_cast<std::uint32_t>(k), static_cast<std::uint32_t>(gap_bits),
                               r.unsigned_int(e, "entries", ew), coding == "huffman"};
  }
  if (!encoding && bytes != static_cast<std::uint64_t>(shape.numel()) * dtype_size(dtype)) {
    r.fail("tensor '" + name + "': " + std::to_string(bytes) + " bytes do not hold " + dtype_text + " " + shape.str());
  }
  if (offset % kAlignment != 0 || offset > h.data_bytes || bytes > h.data_bytes - offset) {
    r.fail("tensor '" + name + "': offset " + std::to_string(offset) + " and length " + std::to_string(bytes) +
           " lie outside the data section");
  }
  return t;
}

std::vector<LayerSpec> read_layers(const Reader& r, const Header& h, const json& g, const std::string& where, int depth,
                                   const std::map<std::string, Tensor>& tensors, std::int64_t& layer_count);

// A subgraph (docs/format.md, version 4): name, inputs, outputs and layers, at nesting `depth` (1: a layer of
// the model's own graph owns it).
Graph read_subgraph(const Reader& r, const Header& h, const json& g, const std::string& where, int depth,
                    const std::map<std::string, Tensor>& tensors, std::int64_t& layer_count) {
  Graph graph;
  graph.name = r.optional_string(g, "name", where);
  const json& inputs = r.array(g, "inputs", where);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::string at = where + ".inputs[" + std::to_string(i) + "]";
    graph.inputs.push_back({r.string(inputs[i], "name", at), r.shape(inputs[i], at)});
  }
  graph.outputs = r.strings(g, "outputs", where);
  graph.layers = read_layers(r, h, g, where, depth, tensors, layer_count);
  return graph;
}

// The layers of the graph object `g` at nesting `depth` (0: the model's own), their subgraphs included;
// `layer_count` counts the layers of every graph read so far.
std::vector<LayerSpec> read_layers(const Reader& r, const Header& h, const json& g, const std::string& where, int depth,
                                   const std::map<std::string, Tensor>& tensors, std::int64_t& layer_count) {
  const json& layers = r.array(g, "layers", where);
  layer_count += static_cast<std::int64_t>(layers.size());
  if (layer_count > limits().max_layers) {
    r.fail_limit("'" + where + "': " + std::to_string(layer_count) + " layers" + (depth > 0 ? " (subgraphs included)" : "") +
                 " exceed the limit of " + std::to_string(limits().max_layers) + " (Limits::max_layers)");
  }
  std::vector<LayerSpec> out;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const std::string at = where + ".layers[" + std::to_string(i) + "]";
    const json& l = layers[i];
    LayerSpec spec;
    spec.name = r.string(l, "name", at);
    spec.type = r.string(l, "type", at);
    spec.inputs = r.strings(l, "inputs", at);
    spec.outputs = r.strings(l, "outputs", at);
    const json& attrs = r.field(l, "attrs", at);
    if (!attrs.is_object()) r.fail("manifest: '" + at + ".attrs' should be an object");
    for (const auto& [key, value] : attrs.items()) spec.attrs.set(key, r.attr(value, at + ".attrs." + key));
    for (const std::string& name : r.strings(l, "weights", at)) {
      auto it = tensors.find(name);
      if (it == tensors.end()) r.fail("layer '" + spec.name + "' names tensor '" + name + "', which the table lacks");
      spec.weights.push_back(it->second);
    }
    if (l.contains("params")) {
      const json& params = r.array(l, "params", at);
      for (const json& p : params) {
        spec.params.push_back({r.optional_string(p, "name", at + ".params"),
                               static_cast<float>(r.number(r.field(p, "lr_mult", at + ".params"), at + ".params.lr_mult")),
                               static_cast<float>(r.number(r.field(p, "decay_mult", at + ".params"), at + ".params.decay_mult"))});
      }
    }
    if (l.contains("subgraphs")) {
      if (h.version < kSubgraphsVersion) {
        r.fail("manifest: '" + at + ".subgraphs' needs format version " + std::to_string(kSubgraphsVersion));
      }
      const json& subgraphs = r.array(l, "subgraphs", at);
      // Checked before going a level deeper: the nesting in a file is bounded by the limit, not the stack.
      if (!subgraphs.empty() && depth + 1 > limits().max_subgraph_depth) {
        r.fail_limit("layer '" + spec.name + "' ('" + at + "'): subgraphs nested " + std::to_string(depth + 1) +
                     " deep exceed the limit of " + std::to_string(limits().max_subgraph_depth) +
                     " (Limits::max_subgraph_depth)");
      }
      for (std::size_t k = 0; k < subgraphs.size(); ++k) {
        const std::string sw = at + ".subgraphs[" + std::to_string(k) + "]";
        Subgraph subgraph;
        subgraph.role = r.string(subgraphs[k], "role", sw);
        subgraph.graph = read_subgraph(r, h, r.field(subgraphs[k], "graph", sw), sw + ".graph", depth + 1, tensors, layer_count);
        spec.subgraphs.push_back(std::move(subgraph));
      }
    }
    out.push_back(std::move(spec));
  }
  return out;
}

// "'Type' (layer 'name')" for every layer type, subgraphs included, that no one registered.
void collect_unknown_types(const Graph& graph, const std::string& around, std::string& unknown) {
  for (const LayerSpec& spec : graph.layers) {
    if (!is_known_layer_type(spec.type)) {
      unknown += (unknown.empty() ? "" : ", ") + ("'" + spec.type + "' (layer '" + around + spec.name + "')");
    }
    for (const Subgraph& subgraph : spec.subgraphs)
      collect_unknown_types(subgraph.graph, around + spec.name + "/" + subgraph.role + "/", unknown);
  }
}

Graph read_package(const std::shared_ptr<MappedFile>& file, const PackageLoadOptions& options) {
  const std::string& path = file->path();
  Reader r(path);
  const std::byte* base = file->data();
  Header h;
  const json manifest = read_manifest(*file, r, h);

  // Tensor table. Checksums are compared after the table is read, on every core at once.
  std::map<std::string, Tensor> tensors;
  struct Check {
    std::string name, expected;
    const std::byte* source;
    std::uint64_t bytes;
  };
  std::vector<Check> checks;
  // Compressed tensors, decoded after the checksums into the tensors of the table.
  struct Decode {
    std::string where;
    codec::Encoding encoding;
    std::span<const std::byte> stored;
    Tensor target;
  };
  std::vector<Decode> decodes;
  const json& table = r.array(manifest, "tensors", "manifest");
  for (std::size_t i = 0; i < table.size(); ++i) {
    const std::string where = "tensors[" + std::to_string(i) + "]";
    const json& entry = table[i];
    const TableEntry t = read_table_entry(r, h, entry, where);
    const std::string& name = t.name;
    const Shape& shape = t.shape;
    const DType dtype = t.dtype;
    const std::optional<codec::Encoding>& encoding = t.encoding;
    const std::uint64_t offset = t.offset, bytes = t.bytes;
    const std::byte* source = base + h.data_offset + offset;
    if (options.verify) checks.push_back({name, r.string(entry, "checksum", where), source, bytes});
    // A compressed tensor is decoded into memory of its own: a few bytes may stand for many places, so its
    // size is capped (docs/format.md) rather than bounded by the file.
    if (encoding && static_cast<std::uint64_t>(shape.numel()) > kMaxDecodedElements) {
      r.fail("tensor '" + name + "': " + shape.str() + " is too large to decode (at most " +
             std::to_string(kMaxDecodedElements) + " elements)");
    }
    Tensor tensor = encoding ? Tensor::empty(shape)
                    : dtype == DType::f32
                        ? Tensor::wrap(file->mutable_data() + h.data_offset + offset, shape, DType::f32, Device::cpu(), file)
                        : widen(source, shape, dtype);
    if (encoding) decodes.push_back({path + ": tensor '" + name + "'", *encoding, {source, bytes}, tensor});
    if (!tensors.emplace(name, std::move(tensor)).second) r.fail("tensor '" + name + "' is listed twice");
  }
  std::vector<char> intact(checks.size());
  // Tensors of very different sizes: several chunks a thread, claimed as threads come free.
  parallel_for(
      static_cast<std::int64_t>(checks.size()),
      [&](std::int64_t begin, std::int64_t end) {
        for (auto i = static_cast<std::size_t>(begin); i < static_cast<std::size_t>(end); ++i)
          intact[i] = checks[i].expected == hex64(XXH3_64bits(checks[i].source, checks[i].bytes));
      },
      1, 4);
  for (std::size_t i = 0; i < checks.size(); ++i) {
    if (!intact[i]) r.fail("tensor '" + checks[i].name + "': checksum mismatch (corrupt data)");
  }
  for (Decode& d : decodes) {
    codec::decode(d.encoding, d.stored, std::span(d.target.data<float>(), static_cast<std::size_t>(d.target.numel())),
                  d.where);
  }

  Graph graph;
  const json& g = r.field(manifest, "graph", "manifest");
  graph.name = r.optional_string(g, "name", "graph");
  graph.metadata = read_metadata(r, manifest.value("metadata", json()));
  graph.metadata.producer = r.optional_string(manifest, "producer", "manifest");
  const json& inputs = r.array(g, "inputs", "graph");
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::string where = "graph.inputs[" + std::to_string(i) + "]";
    graph.inputs.push_back({r.string(inputs[i], "name", where), r.shape(inputs[i], where)});
  }
  graph.outputs = r.strings(g, "outputs", "graph");
  if (g.contains("aliases")) {
    const json& aliases = r.field(g, "aliases", "graph");
    if (!aliases.is_object()) r.fail("manifest: 'graph.aliases' should be an object");
    for (const auto& [key, value] : aliases.items()) {
      if (!value.is_string()) r.fail("manifest: 'graph.aliases." + key + "' should be a string");
      graph.aliases[key] = value.get<std::string>();
    }
  }
  std::int64_t layer_count = 0;
  graph.layers = read_layers(r, h, g, "graph", 0, tensors, layer_count);
  try {
    upgrade_layer_types(graph);
  } catch (const ModelError& e) {
    throw ModelError(path + ": " + e.what());
  }
  std::string unknown;
  collect_unknown_types(graph, "", unknown);
  if (!unknown.empty()) throw ModelError(path + ": unknown layer types: " + unknown);
  try {
    graph.validate();
  } catch (const ModelError& e) {
    throw ModelError(path + ": " + e.what());
  } catch (const LimitError& e) {
    throw LimitError(path + ": " + e.what());
  }
  return graph;
}

}  // namespace

PackageInfo read_package_info(const std::string& path) {
  const std::shared_ptr<MappedFile> file = MappedFile::open(path);
  Reader r(path);
  Header h;
  const json manifest = read_manifest(*file, r, h);
  PackageInfo info;
  info.format_version = h.version;
  info.deflated_manifest = (h.flags & kFlagDeflatedManifest) != 0;
  info.manifest_bytes = h.manifest_bytes;
  info.file_bytes = file->size();
  const json& table = r.array(manifest, "tensors", "manifest");
  for (std::size_t i = 0; i < table.size(); ++i) {
    const TableEntry t = read_table_entry(r, h, table[i], "tensors[" + std::to_string(i) + "]");
    PackageTensorInfo& out = info.tensors.emplace_back();
    out.name = t.name;
    out.dtype = t.dtype_text;
    out.shape = t.shape.dims();
    out.stored_bytes = t.bytes;
    out.decoded_bytes = static_cast<std::uint64_t>(t.shape.numel()) * sizeof(float);
    if (t.encoding) {
      out.compressed = true;
      out.codebook_size = t.encoding->codebook_size;
      out.index_bits = static_cast<std::uint32_t>(std::bit_width(t.encoding->codebook_size - 1));
      out.gap_bits = t.encoding->gap_bits;
      out.entries = t.encoding->entries;
      out.huffman = t.encoding->huffman;
    }
  }
  return info;
}

Graph load_package(const std::string& path, const PackageLoadOptions& options) {
  return read_package(MappedFile::open(path), options);
}

Graph load_package(std::span<const std::byte> bytes, const std::string& name, const PackageLoadOptions& options) {
  return read_package(MappedFile::copy_of(bytes.data(), bytes.size(), name), options);
}

}  // namespace espresso
