#include "store/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "espresso/store.h"
#include "store/digest.h"

namespace espresso::store::detail {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr char kUrlAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr char kStdAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1)
    throw StoreError("auth: OpenSSL has no random bytes");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  for (unsigned char c : raw) {
    text += kHex[c >> 4];
    text += kHex[c & 15];
  }
  return text;
}

std::string mac(const std::string& secret, const std::string& message) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(message.data()),
       message.size(), out, &length);
  return std::string(reinterpret_cast<const char*>(out), length);
}

bool decode_with(std::string_view text, const char* alphabet, std::string& bytes) {
  bytes.clear();
  std::uint32_t bits = 0;
  int count = 0;
  for (char c : text) {
    if (c == '=') break;
    const char* at = std::strchr(alphabet, c);
    if (c == '\0' || at == nullptr) return false;
    bits = (bits << 6) | static_cast<std::uint32_t>(at - alphabet);
    count += 6;
    if (count >= 8) {
      count -= 8;
      bytes += static_cast<char>((bits >> count) & 0xff);
    }
  }
  return true;
}

bool valid_action(const std::string& action) { return action == "pull" || action == "push" || action == "delete"; }

std::set<std::string> split_actions(const std::string& text, const std::string& where) {
  std::set<std::string> actions;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string action = text.substr(start, comma - start);
    if (action == "*") {
      actions.insert({"pull", "push", "delete"});
    } else if (!valid_action(action)) {
      throw std::invalid_argument(where + ": unknown action '" + action + "' (pull, push, delete or *)");
    } else {
      actions.insert(action);
    }
    start = comma + 1;
  }
  return actions;
}

bool pattern_matches(const std::string& pattern, const std::string& name) {
  if (pattern == "*") return true;
  if (pattern.size() > 2 && pattern.compare(pattern.size() - 2, 2, "/*") == 0)
    return name.rfind(pattern.substr(0, pattern.size() - 1), 0) == 0;
  return pattern == name;
}

std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }

}  // namespace

std::string base64url(std::string_view bytes) {
  std::string text;
  std::uint32_t bits = 0;
  int count = 0;
  for (unsigned char c : bytes) {
    bits = (bits << 8) | c;
    count += 8;
    while (count >= 6) {
      count -= 6;
      text += kUrlAlphabet[(bits >> count) & 63];
    }
  }
  if (count > 0) text += kUrlAlphabet[(bits << (6 - count)) & 63];
  return text;
}

bool base64url_decode(std::string_view text, std::string& bytes) { return decode_with(text, kUrlAlphabet, bytes); }

std::string base64_decode_standard(std::string_view text, bool& ok) {
  std::string bytes;
  ok = decode_with(text, kStdAlphabet, bytes);
  return bytes;
}

std::string sign_token(const std::string& secret, const TokenClaims& claims) {
  json access = json::array();
  for (const Access& a : claims.access) access.push_back({{"type", "repository"}, {"name", a.name}, {"actions", a.actions}});
  const json body = {{"iss", kTokenService}, {"aud", kTokenService}, {"sub", claims.subject},
                     {"access", access},     {"iat", claims.issued},  {"exp", claims.expires}};
  const std::string signed_part = "esp1." + base64url(body.dump());
  return signed_part + "." + base64url(mac(secret, signed_part));
}

std::optional<TokenClaims> verify_token(const std::string& secret, const std::string& token) {
  const std::size_t dot = token.rfind('.');
  if (token.rfind("esp1.", 0) != 0 || dot == std::string::npos || dot < 5 || token.size() > 16384) return std::nullopt;
  std::string given;
  if (!base64url_decode(std::string_view(token).substr(dot + 1), given)) return std::nullopt;
  const std::string expected = mac(secret, token.substr(0, dot));
  if (given.size() != expected.size() || CRYPTO_memcmp(given.data(), expected.data(), given.size()) != 0)
    return std::nullopt;
  std::string text;
  if (!base64url_decode(std::string_view(token).substr(5, dot - 5), text)) return std::nullopt;
  const json body = json::parse(text, nullptr, false);
  try {
    TokenClaims claims;
    if (body.at("aud").get<std::string>() != kTokenService) return std::nullopt;
    claims.subject = body.at("sub").get<std::string>();
    claims.issued = body.at("iat").get<std::int64_t>();
    claims.expires = body.at("exp").get<std::int64_t>();
    for (const json& a : body.at("access")) claims.access.push_back({a.at("name"), a.at("actions")});
    return claims;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

Access parse_scope(const std::string& scope) {
  const std::size_t first = scope.find(':');
  const std::size_t last = scope.rfind(':');
  if (first == std::string::npos || first == last)
    throw std::invalid_argument("scope '" + scope + "' is not repository:NAME:ACTIONS");
  if (scope.substr(0, first) != "repository")
    throw std::invalid_argument("scope '" + scope + "': only repository scopes are issued");
  Access access{scope.substr(first + 1, last - first - 1), {}};
  if (!valid_repository(access.name)) throw std::invalid_argument("scope '" + scope + "': invalid repository name");
  access.actions = split_actions(scope.substr(last + 1), "scope '" + scope + "'");
  return access;
}

void check_grant(const std::string& grant) {
  const std::size_t colon = grant.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument("grant '" + grant + "' is not PATTERN:ACTIONS");
  const std::string pattern = grant.substr(0, colon);
  const bool namespace_pattern = pattern.size() > 2 && pattern.compare(pattern.size() - 2, 2, "/*") == 0;
  if (pattern != "*" && !valid_repository(namespace_pattern ? pattern.substr(0, pattern.size() - 2) : pattern))
    throw std::invalid_argument("grant '" + grant + "': the pattern must be a repository, NAMESPACE/* or *");
  split_actions(grant.substr(colon + 1), "grant '" + grant + "'");
}

AuthStore::AuthStore(fs::path root) : dir_(std::move(root) / "auth") {}

const std::string& AuthStore::secret() {
  std::lock_guard lock(mutex_);
  if (!secret_.empty()) return secret_;
  const fs::path file = dir_ / "secret";
  std::error_code ec;
  if (!fs::exists(file, ec)) {
    fs::create_directories(dir_);
    // O_EXCL: of two servers starting at once, one writes and both read the same secret.
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
      const std::string text = random_hex(32);
      const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
      ::close(fd);
      if (!ok) throw FileError(file.string() + ": cannot be written");
    }
  }
  secret_ = read_file(file);
  if (secret_.size() < 32) throw FileError(file.string() + ": the token secret is shorter than 32 characters");
  return secret_;
}

void AuthStore::load() {
  const fs::path file = dir_ / "keys.json";
  struct stat info {};
  if (::stat(file.c_str(), &info) != 0) {
    keys_.clear();
    loaded_mtime_ = 0;
    return;
  }
  const std::int64_t stamp = static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec +
                             static_cast<std::int64_t>(info.st_ino) * 7919;
  if (stamp == loaded_mtime_) return;
  const json all = json::parse(read_file(file), nullptr, false);
  if (!all.is_object() || !all.contains("keys") || !all["keys"].is_array())
    throw FileError(file.string() + ": not an access key list");
  keys_.clear();
  for (const json& k : all["keys"]) {
    AccessKeyRecord key;
    key.id = k.value("id", "");
    key.secret_hash = k.value("secret_sha256", "");
    key.grants = k.value("grants", std::vector<std::string>{});
    key.created = k.value("created", std::int64_t{0});
    key.expires = k.value("expires", std::int64_t{0});
    key.revoked = k.value("revoked", false);
    keys_.push_back(key);
  }
  loaded_mtime_ = stamp;
}

void AuthStore::save() {
  json list = json::array();
  for (const AccessKeyRecord& k : keys_) {
    list.push_back({{"id", k.id}, {"secret_sha256", k.secret_hash}, {"grants", k.grants},
                    {"created", k.created}, {"expires", k.expires}, {"revoked", k.revoked}});
  }
  write_file_atomically(dir_ / "keys.json", json({{"keys", list}}).dump(2) + "\n");
  ::chmod((dir_ / "keys.json").c_str(), 0600);
  loaded_mtime_ = -1;
}

std::pair<std::string, std::string> AuthStore::create(const std::vector<std::string>& grants, std::int64_t expires) {
  if (grants.empty()) throw std::invalid_argument("an access key needs at least one grant (PATTERN:ACTIONS)");
  for (const std::string& g : grants) check_grant(g);
  std::lock_guard lock(mutex_);
  fs::create_directories(dir_);
  // The folder lock keeps two admins' edits from losing one another.
  const int lock_fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY);
  if (lock_fd >= 0) ::flock(lock_fd, LOCK_EX);
  load();
  AccessKeyRecord key;
  key.id = "ek" + random_hex(6);
  const std::string secret = "esk_" + random_hex(24);
  key.secret_hash = sha256_digest(secret);
  key.grants = grants;
  key.created = now();
  key.expires = expires;
  keys_.push_back(key);
  save();
  if (lock_fd >= 0) ::close(lock_fd);
  return {key.id, secret};
}

bool AuthStore::revoke(const std::string& id) {
  std::lock_guard lock(mutex_);
  const int lock_fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY);
  if (lock_fd >= 0) ::flock(lock_fd, LOCK_EX);
  load();
  bool found = false;
  for (AccessKeyRecord& k : keys_) {
    if (k.id == id) found = k.revoked = true;
  }
  if (found) save();
  if (lock_fd >= 0) ::close(lock_fd);
  return found;
}

std::vector<AccessKeyRecord> AuthStore::keys() {
  std::lock_guard lock(mutex_);
  load();
  return keys_;
}

std::optional<AccessKeyRecord> AuthStore::authenticate(const std::string& id, const std::string& secret, std::string& why) {
  std::lock_guard lock(mutex_);
  load();
  const std::string hash = sha256_digest(secret);
  for (const AccessKeyRecord& k : keys_) {
    if (k.id != id) continue;
    if (hash.size() != k.secret_hash.size() || CRYPTO_memcmp(hash.data(), k.secret_hash.data(), hash.size()) != 0) break;
    if (k.revoked) {
      why = "access key " + id + " was revoked";
      return std::nullopt;
    }
    if (k.expires != 0 && k.expires <= now()) {
      why = "access key " + id + " expired";
      return std::nullopt;
    }
    return k;
  }
  why = "unknown access key or wrong secret";
  return std::nullopt;
}

bool AuthStore::active(const std::string& id, std::string& why) {
  std::lock_guard lock(mutex_);
  load();
  for (const AccessKeyRecord& k : keys_) {
    if (k.id != id) continue;
    if (k.revoked) why = "the access key " + id + " behind this token was revoked";
    else if (k.expires != 0 && k.expires <= now()) why = "the access key " + id + " behind this token expired";
    else return true;
    return false;
  }
  why = "the access key " + id + " behind this token is unknown";
  return false;
}

std::set<std::string> AuthStore::allowed(const AccessKeyRecord& key, const std::string& name,
                                         const std::set<std::string>& wanted) {
  std::set<std::string> granted;
  for (const std::string& grant : key.grants) {
    const std::size_t colon = grant.rfind(':');
    if (!pattern_matches(grant.substr(0, colon), name)) continue;
    for (const std::string& action : split_actions(grant.substr(colon + 1), grant)) {
      if (wanted.count(action)) granted.insert(action);
    }
  }
  return granted;
}

}  // namespace espresso::store::detail

namespace espresso::store {

AccessKey create_access_key(const std::filesystem::path& root, const std::vector<std::string>& grants,
                            std::chrono::seconds lifetime) {
  detail::AuthStore auth(root);
  try {
    const auto [id, secret] =
        auth.create(grants, lifetime.count() > 0 ? static_cast<std::int64_t>(std::time(nullptr)) + lifetime.count() : 0);
    return {id, secret};
  } catch (const std::invalid_argument& e) {
    throw StoreError(e.what());
  }
}

bool revoke_access_key(const std::filesystem::path& root, const std::string& id) {
  return detail::AuthStore(root).revoke(id);
}

std::vector<AccessKeyInfo> list_access_keys(const std::filesystem::path& root) {
  std::vector<AccessKeyInfo> list;
  for (const detail::AccessKeyRecord& k : detail::AuthStore(root).keys())
    list.push_back({k.id, k.grants, k.created, k.expires, k.revoked});
  return list;
}

}  // namespace espresso::store
