#include "layers/schema.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "espresso/errors.h"

namespace espresso {
namespace {

const char* type_name(AttrType type) {
  switch (type) {
    case AttrType::integer: return "an integer";
    case AttrType::number: return "a number";
    case AttrType::text: return "a string";
    case AttrType::integers: return "a list of integers";
    case AttrType::numbers: return "a list of numbers";
  }
  return "";
}

// The numbers in a value of the right kind, for the range check; nullopt when the kind is wrong.
std::optional<std::vector<double>> numbers_of(const AttrValue& value, AttrType type) {
  const auto* i = std::get_if<std::int64_t>(&value);
  const auto* d = std::get_if<double>(&value);
  const auto* is = std::get_if<std::vector<std::int64_t>>(&value);
  const auto* ds = std::get_if<std::vector<double>>(&value);
  switch (type) {
    case AttrType::integer:
      if (i) return std::vector<double>{static_cast<double>(*i)};
      if (is && is->size() == 1) return std::vector<double>{static_cast<double>(is->front())};
      return std::nullopt;
    case AttrType::number:
      if (i) return std::vector<double>{static_cast<double>(*i)};
      if (d) return std::vector<double>{*d};
      return std::nullopt;
    case AttrType::integers:
      if (i) return std::vector<double>{static_cast<double>(*i)};
      if (is) return std::vector<double>(is->begin(), is->end());
      return std::nullopt;
    case AttrType::numbers:
      if (i) return std::vector<double>{static_cast<double>(*i)};
      if (d) return std::vector<double>{*d};
      if (is) return std::vector<double>(is->begin(), is->end());
      if (ds) return *ds;
      return std::nullopt;
    case AttrType::text:
      return std::nullopt;
  }
  return std::nullopt;
}

std::string number_text(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream out;
  out << v;
  return out.str();
}

std::string value_text(const AttrValue& value) {
  struct Visitor {
    std::string operator()(std::int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const { return number_text(v); }
    std::string operator()(const std::string& v) const { return "\"" + v + "\""; }
    std::string operator()(const std::vector<std::int64_t>& v) const {
      std::string text;
      for (std::int64_t x : v) text += (text.empty() ? "" : ", ") + std::to_string(x);
      return text;
    }
    std::string operator()(const std::vector<double>& v) const {
      std::string text;
      for (double x : v) text += (text.empty() ? "" : ", ") + number_text(x);
      return text;
    }
  };
  return std::visit(Visitor{}, value);
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

[[noreturn]] void fail(const LayerSpec& spec, const std::string& what) {
  throw ModelError("layer '" + spec.name + "' (" + spec.type + "): " + what);
}

void check_value(const LayerSpec& spec, const AttrSpec& attr, const AttrValue& value) {
  const std::string name = "attribute '" + std::string(attr.name) + "'";
  if (attr.type == AttrType::text) {
    const auto* text = std::get_if<std::string>(&value);
    if (!text) fail(spec, name + " must be a string, got " + value_text(value));
    if (!attr.choices.empty() && std::find(attr.choices.begin(), attr.choices.end(), *text) == attr.choices.end()) {
      std::string allowed;
      for (std::string_view c : attr.choices) {
        if (!allowed.empty()) allowed.append(", ");
        allowed.append("\"").append(c).append("\"");
      }
      fail(spec, name + " is \"" + *text + "\"; expected one of " + allowed);
    }
    return;
  }
  const std::optional<std::vector<double>> numbers = numbers_of(value, attr.type);
  if (!numbers) fail(spec, name + " must be " + type_name(attr.type) + ", got " + value_text(value));
  for (double v : *numbers) {
    if (std::isnan(v) || v < attr.min || v > attr.max) {
      fail(spec, name + " is " + value_text(value) + ", outside [" + number_text(attr.min) + ", " +
                     number_text(attr.max) + "]");
    }
  }
}

}  // namespace

bool is_training_attribute(const std::string& name) {
  return name == "loss_weight" || name.rfind("weight_filler.", 0) == 0 || name.rfind("bias_filler.", 0) == 0;
}

void check_attributes(const LayerSpec& spec, const LayerSchema& schema) {
  for (const auto& entry : spec.attrs.all()) {
    // Named, not a structured binding: clang 14 (the fuzz and sanitizer builds) cannot capture those.
    const auto& name = entry.first;
    const auto& value = entry.second;
    if (is_training_attribute(name)) continue;
    auto it = std::find_if(schema.attributes.begin(), schema.attributes.end(),
                           [&](const AttrSpec& a) { return a.name == name; });
    if (it != schema.attributes.end()) {
      check_value(spec, *it, value);
      continue;
    }
    std::string known;
    const AttrSpec* nearest = nullptr;
    std::size_t best = 3;  // suggest only close spellings
    for (const AttrSpec& a : schema.attributes) {
      known += (known.empty() ? "" : ", ") + std::string(a.name);
      const std::size_t distance = edit_distance(name, a.name);
      if (distance < best) {
        best = distance;
        nearest = &a;
      }
    }
    fail(spec, "unknown attribute '" + name + "'" +
                   (nearest ? "; did you mean '" + std::string(nearest->name) + "'?" : std::string()) + " (" +
                   spec.type + " takes " + (known.empty() ? "no attributes" : known) + ")");
  }
  for (const AttrSpec& a : schema.attributes) {
    if (a.required && !spec.attrs.has(std::string(a.name))) {
      fail(spec, "attribute '" + std::string(a.name) + "' is required");
    }
  }
  std::string roles;
  for (std::string_view role : schema.subgraphs) roles += (roles.empty() ? "" : ", ") + std::string(role);
  for (const Subgraph& subgraph : spec.subgraphs) {
    if (std::find(schema.subgraphs.begin(), schema.subgraphs.end(), subgraph.role) == schema.subgraphs.end()) {
      fail(spec, "unknown subgraph '" + subgraph.role + "' (" + spec.type + " takes " +
                     (roles.empty() ? "no subgraphs" : roles) + ")");
    }
  }
  for (std::string_view role : schema.subgraphs) {
    if (spec.find_subgraph(std::string(role)) == nullptr) fail(spec, "subgraph '" + std::string(role) + "' is required");
  }
}

Attributes with_defaults(const Attributes& attrs, const LayerSchema& schema) {
  Attributes filled = attrs;
  for (const AttrSpec& a : schema.attributes) {
    if (a.fallback && !filled.has(std::string(a.name))) filled.set(std::string(a.name), *a.fallback);
  }
  return filled;
}

std::string markdown_row(std::string_view type, const LayerSchema& schema) {
  std::string attributes;
  for (const AttrSpec& a : schema.attributes) {
    std::string detail;
    if (!a.choices.empty()) {
      for (std::string_view c : a.choices) {
        if (!detail.empty()) detail.append("\\|");
        detail.append("\"").append(c).append("\"");
      }
      detail.append(", ");
    }
    if (a.required) {
      detail += "required";
    } else if (!a.default_text.empty()) {
      detail += a.default_text;
    } else if (a.fallback) {
      detail += value_text(*a.fallback);
    } else {
      detail += "none";
    }
    if (std::isfinite(a.min) && std::isfinite(a.max)) {
      detail += ", " + number_text(a.min) + "–" + number_text(a.max);
    } else if (std::isfinite(a.min)) {
      detail += ", ≥ " + number_text(a.min);
    } else if (std::isfinite(a.max)) {
      detail += ", ≤ " + number_text(a.max);
    }
    if (!attributes.empty()) attributes.append(", ");
    attributes.append("`").append(a.name).append("` (").append(detail).append(")");
  }
  if (!schema.subgraphs.empty()) {
    if (!attributes.empty()) attributes.append("; ");
    attributes.append("subgraphs");
    for (std::size_t k = 0; k < schema.subgraphs.size(); ++k)
      attributes.append(k == 0 ? " `" : ", `").append(schema.subgraphs[k]).append("`");
  }
  return "| " + std::string(type) + " | " + (attributes.empty() ? "–" : attributes) + " | " +
         std::string(schema.weights.empty() ? "–" : schema.weights) + " | " + std::string(schema.notes) + " |";
}

}  // namespace espresso
