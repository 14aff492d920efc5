#include "espresso/graph.h"

#include <set>

#include "espresso/errors.h"
#include "espresso/limits.h"

namespace espresso {
namespace {

[[noreturn]] void wrong_kind(const std::string& name, const char* wanted) {
  throw ModelError("attribute '" + name + "' should be " + wanted);
}

}  // namespace

std::int64_t Attributes::get_int(const std::string& name, std::int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  if (auto* v = std::get_if<std::int64_t>(&it->second)) return *v;
  if (auto* list = std::get_if<std::vector<std::int64_t>>(&it->second); list && list->size() == 1) {
    return list->front();
  }
  wrong_kind(name, "an integer");
}

void Attributes::require(const std::string& name) const {
  if (!has(name)) throw ModelError("attribute '" + name + "' is required");
}

std::int64_t Attributes::require_int(const std::string& name) const {
  require(name);
  return get_int(name, 0);
}

double Attributes::require_float(const std::string& name) const {
  require(name);
  return get_float(name, 0);
}

std::string Attributes::require_string(const std::string& name) const {
  require(name);
  return get_string(name, {});
}

std::vector<std::int64_t> Attributes::require_ints(const std::string& name) const {
  require(name);
  return get_ints(name, {});
}

std::vector<double> Attributes::require_floats(const std::string& name) const {
  require(name);
  return get_floats(name, {});
}

double Attributes::get_float(const std::string& name, double fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  if (auto* v = std::get_if<double>(&it->second)) return *v;
  if (auto* v = std::get_if<std::int64_t>(&it->second)) return static_cast<double>(*v);
  wrong_kind(name, "a number");
}

std::string Attributes::get_string(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  if (auto* v = std::get_if<std::string>(&it->second)) return *v;
  wrong_kind(name, "a string");
}

std::vector<std::int64_t> Attributes::get_ints(const std::string& name,
                                               const std::vector<std::int64_t>& fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  if (auto* v = std::get_if<std::vector<std::int64_t>>(&it->second)) return *v;
  if (auto* v = std::get_if<std::int64_t>(&it->second)) return {*v};
  wrong_kind(name, "a list of integers");
}

std::vector<double> Attributes::get_floats(const std::string& name,
                                           const std::vector<double>& fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  if (auto* v = std::get_if<std::vector<double>>(&it->second)) return *v;
  if (auto* v = std::get_if<double>(&it->second)) return {*v};
  if (auto* v = std::get_if<std::vector<std::int64_t>>(&it->second)) {
    return std::vector<double>(v->begin(), v->end());
  }
  if (auto* v = std::get_if<std::int64_t>(&it->second)) return {static_cast<double>(*v)};
  wrong_kind(name, "a list of numbers");
}

const LayerSpec* Graph::find_layer(const std::string& layer_name) const {
  for (const LayerSpec& layer : layers) {
    if (layer.name == layer_name) return &layer;
  }
  return nullptr;
}

const Subgraph* LayerSpec::find_subgraph(const std::string& role) const {
  for (const Subgraph& subgraph : subgraphs) {
    if (subgraph.role == role) return &subgraph;
  }
  return nullptr;
}

namespace {

// Errors from inside a subgraph get `where` in front, their type kept.
template <typename Body>
void within(const std::string& where, Body&& body) {
  try {
    body();
  } catch (const LimitError& e) {
    throw LimitError(where + ": " + e.what());
  } catch (const ModelError& e) {
    throw ModelError(where + ": " + e.what());
  }
}

// `graph` at nesting `depth` (0: the model's own); `layers` counts the layers of every graph seen so far.
void validate_graph(const Graph& graph, int depth, std::int64_t& layers, const Limits& caps) {
  layers += static_cast<std::int64_t>(graph.layers.size());
  if (layers > caps.max_layers) {
    throw LimitError(std::to_string(layers) + " layers" + (depth > 0 ? " (subgraphs included)" : "") +
                     " exceed the limit of " + std::to_string(caps.max_layers) + " (Limits::max_layers)");
  }
  std::set<std::string> tensors;
  std::set<std::string> layer_names;
  for (const InputSpec& input : graph.inputs) {
    check_name_length(input.name.size(), "input");
    checked_numel(input.shape.dims(), sizeof(float), "input '" + input.name + "'");
    if (!tensors.insert(input.name).second) {
      throw ModelError("input '" + input.name + "' is declared twice");
    }
  }
  for (const LayerSpec& layer : graph.layers) {
    check_name_length(layer.name.size(), "a layer");
    for (const std::string& name : layer.outputs) check_name_length(name.size(), "layer '" + layer.name + "' output");
    const std::string where = "layer '" + layer.name + "' (" + layer.type + ")";
    if (layer.name.empty()) throw ModelError("a layer of type " + layer.type + " has no name");
    if (!layer_names.insert(layer.name).second) {
      throw ModelError("layer name '" + layer.name + "' is used twice");
    }
    for (const std::string& in : layer.inputs) {
      if (!tensors.count(in)) {
        throw ModelError(where + ": input '" + in + "' is not produced by any earlier layer or input");
      }
    }
    for (const std::string& out : layer.outputs) {
      if (!tensors.insert(out).second) {
        throw ModelError(where + ": output '" + out + "' is already produced elsewhere");
      }
    }
    std::set<std::string> roles;
    for (const Subgraph& subgraph : layer.subgraphs) {
      check_name_length(subgraph.role.size(), where + " subgraph");
      if (subgraph.role.empty()) throw ModelError(where + ": a subgraph has no role name");
      if (!roles.insert(subgraph.role).second) throw ModelError(where + ": subgraph '" + subgraph.role + "' is given twice");
      if (depth + 1 > caps.max_subgraph_depth) {
        throw LimitError(where + ": subgraphs nested " + std::to_string(depth + 1) + " deep exceed the limit of " +
                         std::to_string(caps.max_subgraph_depth) + " (Limits::max_subgraph_depth)");
      }
      within(where + " subgraph '" + subgraph.role + "'", [&] { validate_graph(subgraph.graph, depth + 1, layers, caps); });
    }
  }
  for (const std::string& out : graph.outputs) {
    if (!tensors.count(out)) throw ModelError("graph output '" + out + "' is never produced");
  }
}

}  // namespace

void Graph::validate() const {
  std::int64_t layers = 0;
  validate_graph(*this, 0, layers, limits());
}

}  // namespace espresso
