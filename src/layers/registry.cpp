#include "layers/registry.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
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
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override {
    try {
      custom_->backward(inputs, weights(), outputs, output_grads, input_grads, weight_grads);
    } catch (const UnsupportedError& e) {
      throw UnsupportedError(describe(e.what()));
    }
  }

 private:
  std::unique_ptr<CustomLayer> custom_;
};

// A registered type: its factory and, where it was given one, its schema. The LayerSchema's views point
// into `source`, which lives (like the entry) as long as the process.
struct CustomType {
  CustomLayerFactory factory;
  std::optional<CustomLayerSchema> source;
  LayerSchema schema;
};

struct CustomTypes {
  std::shared_mutex mutex;
  std::map<std::string, CustomType> types;  // entries are never removed, so pointers to them stay valid
};

CustomTypes& custom_types() {
  static CustomTypes types;
  return types;
}

// A registered type; nullptr when there is none.
const CustomType* custom_type(const std::string& type) {
  CustomTypes& types = custom_types();
  const std::shared_lock lock(types.mutex);
  auto it = types.types.find(type);
  return it == types.types.end() ? nullptr : &it->second;
}

CustomLayerFactory custom_factory(const std::string& type) {
  const CustomType* custom = custom_type(type);
  return custom == nullptr ? CustomLayerFactory{} : custom->factory;
}

AttrType attr_type(CustomAttribute::Kind kind) {
  switch (kind) {
    case CustomAttribute::Kind::integer: return AttrType::integer;
    case CustomAttribute::Kind::number: return AttrType::number;
    case CustomAttribute::Kind::text: return AttrType::text;
    case CustomAttribute::Kind::integers: return AttrType::integers;
    case CustomAttribute::Kind::numbers: return AttrType::numbers;
  }
  throw ModelError("register_layer: unknown attribute kind");
}

// The internal schema over the strings of `source`; checks that names are unique and defaults valid.
LayerSchema internal_schema(const std::string& type, const CustomLayerSchema& source) {
  LayerSchema schema;
  schema.weights = source.weights.empty() ? std::string_view("–") : std::string_view(source.weights);
  schema.notes = source.notes;
  LayerSpec defaults{.name = "<schema>", .type = type};
  for (const CustomAttribute& a : source.attributes) {
    if (a.name.empty()) throw ModelError("register_layer: '" + type + "' has an attribute without a name");
    for (const AttrSpec& seen : schema.attributes) {
      if (seen.name == a.name) throw ModelError("register_layer: '" + type + "' declares '" + a.name + "' twice");
    }
    AttrSpec spec{.name = a.name, .type = attr_type(a.kind), .fallback = a.fallback, .required = a.required,
                  .min = a.min, .max = a.max};
    for (const std::string& choice : a.choices) spec.choices.emplace_back(choice);
    schema.attributes.push_back(std::move(spec));
    if (a.fallback) defaults.attrs.set(a.name, *a.fallback);
  }
  // A default must pass its own schema; required attributes are left out of this check.
  LayerSchema without_required = schema;
  for (AttrSpec& a : without_required.attributes) a.required = false;
  try {
    check_attributes(defaults, without_required);
  } catch (const ModelError& e) {
    throw ModelError("register_layer: '" + type + "': a default breaks the schema: " + e.what());
  }
  return schema;
}

const Entry* find(const std::string& type) {
  auto it =
      std::find_if(std::begin(kLayers), std::end(kLayers), [&](const Entry& e) { return type == e.type; });
  return it == std::end(kLayers) ? nullptr : &*it;
}

}  // namespace

void CustomLayer::backward(const std::vector<Tensor>& /*inputs*/, const std::vector<Tensor>& /*weights*/,
                           const std::vector<Tensor>& /*outputs*/, const std::vector<Tensor>& /*output_grads*/,
                           std::vector<Tensor>& /*input_grads*/, std::vector<Tensor>& /*weight_grads*/) const {
  throw UnsupportedError("this custom layer has no backward (CustomLayer::backward), so it cannot be trained through");
}

std::unique_ptr<Layer> create_layer(const LayerSpec& spec) {
  const Entry* entry = find(spec.type);
  const CustomType* custom = entry == nullptr ? custom_type(spec.type) : nullptr;
  if (entry == nullptr && custom == nullptr) {
    throw ModelError("layer '" + spec.name + "': unknown layer type '" + spec.type + "'");
  }
  try {
    if (custom != nullptr && !custom->source) {
      if (!spec.subgraphs.empty()) throw ModelError("custom layers take no subgraphs");
      return std::make_unique<CustomLayerAdapter>(spec, custom->factory(spec));
    }
    const LayerSchema& schema = custom != nullptr ? custom->schema : entry->schema();
    check_attributes(spec, schema);
    if (custom != nullptr) {
      LayerSpec filled = spec;
      filled.attrs = with_defaults(spec.attrs, schema);
      return std::make_unique<CustomLayerAdapter>(filled, custom->factory(filled));
    }
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

namespace {

void add_custom_type(const std::string& type, CustomLayerFactory factory, std::optional<CustomLayerSchema> schema) {
  if (type.empty()) throw ModelError("register_layer: the type name is empty");
  if (!factory) throw ModelError("register_layer: no factory for layer type '" + type + "'");
  if (find(type) != nullptr) throw ModelError("register_layer: '" + type + "' is a built-in layer type");
  CustomTypes& types = custom_types();
  const std::unique_lock lock(types.mutex);
  auto [it, added] = types.types.try_emplace(type);
  if (!added) throw ModelError("register_layer: layer type '" + type + "' is registered already");
  try {
    it->second.source = std::move(schema);
    if (it->second.source) it->second.schema = internal_schema(type, *it->second.source);
    it->second.factory = std::move(factory);
  } catch (...) {
    types.types.erase(it);
    throw;
  }
}

}  // namespace

void register_layer(const std::string& type, CustomLayerFactory factory) {
  add_custom_type(type, std::move(factory), std::nullopt);
}

void register_layer(const std::string& type, CustomLayerFactory factory, const CustomLayerSchema& schema) {
  add_custom_type(type, std::move(factory), schema);
}

const LayerSchema* layer_schema(const std::string& type) {
  if (const Entry* entry = find(type)) return &entry->schema();
  const CustomType* custom = custom_type(type);
  return custom != nullptr && custom->source ? &custom->schema : nullptr;
}

std::string describe_layer_type(const std::string& type) {
  if (const LayerSchema* schema = layer_schema(type)) return markdown_row(type, *schema);
  if (is_custom_layer_type(type)) throw ModelError("layer type '" + type + "' was registered without a schema");
  throw ModelError("unknown layer type '" + type + "'");
}

void check_layer_attributes(const Graph& graph) {
  for (const LayerSpec& spec : graph.layers) {
    if (const LayerSchema* schema = layer_schema(spec.type)) check_attributes(spec, *schema);
    for (const Subgraph& subgraph : spec.subgraphs) {
      try {
        check_layer_attributes(subgraph.graph);
      } catch (const ModelError& e) {
        throw ModelError("layer '" + spec.name + "' (" + spec.type + ") subgraph '" + subgraph.role + "': " + e.what());
      }
    }
  }
}

std::string layers_markdown_table() {
  std::string table = "| type | attributes (default) | weights | notes |\n|---|---|---|---|\n";
  // Built-in types only: the docs do not depend on what a program registered.
  std::vector<const Entry*> entries;
  for (const Entry& e : kLayers) entries.push_back(&e);
  std::sort(entries.begin(), entries.end(), [](const Entry* a, const Entry* b) { return std::string(a->type) < b->type; });
  for (const Entry* e : entries) table += markdown_row(e->type, e->schema()) + "\n";
  return table;
}

std::vector<std::string> known_layer_types() {
  std::vector<std::string> types;
  for (const Entry& e : kLayers) types.emplace_back(e.type);
  CustomTypes& custom = custom_types();
  const std::shared_lock lock(custom.mutex);
  for (const auto& [type, registered] : custom.types) types.push_back(type);
  std::sort(types.begin(), types.end());
  return types;
}

}  // namespace espresso
