// The model store (docs/store.md): models travel as OCI artifacts over the OCI Distribution API, so any
// OCI registry holds them and our own server adds a search catalog. A model is one manifest whose
// config blob is the model card (JSON derived from the package's metadata) and whose layers are the
// .esp package and, optionally, a README and a labels file.
//
// The client keeps a content-addressed cache: every blob is checked against its digest before it is
// renamed into place, downloads resume where they stopped, and any number of processes may pull into
// one cache at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "espresso/errors.h"
#include "espresso/graph.h"

namespace espresso {

// A registry refused a request, could not be reached, or answered outside the protocol; a name,
// reference or manifest is malformed; offline mode and nothing cached.
class StoreError : public Error {
 public:
  using Error::Error;
};

// Bytes do not match the digest that names them (a tampered or truncated blob, in the cache or on a
// server).
class IntegrityError : public StoreError {
 public:
  using StoreError::StoreError;
};

namespace store {

inline constexpr std::string_view kArtifactType = "application/vnd.espresso.model.v1";
inline constexpr std::string_view kCardMediaType = "application/vnd.espresso.model.card.v1+json";
inline constexpr std::string_view kPackageMediaType = "application/vnd.espresso.package.v1";
inline constexpr std::string_view kReadmeMediaType = "text/markdown";
inline constexpr std::string_view kLabelsMediaType = "text/plain";
inline constexpr std::string_view kManifestMediaType = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kIndexMediaType = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kSignatureArtifactType = "application/vnd.espresso.signature.v1";
inline constexpr std::string_view kSignatureMediaType = "application/vnd.espresso.signature.v1+json";
inline constexpr std::string_view kEmptyMediaType = "application/vnd.oci.empty.v1+json";
inline constexpr std::string_view kTrustArtifactType = "application/vnd.espresso.trust.v1";
inline constexpr std::string_view kTrustMediaType = "application/vnd.espresso.trust.v1+json";

// Repository names as the OCI distribution spec defines them: lower-case components of [a-z0-9]
// separated by '.', '_', '__' or '-', joined by '/'; at most 255 characters. This refuses '..',
// absolute paths, backslashes, NUL and anything percent-encoded.
bool valid_repository(std::string_view name);
// Tags: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
bool valid_tag(std::string_view tag);
// "sha256:" and 64 lower-case hex digits (the only algorithm this store accepts).
bool valid_digest(std::string_view digest);

// REGISTRY/NAME[:TAG|:RANGE|@sha256:HEX]. The first component is a registry when it holds a '.' or a
// ':' or is "localhost"; otherwise the registry is `default_registry` (ESPRESSO_REGISTRY for the CLI).
// RANGE is a version range (^1.2, ~1.2.3, >=1.0,<2; docs/store.md "Version ranges"): a version part
// holding one of ^ ~ < > = * , | or a space; Client::pull resolves it to the highest matching tag.
struct Reference {
  std::string registry;  // host[:port]
  std::string name;      // repository
  std::string tag;       // empty when only a digest or a range is given
  std::string digest;    // empty unless given
  std::string range;     // empty unless given

  // Throws StoreError naming the text and what is wrong with it. Without a tag or digest the tag is
  // "latest".
  static Reference parse(std::string_view text, std::string_view default_registry = "");
  // True for text that parses and names a tag or digest explicitly or a registry (so "lenet.esp" or
  // "model.onnx" is never taken for a reference).
  static bool looks_like(std::string_view text);
  std::string str() const;
};

// Hex SHA-256 digests, "sha256:..." form.
std::string sha256_digest(std::string_view bytes);
// Throws FileError.
std::string sha256_file_digest(const std::filesystem::path& path);

// The model card of a package, as JSON: name, version, description, task, license, author, labels,
// metrics, inputs, outputs, layers, parameters, FLOPs per image, file size, created. Throws what
// load_package throws.
std::string model_card(const std::filesystem::path& package);
// The same card for a graph from any format (its metadata may be empty), `size_bytes` its file's size.
std::string model_card(Graph graph, std::uint64_t size_bytes);

// ---- Signatures (ed25519, libsodium) ---------------------------------------------------------------
//
// A publisher signs "espresso-release-v1\n" NAME "\n" VERSION "\n" MANIFEST_DIGEST "\n": a signature
// binds the bytes to that name and version, so it cannot be replayed for another model or version.
// Key files are one line of text: "ed25519-secret:HEX" (mode 0600) and "ed25519-public:HEX".

// Writes SECRET_FILE and SECRET_FILE.pub; returns the key id (first 16 hex digits of the public key's
// SHA-256). Throws FileError (an existing file is never overwritten).
std::string generate_key(const std::filesystem::path& secret_file);
// The key id of a public key file. Throws FileError or StoreError.
std::string key_id(const std::filesystem::path& public_file);

// ---- Server ----------------------------------------------------------------------------------------

struct ServerOptions {
  std::filesystem::path root;                // blobs, uploads and the SQLite catalog live here
  std::string host = "127.0.0.1";
  int port = 5000;                           // 0: any free port (see Server::port())
  std::size_t max_manifest_bytes = 4 << 20;  // larger manifests are refused with 413
  std::chrono::seconds upload_ttl{24 * 3600};  // upload sessions idle longer than this are removed
  int threads = 8;
  // HTTPS: a PEM certificate (chain) and its private key; both empty: plain HTTP.
  std::filesystem::path tls_cert;
  std::filesystem::path tls_key;
  // POST /api/v1/models/NAME/classify ("try it" on the web page, docs/web.md): larger image bodies are
  // refused with 413; the models it loads share this budget of weight bytes (a ModelPool on the CPU).
  std::size_t max_image_bytes = 16 << 20;
  std::size_t classify_budget_bytes = std::size_t{1} << 30;
  // Bearer tokens (docs/store.md, "Authentication"): with `auth`, pushing and deleting need a token
  // scoped to the repository and action, from GET /token with an access key; pulling needs one too
  // unless `anonymous_pull`.
  bool auth = false;
  bool anonymous_pull = true;
  std::chrono::seconds token_ttl{900};
  // Pull-through cache (docs/store.md, "Pull-through cache"): with an upstream registry URL
  // (http://HOST:PORT, https://HOST), a manifest or blob missing here is fetched from it, its digest
  // checked, stored and served; later requests are served from here. A tag the upstream was asked about
  // less than `upstream_recheck` ago is answered from here without asking again. Pushes are refused
  // (405). `upstream_credentials`: an `espresso login` credentials file for the upstream (empty: anonymous).
  std::string upstream;
  std::filesystem::path upstream_credentials;
  std::chrono::seconds upstream_recheck{60};
  std::chrono::seconds upstream_timeout{60};  // an upstream silent this long: 504
};

// Access keys of a server's root (ROOT/auth/keys.json keeps only their secrets' SHA-256). Grants are
// "PATTERN:ACTIONS": PATTERN a repository, "NAMESPACE/*" or "*"; ACTIONS from pull, push, delete (or *).
struct AccessKey {
  std::string id;
  std::string secret;  // shown once
};
struct AccessKeyInfo {
  std::string id;
  std::vector<std::string> grants;
  std::int64_t created = 0;
  std::int64_t expires = 0;  // 0: never
  bool revoked = false;
};
// Throws StoreError for a malformed grant. `lifetime` 0: the key never expires.
AccessKey create_access_key(const std::filesystem::path& root, const std::vector<std::string>& grants,
                            std::chrono::seconds lifetime = std::chrono::seconds(0));
// Tokens the key obtained stop working at once. False when there is no such key.
bool revoke_access_key(const std::filesystem::path& root, const std::string& id);
std::vector<AccessKeyInfo> list_access_keys(const std::filesystem::path& root);

struct FsckReport {
  std::size_t blobs = 0;             // blobs hashed
  std::vector<std::string> bad;      // blobs whose bytes do not match their digest
  std::vector<std::string> missing;  // blobs or manifests the catalog references that are absent
};

class Server {
 public:
  // Creates the root's layout and catalog if needed. Throws FileError or StoreError.
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the socket; returns the port (the chosen one when options.port was 0). Throws StoreError.
  int bind();
  // Serves until stop() (from another thread or a signal handler's thread).
  void run();
  void stop();
  int port() const;
  // Removes upload sessions idle longer than the TTL; returns how many. run() calls it periodically.
  std::size_t expire_uploads();
  // Hashes every blob and checks that everything the catalog references exists.
  FsckReport fsck();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- Client ----------------------------------------------------------------------------------------

struct Progress {
  std::string what;  // "push lenet.esp", "pull sha256:ab12..."
  std::uint64_t done = 0;
  std::uint64_t total = 0;
};

struct ClientOptions {
  std::filesystem::path cache;  // see default_cache_dir()
  bool offline = false;         // never open a socket; serve what is cached
  // How registries are reached: HTTPS except for loopback ones (automatic), HTTPS everywhere, or plain
  // HTTP everywhere.
  enum class Transport { automatic, tls, plain };
  Transport transport = Transport::automatic;
  // PEM file of the CA certificates HTTPS trusts instead of the system's store (a private registry's own
  // CA); empty: the system's store (OpenSSL's defaults, which honour SSL_CERT_FILE and SSL_CERT_DIR).
  std::filesystem::path ca_file;
  std::function<void(const Progress&)> progress;
  std::size_t chunk_bytes = 32 << 20;  // upload chunk size (PATCH)
  // A registry silent this long fails the request (connecting: at most 10 s).
  std::chrono::seconds timeout{60};
  // Public key files: when any is given, pull accepts only releases signed by one of them.
  std::vector<std::filesystem::path> trusted_keys;
  // Access keys per registry, written by `espresso login` (see default_credentials_file()).
  std::filesystem::path credentials;
  // Root public keys (ESPRESSO_TRUST_ROOTS, ':'-separated): a pull checks the repository's trust
  // metadata when any is given or when the cache already holds trusted metadata for it; it then
  // refuses rollback, expired (frozen) metadata, mix-and-match and keys the root does not list.
  std::vector<std::filesystem::path> trust_roots;
};

// $ESPRESSO_CREDENTIALS, else $XDG_CONFIG_HOME/espresso/credentials.json, else
// ~/.config/espresso/credentials.json (mode 0600; it holds secrets).
std::filesystem::path default_credentials_file();

// $ESPRESSO_CACHE, else $XDG_CACHE_HOME/espresso, else ~/.cache/espresso.
std::filesystem::path default_cache_dir();
// The options the environment asks for: cache dir, ESPRESSO_OFFLINE=1, ESPRESSO_INSECURE=1 (plain HTTP),
// ESPRESSO_TLS=1 (HTTPS also for loopback registries), ESPRESSO_CA_FILE (extra CA certificates),
// ESPRESSO_TRUSTED_KEYS (public key files separated by ':').
ClientOptions client_options_from_env();

struct PushOptions {
  std::filesystem::path readme;  // optional layers
  std::filesystem::path labels;
  std::filesystem::path sign_key;  // a secret key file: also push a signature (tag sha256-HEX.sig)
  // A release (targets) key: also add the release to the repository's signed targets metadata (a new
  // version, expiring after `release_ttl`). The key must be listed in the repository's root metadata.
  std::filesystem::path release_key;
  std::chrono::seconds release_ttl{30 * 24 * 3600};
};

struct PushResult {
  std::string manifest_digest;
  std::uint64_t bytes_uploaded = 0;
  int blobs_uploaded = 0;
  int blobs_present = 0;  // already on the registry, not sent again
  std::string signed_by;  // key id, when signed
};

struct PullResult {
  std::filesystem::path package;  // the .esp in the cache (read-only), ready for load_model()
  std::string manifest_digest;
  std::string card;               // the model card JSON
  std::uint64_t bytes_downloaded = 0;
  bool from_cache = false;        // nothing was downloaded
  std::string tag;                // the tag pulled (a version range resolves to one); empty by digest
  std::string signed_by;          // key id of the trusted key that verified it (trusted keys given)
  std::int64_t trust_version = 0;  // version of the targets metadata that vouched for it (0: none)
};

struct SearchQuery {
  std::string text;     // full-text over name, description, task, labels, author
  std::string task;
  std::string license;
  std::uint64_t max_bytes = 0;  // 0: no limit
  double min_accuracy = 0.0;
  std::string sort;     // "relevance" (default with text), "name", "updated", "size"
  std::string cursor;
  int limit = 20;
};

struct CacheEntry {
  std::string reference;  // registry/name:tag
  std::string manifest_digest;
  std::uint64_t bytes = 0;  // of its blobs in the cache
};

struct CacheReport {
  std::vector<std::string> bad;  // blobs whose bytes do not match their name (removed when fixing)
  std::size_t checked = 0;
  std::uint64_t bytes = 0;
};

class Client {
 public:
  explicit Client(ClientOptions options);

  // Uploads the package's blobs (skipping those the registry has), then the manifest under the tag.
  // Throws FileError for the package, StoreError for the registry.
  PushResult push(const std::filesystem::path& package, const Reference& reference, const PushOptions& options = {});
  // Resolves the reference (offline: from the cache only), downloads what is missing, verifies every
  // blob and returns the cached package. A version range is resolved first against the registry's
  // tag list (offline: the tags pulled before) to the highest matching version.
  PullResult pull(const Reference& reference);
  // The tag a version range resolves to (the reference's tag when it has no range). Throws StoreError
  // when no tag matches, naming the tags seen.
  std::string resolve_range(const Reference& reference);
  // GET /api/v1/models on our server; the JSON answer.
  std::string search(const std::string& registry, const SearchQuery& query);
  // GET /api/v1/models/NAME; the JSON answer (card and versions).
  std::string show(const Reference& reference);
  // The manifest (JSON) a reference names, from the registry.
  std::string manifest(const Reference& reference);
  // Checks an access key against the registry's token service and stores it in the credentials file.
  // Throws StoreError when the registry refuses it or has no authentication.
  void login(const std::string& registry, const std::string& key_id, const std::string& secret);
  // Forgets the registry's access key; false when none was stored.
  bool logout(const std::string& registry);
  // Publishes root metadata version 1 for a repository (docs/store.md, "Trust metadata"): `root_key`
  // (secret) signs it and is its root key; `release_keys` (public files) may sign targets.
  void trust_init(const Reference& repository, const std::filesystem::path& root_key,
                  const std::vector<std::filesystem::path>& release_keys, std::chrono::seconds lifetime);
  // Publishes the next root version, signed by the current root key and the new one, which replaces it;
  // `release_keys` replace the release keys. Returns the new version.
  std::int64_t trust_rotate(const Reference& repository, const std::filesystem::path& old_root_key,
                            const std::filesystem::path& new_root_key,
                            const std::vector<std::filesystem::path>& release_keys, std::chrono::seconds lifetime);

  std::vector<CacheEntry> cache_list() const;
  // Re-hashes every cached blob; with `remove_bad` deletes those that do not match.
  CacheReport cache_verify(bool remove_bad) const;
  // Removes partial downloads, temp files and blobs no cached reference uses; returns bytes freed.
  std::uint64_t cache_prune() const;

 private:
  ClientOptions options_;
};

}  // namespace store
}  // namespace espresso
