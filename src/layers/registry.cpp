#include "layers/registry.h"

#include <algorithm>
#include <iterator>

#include "layer_list.inc"  // generated: every layer header in src/layers/

namespace espresso {
namespace {

using Factory = std::unique_ptr<Layer> (*)(const LayerSpec&);

template <class T>
std::unique_ptr<Layer> make(const LayerSpec& spec) {
  return std::make_unique<T>(spec);
}

// A layer's schema (LayerSchema), where it declares one as `static const LayerSchema& schema()`.
template <class T>
const LayerSchema* schema_of() {
  if constexpr (requires { T::schema(); }) {
    return &T::schema();
  } else {
    return nullptr;
  }
}

struct Entry {
  const char* type;
  Factory create;
  const LayerSchema* (*schema)();
};

// Every layer type espresso knows: each `class <Type>Layer final` in src/layers/ (docs/layers.md).
constexpr Entry kLayers[] = {
#define ESPRESSO_LAYER(type) {#type, make<type##Layer>, schema_of<type##Layer>},
#include "layer_list.inc"
#undef ESPRESSO_LAYER
};

const Entry* find(const std::string& type) {
  auto it =
      std::find_if(std::begin(kLayers), std::end(kLayers), [&](const Entry& e) { return type == e.type; });
  return it == std::end(kLayers) ? nullptr : &*it;
}

}  // namespace

std::unique_ptr<Layer> create_layer(const LayerSpec& spec) {
  const Entry* entry = find(spec.type);
  if (entry == nullptr) {
    throw ModelError("layer '" + spec.name + "': unknown layer type '" + spec.type + "'");
  }
  try {
    const LayerSchema* schema = entry->schema();
    if (schema == nullptr) return entry->create(spec);
    check_attributes(spec, *schema);
    LayerSpec filled = spec;
    filled.attrs = with_defaults(spec.attrs, *schema);
    return entry->create(filled);
  } catch (const ModelError& e) {
    // Attribute errors do not know their layer; add it.
    const std::string prefix = "layer '" + spec.name + "'";
    if (std::string(e.what()).rfind(prefix, 0) == 0) throw;
    throw ModelError(prefix + " (" + spec.type + "): " + e.what());
  }
}

bool is_known_layer_type(const std::string& type) { return find(type) != nullptr; }

const LayerSchema* layer_schema(const std::string& type) {
  const Entry* entry = find(type);
  return entry == nullptr ? nullptr : entry->schema();
}

void check_layer_attributes(const Graph& graph) {
  for (const LayerSpec& spec : graph.layers) {
    if (const LayerSchema* schema = layer_schema(spec.type)) check_attributes(spec, *schema);
  }
}

std::string layers_markdown_table() {
  std::string table = "| type | attributes (default) | weights | notes |\n|---|---|---|---|\n";
  for (const std::string& type : known_layer_types()) {
    if (const LayerSchema* schema = layer_schema(type)) table += markdown_row(type, *schema) + "\n";
  }
  return table;
}

std::vector<std::string> known_layer_types() {
  std::vector<std::string> types;
  for (const Entry& e : kLayers) types.emplace_back(e.type);
  std::sort(types.begin(), types.end());
  return types;
}

}  // namespace espresso
