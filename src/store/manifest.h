// OCI descriptors and espresso model manifests as they arrive from the network (a push to our
// registry, a pull from anyone's): every field is checked before use, and anything wrong is a
// StoreError naming the field, never a JSON library exception.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace espresso::store::detail {

struct Descriptor {
  std::string media_type;
  std::string digest;
  std::uint64_t size = 0;
};

// Annotated titles become file names in some clients: only a plain name passes.
bool safe_title(const std::string& title);

// mediaType, a sha256 digest, an unsigned size, and a safe title if one is annotated.
Descriptor read_descriptor(const nlohmann::json& descriptor, const std::string& where);

// The string member `key` of an object, "" when absent; StoreError when it is there but no string.
std::string optional_string(const nlohmann::json& object, const std::string& key, const std::string& where);

// An espresso model's manifest: the card as config, the package among the layers.
struct ModelManifest {
  Descriptor config;
  std::vector<Descriptor> layers;
  Descriptor package;
};
ModelManifest parse_model_manifest(const std::string& bytes, const std::string& what);

// What a manifest pushed to our registry says, checked field by field: its media type (from the body,
// else the Content-Type header), whether it is an index, the descriptors it references (an index's
// manifests; else the config, then the layers), its subject's digest and its artifact type (an
// espresso model's, implied by a model card as config).
struct PushedManifest {
  std::string media_type;
  bool index = false;
  std::vector<Descriptor> references;
  std::string subject;
  std::string artifact_type;
};
PushedManifest read_pushed_manifest(const std::string& body, const std::string& content_type);

}  // namespace espresso::store::detail
