// Pieces shared by the model-store verbs (push, pull, search, show, cache, store): the default
// registry, client options from the environment and a progress line on a terminal.
#pragma once

#include <string>

#include "espresso/store.h"

namespace espresso::cli {

// $ESPRESSO_REGISTRY, or "" (then references must name their registry).
std::string default_registry();
store::Reference parse_reference(const std::string& text);
// Options from the environment; a progress line with rate and ETA on stderr when it is a terminal
// and `quiet` is false.
store::ClientOptions store_client_options(bool quiet);
// "1.5 MB" style sizes for tables.
std::string human_bytes(std::uint64_t bytes);

}  // namespace espresso::cli
