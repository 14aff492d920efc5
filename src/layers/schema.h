// A layer type's attributes, declared once: name, kind, default, range. The registry checks every
// LayerSpec against its type's schema before the layer is made (unknown, misspelled, mistyped and
// out-of-range attributes are ModelErrors naming layer and attribute) and fills in the defaults, so
// layers read their attributes without repeating them; docs/layers.md's table is generated from the
// schemas.
#pragma once

#include <limits>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "espresso/graph.h"

namespace espresso {

enum class AttrType { integer, number, text, integers, numbers };

struct AttrSpec {
  std::string_view name;
  AttrType type = AttrType::integer;
  // The value when the attribute is absent; none for required and for optional-without-default ones
  // (the layer then tests has()).
  std::optional<AttrValue> fallback = std::nullopt;
  bool required = false;
  // Inclusive bounds for every number of the value.
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  // The accepted words of a text attribute; empty: any text.
  std::vector<std::string_view> choices = {};
  // For the docs, where the default is not a plain value ("all 1", "reversed axes").
  std::string_view default_text = {};
};

// A 0/1 switch with its default.
inline AttrSpec flag(std::string_view name, bool fallback) {
  return {.name = name, .type = AttrType::integer, .fallback = std::int64_t{fallback ? 1 : 0}, .min = 0, .max = 1};
}

struct LayerSchema {
  std::vector<AttrSpec> attributes;
  std::string_view weights;  // the learned blobs, in order ("–" for none)
  std::string_view notes;
  // The roles of the subgraphs the layer owns (LayerSpec::subgraphs), each required; none for most layers.
  std::vector<std::string_view> subgraphs = {};
};

// Attributes every layer may carry, read by the executor when training: loss_weight, and the
// weight_filler.* / bias_filler.* fillers (layers/filler.h checks those).
bool is_training_attribute(const std::string& name);

// Throws ModelError "layer 'name' (Type): ..." for the first attribute that breaks the schema, or a
// required one that is missing (misspellings get a suggestion), and for subgraphs other than the
// schema's roles, or one of them missing.
void check_attributes(const LayerSpec& spec, const LayerSchema& schema);
// `attrs` with every absent attribute that has a default set to it.
Attributes with_defaults(const Attributes& attrs, const LayerSchema& schema);
// One row of docs/layers.md's table: | type | attributes (default) | weights | notes |
std::string markdown_row(std::string_view type, const LayerSchema& schema);

}  // namespace espresso
