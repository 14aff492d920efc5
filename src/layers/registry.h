// The one table of layer types, generated at build time from the layer headers that exist.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "layers/layer.h"
#include "layers/schema.h"

namespace espresso {

// Throws ModelError for an unknown type or invalid attributes, naming the layer (and the attribute).
// The layer is made from `spec` with its schema's defaults filled in.
std::unique_ptr<Layer> create_layer(const LayerSpec& spec);
// The attributes a layer type declares; nullptr for unknown types and custom ones registered without a
// schema.
const LayerSchema* layer_schema(const std::string& type);
// Checks every known layer of `graph`, its subgraphs included, against its schema (importers call it on
// what they produce).
void check_layer_attributes(const Graph& graph);
// docs/layers.md's table: one row per built-in layer type, from the schemas.
std::string layers_markdown_table();
bool is_known_layer_type(const std::string& type);
// A type an application registered (espresso/custom_layer.h): CPU only, with or without a schema.
bool is_custom_layer_type(const std::string& type);
std::vector<std::string> known_layer_types();

}  // namespace espresso
