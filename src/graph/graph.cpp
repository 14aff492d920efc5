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

void Graph::validate() const {
  const Limits caps = limits();
  if (static_cast<std::int64_t>(layers.size()) > caps.max_layers) {
    throw LimitError(std::to_string(layers.size()) + " layers exceed the limit of " +
                     std::to_string(caps.max_layers) + " (Limits::max_layers)");
  }
  std::set<std::string> tensors;
  std::set<std::string> layer_names;
  for (const InputSpec& input : inputs) {
    check_name_length(input.name.size(), "input");
    checked_numel(input.shape.dims(), sizeof(float), "input '" + input.name + "'");
    if (!tensors.insert(input.name).second) {
      throw ModelError("input '" + input.name + "' is declared twice");
    }
  }
  for (const LayerSpec& layer : layers) {
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
  }
  for (const std::string& out : outputs) {
    if (!tensors.count(out)) throw ModelError("graph output '" + out + "' is never produced");
  }
}

}  // namespace espresso
