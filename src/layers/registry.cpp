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

struct Entry {
  const char* type;
  Factory create;
};

// Every layer type espresso knows: each `class <Type>Layer final` in src/layers/ (docs/layers.md).
constexpr Entry kLayers[] = {
#define ESPRESSO_LAYER(type) {#type, make<type##Layer>},
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
    return entry->create(spec);
  } catch (const ModelError& e) {
    // Attribute errors do not know their layer; add it.
    const std::string prefix = "layer '" + spec.name + "'";
    if (std::string(e.what()).rfind(prefix, 0) == 0) throw;
    throw ModelError(prefix + " (" + spec.type + "): " + e.what());
  }
}

bool is_known_layer_type(const std::string& type) { return find(type) != nullptr; }

std::vector<std::string> known_layer_types() {
  std::vector<std::string> types;
  for (const Entry& e : kLayers) types.emplace_back(e.type);
  std::sort(types.begin(), types.end());
  return types;
}

}  // namespace espresso
