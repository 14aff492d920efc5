#include "store/manifest.h"

#include "espresso/errors.h"
#include "espresso/store.h"

namespace espresso::store::detail {

using nlohmann::json;

bool safe_title(const std::string& title) {
  if (title.empty() || title.size() > 255 || title == "." || title == "..") return false;
  for (char c : title) {
    if (c == '/' || c == '\\' || static_cast<unsigned char>(c) < 0x20) return false;
  }
  return title.find("..") == std::string::npos;
}

std::string optional_string(const json& object, const std::string& key, const std::string& where) {
  if (!object.is_object() || !object.contains(key)) return {};
  if (!object[key].is_string()) throw StoreError(where + "." + key + " is not a string");
  return object[key].get<std::string>();
}

Descriptor read_descriptor(const json& d, const std::string& where) {
  if (!d.is_object()) throw StoreError(where + " is not an object");
  if (!d.contains("digest") || !d["digest"].is_string() || !valid_digest(d["digest"].get<std::string>()))
    throw StoreError(where + ".digest is missing or not a sha256 digest");
  if (!d.contains("size") || !d["size"].is_number_unsigned()) throw StoreError(where + ".size is missing or negative");
  if (!d.contains("mediaType") || !d["mediaType"].is_string()) throw StoreError(where + ".mediaType is missing");
  if (d.contains("annotations")) {
    const json& a = d["annotations"];
    if (!a.is_object()) throw StoreError(where + ".annotations is not an object");
    const std::string title = optional_string(a, "org.opencontainers.image.title", where + ".annotations");
    if (a.contains("org.opencontainers.image.title") && !safe_title(title))
      throw StoreError(where + " has an unsafe title (a path, '..', a backslash or a control character)");
  }
  return {d["mediaType"].get<std::string>(), d["digest"].get<std::string>(), d["size"].get<std::uint64_t>()};
}

namespace {

constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
constexpr std::string_view kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";

// Manifest media types this registry stores.
bool manifest_media_type(const std::string& type) {
  return type == kManifestMediaType || type == kIndexMediaType || type == kDockerManifest || type == kDockerList;
}

std::vector<Descriptor> read_descriptors(const json& manifest, const std::string& key) {
  if (!manifest.contains(key) || !manifest[key].is_array()) throw StoreError(key + " is missing");
  std::vector<Descriptor> out;
  for (std::size_t i = 0; i < manifest[key].size(); ++i)
    out.push_back(read_descriptor(manifest[key][i], key + "[" + std::to_string(i) + "]"));
  return out;
}

}  // namespace

PushedManifest read_pushed_manifest(const std::string& body, const std::string& content_type) {
  const json manifest = json::parse(body, nullptr, false);
  if (!manifest.is_object()) throw StoreError("not a JSON object");
  PushedManifest pushed;
  pushed.media_type = manifest.contains("mediaType") ? optional_string(manifest, "mediaType", "manifest") : content_type;
  if (!manifest_media_type(pushed.media_type))
    throw StoreError("unsupported manifest media type '" + pushed.media_type + "'");
  if (!manifest.contains("schemaVersion") || manifest["schemaVersion"] != 2) throw StoreError("schemaVersion must be 2");
  pushed.index = pushed.media_type == kIndexMediaType || pushed.media_type == kDockerList;
  if (pushed.index) {
    pushed.references = read_descriptors(manifest, "manifests");
  } else {
    if (!manifest.contains("config")) throw StoreError("config is missing");
    pushed.references.push_back(read_descriptor(manifest["config"], "config"));
    for (Descriptor& layer : read_descriptors(manifest, "layers")) pushed.references.push_back(std::move(layer));
  }
  if (manifest.contains("subject")) pushed.subject = read_descriptor(manifest["subject"], "subject").digest;
  pushed.artifact_type = optional_string(manifest, "artifactType", "manifest");
  const bool card_config = !pushed.index && pushed.references.front().media_type == kCardMediaType;
  if (pushed.artifact_type.empty() && card_config) pushed.artifact_type = kArtifactType;
  if (pushed.artifact_type == kArtifactType && !pushed.index && !card_config)
    throw StoreError("an espresso model's config must be its card (" + std::string(kCardMediaType) + ")");
  return pushed;
}

ModelManifest parse_model_manifest(const std::string& bytes, const std::string& what) {
  const json m = json::parse(bytes, nullptr, false);
  if (!m.is_object() || !m.contains("config") || !m.contains("layers") || !m["layers"].is_array())
    throw StoreError(what + ": the manifest is not an OCI image manifest");
  ModelManifest model;
  model.config = read_descriptor(m["config"], what + ": config");
  const std::string artifact = optional_string(m, "artifactType", what);
  if (artifact != kArtifactType && model.config.media_type != kCardMediaType)
    throw StoreError(what + ": not an espresso model (artifactType '" + artifact + "')");
  bool found = false;
  for (std::size_t i = 0; i < m["layers"].size(); ++i) {
    model.layers.push_back(read_descriptor(m["layers"][i], what + ": layers[" + std::to_string(i) + "]"));
    if (!found && model.layers.back().media_type == kPackageMediaType) {
      model.package = model.layers.back();
      found = true;
    }
  }
  if (!found) throw StoreError(what + ": the manifest has no " + std::string(kPackageMediaType) + " layer");
  return model;
}

}  // namespace espresso::store::detail
