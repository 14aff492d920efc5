// ed25519 release signatures with libsodium (docs/store.md, "Signatures").
#include "store/signing.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <fstream>

#include "espresso/store.h"
#include "store/digest.h"

namespace espresso::store {
namespace detail {
namespace {

void require_sodium() {
  if (sodium_init() < 0) throw StoreError("libsodium could not be initialised");
}

std::string to_hex(const unsigned char* bytes, std::size_t size) {
  std::string hex(size * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), bytes, size);
  hex.pop_back();
  return hex;
}

std::vector<unsigned char> from_hex(const std::string& hex, std::size_t size, const std::string& what) {
  std::vector<unsigned char> bytes(size);
  std::size_t length = 0;
  if (hex.size() != size * 2 ||
      sodium_hex2bin(bytes.data(), bytes.size(), hex.c_str(), hex.size(), nullptr, &length, nullptr) != 0 ||
      length != size)
    throw StoreError(what + ": not " + std::to_string(size) + " bytes of hex");
  return bytes;
}

std::string read_key_line(const std::filesystem::path& file, const std::string& prefix) {
  std::ifstream in(file);
  if (!in) throw FileError("key file '" + file.string() + "' cannot be read");
  std::string line;
  std::getline(in, line);
  if (line.rfind(prefix, 0) != 0)
    throw StoreError("key file '" + file.string() + "' does not start with '" + prefix + "'");
  return line.substr(prefix.size());
}

void write_new_file(const std::filesystem::path& file, const std::string& text, int mode) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL, mode);
  if (fd < 0) throw FileError("'" + file.string() + "' exists or cannot be created (keys are never overwritten)");
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) throw FileError("'" + file.string() + "': write failed");
}

}  // namespace

std::string release_message(const std::string& name, const std::string& version, const std::string& digest) {
  return "espresso-release-v1\n" + name + "\n" + version + "\n" + digest + "\n";
}

std::string public_key_id(const std::string& public_hex) { return sha256_digest(public_hex).substr(7, 16); }

PublicKey read_public_key(const std::filesystem::path& file) {
  PublicKey key;
  key.hex = read_key_line(file, "ed25519-public:");
  from_hex(key.hex, crypto_sign_PUBLICKEYBYTES, "public key '" + file.string() + "'");
  key.id = public_key_id(key.hex);
  return key;
}

json sign_release(const std::filesystem::path& secret_file, const std::string& name, const std::string& version,
                  const std::string& digest) {
  require_sodium();
  const std::vector<unsigned char> secret =
      from_hex(read_key_line(secret_file, "ed25519-secret:"), crypto_sign_SECRETKEYBYTES, "secret key '" + secret_file.string() + "'");
  unsigned char public_key[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_ed25519_sk_to_pk(public_key, secret.data());
  const std::string message = release_message(name, version, digest);
  unsigned char signature[crypto_sign_BYTES];
  crypto_sign_detached(signature, nullptr, reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                       secret.data());
  const std::string public_hex = to_hex(public_key, sizeof public_key);
  return {{"schema", 1},
          {"name", name},
          {"version", version},
          {"manifest_digest", digest},
          {"key_id", public_key_id(public_hex)},
          {"public_key", public_hex},
          {"signature", to_hex(signature, sizeof signature)}};
}

std::string verify_release(const json& signature, const std::vector<PublicKey>& trusted, const std::string& name,
                           const std::string& version, const std::string& digest, const std::string& what) {
  require_sodium();
  if (!signature.is_object() || !signature.contains("signature") || !signature["signature"].is_string() ||
      !signature.contains("public_key") || !signature["public_key"].is_string())
    throw IntegrityError(what + ": the signature document is malformed");
  if (signature.value("name", "") != name || signature.value("manifest_digest", "") != digest ||
      (!version.empty() && signature.value("version", "") != version))
    throw IntegrityError(what + ": the signature is for " + signature.value("name", "?") + ":" +
                         signature.value("version", "?") + "@" + signature.value("manifest_digest", "?") +
                         ", not this release (mix-and-match refused)");
  const std::string public_hex = signature["public_key"].get<std::string>();
  const PublicKey* key = nullptr;
  for (const PublicKey& k : trusted) {
    if (k.hex == public_hex) key = &k;
  }
  if (key == nullptr)
    throw IntegrityError(what + ": signed by key " + public_key_id(public_hex) + ", which is not trusted");
  const std::vector<unsigned char> public_key = from_hex(public_hex, crypto_sign_PUBLICKEYBYTES, what + ": public key");
  const std::vector<unsigned char> bytes = from_hex(signature["signature"].get<std::string>(), crypto_sign_BYTES, what + ": signature");
  const std::string message = release_message(name, signature.value("version", ""), digest);
  if (crypto_sign_verify_detached(bytes.data(), reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                                  public_key.data()) != 0)
    throw IntegrityError(what + ": the ed25519 signature does not verify (key " + key->id + ")");
  return key->id;
}

}  // namespace detail

std::string generate_key(const std::filesystem::path& secret_file) {
  detail::require_sodium();
  unsigned char public_key[crypto_sign_PUBLICKEYBYTES];
  unsigned char secret_key[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(public_key, secret_key);
  const std::string public_hex = detail::to_hex(public_key, sizeof public_key);
  const std::filesystem::path public_file = secret_file.string() + ".pub";
  if (std::filesystem::exists(public_file)) throw FileError("'" + public_file.string() + "' exists (keys are never overwritten)");
  detail::write_new_file(secret_file, "ed25519-secret:" + detail::to_hex(secret_key, sizeof secret_key) + "\n", 0600);
  sodium_memzero(secret_key, sizeof secret_key);
  detail::write_new_file(public_file, "ed25519-public:" + public_hex + "\n", 0644);
  return detail::public_key_id(public_hex);
}

std::string key_id(const std::filesystem::path& public_file) { return detail::read_public_key(public_file).id; }

}  // namespace espresso::store
