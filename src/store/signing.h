// Release signatures: what is signed, how a signature document looks, and how it is checked.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace espresso::store::detail {

using nlohmann::json;

struct PublicKey {
  std::string hex;
  std::string id;
};

std::string release_message(const std::string& name, const std::string& version, const std::string& digest);
PublicKey read_public_key(const std::filesystem::path& file);
// The signature document: {schema, name, version, manifest_digest, key_id, public_key, signature}.
json sign_release(const std::filesystem::path& secret_file, const std::string& name, const std::string& version,
                  const std::string& digest);
// Returns the id of the trusted key that verified it; throws IntegrityError naming what is wrong
// (another release's signature, an unknown key, a bad signature). An empty `version` (a pull by
// digest) checks name and digest only.
std::string verify_release(const json& signature, const std::vector<PublicKey>& trusted, const std::string& name,
                           const std::string& version, const std::string& digest, const std::string& what);

}  // namespace espresso::store::detail
