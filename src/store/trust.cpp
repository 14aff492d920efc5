#include "store/trust.h"

#include <sodium.h>

#include <fstream>
#include <set>

#include "espresso/store.h"
#include "store/digest.h"

namespace espresso::store::detail {

namespace {

std::string hex_of(const unsigned char* bytes, std::size_t size) {
  std::string hex(size * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), bytes, size);
  hex.pop_back();
  return hex;
}

bool bytes_of(const std::string& hex, unsigned char* out, std::size_t size) {
  std::size_t length = 0;
  return hex.size() == size * 2 && sodium_hex2bin(out, size, hex.c_str(), hex.size(), nullptr, &length, nullptr) == 0 &&
         length == size;
}

std::string read_secret_hex(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string line;
  if (!in || !std::getline(in, line) || line.rfind("ed25519-secret:", 0) != 0)
    throw StoreError("key file '" + file.string() + "' is not an ed25519 secret key (espresso keygen)");
  return line.substr(15);
}

}  // namespace

PublicKey public_key_of_secret(const std::filesystem::path& secret_file) {
  if (sodium_init() < 0) throw StoreError("libsodium could not be initialised");
  unsigned char secret[crypto_sign_SECRETKEYBYTES];
  if (!bytes_of(read_secret_hex(secret_file), secret, sizeof secret))
    throw StoreError("key file '" + secret_file.string() + "': not an ed25519 secret key");
  unsigned char public_key[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_ed25519_sk_to_pk(public_key, secret);
  sodium_memzero(secret, sizeof secret);
  const std::string hex = hex_of(public_key, sizeof public_key);
  return {hex, sha256_digest(hex).substr(7, 16)};
}

json make_root(const std::string& repository, std::int64_t version, std::int64_t expires,
               const std::vector<PublicKey>& root_keys, const std::vector<PublicKey>& release_keys) {
  json keys = json::object();
  json root_ids = json::array();
  json release_ids = json::array();
  for (const PublicKey& k : root_keys) {
    keys[k.id] = {{"keytype", "ed25519"}, {"public", k.hex}};
    root_ids.push_back(k.id);
  }
  for (const PublicKey& k : release_keys) {
    keys[k.id] = {{"keytype", "ed25519"}, {"public", k.hex}};
    release_ids.push_back(k.id);
  }
  return {{"_type", "root"},
          {"spec", kTrustSpec},
          {"repository", repository},
          {"version", version},
          {"expires", expires},
          {"keys", keys},
          {"roles", {{"root", {{"keyids", root_ids}, {"threshold", 1}}}, {"targets", {{"keyids", release_ids}, {"threshold", 1}}}}}};
}

json sign_metadata(const json& signed_part, const std::vector<std::filesystem::path>& secret_files) {
  if (sodium_init() < 0) throw StoreError("libsodium could not be initialised");
  const std::string message = signed_part.dump();
  json signatures = json::array();
  for (const std::filesystem::path& file : secret_files) {
    unsigned char secret[crypto_sign_SECRETKEYBYTES];
    if (!bytes_of(read_secret_hex(file), secret, sizeof secret))
      throw StoreError("key file '" + file.string() + "': not an ed25519 secret key");
    unsigned char signature[crypto_sign_BYTES];
    crypto_sign_detached(signature, nullptr, reinterpret_cast<const unsigned char*>(message.data()), message.size(), secret);
    sodium_memzero(secret, sizeof secret);
    signatures.push_back({{"keyid", public_key_of_secret(file).id}, {"sig", hex_of(signature, sizeof signature)}});
  }
  return {{"signed", signed_part}, {"signatures", signatures}};
}

void check_signatures(const json& document, const json& root_signed, const std::string& role, const std::string& what) {
  if (sodium_init() < 0) throw StoreError("libsodium could not be initialised");
  if (!document.is_object() || !document.contains("signed") || !document.contains("signatures") ||
      !document["signatures"].is_array())
    throw IntegrityError(what + ": not a signed metadata document (signed, signatures)");
  const json& role_entry = root_signed.at("roles").at(role);
  const std::set<std::string> allowed = role_entry.at("keyids").get<std::set<std::string>>();
  const std::int64_t threshold = role_entry.at("threshold").get<std::int64_t>();
  const std::string message = document["signed"].dump();
  std::set<std::string> good;
  std::string unknown;
  for (const json& s : document["signatures"]) {
    if (!s.is_object() || !s.contains("keyid") || !s["keyid"].is_string() || !s.contains("sig") || !s["sig"].is_string()) continue;
    const std::string id = s["keyid"];
    if (!allowed.count(id)) {
      unknown = id;
      continue;
    }
    unsigned char public_key[crypto_sign_PUBLICKEYBYTES];
    unsigned char signature[crypto_sign_BYTES];
    if (!bytes_of(root_signed.at("keys").at(id).at("public").get<std::string>(), public_key, sizeof public_key) ||
        !bytes_of(s["sig"].get<std::string>(), signature, sizeof signature))
      continue;
    if (crypto_sign_verify_detached(signature, reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                                    public_key) == 0)
      good.insert(id);
  }
  if (static_cast<std::int64_t>(good.size()) < threshold)
    throw IntegrityError(what + ": " + std::to_string(good.size()) + " valid signature(s) by " + role + " keys, " +
                         std::to_string(threshold) + " needed" +
                         (unknown.empty() ? std::string() : " (signed by key " + unknown + ", which the root does not list for " + role + ")"));
}

namespace {

// A metadata integer: a JSON integer within int64 (nlohmann's get<std::int64_t> of a float such as 1e30
// is an unchecked, undefined conversion). Anything else is a malformed document.
std::int64_t metadata_integer(const json& value, const std::string& what, const std::string& field) {
  const bool fits = value.is_number_unsigned() ? value.get<std::uint64_t>() <= std::uint64_t{INT64_MAX}
                                               : value.is_number_integer();
  if (!fits) throw IntegrityError(what + ": " + field + " is not an integer within 64 bits");
  return value.get<std::int64_t>();
}

}  // namespace

void check_root_shape(const json& s, const std::string& repository, const std::string& what) {
  try {
    if (s.at("_type") != "root" || s.at("spec") != kTrustSpec) throw IntegrityError(what + ": not a root document");
    if (s.at("repository").get<std::string>() != repository)
      throw IntegrityError(what + ": root metadata of repository '" + s["repository"].get<std::string>() + "', not '" +
                           repository + "' (mix-and-match refused)");
    metadata_integer(s.at("version"), what, "version");
    metadata_integer(s.at("expires"), what, "expires");
    for (const char* role : {"root", "targets"}) {
      const json& r = s.at("roles").at(role);
      if (metadata_integer(r.at("threshold"), what, std::string("roles.") + role + ".threshold") < 1)
        throw IntegrityError(what + ": roles." + role + ".threshold below 1");
      for (const json& id : r.at("keyids")) s.at("keys").at(id.get<std::string>()).at("public").get<std::string>();
    }
  } catch (const json::exception& e) {
    throw IntegrityError(what + ": malformed root metadata (" + e.what() + ")");
  }
}

void check_targets_shape(const json& s, const std::string& repository, const std::string& what) {
  try {
    if (s.at("_type") != "targets" || s.at("spec") != kTrustSpec) throw IntegrityError(what + ": not a targets document");
    if (s.at("repository").get<std::string>() != repository)
      throw IntegrityError(what + ": targets metadata of repository '" + s["repository"].get<std::string>() + "', not '" +
                           repository + "' (mix-and-match refused)");
    metadata_integer(s.at("version"), what, "version");
    metadata_integer(s.at("expires"), what, "expires");
    for (const auto& [tag, target] : s.at("targets").items()) {
      if (!valid_tag(tag) || !valid_digest(target.at("digest").get<std::string>())) throw IntegrityError(what + ": bad target '" + tag + "'");
      if (!target.at("size").is_number_unsigned()) throw IntegrityError(what + ": target '" + tag + "' has no size");
    }
  } catch (const json::exception& e) {
    throw IntegrityError(what + ": malformed targets metadata (" + e.what() + ")");
  }
}

}  // namespace espresso::store::detail
