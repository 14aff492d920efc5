// Access keys and bearer tokens (docs/store.md, "Authentication"), after Docker's token flow: a
// registry request without a good token gets 401 and `WWW-Authenticate: Bearer realm=...,service=...,
// scope=...`; the client asks the realm (GET /token, with Basic credentials = an access key, or none)
// for a token scoped to repository and actions, and retries with `Authorization: Bearer TOKEN`.
//
// Access keys live in ROOT/auth/keys.json with only the SHA-256 of their secret; tokens are
// "esp1.CLAIMS.MAC" (base64url JSON claims, HMAC-SHA256 under ROOT/auth/secret), short-lived, and die
// with the key that obtained them (revocation is checked on every request).
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace espresso::store::detail {

inline constexpr const char* kTokenService = "espresso";

// One repository and the actions asked for or granted on it ("pull", "push", "delete").
struct Access {
  std::string name;
  std::set<std::string> actions;
};

struct TokenClaims {
  std::string subject;  // access key id; "" for an anonymous token
  std::vector<Access> access;
  std::int64_t issued = 0;
  std::int64_t expires = 0;  // seconds since the epoch
};

std::string base64url(std::string_view bytes);
// False on characters outside the alphabet.
bool base64url_decode(std::string_view text, std::string& bytes);
std::string base64_decode_standard(std::string_view text, bool& ok);

std::string sign_token(const std::string& secret, const TokenClaims& claims);
// The claims of a token whose MAC verifies; nullopt for anything else. Expiry is the caller's check.
std::optional<TokenClaims> verify_token(const std::string& secret, const std::string& token);
// "repository:NAME:ACTION[,ACTION]"; throws std::invalid_argument naming what is wrong.
Access parse_scope(const std::string& scope);
// "PATTERN:ACTIONS": PATTERN is a repository, "NAMESPACE/*" or "*"; throws std::invalid_argument.
void check_grant(const std::string& grant);

struct AccessKeyRecord {
  std::string id;
  std::string secret_hash;  // sha256:HEX of the secret
  std::vector<std::string> grants;
  std::int64_t created = 0;
  std::int64_t expires = 0;  // 0: never
  bool revoked = false;
};

// ROOT/auth: the token MAC secret (made on first use, mode 0600) and the access keys.
class AuthStore {
 public:
  explicit AuthStore(std::filesystem::path root);
  const std::string& secret();
  // Returns {id, secret}; the secret is shown once and kept only hashed.
  std::pair<std::string, std::string> create(const std::vector<std::string>& grants, std::int64_t expires);
  bool revoke(const std::string& id);
  std::vector<AccessKeyRecord> keys();
  // The key when the secret matches and it is neither revoked nor expired; else nullopt and `why`.
  std::optional<AccessKeyRecord> authenticate(const std::string& id, const std::string& secret, std::string& why);
  // Whether a key still stands (for tokens it obtained earlier).
  bool active(const std::string& id, std::string& why);
  // The actions of `wanted` the key's grants allow on `name`.
  static std::set<std::string> allowed(const AccessKeyRecord& key, const std::string& name,
                                       const std::set<std::string>& wanted);

 private:
  void load();  // re-reads keys.json when it changed on disk
  void save();
  std::filesystem::path dir_;
  std::mutex mutex_;
  std::string secret_;
  std::vector<AccessKeyRecord> keys_;
  std::int64_t loaded_mtime_ = -1;
};

}  // namespace espresso::store::detail
