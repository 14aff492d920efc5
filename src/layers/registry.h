// The one table of layer types, generated at build time from the layer headers that exist.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "layers/layer.h"

namespace espresso {

// Throws ModelError for an unknown type or invalid attributes, naming the layer.
std::unique_ptr<Layer> create_layer(const LayerSpec& spec);
bool is_known_layer_type(const std::string& type);
std::vector<std::string> known_layer_types();

}  // namespace espresso
