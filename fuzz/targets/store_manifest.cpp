// What registries send and receive as JSON: a manifest pushed to our registry, a model manifest
// pulled from anyone's, and TUF-style trust metadata (root and targets documents with signatures).
#include <nlohmann/json.hpp>

#include "espresso/errors.h"
#include "espresso/store.h"
#include "fuzz_target.h"
#include "store/manifest.h"
#include "store/trust.h"

ESPRESSO_FUZZ_TARGET(store_manifest) {
  using namespace espresso::store;
  const std::string text(espresso::fuzz::as_text(data, size));
  try {
    detail::read_pushed_manifest(text, std::string(kManifestMediaType));
  } catch (const espresso::StoreError&) {
  }
  try {
    detail::parse_model_manifest(text, "manifest");
  } catch (const espresso::StoreError&) {
  }
  const nlohmann::json document = nlohmann::json::parse(text, nullptr, false);
  if (!document.is_object() || !document.contains("signed")) return;
  const nlohmann::json& signed_part = document["signed"];
  try {
    detail::check_root_shape(signed_part, "vision/lenet", "trust-root");
    // A root that passed its shape check then verifies itself, as a client does for a new root.
    detail::check_signatures(document, signed_part, "root", "trust-root");
  } catch (const espresso::Error&) {
  }
  try {
    detail::check_targets_shape(signed_part, "vision/lenet", "trust-targets");
  } catch (const espresso::Error&) {
  }
}
