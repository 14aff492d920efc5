// TUF-style trust metadata per repository (docs/store.md, "Trust metadata"): a root document names
// the root keys and the release (targets) keys with thresholds; a targets document lists every release
// (tag → manifest digest and size) with a version number and an expiry, signed by release keys. Each
// root version is signed by the previous root's keys and its own, so root keys rotate.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "store/signing.h"

namespace espresso::store::detail {

using nlohmann::json;

inline constexpr const char* kTrustSpec = "espresso-trust-v1";

// The public half of a secret key file.
PublicKey public_key_of_secret(const std::filesystem::path& secret_file);
json make_root(const std::string& repository, std::int64_t version, std::int64_t expires,
               const std::vector<PublicKey>& root_keys, const std::vector<PublicKey>& release_keys);
// {"signed": ..., "signatures": [{keyid, sig}]}: ed25519 over the compact JSON of "signed" (keys sorted).
json sign_metadata(const json& signed_part, const std::vector<std::filesystem::path>& secret_files);
// Throws IntegrityError unless at least the role's threshold of distinct keys listed for `role` in
// `root_signed` made valid signatures over the document.
void check_signatures(const json& document, const json& root_signed, const std::string& role, const std::string& what);
// Shape checks; throw IntegrityError naming the field.
void check_root_shape(const json& root_signed, const std::string& repository, const std::string& what);
void check_targets_shape(const json& targets_signed, const std::string& repository, const std::string& what);

}  // namespace espresso::store::detail
