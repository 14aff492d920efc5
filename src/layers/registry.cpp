#include "layers/registry.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <mutex>
#include <shared_mutex>

#include "espresso/custom_layer.h"

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
  const LayerSchema& (*schema)();
};

// Every layer type espresso knows: each `class <Type>Layer final` in src/layers/ (docs/layers.md).
constexpr Entry kLayers[] = {
#define ESPRESSO_LAYER(type) {#type, make<type##Layer>, &type##Layer::schema},
#include "layer_list.inc"
#undef ESPRESSO_LAYER
};

// An application's layer (espresso/custom_layer.h) behind the Layer interface.
class CustomLayerAdapter final : public Layer {
 public:
  CustomLayerAdapter(const LayerSpec& spec, std::unique_ptr<CustomLayer> custom)
      : Layer(spec), custom_(std::move(custom)) {
    if (!custom_) fail_model("the registered factory made no layer");
  }
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override {
    return custom_->output_shapes(inputs);
  }
  std::vector<Shape> weight_shapes(const std::vector<Shape>& inputs) const override {
    return custom_->weight_shapes(inputs);
  }
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override {
    custom_->forward(inputs, weights(), outputs);
  }

 private:
  std::unique_ptr<CustomLayer> custom_;
};

struct CustomTypes {
  std::shared_mutex mutex;
  std::map<std::string, CustomLayerFactory> factories;
};

CustomTypes& custom_types() {
  static CustomTypes types;
  return types;
}

// The factory of a registered type; empty when there is none.
CustomLayerFactory custom_factory(const std::string& type) {
  CustomTypes& types = custom_types();
  const std::shared_lock lock(types.mutex);
  auto it = types.factories.find(type);
  return it == types.factories.end() ? CustomLayerFactory{} : it->second;
}

const Entry* find(const std::string& type) {
  auto it =
      std::find_if(std::begin(kLayers), std::end(kLayers), [&](const Entry& e) { return type == e.type; });
  return it == std::end(kLayers) ? nullptr : &*it;
}

}  // namespace

std::unique_ptr<Layer> create_layer(const LayerSpec& spec) {
  const Entry* entry = find(spec.type);
  CustomLayerFactory custom = entry == nullptr ? custom_factory(spec.type) : CustomLayerFactory{};
  if (entry == nullptr && !custom) {
    throw ModelError("layer '" + spec.name + "': unknown layer type '" + spec.type + "'");
  }
  try {
    if (custom) return std::make_unique<CustomLayerAdapter>(spec, custom(spec));
    const LayerSchema& schema = entry->schema();
    check_attributes(spec, schema);
    LayerSpec filled = spec;
    filled.attrs = with_defaults(spec.attrs, schema);
    return entry->create(filled);
  } catch (const ModelError& e) {
    // Attribute errors do not know their layer; add it.
    const std::string prefix = "layer '" + spec.name + "'";
    if (std::string(e.what()).rfind(prefix, 0) == 0) throw;
    throw ModelError(prefix + " (" + spec.type + "): " + e.what());
  }
}

bool is_custom_layer_type(const std::string& type) { return find(type) == nullptr && custom_factory(type); }

bool is_known_layer_type(const std::string& type) {
  return find(type) != nullptr || static_cast<bool>(custom_factory(type));
}

void register_layer(const std::string& type, CustomLayerFactory factory) {
  if (type.empty()) throw ModelError("register_layer: the type name is empty");
  if (!factory) throw ModelError("register_layer: no factory for layer type '" + type + "'");
  if (find(type) != nullptr) throw ModelError("register_layer: '" + type + "' is a built-in layer type");
  CustomTypes& types = custom_types();
  const std::unique_lock lock(types.mutex);
  if (!types.factories.emplace(type, std::move(factory)).second) {
    throw ModelError("register_layer: layer type '" + type + "' is registered already");
  }
}

const LayerSchema* layer_schema(const std::string& type) {
  const Entry* entry = find(type);
  return entry == nullptr ? nullptr : &entry->schema();
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
  CustomTypes& custom = custom_types();
  const std::shared_lock lock(custom.mutex);
  for (const auto& [type, factory] : custom.factories) types.push_back(type);
  std::sort(types.begin(), types.end());
  return types;
}

}  // namespace espresso
