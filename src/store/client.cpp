// The registry client and its cache (docs/store.md, "Cache layout"):
//   blobs/sha256/HEX            verified blobs, read-only
//   partial/sha256/HEX          a download in progress (resumed with Range), guarded by flock
//   refs/REGISTRY/NAME/TAG      the manifest digest a tag had when it was last pulled
//   packages/HEX.esp            hard links to package blobs, so the loader sees an .esp name
// Every blob is hashed while it downloads and renamed into place only when its digest matches, so
// concurrent pullers at worst download twice; flock on the partial file makes that once.
#include <fcntl.h>
#include <netdb.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <httplib.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <span>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>

#include "espresso/store.h"
#include "store/digest.h"
#include "store/hashing_writer.h"
#include "store/manifest.h"
#include "store/semver.h"
#include "store/signing.h"
#include "store/trust.h"
#include "store/upstream.h"

namespace espresso::store {

using nlohmann::json;
namespace fs = std::filesystem;
using detail::Descriptor;
using detail::ModelManifest;
using detail::parse_model_manifest;

namespace {

constexpr std::size_t kMaxManifestBytes = 4 << 20;

bool loopback(const std::string& registry) {
  return registry.rfind("127.", 0) == 0 || registry.rfind("localhost", 0) == 0 || registry.rfind("[::1]", 0) == 0;
}

std::string describe(const httplib::Result& result) {
  if (result.error() == httplib::Error::SSLServerVerification)
    return "its TLS certificate is not trusted (a private CA? set ESPRESSO_CA_FILE to its certificate)";
  if (result.error() == httplib::Error::SSLConnection)
    return "no TLS handshake (does the registry speak HTTPS? ESPRESSO_INSECURE=1 for plain HTTP)";
  if (!result) return "no answer (" + httplib::to_string(result.error()) + " error; is the registry running?)";
  std::string text = "HTTP " + std::to_string(result->status);
  const json body = json::parse(result->body, nullptr, false);
  if (body.is_object() && body.contains("errors") && body["errors"].is_array() && !body["errors"].empty()) {
    const json& e = body["errors"][0];
    text += ": " + e.value("code", std::string()) + ": " + e.value("message", std::string());
  }
  return text;
}

// Location headers may be absolute URLs (Docker's registry) or paths (ours).
std::string location_path(const std::string& location) {
  const std::size_t scheme = location.find("://");
  if (scheme == std::string::npos) return location;
  const std::size_t slash = location.find('/', scheme + 3);
  return slash == std::string::npos ? "/" : location.substr(slash);
}

std::string with_param(const std::string& path, const std::string& param) {
  return path + (path.find('?') == std::string::npos ? "?" : "&") + param;
}

std::string url_encode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

// The value of `key` in a WWW-Authenticate challenge (key="value" pairs).
std::string challenge_field(const std::string& challenge, const std::string& key) {
  const std::size_t at = challenge.find(key + "=\"");
  if (at == std::string::npos) return "";
  const std::size_t start = at + key.size() + 2;
  const std::size_t end = challenge.find('"', start);
  return end == std::string::npos ? "" : challenge.substr(start, end - start);
}

std::string base64(const std::string& bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string text;
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const std::uint32_t v = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                            static_cast<unsigned char>(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) text += kAlphabet[(v >> s) & 63];
  }
  if (i < bytes.size()) {
    std::uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    text += kAlphabet[(v >> 18) & 63];
    text += kAlphabet[(v >> 12) & 63];
    text += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    text += '=';
  }
  return text;
}

struct Credentials {
  std::string key_id;
  std::string secret;
};

json read_credentials(const fs::path& file) {
  std::error_code ec;
  if (file.empty() || !fs::exists(file, ec)) return json::object();
  const json all = json::parse(detail::read_file(file), nullptr, false);
  if (!all.is_object()) throw StoreError(file.string() + ": the credentials file is not a JSON object (remove it and log in again)");
  return all;
}

std::optional<Credentials> credentials_for(const fs::path& file, const std::string& registry) {
  const json all = read_credentials(file);
  if (!all.contains("registries") || !all["registries"].is_object() || !all["registries"].contains(registry)) return std::nullopt;
  const json& entry = all["registries"][registry];
  if (!entry.is_object() || !entry.contains("key_id") || !entry.contains("secret"))
    throw StoreError(file.string() + ": the entry for " + registry + " lacks key_id or secret (log in again)");
  return Credentials{entry["key_id"].get<std::string>(), entry["secret"].get<std::string>()};
}

class Registry {
 public:
  Registry(const std::string& registry, const ClientOptions& options)
      : name_(registry),
        plain_(options.transport == ClientOptions::Transport::plain ||
               (options.transport == ClientOptions::Transport::automatic && loopback(registry))),
        http_((plain_ ? "http://" : "https://") + registry),
        ca_file_(options.ca_file),
        credentials_file_(options.credentials),
        timeout_(static_cast<int>(std::max<std::int64_t>(1, options.timeout.count()))) {
    if (!plain_) trust_ca(http_);
    http_.set_connection_timeout(std::min(10, timeout_), 0);
    http_.set_read_timeout(timeout_, 0);
    http_.set_write_timeout(timeout_, 0);
    http_.set_keep_alive(true);
    http_.set_tcp_nodelay(true);
  }
  httplib::Client& http() { return http_; }
  StoreError error(const std::string& what, const httplib::Result& result) const {
    std::string hint;
    if (result && result->status == 401)
      hint = credentials_ ? " (the stored access key was refused: espresso login " + name_ + " again)"
                          : " (this needs an access key: espresso login " + name_ + ")";
    if (result && result->status == 403)
      hint = credentials_ ? " (the access key " + credentials_->key_id + " is not granted this)"
                          : " (anonymous access does not allow this: espresso login " + name_ + ")";
    return StoreError("registry " + name_ + ": " + what + ": " + describe(result) + hint);
  }
  const std::string& name() const { return name_; }
  bool plain() const { return plain_; }
  int timeout() const { return timeout_; }
  // "Bearer TOKEN" once a challenge has been answered, else "".
  const std::string& authorization() const { return authorization_; }

  // Sends a request; on 401 or 403 with a Bearer challenge (no token, or one without this scope), gets
  // a token for the challenge's scope (with the stored access key, or anonymously) and sends it once more.
  httplib::Result call(const std::function<httplib::Result()>& send) {
    httplib::Result result = send();
    if (!result || (result->status != 401 && result->status != 403)) return result;
    const std::string challenge = result->get_header_value("WWW-Authenticate");
    if (challenge.rfind("Bearer ", 0) != 0) return result;
    fetch_token(challenge);
    return send();
  }

  // The token service's answer for the credentials and scope (login checks credentials this way).
  void fetch_token(const std::string& challenge, bool must_authenticate = false) {
    const std::string realm = challenge_field(challenge, "realm");
    const std::string service = challenge_field(challenge, "service");
    const std::string scope = challenge_field(challenge, "scope");
    const std::size_t scheme = realm.find("://");
    if (realm.empty() || scheme == std::string::npos)
      throw StoreError("registry " + name_ + ": its authentication challenge has no usable realm ('" + challenge + "')");
    const std::size_t slash = realm.find('/', scheme + 3);
    httplib::Client token_server(realm.substr(0, slash));
    if (realm.rfind("https://", 0) == 0) trust_ca(token_server);
    token_server.set_connection_timeout(10, 0);
    token_server.set_read_timeout(30, 0);
    std::string path = slash == std::string::npos ? "/" : realm.substr(slash);
    std::string query;
    if (!service.empty()) query += "service=" + url_encode(service);
    if (!scope.empty()) query += std::string(query.empty() ? "" : "&") + "scope=" + url_encode(scope);
    if (!query.empty()) path = with_param(path, query);
    if (!credentials_loaded_) {
      credentials_ = credentials_for(credentials_file_, name_);
      credentials_loaded_ = true;
    }
    if (must_authenticate && !credentials_) throw StoreError("registry " + name_ + ": no access key to log in with");
    httplib::Headers headers;
    if (credentials_) headers.emplace("Authorization", "Basic " + base64(credentials_->key_id + ":" + credentials_->secret));
    auto got = token_server.Get(path, headers);
    if (!got || got->status != 200) {
      throw StoreError("registry " + name_ + ": its token service at " + realm + " refused " +
                       (credentials_ ? "access key " + credentials_->key_id : std::string("an anonymous request")) + ": " +
                       describe(got) + (credentials_ ? " (espresso login " + name_ + " again)" : ""));
    }
    const json answer = json::parse(got->body, nullptr, false);
    std::string token;
    if (answer.is_object() && answer.contains("token") && answer["token"].is_string()) token = answer["token"];
    else if (answer.is_object() && answer.contains("access_token") && answer["access_token"].is_string()) token = answer["access_token"];
    if (token.empty() || token.find_first_of("\r\n") != std::string::npos)
      throw StoreError("registry " + name_ + ": its token service answered without a token");
    authorization_ = "Bearer " + token;
    http_.set_bearer_token_auth(token);
  }
  void use_credentials(const Credentials& credentials) {
    credentials_ = credentials;
    credentials_loaded_ = true;
  }

 private:
  void trust_ca(httplib::Client& client) const {
    if (ca_file_.empty()) return;
    std::error_code ec;
    if (!fs::is_regular_file(ca_file_, ec))
      throw StoreError("registry " + name_ + ": CA file " + ca_file_.string() + " (ESPRESSO_CA_FILE) does not exist");
    client.set_ca_cert_path(ca_file_.c_str());
  }

  std::string name_;
  bool plain_;
  httplib::Client http_;
  fs::path ca_file_;
  fs::path credentials_file_;
  std::optional<Credentials> credentials_;
  bool credentials_loaded_ = false;
  int timeout_;
  std::string authorization_;
};

struct Cache {
  fs::path root;
  fs::path blob(const std::string& digest) const { return root / "blobs" / "sha256" / detail::digest_hex(digest); }
  fs::path partial(const std::string& digest) const { return root / "partial" / "sha256" / detail::digest_hex(digest); }
  fs::path ref(const Reference& r) const { return root / "refs" / r.registry / r.name / r.tag; }
  fs::path package(const std::string& digest) const { return root / "packages" / (detail::digest_hex(digest) + ".esp"); }
  fs::path signature(const std::string& digest) const { return root / "signatures" / (detail::digest_hex(digest) + ".json"); }
  fs::path trust(const std::string& registry, const std::string& name) const { return root / "trust" / registry / name; }
  void create() const {
    for (const char* folder : {"blobs/sha256", "partial/sha256", "refs", "packages", "signatures"}) fs::create_directories(root / folder);
  }
};

// A cached blob whose bytes match its name; a mismatching one is removed (and reported).
bool cached_and_valid(const Cache& cache, const std::string& digest, std::uint64_t size, bool& tampered) {
  const fs::path path = cache.blob(digest);
  std::error_code ec;
  const auto actual = fs::file_size(path, ec);
  if (ec) return false;
  if (actual == size && sha256_file_digest(path) == digest) return true;
  tampered = true;
  fs::remove(path, ec);
  return false;
}

// Reads an uploaded file's chunk for httplib.
httplib::ContentProvider file_provider(int fd, std::uint64_t base, const std::function<void(std::uint64_t)>& sent) {
  return [fd, base, sent](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
    std::vector<char> buffer(std::min<std::size_t>(length, 1 << 20));
    const ssize_t n = ::pread(fd, buffer.data(), std::min(length, buffer.size()), static_cast<off_t>(base + offset));
    if (n <= 0) return false;
    if (!sink.write(buffer.data(), static_cast<std::size_t>(n))) return false;
    if (sent) sent(static_cast<std::uint64_t>(n));
    return true;
  };
}

struct Blob {
  std::string media_type;
  std::string digest;
  std::uint64_t size = 0;
  fs::path file;       // or
  std::string bytes;   // in memory
  std::string title;
};

}  // namespace

fs::path default_cache_dir() {
  if (const char* cache = std::getenv("ESPRESSO_CACHE"); cache != nullptr && *cache != '\0') return cache;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') return fs::path(xdg) / "espresso";
  const char* home = std::getenv("HOME");
  return fs::path(home != nullptr ? home : ".") / ".cache" / "espresso";
}

fs::path default_credentials_file() {
  if (const char* file = std::getenv("ESPRESSO_CREDENTIALS"); file != nullptr && *file != '\0') return file;
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg != nullptr && *xdg != '\0')
    return fs::path(xdg) / "espresso" / "credentials.json";
  const char* home = std::getenv("HOME");
  return fs::path(home != nullptr ? home : ".") / ".config" / "espresso" / "credentials.json";
}

ClientOptions client_options_from_env() {
  ClientOptions options;
  options.cache = default_cache_dir();
  options.credentials = default_credentials_file();
  const char* offline = std::getenv("ESPRESSO_OFFLINE");
  options.offline = offline != nullptr && std::string(offline) != "" && std::string(offline) != "0";
  const auto flag = [](const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr && std::string(value) != "" && std::string(value) != "0";
  };
  if (flag("ESPRESSO_TLS")) options.transport = ClientOptions::Transport::tls;
  if (flag("ESPRESSO_INSECURE")) options.transport = ClientOptions::Transport::plain;
  if (const char* ca = std::getenv("ESPRESSO_CA_FILE"); ca != nullptr) options.ca_file = ca;
  if (const char* roots = std::getenv("ESPRESSO_TRUST_ROOTS"); roots != nullptr) {
    const std::string list = roots;
    for (std::size_t start = 0; start <= list.size();) {
      const std::size_t colon = std::min(list.find(':', start), list.size());
      if (colon > start) options.trust_roots.emplace_back(list.substr(start, colon - start));
      start = colon + 1;
    }
  }
  if (const char* keys = std::getenv("ESPRESSO_TRUSTED_KEYS"); keys != nullptr) {
    std::string list = keys;
    for (std::size_t start = 0; start <= list.size();) {
      const std::size_t colon = std::min(list.find(':', start), list.size());
      if (colon > start) options.trusted_keys.emplace_back(list.substr(start, colon - start));
      start = colon + 1;
    }
  }
  return options;
}

Client::Client(ClientOptions options) : options_(std::move(options)) {
  if (options_.cache.empty()) options_.cache = default_cache_dir();
}

namespace {

// Writes the credentials file through a temporary file that is 0600 from its creation.
void write_credentials(const fs::path& file, const json& all) {
  fs::create_directories(file.parent_path());
  const fs::path temp = file.parent_path() / (".tmp-" + detail::unique_suffix());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) throw FileError(temp.string() + ": cannot be created");
  const std::string text = all.dump(2) + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(temp.c_str(), file.c_str()) != 0) {
    ::unlink(temp.c_str());
    throw FileError(file.string() + ": cannot be written");
  }
}

}  // namespace

void Client::login(const std::string& registry_name, const std::string& key_id, const std::string& secret) {
  if (options_.offline) throw StoreError("login: ESPRESSO_OFFLINE is set; logging in needs the network");
  if (key_id.empty() || secret.empty()) throw StoreError("login: the access key id and secret must not be empty");
  if (options_.credentials.empty()) throw StoreError("login: no credentials file (set ESPRESSO_CREDENTIALS or HOME)");
  Registry registry(registry_name, options_);
  registry.use_credentials({key_id, secret});
  auto base = registry.http().Get("/v2/");
  if (!base) throw registry.error("login", base);
  const std::string challenge = base->get_header_value("WWW-Authenticate");
  if (base->status != 401 || challenge.rfind("Bearer ", 0) != 0)
    throw StoreError("login: registry " + registry_name + " does not ask for bearer tokens (HTTP " +
                     std::to_string(base->status) + " for /v2/); nothing was stored");
  registry.fetch_token(challenge, true);
  json all = read_credentials(options_.credentials);
  all["registries"][registry_name] = {{"key_id", key_id}, {"secret", secret}};
  write_credentials(options_.credentials, all);
}

bool Client::logout(const std::string& registry_name) {
  json all = read_credentials(options_.credentials);
  if (!all.contains("registries") || !all["registries"].is_object() || !all["registries"].contains(registry_name)) return false;
  all["registries"].erase(registry_name);
  write_credentials(options_.credentials, all);
  return true;
}

namespace {

void upload_blob(Registry& registry, const std::string& repo, const Blob& blob, const ClientOptions& options,
                 PushResult& result) {
  httplib::Client& http = registry.http();
  const std::string blob_path = "/v2/" + repo + "/blobs/" + blob.digest;
  if (auto head = registry.call([&] { return http.Head(blob_path); }); head && head->status == 200) {
    ++result.blobs_present;
    return;
  }
  auto started = registry.call([&] { return http.Post("/v2/" + repo + "/blobs/uploads/", "", "application/octet-stream"); });
  if (!started || started->status != 202) throw registry.error("starting an upload of " + blob.digest, started);
  std::string location = location_path(started->get_header_value("Location"));
  Progress progress{"push " + blob.title, 0, blob.size};
  const auto sent = [&](std::uint64_t n) {
    progress.done += n;
    if (options.progress) options.progress(progress);
  };
  if (!blob.file.empty()) {
    const int fd = ::open(blob.file.c_str(), O_RDONLY);
    if (fd < 0) throw FileError(blob.file.string() + ": cannot be opened");
    std::uint64_t offset = 0;
    int retries = 0;
    try {
      while (offset < blob.size) {
        const std::uint64_t length = std::min<std::uint64_t>(options.chunk_bytes, blob.size - offset);
        httplib::Headers headers = {{"Content-Range", std::to_string(offset) + "-" + std::to_string(offset + length - 1)}};
        auto patched = http.Patch(location, headers, static_cast<std::size_t>(length), file_provider(fd, offset, sent),
                                  "application/octet-stream");
        if (patched && patched->status == 202) {
          location = location_path(patched->get_header_value("Location"));
          offset += length;
          retries = 0;
          continue;
        }
        // A failed chunk: ask where the upload stands and continue from there.
        if (++retries > 3) throw registry.error("uploading " + blob.digest, patched);
        auto status = http.Get(location);
        if (!status || status->status != 204) throw registry.error("resuming the upload of " + blob.digest, status);
        const std::string range = status->get_header_value("Range");
        const std::size_t dash = range.find('-');
        offset = dash == std::string::npos ? 0 : std::stoull(range.substr(dash + 1)) + 1;
        if (range == "0-0" || range.empty()) offset = 0;
        if (status->has_header("Location")) location = location_path(status->get_header_value("Location"));
        progress.done = offset;
      }
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
    auto done = http.Put(with_param(location, "digest=" + blob.digest), "", "application/octet-stream");
    if (!done || done->status != 201) throw registry.error("finishing the upload of " + blob.digest, done);
  } else {
    auto done = http.Put(with_param(location, "digest=" + blob.digest), blob.bytes, "application/octet-stream");
    if (!done || done->status != 201) throw registry.error("uploading " + blob.digest, done);
    sent(blob.size);
  }
  ++result.blobs_uploaded;
  result.bytes_uploaded += blob.size;
}

Blob file_blob(const fs::path& file, std::string_view media_type, const std::string& title) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw FileError("'" + file.string() + "' does not exist or is not a file");
  return {std::string(media_type), sha256_file_digest(file), fs::file_size(file), file, "", title};
}

}  // namespace

namespace {
void publish_target(Registry& registry, const Cache& cache, const Reference& reference, const std::string& digest,
                    std::uint64_t size, const PushOptions& options, const ClientOptions& client_options);
}  // namespace

PushResult Client::push(const fs::path& package, const Reference& reference, const PushOptions& options) {
  if (options_.offline) throw StoreError("push: ESPRESSO_OFFLINE is set; pushing needs the network");
  if (reference.tag.empty()) throw StoreError("push: '" + reference.str() + "' needs a version tag (NAME:VERSION)");
  Blob esp = file_blob(package, kPackageMediaType, reference.name.substr(reference.name.rfind('/') + 1) + ".esp");
  const std::string card = model_card(package);
  Blob config{std::string(kCardMediaType), sha256_digest(card), card.size(), {}, card, "card"};
  std::vector<Blob> layers = {esp};
  if (!options.readme.empty()) layers.push_back(file_blob(options.readme, kReadmeMediaType, "README.md"));
  if (!options.labels.empty()) layers.push_back(file_blob(options.labels, kLabelsMediaType, "labels.txt"));

  Registry registry(reference.registry, options_);
  PushResult result;
  upload_blob(registry, reference.name, config, options_, result);
  json layer_list = json::array();
  for (const Blob& blob : layers) {
    upload_blob(registry, reference.name, blob, options_, result);
    layer_list.push_back({{"mediaType", blob.media_type},
                          {"digest", blob.digest},
                          {"size", blob.size},
                          {"annotations", {{"org.opencontainers.image.title", blob.title}}}});
  }
  const json card_json = json::parse(card);
  json annotations = {{"org.opencontainers.image.title", reference.name.substr(reference.name.rfind('/') + 1)},
                      {"org.opencontainers.image.version", reference.tag}};
  if (card_json.value("description", "") != "") annotations["org.opencontainers.image.description"] = card_json["description"];
  if (card_json.value("created", "") != "") annotations["org.opencontainers.image.created"] = card_json["created"];
  const json manifest = {{"schemaVersion", 2},
                         {"mediaType", kManifestMediaType},
                         {"artifactType", kArtifactType},
                         {"config", {{"mediaType", kCardMediaType}, {"digest", config.digest}, {"size", config.size}}},
                         {"layers", layer_list},
                         {"annotations", annotations}};
  const std::string bytes = manifest.dump();
  const std::string digest = sha256_digest(bytes);
  auto put = registry.call([&] { return registry.http().Put("/v2/" + reference.name + "/manifests/" + reference.tag, bytes,
                                 std::string(kManifestMediaType)); });
  if (!put || put->status != 201) throw registry.error("pushing the manifest of " + reference.str(), put);
  const std::string answered = put->get_header_value("Docker-Content-Digest");
  if (!answered.empty() && answered != digest)
    throw IntegrityError("registry " + reference.registry + " stored the manifest as " + answered + ", not " + digest);
  result.manifest_digest = digest;
  if (!options.sign_key.empty()) {
    // The signature travels as its own artifact whose subject is the release, tagged sha256-HEX.sig so
    // registries without the referrers API (Docker's 2.8) hold it too.
    const std::string document = detail::sign_release(options.sign_key, reference.name, reference.tag, digest).dump();
    Blob signature{std::string(kSignatureMediaType), sha256_digest(document), document.size(), {}, document, "signature"};
    Blob empty{std::string(kEmptyMediaType), sha256_digest("{}"), 2, {}, "{}", "empty"};
    upload_blob(registry, reference.name, empty, options_, result);
    upload_blob(registry, reference.name, signature, options_, result);
    const json signature_manifest = {
        {"schemaVersion", 2},
        {"mediaType", kManifestMediaType},
        {"artifactType", kSignatureArtifactType},
        {"config", {{"mediaType", kEmptyMediaType}, {"digest", empty.digest}, {"size", 2}}},
        {"layers", json::array({{{"mediaType", kSignatureMediaType}, {"digest", signature.digest}, {"size", signature.size}}})},
        {"subject", {{"mediaType", kManifestMediaType}, {"digest", digest}, {"size", bytes.size()}}}};
    auto signed_put = registry.call([&] { return registry.http().Put("/v2/" + reference.name + "/manifests/sha256-" + detail::digest_hex(digest) + ".sig",
                                          signature_manifest.dump(), std::string(kManifestMediaType)); });
    if (!signed_put || signed_put->status != 201) throw registry.error("pushing the signature of " + reference.str(), signed_put);
    result.signed_by = json::parse(document)["key_id"].get<std::string>();
  }
  if (!options.release_key.empty())
    publish_target(registry, Cache{options_.cache}, reference, digest, bytes.size(), options, options_);
  return result;
}

namespace {

enum class FastGet { done, unsupported, connection_failed };

// Where a blob's body goes: `response` sees the status first; bytes are then received in place
// (`space`, then `commit` of what arrived) or, for the few that came with the headers, copied (`data`).
struct BodyTarget {
  std::function<bool(int, const std::string&)> response;
  std::function<bool(const char*, std::size_t)> data;
  std::function<std::span<char>()> space;
  std::function<bool(std::size_t)> commit;
};

// A plain-HTTP GET that receives the body straight into the target's buffers (httplib reads 4 KiB at a
// time and copies). Answers `unsupported` before any byte reaches the target when the server wants
// something else (redirect, chunked encoding, no Content-Length).
FastGet fast_get(const std::string& registry, const std::string& path, std::uint64_t offset,
                 const std::string& authorization, int timeout_seconds, const BodyTarget& target) {
  if (registry.empty() || registry.front() == '[') return FastGet::unsupported;
  const std::size_t colon = registry.rfind(':');
  const std::string host = registry.substr(0, colon);
  const std::string port = colon == std::string::npos ? "80" : registry.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) return FastGet::unsupported;
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd >= 0 && ::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) return FastGet::connection_failed;
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  timeval timeout{timeout_seconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + registry +
                        "\r\nUser-Agent: espresso\r\nAccept: */*\r\nConnection: close\r\n";
  if (offset > 0) request += "Range: bytes=" + std::to_string(offset) + "-\r\n";
  if (!authorization.empty()) request += "Authorization: " + authorization + "\r\n";
  request += "\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size()))
    return FastGet::connection_failed;
  // The head is read in small pieces so that little of the body needs copying.
  std::vector<char> buffer(16 << 10);
  std::string head;
  std::size_t end = std::string::npos;
  while (end == std::string::npos) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0) return FastGet::connection_failed;
    head.append(buffer.data(), static_cast<std::size_t>(n));
    end = head.find("\r\n\r\n");
    if (end == std::string::npos && head.size() > 65536) return FastGet::unsupported;
  }
  const std::string body_start = head.substr(end + 4);
  head.resize(end);
  std::string lower = head;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const auto field = [&](const std::string& name) -> std::optional<std::string> {
    const std::size_t at = lower.find("\r\n" + name + ":");
    if (at == std::string::npos) return std::nullopt;
    std::size_t from = at + name.size() + 3;
    while (from < head.size() && head[from] == ' ') ++from;
    return head.substr(from, head.find("\r\n", from) - from);
  };
  if (head.rfind("HTTP/1.", 0) != 0 || head.size() < 12) return FastGet::unsupported;
  const int status = std::atoi(head.c_str() + 9);
  const auto length_text = field("content-length");
  if (field("transfer-encoding") || !length_text || (status >= 300 && status < 400) || status == 401)
    return FastGet::unsupported;
  std::uint64_t remaining = 0;
  try {
    remaining = std::stoull(*length_text);
  } catch (const std::exception&) {
    return FastGet::unsupported;
  }
  if (!target.response(status, field("content-range").value_or(""))) return FastGet::done;
  const std::size_t first = static_cast<std::size_t>(std::min<std::uint64_t>(body_start.size(), remaining));
  if (first > 0 && !target.data(body_start.data(), first)) return FastGet::done;
  remaining -= first;
  while (remaining > 0) {
    const std::span<char> room = target.space();
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(room.size(), remaining));
    const ssize_t n = ::recv(fd, room.data(), want, 0);
    if (n <= 0) return FastGet::connection_failed;
    remaining -= static_cast<std::uint64_t>(n);
    if (!target.commit(static_cast<std::size_t>(n))) return FastGet::done;
  }
  return FastGet::done;
}

// Downloads one blob into the cache, resuming a partial download; returns bytes transferred.
// `durable` (a server's store, not a cache): the blob is fsynced before its rename and the folder after.
std::uint64_t fetch_blob(Registry& registry, const Cache& cache, const std::string& repo, const Descriptor& d,
                         const ClientOptions& options, bool durable = false) {
  const fs::path partial = cache.partial(d.digest);
  const fs::path final_path = cache.blob(d.digest);
  int fd = ::open(partial.c_str(), O_RDWR | O_CREAT, 0644);
  if (fd < 0) throw FileError(partial.string() + ": cannot be created");
  fs::path writing = partial;
  // The lock makes a blob download once when many processes want it; without it (no flock on this file
  // system) each process writes its own file and the digest check still guards the result.
  if (::flock(fd, LOCK_EX) != 0) {
    ::close(fd);
    writing = partial.string() + "." + detail::unique_suffix();
    fd = ::open(writing.c_str(), O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd < 0) throw FileError(writing.string() + ": cannot be created");
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  bool tampered = false;
  if (cached_and_valid(cache, d.digest, d.size, tampered)) {
    std::error_code ec;
    fs::remove(writing, ec);
    return 0;
  }
  struct stat info {};
  ::fstat(fd, &info);
  std::uint64_t offset = static_cast<std::uint64_t>(info.st_size);
  if (offset > d.size) {
    if (::ftruncate(fd, 0) != 0) throw FileError(writing.string() + ": cannot be truncated");
    offset = 0;
  }
  // Reserve the disk space up front (the file's size stays, so a resume still starts at its end): a
  // full disk is reported before the download rather than after most of it.
  if (d.size > offset && ::fallocate(fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                                     static_cast<off_t>(d.size - offset)) != 0 && errno == ENOSPC)
    throw FileError(writing.string() + ": no room for the " + std::to_string(d.size - offset) +
                    " bytes of blob " + d.digest + " (disk full)");
  detail::Sha256 hash;
  detail::hash_prefix(fd, offset, hash, writing.string());
  detail::Sha256 restart_hash;
  bool restarted = false;
  std::uint64_t received = 0;
  std::string failure;
  Progress progress{"pull " + d.digest.substr(0, 19), offset, d.size};
  std::uint64_t reported = offset;
  httplib::Headers headers;
  if (offset > 0 && offset < d.size) headers.emplace("Range", "bytes=" + std::to_string(offset) + "-");
  std::uint64_t accepted = offset;  // received so far
  detail::HashingWriter writer(fd, offset, hash, d.size - std::min(offset, d.size));
  const auto accept = [&](std::size_t length) {
    if (accepted + length > d.size) {
      failure = "sent more bytes than the manifest's size " + std::to_string(d.size);
      return false;
    }
    accepted += length;
    received += length;
    progress.done += length;
    if (options.progress && progress.done - reported >= (4 << 20)) {
      reported = progress.done;
      options.progress(progress);
    }
    return true;
  };
  const auto write_failed = [&]() {
    failure = "cannot write to the cache (disk full?)";
    return false;
  };
  BodyTarget target;
  target.response = [&](int status, const std::string& content_range) {
    if (status == 206) {
      if (content_range.rfind("bytes " + std::to_string(offset) + "-", 0) != 0) {
        failure = "answered a Range request for byte " + std::to_string(offset) + " with '" + content_range + "'";
        return false;
      }
      return true;
    }
    if (status != 200) {
      failure = "answered HTTP " + std::to_string(status) + " for the blob";
      return false;
    }
    if (offset > 0) {
      // The server ignored Range and sends the whole blob: start over from byte 0.
      writer.restart(restart_hash);
      restarted = true;
      accepted = 0;
      progress.done = 0;
      if (::ftruncate(fd, 0) != 0) return write_failed();
    }
    return true;
  };
  target.data = [&](const char* data, std::size_t length) {
    return accept(length) && (writer.append(data, length) || write_failed());
  };
  target.space = [&]() { return writer.space(); };
  target.commit = [&](std::size_t length) { return accept(length) && (writer.commit(length) || write_failed()); };
  const std::string path = "/v2/" + repo + "/blobs/" + d.digest;
  // Plain HTTP receives in place with large socket reads; HTTPS, redirects and chunked answers go
  // through httplib.
  const FastGet fast = registry.plain() ? fast_get(registry.name(), path, offset > 0 && offset < d.size ? offset : 0,
                                                   registry.authorization(), registry.timeout(), target)
                                        : FastGet::unsupported;
  httplib::Result result{nullptr, httplib::Error::Success};
  if (fast == FastGet::unsupported) {
    result = registry.http().Get(
        path, headers,
        [&](const httplib::Response& response) {
          return target.response(response.status, response.get_header_value("Content-Range"));
        },
        target.data);
  } else if (fast == FastGet::connection_failed && failure.empty()) {
    failure = "the connection failed or broke off (what arrived is kept; run again to resume)";
  }
  if (!writer.finish() && failure.empty()) failure = "cannot write to the cache (disk full?)";
  const std::uint64_t position = writer.position();
  if (!failure.empty()) {
    if (failure.rfind("sent more", 0) == 0) {
      if (::ftruncate(fd, 0) != 0) {}
      throw IntegrityError("registry " + registry.name() + ": blob " + d.digest + ": " + failure);
    }
    throw StoreError("registry " + registry.name() + ": blob " + d.digest + ": " + failure);
  }
  if (fast == FastGet::unsupported && (!result || (result->status != 200 && result->status != 206))) {
    if (::fsync(fd) != 0) {}
    throw registry.error("downloading blob " + d.digest + " (what arrived is kept; run again to resume)", result);
  }
  if (options.progress) options.progress(progress);
  if (position != d.size) {
    ::fsync(fd);
    throw StoreError("registry " + registry.name() + ": blob " + d.digest + " ended after " + std::to_string(position) +
                     " of " + std::to_string(d.size) + " bytes (kept; run again to resume)");
  }
  const std::string actual = (restarted ? restart_hash : hash).finish();
  if (actual != d.digest) {
    if (::ftruncate(fd, 0) != 0) {}
    throw IntegrityError("registry " + registry.name() + ": blob " + d.digest + " arrived with digest " + actual +
                         " (tampered or corrupt on the server); nothing was cached");
  }
  // No fsync: every use hashes a cached blob again, so one torn by a power cut is found and fetched
  // again; the rename alone keeps partial bytes out of blobs/.
  ::fchmod(fd, 0444);
  if (durable && ::fsync(fd) != 0) throw FileError(writing.string() + ": cannot be synced");
  if (::rename(writing.c_str(), final_path.c_str()) != 0) throw FileError(final_path.string() + ": cannot be renamed into place");
  if (durable) detail::sync_directory(final_path.parent_path());
  return received;
}

// ---- trust metadata on the registry ------------------------------------------------------------------

constexpr std::uint64_t kMaxTrustBytes = 1 << 20;

std::string root_tag(std::int64_t version) { return "trust-root-" + std::to_string(version); }
constexpr const char* kTargetsTag = "trust-targets";

std::int64_t now_seconds() { return static_cast<std::int64_t>(std::time(nullptr)); }

// A trust document stored as an artifact under `tag`; nullopt when the tag does not exist.
std::optional<json> fetch_document(Registry& registry, const std::string& repo, const std::string& tag) {
  const std::string what = repo + ":" + tag;
  auto got = registry.call([&] {
    return registry.http().Get("/v2/" + repo + "/manifests/" + tag, httplib::Headers{{"Accept", std::string(kManifestMediaType)}});
  });
  if (got && got->status == 404) return std::nullopt;
  if (!got || got->status != 200) throw registry.error("getting trust metadata " + what, got);
  const json manifest = json::parse(got->body, nullptr, false);
  if (!manifest.is_object() || !manifest.contains("layers") || !manifest["layers"].is_array() || manifest["layers"].empty())
    throw IntegrityError(what + ": the trust metadata manifest is malformed");
  const Descriptor d = detail::read_descriptor(manifest["layers"][0], what + ": layers[0]");
  if (d.size > kMaxTrustBytes) throw IntegrityError(what + ": trust metadata larger than 1 MiB");
  auto blob = registry.call([&] { return registry.http().Get("/v2/" + repo + "/blobs/" + d.digest); });
  if (!blob || blob->status != 200) throw registry.error("getting trust metadata " + what, blob);
  if (blob->body.size() != d.size || sha256_digest(blob->body) != d.digest)
    throw IntegrityError(what + ": the trust metadata does not match its digest");
  json document = json::parse(blob->body, nullptr, false);
  if (!document.is_object() || !document.contains("signed") || !document["signed"].is_object())
    throw IntegrityError(what + ": the trust metadata is not a signed JSON document");
  return document;
}

void push_document(Registry& registry, const std::string& repo, const std::string& tag, const json& document,
                   const ClientOptions& options) {
  PushResult ignored;
  const std::string bytes = document.dump();
  Blob layer{std::string(kTrustMediaType), sha256_digest(bytes), bytes.size(), {}, bytes, tag};
  Blob empty{std::string(kEmptyMediaType), sha256_digest("{}"), 2, {}, "{}", "empty"};
  upload_blob(registry, repo, empty, options, ignored);
  upload_blob(registry, repo, layer, options, ignored);
  const json manifest = {{"schemaVersion", 2},
                         {"mediaType", kManifestMediaType},
                         {"artifactType", kTrustArtifactType},
                         {"config", {{"mediaType", kEmptyMediaType}, {"digest", empty.digest}, {"size", 2}}},
                         {"layers", json::array({{{"mediaType", kTrustMediaType}, {"digest", layer.digest}, {"size", layer.size}}})}};
  auto put = registry.call([&] {
    return registry.http().Put("/v2/" + repo + "/manifests/" + tag, manifest.dump(), std::string(kManifestMediaType));
  });
  if (!put || put->status != 201) throw registry.error("pushing trust metadata " + repo + ":" + tag, put);
}

std::string describe_time(std::int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm utc{};
  ::gmtime_r(&t, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

// The newest root the chain of root versions leads to from what this cache trusts (or, the first
// time, from version 1 signed by one of `pinned`; with `trust_first` and nothing pinned, version 1 is
// taken as it is: a publisher's own first look). Each step must be signed by the old and the new root keys.
json update_root(Registry& registry, const Cache& cache, const std::string& name, const std::vector<fs::path>& pinned,
                 bool trust_first) {
  const fs::path state = cache.trust(registry.name(), name);
  const std::string what = registry.name() + "/" + name;
  json trusted;
  std::error_code ec;
  if (fs::exists(state / "root.json", ec)) {
    trusted = json::parse(detail::read_file(state / "root.json"), nullptr, false);
    detail::check_root_shape(trusted.value("signed", json()), name, (state / "root.json").string());
  } else {
    const auto first = fetch_document(registry, name, root_tag(1));
    if (!first) throw IntegrityError(what + ": the repository has no trust metadata (espresso trust init)");
    detail::check_root_shape((*first)["signed"], name, what + " root v1");
    if ((*first)["signed"]["version"] != 1) throw IntegrityError(what + ": " + root_tag(1) + " is not version 1");
    detail::check_signatures(*first, (*first)["signed"], "root", what + " root v1");
    if (!pinned.empty()) {
      std::set<std::string> ids = (*first)["signed"]["roles"]["root"]["keyids"].get<std::set<std::string>>();
      bool found = false;
      for (const fs::path& key : pinned) found = found || ids.count(detail::read_public_key(key).id) > 0;
      if (!found) throw IntegrityError(what + ": root v1 is not signed by a root key you trust (--trust-root)");
    } else if (!trust_first) {
      throw IntegrityError(what + ": no trusted root key for this repository (--trust-root)");
    }
    trusted = *first;
  }
  const std::int64_t start = trusted["signed"]["version"].get<std::int64_t>();
  for (std::int64_t version = start + 1;; ++version) {
    const auto next = fetch_document(registry, name, root_tag(version));
    if (!next) break;
    const std::string step = what + " root v" + std::to_string(version);
    detail::check_root_shape((*next)["signed"], name, step);
    if ((*next)["signed"]["version"] != version) throw IntegrityError(step + ": carries another version number");
    detail::check_signatures(*next, trusted["signed"], "root", step + " (by the previous root's keys)");
    detail::check_signatures(*next, (*next)["signed"], "root", step + " (by its own root keys)");
    trusted = *next;
  }
  if (trusted["signed"]["expires"].get<std::int64_t>() <= now_seconds())
    throw IntegrityError(what + ": root metadata v" + std::to_string(trusted["signed"]["version"].get<std::int64_t>()) +
                         " expired at " + describe_time(trusted["signed"]["expires"]) + " (freeze refused)");
  detail::write_file_atomically(state / "root.json", trusted.dump());
  return trusted["signed"];
}

// The repository's current targets, verified against `root` and never older than what was seen.
json update_targets(Registry& registry, const Cache& cache, const std::string& name, const json& root) {
  const fs::path state = cache.trust(registry.name(), name);
  const std::string what = registry.name() + "/" + name + " targets";
  const auto document = fetch_document(registry, name, kTargetsTag);
  if (!document) throw IntegrityError(what + ": the repository has root metadata but no targets");
  const json& s = (*document)["signed"];
  detail::check_targets_shape(s, name, what);
  detail::check_signatures(*document, root, "targets", what);
  std::error_code ec;
  if (fs::exists(state / "targets.json", ec)) {
    const json seen = json::parse(detail::read_file(state / "targets.json"), nullptr, false);
    const std::int64_t old_version = seen.is_object() ? seen.value("version", std::int64_t{0}) : 0;
    if (s["version"].get<std::int64_t>() < old_version)
      throw IntegrityError(what + ": version " + std::to_string(s["version"].get<std::int64_t>()) + " is older than version " +
                           std::to_string(old_version) + " seen before (rollback refused)");
    if (s["version"].get<std::int64_t>() == old_version && s != seen)
      throw IntegrityError(what + ": version " + std::to_string(old_version) + " differs from the one seen before");
  }
  if (s["expires"].get<std::int64_t>() <= now_seconds())
    throw IntegrityError(what + ": version " + std::to_string(s["version"].get<std::int64_t>()) + " expired at " +
                         describe_time(s["expires"]) + " (freeze refused)");
  detail::write_file_atomically(state / "targets.json", s.dump());
  return s;
}

// Checks that the targets vouch for this manifest under the reference's tag (or, by digest, any tag).
void check_target(const json& targets, const Reference& reference, const std::string& digest, std::uint64_t size) {
  const std::string what = reference.str();
  if (!reference.tag.empty()) {
    if (!targets["targets"].contains(reference.tag))
      throw IntegrityError(what + ": the signed targets (version " + std::to_string(targets["version"].get<std::int64_t>()) +
                           ") list no release '" + reference.tag + "'");
    const json& t = targets["targets"][reference.tag];
    if (t["digest"] != digest || t["size"] != size)
      throw IntegrityError(what + ": the registry gives manifest " + digest + " but the signed targets say " +
                           t["digest"].get<std::string>() + " (mix-and-match refused)");
    return;
  }
  for (const auto& [tag, t] : targets["targets"].items()) {
    if (t["digest"] == digest) return;
  }
  throw IntegrityError(what + ": no release in the signed targets has digest " + digest);
}

std::vector<detail::PublicKey> public_keys(const std::vector<fs::path>& files) {
  std::vector<detail::PublicKey> keys;
  for (const fs::path& f : files) keys.push_back(detail::read_public_key(f));
  if (keys.empty()) throw StoreError("trust: at least one release key (public key file) is needed");
  return keys;
}

}  // namespace

void Client::trust_init(const Reference& repository, const fs::path& root_key, const std::vector<fs::path>& release_keys,
                        std::chrono::seconds lifetime) {
  if (options_.offline) throw StoreError("trust init: ESPRESSO_OFFLINE is set");
  Registry registry(repository.registry, options_);
  if (fetch_document(registry, repository.name, root_tag(1)))
    throw StoreError("trust init: " + repository.registry + "/" + repository.name + " already has root metadata (use trust rotate)");
  const json root = detail::make_root(repository.name, 1, now_seconds() + lifetime.count(),
                                      {detail::public_key_of_secret(root_key)}, public_keys(release_keys));
  push_document(registry, repository.name, root_tag(1), detail::sign_metadata(root, {root_key}), options_);
}

std::int64_t Client::trust_rotate(const Reference& repository, const fs::path& old_root_key, const fs::path& new_root_key,
                                  const std::vector<fs::path>& release_keys, std::chrono::seconds lifetime) {
  if (options_.offline) throw StoreError("trust rotate: ESPRESSO_OFFLINE is set");
  Registry registry(repository.registry, options_);
  const Cache cache{options_.cache};
  const json current = update_root(registry, cache, repository.name, {}, true);
  const std::int64_t version = current["version"].get<std::int64_t>() + 1;
  const json root = detail::make_root(repository.name, version, now_seconds() + lifetime.count(),
                                      {detail::public_key_of_secret(new_root_key)}, public_keys(release_keys));
  const json document = detail::sign_metadata(root, {old_root_key, new_root_key});
  // Refuse to publish what clients would refuse: the old key must be the current root key.
  detail::check_signatures(document, current, "root", "trust rotate: the old root key");
  push_document(registry, repository.name, root_tag(version), document, options_);
  return version;
}

namespace {

// Adds a pushed release to the repository's targets, signed by the release key.
void publish_target(Registry& registry, const Cache& cache, const Reference& reference, const std::string& digest,
                    std::uint64_t size, const PushOptions& options, const ClientOptions& client_options) {
  const json root = update_root(registry, cache, reference.name, client_options.trust_roots, true);
  const detail::PublicKey release = detail::public_key_of_secret(options.release_key);
  const auto ids = root["roles"]["targets"]["keyids"].get<std::set<std::string>>();
  if (!ids.count(release.id))
    throw StoreError("push: release key " + release.id + " is not a targets key of " + reference.registry + "/" +
                     reference.name + "'s root metadata (espresso trust rotate to change release keys)");
  json targets = {{"_type", "targets"}, {"spec", detail::kTrustSpec}, {"repository", reference.name},
                  {"version", 1},       {"targets", json::object()}};
  if (const auto existing = fetch_document(registry, reference.name, kTargetsTag)) {
    // Re-signing what the registry holds is safe only if a release key signed it: one of the current
    // root's, or, right after a rotation, one of an earlier root version's.
    const std::string what = reference.registry + "/" + reference.name + " targets";
    detail::check_targets_shape((*existing)["signed"], reference.name, what);
    try {
      detail::check_signatures(*existing, root, "targets", what);
    } catch (const IntegrityError&) {
      bool verified = false;
      for (std::int64_t v = root["version"].get<std::int64_t>() - 1; v >= 1 && !verified; --v) {
        const auto earlier = fetch_document(registry, reference.name, root_tag(v));
        if (!earlier) continue;
        try {
          detail::check_signatures(*existing, (*earlier)["signed"], "targets", what);
          verified = true;
        } catch (const IntegrityError&) {
        }
      }
      if (!verified) throw;
    }
    targets = (*existing)["signed"];
    std::error_code ec;
    const fs::path seen = cache.trust(registry.name(), reference.name) / "targets.json";
    if (fs::exists(seen, ec) &&
        json::parse(detail::read_file(seen), nullptr, false).value("version", std::int64_t{0}) > targets["version"].get<std::int64_t>())
      throw IntegrityError(what + ": the registry holds an older version than this cache has seen (rollback refused)");
    targets["version"] = targets["version"].get<std::int64_t>() + 1;
  }
  targets["targets"][reference.tag] = {{"digest", digest}, {"size", size}};
  targets["expires"] = now_seconds() + options.release_ttl.count();
  push_document(registry, reference.name, kTargetsTag, detail::sign_metadata(targets, {options.release_key}), client_options);
  detail::write_file_atomically(cache.trust(registry.name(), reference.name) / "targets.json", targets.dump());
}

}  // namespace

namespace {

// Links the package blob under an .esp name (the loader picks the format by extension).
fs::path package_link(const Cache& cache, const std::string& digest) {
  const fs::path link = cache.package(digest);
  std::error_code ec;
  if (fs::exists(link, ec) && fs::equivalent(link, cache.blob(digest), ec)) return link;
  const fs::path temp = link.string() + ".tmp-" + detail::unique_suffix();
  if (::link(cache.blob(digest).c_str(), temp.c_str()) != 0) fs::copy_file(cache.blob(digest), temp, ec);
  if (::rename(temp.c_str(), link.c_str()) != 0) throw FileError(link.string() + ": cannot be created");
  return link;
}

}  // namespace

std::string Client::resolve_range(const Reference& reference) {
  if (reference.range.empty()) return reference.tag;
  const detail::VersionRange range(reference.range);
  const Cache cache{options_.cache};
  std::vector<std::string> tags;
  if (options_.offline) {
    // The tags pulled before into this cache.
    const fs::path folder = cache.root / "refs" / reference.registry / reference.name;
    std::error_code ec;
    if (fs::is_directory(folder, ec)) {
      for (const auto& entry : fs::directory_iterator(folder)) {
        const std::string name = entry.path().filename().string();
        if (entry.is_regular_file() && valid_tag(name)) tags.push_back(name);
      }
    }
  } else {
    Registry registry(reference.registry, options_);
    std::string path = "/v2/" + reference.name + "/tags/list?n=1000";
    for (int page = 0; page < 100 && !path.empty(); ++page) {
      auto got = registry.call([&] { return registry.http().Get(path); });
      if (!got || got->status != 200) throw registry.error("listing the tags of " + reference.name, got);
      const json body = json::parse(got->body, nullptr, false);
      if (!body.is_object() || !body.contains("tags"))
        throw StoreError("registry " + reference.registry + ": the tag list of " + reference.name + " is not JSON with 'tags'");
      if (body["tags"].is_array()) {
        for (const json& t : body["tags"]) {
          if (t.is_string() && valid_tag(t.get<std::string>())) tags.push_back(t.get<std::string>());
        }
      }
      // Link: </v2/NAME/tags/list?n=..&last=..>; rel="next"
      const std::string link = got->get_header_value("Link");
      const std::size_t open = link.find('<');
      const std::size_t close = link.find('>');
      path.clear();
      if (open != std::string::npos && close != std::string::npos && close > open &&
          link.find("rel=\"next\"") != std::string::npos) {
        const std::string next = location_path(link.substr(open + 1, close - open - 1));
        if (next.rfind("/v2/" + reference.name + "/tags/list", 0) == 0) path = next;
      }
    }
  }
  if (const auto best = range.best(tags)) return *best;
  std::sort(tags.begin(), tags.end());
  std::string seen;
  for (std::size_t i = 0; i < tags.size() && i < 20; ++i) seen += (i ? ", " : "") + tags[i];
  if (tags.size() > 20) seen += ", ...";
  throw StoreError(reference.str() + ": no " + (options_.offline ? "cached " : "") + "tag matches the range '" +
                   reference.range + "' (tags: " + (seen.empty() ? "none" : seen) + ")");
}

PullResult Client::pull(const Reference& reference) {
  if (!reference.range.empty()) {
    Reference resolved = reference;
    resolved.tag = resolve_range(reference);
    resolved.range.clear();
    return pull(resolved);
  }
  const Cache cache{options_.cache};
  cache.create();
  PullResult result;
  const std::string what = reference.str();
  std::string manifest_bytes;
  std::string digest = reference.digest;
  if (options_.offline) {
    if (digest.empty()) {
      std::error_code ec;
      if (!fs::exists(cache.ref(reference), ec))
        throw StoreError(what + ": not in the cache, and ESPRESSO_OFFLINE forbids downloading it");
      digest = detail::read_file(cache.ref(reference));
      if (!valid_digest(digest)) throw IntegrityError(cache.ref(reference).string() + ": not a digest");
    }
    bool tampered = false;
    std::error_code ec;
    if (!fs::exists(cache.blob(digest), ec) || !cached_and_valid(cache, digest, fs::file_size(cache.blob(digest)), tampered)) {
      throw (tampered ? IntegrityError(what + ": the cached manifest " + digest + " does not match its digest (removed)")
                      : StoreError(what + ": manifest " + digest + " is not in the cache (offline)"));
    }
    manifest_bytes = detail::read_file(cache.blob(digest));
    const fs::path trust = cache.trust(reference.registry, reference.name);
    if (fs::exists(trust / "targets.json", ec)) {
      // Offline, the metadata trusted last time still has to be current and vouch for the release.
      const json root = json::parse(detail::read_file(trust / "root.json"), nullptr, false);
      const json targets = json::parse(detail::read_file(trust / "targets.json"), nullptr, false);
      detail::check_root_shape(root.is_object() ? root.value("signed", json()) : json(), reference.name, trust.string());
      detail::check_targets_shape(targets, reference.name, trust.string());
      for (const json* s : {&root["signed"], &targets}) {
        if ((*s)["expires"].get<std::int64_t>() <= now_seconds())
          throw IntegrityError(what + ": the cached trust metadata expired at " + describe_time((*s)["expires"]) +
                               " (freeze refused; pull online to refresh it)");
      }
      check_target(targets, reference, digest, manifest_bytes.size());
      result.trust_version = targets["version"].get<std::int64_t>();
    }
  } else {
    Registry registry(reference.registry, options_);
    const std::string accept = std::string(kManifestMediaType) + ", " + std::string(kIndexMediaType);
    auto got = registry.call([&] { return registry.http().Get("/v2/" + reference.name + "/manifests/" + (digest.empty() ? reference.tag : digest),
                                   httplib::Headers{{"Accept", accept}}); });
    if (!got || got->status != 200) throw registry.error("getting the manifest of " + what, got);
    if (got->body.size() > kMaxManifestBytes) throw StoreError(what + ": the manifest is larger than 4 MiB");
    manifest_bytes = got->body;
    const std::string actual = sha256_digest(manifest_bytes);
    const std::string claimed = got->get_header_value("Docker-Content-Digest");
    if (!digest.empty() && actual != digest)
      throw IntegrityError(what + ": the registry's manifest hashes to " + actual + ", not " + digest);
    if (!claimed.empty() && claimed != actual)
      throw IntegrityError(what + ": the registry says the manifest is " + claimed + " but it hashes to " + actual);
    digest = actual;
    std::error_code trust_ec;
    if (!options_.trust_roots.empty() || fs::exists(cache.trust(reference.registry, reference.name) / "root.json", trust_ec)) {
      // Before any blob is fetched: the signed targets must vouch for this manifest.
      const json root = update_root(registry, cache, reference.name, options_.trust_roots, false);
      const json targets = update_targets(registry, cache, reference.name, root);
      check_target(targets, reference, digest, manifest_bytes.size());
      result.trust_version = targets["version"].get<std::int64_t>();
    }
    const ModelManifest model = parse_model_manifest(manifest_bytes, what);
    std::vector<Descriptor> blobs = {model.config};
    blobs.insert(blobs.end(), model.layers.begin(), model.layers.end());
    for (const Descriptor& d : blobs) {
      try {
        result.bytes_downloaded += fetch_blob(registry, cache, reference.name, d, options_);
      } catch (const IntegrityError&) {
        // A bad resumed prefix (the partial file was cut back to zero) gets one clean download; a
        // blob that is bad on the server fails again and is reported.
        result.bytes_downloaded += fetch_blob(registry, cache, reference.name, d, options_);
      }
    }
    if (!options_.trusted_keys.empty()) {
      // The release's signature, fetched and checked before the tag is recorded in the cache.
      auto sig = registry.call([&] { return registry.http().Get("/v2/" + reference.name + "/manifests/sha256-" + detail::digest_hex(digest) + ".sig",
                                     httplib::Headers{{"Accept", std::string(kManifestMediaType)}}); });
      if (!sig || sig->status == 404) throw IntegrityError(what + ": the release is not signed, and trusted keys are required");
      if (sig->status != 200) throw registry.error("getting the signature of " + what, sig);
      const json signature_manifest = json::parse(sig->body, nullptr, false);
      if (!signature_manifest.is_object() || !signature_manifest.contains("layers") || !signature_manifest["layers"].is_array() ||
          signature_manifest["layers"].empty())
        throw IntegrityError(what + ": the signature manifest is malformed");
      const Descriptor d = detail::read_descriptor(signature_manifest["layers"][0], what + ": signature layer");
      if (d.size > 65536) throw IntegrityError(what + ": the signature document is larger than 64 KiB");
      auto blob = registry.call([&] { return registry.http().Get("/v2/" + reference.name + "/blobs/" + d.digest); });
      if (!blob || blob->status != 200) throw registry.error("getting the signature of " + what, blob);
      if (sha256_digest(blob->body) != d.digest) throw IntegrityError(what + ": the signature document does not match its digest");
      detail::write_file_atomically(cache.signature(digest), blob->body);
    }
    if (!fs::exists(cache.blob(digest))) detail::write_file_atomically(cache.blob(digest), manifest_bytes);
  }
  if (!options_.trusted_keys.empty()) {
    std::vector<detail::PublicKey> trusted;
    for (const fs::path& key : options_.trusted_keys) trusted.push_back(detail::read_public_key(key));
    std::error_code ec;
    if (!fs::exists(cache.signature(digest), ec))
      throw IntegrityError(what + ": no signature for " + digest + " in the cache, and trusted keys are required");
    const json signature = json::parse(detail::read_file(cache.signature(digest)), nullptr, false);
    result.signed_by = detail::verify_release(signature, trusted, reference.name, reference.tag, digest, what);
  }
  if (!options_.offline && !reference.tag.empty()) detail::write_file_atomically(cache.ref(reference), digest);
  const ModelManifest model = parse_model_manifest(manifest_bytes, what);
  // Offline, every blob is hashed again where it lies, so a cache file changed since it arrived is
  // caught (online, fetch_blob has just hashed each one, cached or downloaded).
  for (const Descriptor& d : {model.config, model.package}) {
    if (!options_.offline) break;
    bool tampered = false;
    if (!cached_and_valid(cache, d.digest, d.size, tampered)) {
      if (tampered && options_.offline)
        throw IntegrityError(what + ": cached blob " + d.digest + " does not match its digest (removed; pull again online)");
      if (options_.offline) throw StoreError(what + ": blob " + d.digest + " is not in the cache (offline)");
      if (tampered) {
        // Fetch it again once: the cache was damaged after the download.
        Registry registry(reference.registry, options_);
        result.bytes_downloaded += fetch_blob(registry, cache, reference.name, d, options_);
      } else {
        throw StoreError(what + ": blob " + d.digest + " is missing from the cache");
      }
    }
  }
  result.manifest_digest = digest;
  result.tag = reference.tag;
  result.card = detail::read_file(cache.blob(model.config.digest));
  result.package = package_link(cache, model.package.digest);
  result.from_cache = result.bytes_downloaded == 0;
  return result;
}

std::string Client::manifest(const Reference& reference) {
  if (options_.offline) throw StoreError("ESPRESSO_OFFLINE is set");
  Registry registry(reference.registry, options_);
  auto got = registry.call([&] { return registry.http().Get("/v2/" + reference.name + "/manifests/" +
                                     (reference.digest.empty() ? reference.tag : reference.digest),
                                 httplib::Headers{{"Accept", std::string(kManifestMediaType)}}); });
  if (!got || got->status != 200) throw registry.error("getting the manifest of " + reference.str(), got);
  return got->body;
}

std::string Client::search(const std::string& registry_name, const SearchQuery& query) {
  if (options_.offline) throw StoreError("search: ESPRESSO_OFFLINE is set; searching needs the network");
  Registry registry(registry_name, options_);
  std::string path = "/api/v1/models?limit=" + std::to_string(query.limit);
  if (!query.text.empty()) path += "&q=" + url_encode(query.text);
  if (!query.task.empty()) path += "&task=" + url_encode(query.task);
  if (!query.license.empty()) path += "&license=" + url_encode(query.license);
  if (!query.sort.empty()) path += "&sort=" + url_encode(query.sort);
  if (!query.cursor.empty()) path += "&cursor=" + url_encode(query.cursor);
  if (query.max_bytes > 0) path += "&max_bytes=" + std::to_string(query.max_bytes);
  if (query.min_accuracy > 0) path += "&min_accuracy=" + std::to_string(query.min_accuracy);
  auto got = registry.call([&] { return registry.http().Get(path); });
  if (!got || got->status != 200) throw registry.error("search", got);
  return got->body;
}

std::string Client::show(const Reference& reference) {
  if (options_.offline) throw StoreError("show: ESPRESSO_OFFLINE is set; this needs the network");
  Registry registry(reference.registry, options_);
  auto got = registry.call([&] { return registry.http().Get("/api/v1/models/" + reference.name); });
  if (!got || got->status != 200) throw registry.error("show " + reference.name, got);
  return got->body;
}

std::vector<CacheEntry> Client::cache_list() const {
  const Cache cache{options_.cache};
  std::vector<CacheEntry> entries;
  const fs::path refs = cache.root / "refs";
  std::error_code ec;
  if (!fs::is_directory(refs, ec)) return entries;
  for (const auto& entry : fs::recursive_directory_iterator(refs)) {
    if (!entry.is_regular_file() || entry.path().filename().string().rfind(".tmp-", 0) == 0) continue;
    const fs::path relative = fs::relative(entry.path(), refs);
    CacheEntry item;
    item.reference = relative.parent_path().string() + ":" + relative.filename().string();
    item.manifest_digest = detail::read_file(entry.path());
    if (valid_digest(item.manifest_digest) && fs::exists(cache.blob(item.manifest_digest))) {
      try {
        const ModelManifest m = parse_model_manifest(detail::read_file(cache.blob(item.manifest_digest)), item.reference);
        for (const Descriptor& d : m.layers) item.bytes += fs::exists(cache.blob(d.digest)) ? d.size : 0;
        item.bytes += fs::exists(cache.blob(m.config.digest)) ? m.config.size : 0;
      } catch (const StoreError&) {
      }
    }
    entries.push_back(item);
  }
  std::sort(entries.begin(), entries.end(), [](const CacheEntry& a, const CacheEntry& b) { return a.reference < b.reference; });
  return entries;
}

CacheReport Client::cache_verify(bool remove_bad) const {
  const Cache cache{options_.cache};
  CacheReport report;
  const fs::path blobs = cache.root / "blobs" / "sha256";
  std::error_code ec;
  if (!fs::is_directory(blobs, ec)) return report;
  for (const auto& entry : fs::directory_iterator(blobs)) {
    if (!entry.is_regular_file()) continue;
    ++report.checked;
    report.bytes += entry.file_size();
    const std::string digest = "sha256:" + entry.path().filename().string();
    if (!valid_digest(digest) || sha256_file_digest(entry.path()) != digest) {
      report.bad.push_back(digest);
      if (remove_bad) fs::remove(entry.path(), ec);
    }
  }
  return report;
}

std::uint64_t Client::cache_prune() const {
  const Cache cache{options_.cache};
  std::uint64_t freed = 0;
  std::error_code ec;
  std::set<std::string> keep;
  for (const CacheEntry& entry : cache_list()) {
    if (!valid_digest(entry.manifest_digest)) continue;
    keep.insert(detail::digest_hex(entry.manifest_digest));
    try {
      const ModelManifest m = parse_model_manifest(detail::read_file(cache.blob(entry.manifest_digest)), entry.reference);
      keep.insert(detail::digest_hex(m.config.digest));
      for (const Descriptor& d : m.layers) keep.insert(detail::digest_hex(d.digest));
    } catch (const Error&) {
    }
  }
  const auto remove = [&](const fs::path& path) {
    const auto size = fs::file_size(path, ec);
    if (fs::remove(path, ec)) freed += ec ? 0 : size;
  };
  for (const char* folder : {"partial/sha256", "blobs/sha256", "packages"}) {
    const fs::path dir = cache.root / folder;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> doomed;
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      const std::string hex = name.substr(0, 64);
      const bool partial = std::string(folder).rfind("partial", 0) == 0;
      if (partial || name.find(".tmp-") != std::string::npos || !keep.count(hex)) doomed.push_back(entry.path());
    }
    for (const fs::path& path : doomed) remove(path);
  }
  return freed;
}

}  // namespace espresso::store

// ---- the upstream of a pull-through server (store/upstream.h) ----------------------------------------

namespace espresso::store::detail {

namespace {

// What our server answers for an upstream request that failed: 404 when the upstream says it has no
// such thing, 504 when it did not answer in time, 502 otherwise.
UpstreamError upstream_failure(const std::string& url, const std::string& what, const httplib::Result& result,
                               const std::string& unknown_code) {
  if (!result) {
    const httplib::Error e = result.error();
    const bool timeout = e == httplib::Error::ConnectionTimeout || e == httplib::Error::Read;
    return UpstreamError(timeout ? 504 : 502, timeout ? "UPSTREAM_TIMEOUT" : "UPSTREAM_UNREACHABLE",
                         "upstream " + url + ": " + what + ": " +
                             (timeout ? "no answer in time (" : "cannot be reached (") + httplib::to_string(e) + " error)");
  }
  if (result->status == 404) return UpstreamError(404, unknown_code, "upstream " + url + " has no " + what);
  return UpstreamError(502, "UPSTREAM_ERROR", "upstream " + url + ": " + what + ": " + describe(result));
}

// Runs `body`; errors of the client code (a token service that refuses, a protocol violation) become
// 502 answers that name the upstream.
template <typename F>
auto guarded(const std::string& url, const std::string& what, F&& body) {
  try {
    return body();
  } catch (const UpstreamError&) {
    throw;
  } catch (const StoreError& e) {
    throw UpstreamError(502, "UPSTREAM_ERROR", "upstream " + url + ": " + what + ": " + e.what());
  }
}

}  // namespace

Upstream::Upstream(const std::string& url, const fs::path& credentials, std::chrono::seconds timeout) : url_(url) {
  options_.credentials = credentials;
  options_.timeout = timeout;
  options_.ca_file = client_options_from_env().ca_file;
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0) {
    options_.transport = ClientOptions::Transport::plain;
    rest = rest.substr(7);
  } else if (rest.rfind("https://", 0) == 0) {
    options_.transport = ClientOptions::Transport::tls;
    rest = rest.substr(8);
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  bool clean = !rest.empty() && rest.size() < 256;
  for (char c : rest)
    clean = clean && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == ':' || c == '-' || c == '[' || c == ']');
  if (!clean)
    throw StoreError("--upstream '" + url + "': expected http://HOST[:PORT], https://HOST[:PORT] or HOST:PORT (no path)");
  registry_ = rest;
}

UpstreamManifest Upstream::manifest(const std::string& repo, const std::string& reference, std::size_t max_bytes) const {
  const std::string what = "manifest " + repo + ":" + reference;
  return guarded(url_, what, [&] {
    Registry registry(registry_, options_);
    const std::string accept = std::string(kManifestMediaType) + ", " + std::string(kIndexMediaType) +
                               ", application/vnd.docker.distribution.manifest.v2+json, "
                               "application/vnd.docker.distribution.manifest.list.v2+json";
    auto got = registry.call([&] {
      return registry.http().Get("/v2/" + repo + "/manifests/" + reference, httplib::Headers{{"Accept", accept}});
    });
    if (!got || got->status != 200) throw upstream_failure(url_, what, got, "MANIFEST_UNKNOWN");
    if (got->body.size() > max_bytes)
      throw UpstreamError(502, "SIZE_INVALID", "upstream " + url_ + ": " + what + " is larger than " +
                                                   std::to_string(max_bytes) + " bytes");
    UpstreamManifest m;
    m.bytes = got->body;
    m.digest = sha256_digest(m.bytes);
    const std::string claimed = got->get_header_value("Docker-Content-Digest");
    if ((valid_digest(reference) && m.digest != reference) || (!claimed.empty() && claimed != m.digest))
      throw UpstreamError(502, "DIGEST_INVALID", "upstream " + url_ + ": " + what + " hashes to " + m.digest + ", not " +
                                                     (valid_digest(reference) ? reference : claimed) + "; refused");
    m.media_type = got->get_header_value("Content-Type");
    m.media_type = m.media_type.substr(0, m.media_type.find(';'));
    return m;
  });
}

UpstreamTags Upstream::tags(const std::string& repo, const std::string& query) const {
  const std::string what = "tags of " + repo;
  return guarded(url_, what, [&] {
    Registry registry(registry_, options_);
    const std::string path = "/v2/" + repo + "/tags/list" + (query.empty() ? "" : "?" + query);
    auto got = registry.call([&] { return registry.http().Get(path); });
    if (!got || got->status != 200) throw upstream_failure(url_, what, got, "NAME_UNKNOWN");
    const json body = json::parse(got->body, nullptr, false);
    if (!body.is_object() || !body.contains("tags") || !(body["tags"].is_array() || body["tags"].is_null()))
      throw UpstreamError(502, "UPSTREAM_ERROR", "upstream " + url_ + ": " + what + ": not a tag list");
    return UpstreamTags{got->body, got->get_header_value("Link")};
  });
}

std::uint64_t Upstream::fetch_blob(const std::string& repo, const std::string& digest, std::uint64_t size,
                                   const fs::path& root) const {
  const std::string what = "blob " + digest + " of " + repo;
  return guarded(url_, what, [&] {
    Registry registry(registry_, options_);
    // HEAD first: a missing blob is a 404 (not a failed download), and the size bounds the download.
    auto head = registry.call([&] { return registry.http().Head("/v2/" + repo + "/blobs/" + digest); });
    if (!head || head->status != 200) throw upstream_failure(url_, what, head, "BLOB_UNKNOWN");
    std::uint64_t announced = 0;
    try {
      announced = std::stoull(head->get_header_value("Content-Length"));
    } catch (const std::exception&) {
      throw UpstreamError(502, "UPSTREAM_ERROR", "upstream " + url_ + ": " + what + ": HEAD gave no Content-Length");
    }
    if (size != 0 && announced != size)
      throw UpstreamError(502, "SIZE_INVALID", "upstream " + url_ + ": " + what + " has " + std::to_string(announced) +
                                                   " bytes, the manifest says " + std::to_string(size));
    const Cache cache{root};
    fs::create_directories(root / "partial" / "sha256");
    const Descriptor d{"", digest, announced};
    try {
      try {
        return store::fetch_blob(registry, cache, repo, d, options_, true);
      } catch (const IntegrityError&) {
        // A bad prefix left by an earlier attempt was cut back: one clean download more.
        return store::fetch_blob(registry, cache, repo, d, options_, true);
      }
    } catch (const IntegrityError& e) {
      std::error_code ec;
      fs::remove(cache.partial(digest), ec);
      throw UpstreamError(502, "DIGEST_INVALID", "upstream " + url_ + " sent " + what +
                                                     " with bytes that do not match the digest; refused, nothing stored (" +
                                                     e.what() + ")");
    }
  });
}

}  // namespace espresso::store::detail
