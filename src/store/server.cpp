// The registry server: the OCI Distribution API over cpp-httplib, blobs as content-addressed files
// under the root, the catalog in SQLite (store/catalog.h), and our search API.
//
// Durability: a blob is streamed into its upload file while hashed, fsynced, then renamed into
// blobs/sha256/ and the folder fsynced; a manifest's bytes are stored the same way before the catalog
// transaction that tags it commits. A crash at any point leaves every tag on a complete manifest.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <ctime>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "espresso/store.h"
#include "store/auth.h"
#include "store/catalog.h"
#include "store/digest.h"
#include "store/manifest.h"
#include "store/signing.h"
#include "store/try_it.h"
#include "store/upstream.h"
#include "store/web_page.h"

namespace espresso::store {

using nlohmann::json;
namespace fs = std::filesystem;
using detail::Descriptor;

namespace {

std::int64_t now_seconds() { return static_cast<std::int64_t>(std::time(nullptr)); }

void send_error(httplib::Response& res, int status, const std::string& code, const std::string& message) {
  res.status = status;
  json body = {{"errors", json::array({{{"code", code}, {"message", message}}})}};
  res.set_content(body.dump(), "application/json");
}

// A field-naming JSON error for the page's APIs: the registry's error shape plus "field".
void send_field_error(httplib::Response& res, int status, const std::string& code, const std::string& field,
                      const std::string& message, bool close = false) {
  res.status = status;
  json body = {{"errors", json::array({{{"code", code}, {"message", message}, {"field", field}}})}};
  res.set_content(body.dump(), "application/json");
  if (close) res.set_header("Connection", "close");
}

// What a /v2/ path names.
struct Route {
  enum Kind { base, blob, upload_start, upload, manifest, tags, referrers, unknown } kind = unknown;
  std::string repo;
  std::string reference;  // digest, tag or upload id
};

Route parse_route(const std::string& path) {
  Route route;
  if (path == "/v2/" || path == "/v2") {
    route.kind = Route::base;
    return route;
  }
  std::vector<std::string> parts;
  std::size_t start = 4;  // after "/v2/"
  for (;;) {
    const std::size_t slash = path.find('/', start);
    parts.push_back(path.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  const std::size_t n = parts.size();
  const auto repo_of = [&](std::size_t count) {
    std::string repo;
    for (std::size_t i = 0; i < count; ++i) repo += (i ? "/" : "") + parts[i];
    return repo;
  };
  if (n >= 4 && parts[n - 3] == "blobs" && parts[n - 2] == "uploads" && parts[n - 1].empty()) {
    route = {Route::upload_start, repo_of(n - 3), ""};
  } else if (n >= 3 && parts[n - 2] == "blobs" && parts[n - 1] == "uploads") {
    route = {Route::upload_start, repo_of(n - 2), ""};
  } else if (n >= 4 && parts[n - 3] == "blobs" && parts[n - 2] == "uploads") {
    route = {Route::upload, repo_of(n - 3), parts[n - 1]};
  } else if (n >= 3 && parts[n - 2] == "blobs") {
    route = {Route::blob, repo_of(n - 2), parts[n - 1]};
  } else if (n >= 3 && parts[n - 2] == "manifests") {
    route = {Route::manifest, repo_of(n - 2), parts[n - 1]};
  } else if (n >= 3 && parts[n - 2] == "tags" && parts[n - 1] == "list") {
    route = {Route::tags, repo_of(n - 2), ""};
  } else if (n >= 3 && parts[n - 2] == "referrers") {
    route = {Route::referrers, repo_of(n - 2), parts[n - 1]};
  }
  return route;
}

// Encoded or literal path tricks, refused before anything is looked up. httplib decodes the path, so
// the raw target is checked as well.
bool hostile_target(const httplib::Request& req) {
  std::string raw = req.target;
  for (char& c : raw) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::string path = raw.substr(0, raw.find('?'));
  for (const char* bad : {"%2e", "%2f", "%5c", "%00", "\\", "/../", "/./", "//"}) {
    if (path.find(bad) != std::string::npos) return true;
  }
  if (path.size() >= 3 && path.compare(path.size() - 3, 3, "/..") == 0) return true;
  return req.path.find('\0') != std::string::npos || req.path.find('\\') != std::string::npos;
}

bool parse_uint(const std::string& text, std::uint64_t& value) {
  if (text.empty() || text.size() > 19) return false;
  value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return true;
}

std::string random_id() {
  static thread_local std::mt19937_64 generator{std::random_device{}()};
  char text[33];
  std::snprintf(text, sizeof text, "%016llx%016llx", static_cast<unsigned long long>(generator()),
                static_cast<unsigned long long>(generator()));
  return text;
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  fs::path blobs;
  fs::path uploads;
  fs::path temp;
  std::unique_ptr<detail::Catalog> catalog;
  std::unique_ptr<detail::AuthStore> auth;
  std::unique_ptr<httplib::Server> server;  // an httplib::SSLServer with tls_cert/tls_key
  httplib::Server& http() { return *server; }
  int port = 0;
  std::atomic<bool> stopping{false};
  std::mutex janitor_mutex;
  std::condition_variable janitor_wake;

  // Running hashes of upload sessions, so a chunked upload is hashed as it streams; after a restart
  // the file is hashed again at the end.
  struct Session {
    std::unique_ptr<detail::Sha256> hash;
    std::uint64_t hashed = 0;
    std::mutex busy;
  };
  std::mutex sessions_mutex;
  std::map<std::string, std::shared_ptr<Session>> sessions;

  fs::path blob_path(const std::string& digest) const { return blobs / detail::digest_hex(digest); }

  std::shared_ptr<Session> session(const std::string& id) {
    std::lock_guard lock(sessions_mutex);
    auto& s = sessions[id];
    if (!s) s = std::make_shared<Session>();
    return s;
  }
  void forget_session(const std::string& id) {
    std::lock_guard lock(sessions_mutex);
    sessions.erase(id);
  }

  void setup_routes();
  // With auth on: true when the request may do `action` on `repo` ("" = any valid token); otherwise
  // answers 401 (with the Bearer challenge) or 403 and returns false.
  bool authorize(const httplib::Request& req, httplib::Response& res, const std::string& repo, const std::string& action,
                 bool body_unread);
  void issue_token(const httplib::Request& req, httplib::Response& res);
  void handle_get(const httplib::Request& req, httplib::Response& res);
  void handle_write(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader);
  void handle_delete(const httplib::Request& req, httplib::Response& res);
  void get_blob(const Route& route, const httplib::Request& req, httplib::Response& res);
  void get_manifest(const Route& route, const httplib::Request& req, httplib::Response& res);
  void put_manifest(const Route& route, const httplib::Request& req, httplib::Response& res,
                    const httplib::ContentReader& reader);
  // Validates a manifest (every blob it references present with its size) and records it, under the
  // tag when `reference` is one; answers 201 or the error in `res`.
  void store_manifest(const std::string& repo, const std::string& reference, const std::string& body,
                      const std::string& content_type, httplib::Response& res);
  void start_upload(const Route& route, const httplib::Request& req, httplib::Response& res,
                    const httplib::ContentReader& reader);
  void patch_upload(const Route& route, const httplib::Request& req, httplib::Response& res,
                    const httplib::ContentReader& reader, bool final_put);
  // Appends the body to the upload file; false (and the file cut back) when the body is short.
  bool append_body(const std::string& id, Session& session, const httplib::Request& req,
                   const httplib::ContentReader& reader, std::uint64_t& size, std::string& error);
  // Verifies the upload against `digest` and moves it into the blob store; returns an error or "".
  std::string commit_upload(const std::string& id, Session& session, const std::string& digest);
  void upload_headers(httplib::Response& res, const std::string& repo, const std::string& id, std::uint64_t size);
  void api_models(const httplib::Request& req, httplib::Response& res);
  void api_model(const std::string& name, httplib::Response& res);
  void remove_upload(const std::string& id);
  // The web page (docs/web.md): embedded files at "/", signature status on model answers, try-it.
  std::unique_ptr<detail::TryIt> try_it;
  json signature_status(const std::string& repo, const std::string& version, const std::string& digest);
  void add_signatures(json& model);
  void api_classify(const std::string& name, const httplib::Request& req, httplib::Response& res,
                    const httplib::ContentReader& reader);

  // Pull-through cache (options.upstream, docs/store.md): what is missing here is fetched from the
  // upstream, checked and stored before it is served.
  std::unique_ptr<detail::Upstream> upstream;
  std::mutex proxy_mutex;
  std::map<std::string, std::shared_future<void>> fetching;  // fetches in flight, by what they fetch
  std::map<std::string, std::chrono::steady_clock::time_point> tag_checked;  // "REPO:TAG": last confirmed upstream
  // Runs `fetch` once however many requests want `key` at the same moment; the others wait for its
  // outcome (its exception too).
  void once(const std::string& key, const std::function<void()>& fetch);
  // The blob is here afterwards, fetched from the upstream if it was not. Throws UpstreamError.
  void ensure_blob(const std::string& repo, const std::string& digest, std::uint64_t size);
  // Fetches a manifest (tag or digest) and everything it references from the upstream and records it,
  // so a manifest is never here without its blobs. Throws UpstreamError.
  void cache_manifest(const std::string& repo, const std::string& reference, int depth);
  // The digest of the local manifest to serve for a reference, asking the upstream when it is not here
  // or (tags) was not confirmed within upstream_recheck. Throws UpstreamError.
  std::string proxy_resolve(const std::string& repo, const std::string& reference);
  void proxy_tags(const Route& route, const httplib::Request& req, httplib::Response& res);
};

namespace {

// Refuses a request whose body we will not read: the connection closes, so the unread bytes are never
// taken for the next request.
void refuse_unread(httplib::Response& res, int status, const std::string& code, const std::string& message) {
  send_error(res, status, code, message);
  res.set_header("Connection", "close");
}

}  // namespace

void Server::Impl::setup_routes() {
  http().Get(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) { handle_get(req, res); });
  const auto writer = [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    handle_write(req, res, reader);
  };
  http().Post(R"(/.*)", writer);
  http().Put(R"(/.*)", writer);
  http().Patch(R"(/.*)", writer);
  http().Delete(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) { handle_delete(req, res); });
  http().set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    std::string message = "internal error";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
    }
    send_error(res, 500, "UNKNOWN", message);
  });
}

namespace {

// A Host header fit to go back into the realm URL; else the address the server listens on.
std::string realm_host(const httplib::Request& req, const std::string& host, int port) {
  const std::string given = req.get_header_value("Host");
  bool clean = !given.empty() && given.size() < 256;
  for (char c : given) clean = clean && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == ':' || c == '-' || c == '[' || c == ']');
  return clean ? given : host + ":" + std::to_string(port);
}

}  // namespace

bool Server::Impl::authorize(const httplib::Request& req, httplib::Response& res, const std::string& repo,
                             const std::string& action, bool body_unread) {
  if (!options.auth) return true;
  const std::string bearer = req.get_header_value("Authorization");
  const auto refuse = [&](int status, const std::string& code, const std::string& message, const std::string& error) {
    // RFC 6750: 401 for a missing or bad token, 403 with error="insufficient_scope" for a good token that
    // lacks the action; both carry the challenge, so a client knows which scope to ask for.
    {
      const std::string scheme = options.tls_cert.empty() ? "http" : "https";
      std::string challenge = "Bearer realm=\"" + scheme + "://" + realm_host(req, options.host, port) +
                              "/token\",service=\"" + detail::kTokenService + "\"";
      if (!repo.empty())
        challenge += ",scope=\"repository:" + repo + ":" + (action == "push" ? "pull,push" : action) + "\"";
      if (!error.empty()) challenge += ",error=\"" + error + "\"";
      res.set_header("WWW-Authenticate", challenge);
    }
    send_error(res, status, code, message);
    if (body_unread) res.set_header("Connection", "close");
    return false;
  };
  if (bearer.empty()) {
    if (action == "pull" && options.anonymous_pull && !(repo.empty() && req.path.rfind("/v2", 0) == 0)) return true;
    return refuse(401, "UNAUTHORIZED", "authentication required: " + action + (repo.empty() ? "" : " on " + repo) +
                                           " needs a bearer token (espresso login)", "");
  }
  if (bearer.rfind("Bearer ", 0) != 0)
    return refuse(401, "UNAUTHORIZED", "the Authorization header is not 'Bearer TOKEN'", "invalid_request");
  const auto claims = detail::verify_token(auth->secret(), bearer.substr(7));
  if (!claims) return refuse(401, "UNAUTHORIZED", "invalid token (malformed or bad signature)", "invalid_token");
  if (claims->expires <= now_seconds()) return refuse(401, "UNAUTHORIZED", "the token expired", "invalid_token");
  std::string why;
  if (!claims->subject.empty() && !auth->active(claims->subject, why)) return refuse(401, "UNAUTHORIZED", why, "invalid_token");
  if (repo.empty()) return true;
  for (const detail::Access& a : claims->access) {
    if (a.name == repo && a.actions.count(action)) return true;
  }
  return refuse(403, "DENIED", "the token does not grant " + action + " on " + repo, "insufficient_scope");
}

void Server::Impl::issue_token(const httplib::Request& req, httplib::Response& res) {
  if (!options.auth) return send_error(res, 404, "NOT_FOUND", "this registry has no authentication");
  if (req.has_param("service") && req.get_param_value("service") != detail::kTokenService)
    return send_field_error(res, 400, "INVALID", "service", "unknown service '" + req.get_param_value("service") + "'");
  std::optional<detail::AccessKeyRecord> key;
  const std::string authorization = req.get_header_value("Authorization");
  if (!authorization.empty()) {
    bool ok = authorization.rfind("Basic ", 0) == 0;
    const std::string pair = ok ? detail::base64_decode_standard(authorization.substr(6), ok) : "";
    const std::size_t colon = pair.find(':');
    if (!ok || colon == std::string::npos)
      return send_field_error(res, 400, "INVALID", "Authorization", "expected Basic credentials (key id:secret)");
    std::string why;
    key = auth->authenticate(pair.substr(0, colon), pair.substr(colon + 1), why);
    if (!key) {
      res.set_header("WWW-Authenticate", "Basic realm=\"espresso\"");
      return send_field_error(res, 401, "UNAUTHORIZED", "Authorization", why);
    }
  }
  detail::TokenClaims claims;
  claims.subject = key ? key->id : "";
  claims.issued = now_seconds();
  claims.expires = claims.issued + options.token_ttl.count();
  if (key && key->expires != 0) claims.expires = std::min(claims.expires, key->expires);
  std::vector<std::string> scopes;
  for (std::size_t i = 0; i < req.get_param_value_count("scope"); ++i) {
    const std::string value = req.get_param_value("scope", i);
    for (std::size_t start = 0; start < value.size();) {
      const std::size_t space = std::min(value.find(' ', start), value.size());
      if (space > start) scopes.push_back(value.substr(start, space - start));
      start = space + 1;
    }
  }
  for (const std::string& scope : scopes) {
    detail::Access wanted;
    try {
      wanted = detail::parse_scope(scope);
    } catch (const std::invalid_argument& e) {
      return send_field_error(res, 400, "INVALID", "scope", e.what());
    }
    detail::Access granted{wanted.name, {}};
    if (key) {
      granted.actions = detail::AuthStore::allowed(*key, wanted.name, wanted.actions);
    } else if (options.anonymous_pull && wanted.actions.count("pull")) {
      granted.actions = {"pull"};
    }
    if (!granted.actions.empty()) claims.access.push_back(granted);
  }
  const std::string token = detail::sign_token(auth->secret(), claims);
  char issued[32];
  const std::time_t t = static_cast<std::time_t>(claims.issued);
  std::tm utc{};
  ::gmtime_r(&t, &utc);
  std::strftime(issued, sizeof issued, "%Y-%m-%dT%H:%M:%SZ", &utc);
  res.set_header("Cache-Control", "no-store");
  res.set_content(json({{"token", token}, {"access_token", token}, {"expires_in", claims.expires - claims.issued},
                        {"issued_at", issued}})
                      .dump(),
                  "application/json");
}

void Server::Impl::handle_get(const httplib::Request& req, httplib::Response& res) {
  if (hostile_target(req)) return send_error(res, 400, "NAME_INVALID", "path with '..', encoded separators, backslashes or NUL");
  if (req.path == "/token") return issue_token(req, res);
  if (req.path == "/api/v1/models") {
    if (!authorize(req, res, "", "pull", false)) return;
    return api_models(req, res);
  }
  if (req.path.rfind("/api/v1/models/", 0) == 0) {
    if (valid_repository(req.path.substr(15)) && !authorize(req, res, req.path.substr(15), "pull", false)) return;
    return api_model(req.path.substr(15), res);
  }
  if (web::send_asset(req, res)) return;
  if (req.path.rfind("/v2", 0) != 0) return send_error(res, 404, "NOT_FOUND", "no such endpoint");
  const Route route = parse_route(req.path);
  if (route.kind == Route::base) {
    res.set_header("Docker-Distribution-API-Version", "registry/2.0");
    if (!authorize(req, res, "", "pull", false)) return;
    res.set_content("{}", "application/json");
    return;
  }
  if (route.kind == Route::unknown) return send_error(res, 404, "NOT_FOUND", "no such endpoint");
  if (!valid_repository(route.repo)) return send_error(res, 400, "NAME_INVALID", "invalid repository name '" + route.repo + "'");
  if (!authorize(req, res, route.repo, route.kind == Route::upload ? "push" : "pull", false)) return;
  switch (route.kind) {
    case Route::blob:
      return get_blob(route, req, res);
    case Route::manifest:
      return get_manifest(route, req, res);
    case Route::upload: {
      const auto repo = catalog->upload_repo(route.reference);
      if (!repo || *repo != route.repo) return send_error(res, 404, "BLOB_UPLOAD_UNKNOWN", "no such upload");
      std::error_code ec;
      const auto size = fs::file_size(uploads / route.reference, ec);
      if (ec) return send_error(res, 404, "BLOB_UPLOAD_UNKNOWN", "no such upload");
      upload_headers(res, route.repo, route.reference, size);
      res.status = 204;
      return;
    }
    case Route::tags: {
      if (upstream) return proxy_tags(route, req, res);
      std::uint64_t n = 1000;
      if (req.has_param("n") && (!parse_uint(req.get_param_value("n"), n) || n == 0 || n > 10000))
        return send_error(res, 400, "PAGINATION_NUMBER_INVALID", "n must be 1..10000");
      if (!catalog->repo_exists(route.repo)) return send_error(res, 404, "NAME_UNKNOWN", "no such repository");
      const std::string last = req.get_param_value("last");
      std::vector<std::string> tags = catalog->tags(route.repo, last, static_cast<int>(n));
      if (tags.size() == n) {
        res.set_header("Link", "</v2/" + route.repo + "/tags/list?n=" + std::to_string(n) + "&last=" + tags.back() +
                                   ">; rel=\"next\"");
      }
      res.set_content(json({{"name", route.repo}, {"tags", tags}}).dump(), "application/json");
      return;
    }
    case Route::referrers: {
      if (!valid_digest(route.reference)) return send_error(res, 400, "DIGEST_INVALID", "not a sha256 digest");
      const std::string type = req.get_param_value("artifactType");
      json manifests = json::array();
      for (const detail::ManifestRow& row : catalog->referrers(route.repo, route.reference, type)) {
        json d = {{"mediaType", row.media_type}, {"digest", row.digest}, {"size", row.size}};
        if (!row.artifact_type.empty()) d["artifactType"] = row.artifact_type;
        manifests.push_back(d);
      }
      if (!type.empty()) res.set_header("OCI-Filters-Applied", "artifactType");
      res.set_content(json({{"schemaVersion", 2}, {"mediaType", kIndexMediaType}, {"manifests", manifests}}).dump(),
                      std::string(kIndexMediaType));
      return;
    }
    default:
      return send_error(res, 405, "UNSUPPORTED", "method not allowed here");
  }
}

void Server::Impl::get_blob(const Route& route, const httplib::Request& req, httplib::Response& res) {
  if (!valid_digest(route.reference)) return send_error(res, 400, "DIGEST_INVALID", "not a sha256 digest");
  const fs::path path = blob_path(route.reference);
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0 && upstream) {
    try {
      ensure_blob(route.repo, route.reference, 0);
    } catch (const detail::UpstreamError& e) {
      return send_error(res, e.status(), e.code(), e.what());
    }
    fd = ::open(path.c_str(), O_RDONLY);
  }
  if (fd < 0) return send_error(res, 404, "BLOB_UNKNOWN", "blob unknown to registry");
  struct stat info {};
  ::fstat(fd, &info);
  const auto size = static_cast<std::size_t>(info.st_size);
  // Ranges beyond the end are refused here; httplib serves satisfiable single ranges from the provider.
  if (req.ranges.size() > 1) {
    ::close(fd);
    return send_error(res, 416, "RANGE_INVALID", "one range per request");
  }
  if (req.ranges.size() == 1) {
    const auto [first, last] = req.ranges[0];
    const bool bad = (first >= 0 && static_cast<std::size_t>(first) >= size && size > 0) ||
                     (first >= 0 && last >= 0 && last < first) || (first < 0 && last <= 0);
    if (bad || size == 0) {
      ::close(fd);
      res.set_header("Content-Range", "bytes */" + std::to_string(size));
      return send_error(res, 416, "RANGE_INVALID", "range not satisfiable");
    }
  }
  res.set_header("Docker-Content-Digest", route.reference);
  res.set_header("Accept-Ranges", "bytes");
  res.set_header("ETag", "\"" + route.reference + "\"");
  auto file = std::shared_ptr<int>(new int(fd), [](int* f) {
    ::close(*f);
    delete f;
  });
  res.set_content_provider(
      size, "application/octet-stream",
      [file](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
        std::vector<char> buffer(std::min<std::size_t>(length, 4 << 20));
        while (length > 0) {
          const ssize_t n = ::pread(*file, buffer.data(), std::min(length, buffer.size()), static_cast<off_t>(offset));
          if (n <= 0) return false;
          if (!sink.write(buffer.data(), static_cast<std::size_t>(n))) return false;
          offset += static_cast<std::size_t>(n);
          length -= static_cast<std::size_t>(n);
        }
        return true;
      });
}

void Server::Impl::get_manifest(const Route& route, const httplib::Request&, httplib::Response& res) {
  std::string digest = route.reference;
  if (upstream) {
    if (!valid_digest(digest) && !valid_tag(digest))
      return send_error(res, 400, "TAG_INVALID", "invalid tag or digest '" + digest + "'");
    try {
      digest = proxy_resolve(route.repo, route.reference);
    } catch (const detail::UpstreamError& e) {
      return send_error(res, e.status(), e.code(), e.what());
    }
  } else if (!valid_digest(digest)) {
    if (!valid_tag(digest)) return send_error(res, 400, "TAG_INVALID", "invalid tag or digest '" + digest + "'");
    const auto resolved = catalog->resolve_tag(route.repo, digest);
    if (!resolved) return send_error(res, 404, "MANIFEST_UNKNOWN", "no tag '" + digest + "' in " + route.repo);
    digest = *resolved;
  }
  const auto row = catalog->manifest(route.repo, digest);
  if (!row) return send_error(res, 404, "MANIFEST_UNKNOWN", "manifest unknown to " + route.repo);
  std::string bytes;
  try {
    bytes = detail::read_file(blob_path(digest));
  } catch (const FileError&) {
    return send_error(res, 500, "UNKNOWN", "manifest bytes missing from the store (run espresso store fsck)");
  }
  res.set_header("Docker-Content-Digest", digest);
  res.set_header("ETag", "\"" + digest + "\"");
  res.set_content(bytes, row->media_type);
}

void Server::Impl::handle_write(const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader) {
  if (hostile_target(req))
    return refuse_unread(res, 400, "NAME_INVALID", "path with '..', encoded separators, backslashes or NUL");
  constexpr std::string_view kClassify = "/classify";
  if (req.method == "POST" && req.path.rfind("/api/v1/models/", 0) == 0 && req.path.size() > 15 + kClassify.size() &&
      req.path.compare(req.path.size() - kClassify.size(), kClassify.size(), kClassify) == 0)
  {
    const std::string name = req.path.substr(15, req.path.size() - 15 - kClassify.size());
    if (valid_repository(name) && !authorize(req, res, name, "pull", true)) return;
    return api_classify(name, req, res, reader);
  }
  if (req.path.rfind("/v2/", 0) != 0) return refuse_unread(res, 404, "NOT_FOUND", "no such endpoint");
  if (upstream)
    return refuse_unread(res, 405, "UNSUPPORTED",
                         "this registry is a read-only pull-through cache of " + upstream->url() +
                             ": push to the upstream, and pull here");
  const Route route = parse_route(req.path);
  if (route.kind == Route::unknown || route.kind == Route::base)
    return refuse_unread(res, 404, "NOT_FOUND", "no such endpoint");
  if (!valid_repository(route.repo))
    return refuse_unread(res, 400, "NAME_INVALID", "invalid repository name '" + route.repo + "'");
  if (!authorize(req, res, route.repo, "push", true)) return;
  if (route.kind == Route::manifest && req.method == "PUT") return put_manifest(route, req, res, reader);
  if (route.kind == Route::upload_start && req.method == "POST") return start_upload(route, req, res, reader);
  if (route.kind == Route::upload && (req.method == "PATCH" || req.method == "PUT"))
    return patch_upload(route, req, res, reader, req.method == "PUT");
  refuse_unread(res, 405, "UNSUPPORTED", req.method + " is not supported here");
}

void Server::Impl::handle_delete(const httplib::Request& req, httplib::Response& res) {
  if (hostile_target(req)) return send_error(res, 400, "NAME_INVALID", "path with '..', encoded separators, backslashes or NUL");
  const Route route = parse_route(req.path);
  if (valid_repository(route.repo) && !authorize(req, res, route.repo, route.kind == Route::upload ? "push" : "delete", false))
    return;
  if (route.kind == Route::upload && valid_repository(route.repo)) {
    const auto repo = catalog->upload_repo(route.reference);
    if (!repo || *repo != route.repo) return send_error(res, 404, "BLOB_UPLOAD_UNKNOWN", "no such upload");
    remove_upload(route.reference);
    res.status = 204;
    return;
  }
  send_error(res, 405, "UNSUPPORTED", "deletion is not supported");
}

void Server::Impl::upload_headers(httplib::Response& res, const std::string& repo, const std::string& id,
                                  std::uint64_t size) {
  res.set_header("Location", "/v2/" + repo + "/blobs/uploads/" + id);
  res.set_header("Docker-Upload-UUID", id);
  res.set_header("Range", "0-" + std::to_string(size == 0 ? 0 : size - 1));
}

void Server::Impl::remove_upload(const std::string& id) {
  std::error_code ec;
  fs::remove(uploads / id, ec);
  catalog->end_upload(id);
  forget_session(id);
}

void Server::Impl::start_upload(const Route& route, const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader) {
  // Cross-repository mount: blobs are shared by every repository here.
  if (req.has_param("mount")) {
    const std::string digest = req.get_param_value("mount");
    if (valid_digest(digest) && fs::exists(blob_path(digest))) {
      res.status = 201;
      res.set_header("Location", "/v2/" + route.repo + "/blobs/" + digest);
      res.set_header("Docker-Content-Digest", digest);
      return;
    }
  }
  const std::string digest = req.get_param_value("digest");
  if (req.has_param("digest") && !valid_digest(digest))
    return refuse_unread(res, 400, "DIGEST_INVALID", "not a sha256 digest");
  const std::string id = random_id();
  {
    const int fd = ::open((uploads / id).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return refuse_unread(res, 500, "UNKNOWN", "cannot create the upload file");
    ::close(fd);
  }
  catalog->begin_upload(id, route.repo, now_seconds());
  if (!req.has_param("digest")) {
    res.status = 202;
    upload_headers(res, route.repo, id, 0);
    res.set_header("Range", "0-0");
    return;
  }
  // Monolithic upload: the body is the whole blob.
  auto s = session(id);
  std::lock_guard busy(s->busy);
  std::uint64_t size = 0;
  std::string error;
  if (!append_body(id, *s, req, reader, size, error)) {
    remove_upload(id);
    return refuse_unread(res, 400, "BLOB_UPLOAD_INVALID", error);
  }
  error = commit_upload(id, *s, digest);
  if (!error.empty()) return send_error(res, 400, "DIGEST_INVALID", error);
  res.status = 201;
  res.set_header("Location", "/v2/" + route.repo + "/blobs/" + digest);
  res.set_header("Docker-Content-Digest", digest);
}

bool Server::Impl::append_body(const std::string& id, Session& s, const httplib::Request& req,
                               const httplib::ContentReader& reader, std::uint64_t& size, std::string& error) {
  const fs::path path = uploads / id;
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
  if (fd < 0) {
    error = "upload file missing";
    return false;
  }
  struct stat info {};
  ::fstat(fd, &info);
  const auto start = static_cast<std::uint64_t>(info.st_size);
  // Keep the running hash only while it covers exactly the bytes on disk.
  if (s.hash && s.hashed != start) s.hash.reset();
  if (!s.hash && start == 0) {
    s.hash = std::make_unique<detail::Sha256>();
    s.hashed = 0;
  }
  std::uint64_t written = 0;
  bool write_failed = false;
  const bool read_ok = reader([&](const char* data, std::size_t length) {
    std::size_t done = 0;
    while (done < length) {
      const ssize_t n = ::write(fd, data + done, length - done);
      if (n <= 0) {
        write_failed = true;
        return false;
      }
      done += static_cast<std::size_t>(n);
    }
    if (s.hash) s.hash->update(data, length);
    written += length;
    return true;
  });
  std::uint64_t declared = 0;
  const bool has_length = req.has_header("Content-Length") && parse_uint(req.get_header_value("Content-Length"), declared);
  if (!read_ok || write_failed || (has_length && written != declared)) {
    // A body cut short (or a failed write) leaves the session where it was.
    if (::ftruncate(fd, static_cast<off_t>(start)) != 0) write_failed = true;
    ::close(fd);
    s.hash.reset();
    error = write_failed ? "the registry could not store the data" : "the body is shorter than its Content-Length";
    return false;
  }
  ::close(fd);
  if (s.hash) s.hashed = start + written;
  size = start + written;
  return true;
}

std::string Server::Impl::commit_upload(const std::string& id, Session& s, const std::string& digest) {
  const fs::path path = uploads / id;
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "upload file missing";
  struct stat info {};
  ::fstat(fd, &info);
  std::string actual;
  if (s.hash && s.hashed == static_cast<std::uint64_t>(info.st_size)) {
    actual = s.hash->finish();
  } else {
    detail::Sha256 hash;
    detail::hash_prefix(fd, static_cast<std::uint64_t>(info.st_size), hash, path.string());
    actual = hash.finish();
  }
  s.hash.reset();
  if (actual != digest) {
    ::close(fd);
    remove_upload(id);
    return "the uploaded bytes hash to " + actual + ", not " + digest;
  }
  ::fsync(fd);
  ::close(fd);
  const fs::path target = blob_path(digest);
  if (fs::exists(target)) {
    remove_upload(id);
    return "";
  }
  ::chmod(path.c_str(), 0444);
  if (::rename(path.c_str(), target.c_str()) != 0) {
    remove_upload(id);
    return "cannot move the blob into the store";
  }
  detail::sync_directory(blobs);
  catalog->end_upload(id);
  forget_session(id);
  return "";
}

void Server::Impl::patch_upload(const Route& route, const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader, bool final_put) {
  const auto repo = catalog->upload_repo(route.reference);
  if (!repo || *repo != route.repo) return refuse_unread(res, 404, "BLOB_UPLOAD_UNKNOWN", "no such upload");
  const std::string digest = req.get_param_value("digest");
  if (final_put && !valid_digest(digest))
    return refuse_unread(res, 400, "DIGEST_INVALID", "PUT needs ?digest=sha256:...");
  auto s = session(route.reference);
  std::unique_lock busy(s->busy, std::try_to_lock);
  if (!busy.owns_lock()) return refuse_unread(res, 416, "BLOB_UPLOAD_INVALID", "another request is writing this upload");
  std::error_code ec;
  const std::uint64_t offset = fs::file_size(uploads / route.reference, ec);
  if (ec) return refuse_unread(res, 404, "BLOB_UPLOAD_UNKNOWN", "no such upload");
  // Content-Range "first-last" must continue exactly where the upload stands and match the body.
  if (req.has_header("Content-Range")) {
    const std::string range = req.get_header_value("Content-Range");
    const std::size_t dash = range.find('-');
    std::uint64_t first = 0;
    std::uint64_t last = 0;
    const std::string first_text = range.substr(0, dash);
    const std::string last_text = dash == std::string::npos ? "" : range.substr(dash + 1);
    if (dash == std::string::npos || !parse_uint(first_text.substr(first_text.rfind(' ') + 1), first) ||
        !parse_uint(last_text, last) || last < first || first != offset) {
      res.set_header("Range", "0-" + std::to_string(offset == 0 ? 0 : offset - 1));
      return refuse_unread(res, 416, "BLOB_UPLOAD_INVALID",
                           "Content-Range '" + range + "' does not continue the upload at " + std::to_string(offset));
    }
    std::uint64_t declared = 0;
    if (req.has_header("Content-Length") && parse_uint(req.get_header_value("Content-Length"), declared) &&
        declared != last - first + 1)
      return refuse_unread(res, 400, "BLOB_UPLOAD_INVALID", "Content-Range and Content-Length disagree");
  }
  std::uint64_t size = 0;
  std::string error;
  if (!append_body(route.reference, *s, req, reader, size, error))
    return refuse_unread(res, 400, "BLOB_UPLOAD_INVALID", error);
  catalog->touch_upload(route.reference, now_seconds());
  if (!final_put) {
    res.status = 202;
    upload_headers(res, route.repo, route.reference, size);
    return;
  }
  error = commit_upload(route.reference, *s, digest);
  if (!error.empty()) return send_error(res, 400, "DIGEST_INVALID", error);
  res.status = 201;
  res.set_header("Location", "/v2/" + route.repo + "/blobs/" + digest);
  res.set_header("Docker-Content-Digest", digest);
}

void Server::Impl::put_manifest(const Route& route, const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader) {
  const std::string& reference = route.reference;
  const bool by_digest = valid_digest(reference);
  if (!by_digest && !valid_tag(reference))
    return refuse_unread(res, 400, "TAG_INVALID", "invalid tag '" + reference + "'");
  std::uint64_t declared = 0;
  if (req.has_header("Content-Length") && parse_uint(req.get_header_value("Content-Length"), declared) &&
      declared > options.max_manifest_bytes)
    return refuse_unread(res, 413, "SIZE_INVALID",
                         "manifest of " + std::to_string(declared) + " bytes exceeds the limit of " +
                             std::to_string(options.max_manifest_bytes));
  std::string body;
  bool too_large = false;
  const bool ok = reader([&](const char* data, std::size_t length) {
    if (body.size() + length > options.max_manifest_bytes) {
      too_large = true;
      return false;
    }
    body.append(data, length);
    return true;
  });
  if (too_large) return refuse_unread(res, 413, "SIZE_INVALID", "manifest exceeds the size limit");
  if (!ok || (req.has_header("Content-Length") && body.size() != declared))
    return refuse_unread(res, 400, "MANIFEST_INVALID", "the body is shorter than its Content-Length");
  store_manifest(route.repo, reference, body, req.get_header_value("Content-Type"), res);
}

void Server::Impl::store_manifest(const std::string& repo, const std::string& reference, const std::string& body,
                                  const std::string& content_type, httplib::Response& res) {
  const bool by_digest = valid_digest(reference);
  detail::PushedManifest pushed;
  try {
    pushed = detail::read_pushed_manifest(body, content_type);
  } catch (const StoreError& e) {
    return send_error(res, 400, "MANIFEST_INVALID", e.what());
  }
  detail::NewManifest row;
  row.repo = repo;
  row.digest = sha256_digest(body);
  row.media_type = pushed.media_type;
  row.size = body.size();
  row.subject = pushed.subject;
  row.artifact_type = pushed.artifact_type;
  if (by_digest && reference != row.digest)
    return send_error(res, 400, "DIGEST_INVALID", "the manifest hashes to " + row.digest + ", not " + reference);
  if (!by_digest) row.tag = reference;
  for (const Descriptor& d : pushed.references) {
    if (pushed.index) {
      if (!catalog->manifest(repo, d.digest))
        return send_error(res, 400, "MANIFEST_BLOB_UNKNOWN", "manifest " + d.digest + " is not in " + repo);
      continue;
    }
    std::error_code ec;
    const auto size = fs::file_size(blob_path(d.digest), ec);
    if (ec) return send_error(res, 400, "MANIFEST_BLOB_UNKNOWN", "blob " + d.digest + " is not on the registry");
    if (size != d.size)
      return send_error(res, 400, "MANIFEST_INVALID",
                        "blob " + d.digest + " has " + std::to_string(size) + " bytes, the manifest says " +
                            std::to_string(d.size));
    row.blobs.push_back(d.digest);
  }
  if (row.artifact_type == kArtifactType && !pushed.index) {
    json card = json::parse(detail::read_file(blob_path(pushed.references.front().digest)), nullptr, false);
    if (!card.is_object()) return send_error(res, 400, "MANIFEST_INVALID", "the model card is not a JSON object");
    row.card = std::move(card);
  }
  const fs::path path = blob_path(row.digest);
  if (!fs::exists(path)) detail::write_file_atomically(path, body);
  catalog->put_manifest(row, now_seconds());
  res.status = 201;
  res.set_header("Location", "/v2/" + repo + "/manifests/" + row.digest);
  res.set_header("Docker-Content-Digest", row.digest);
  if (!row.subject.empty()) res.set_header("OCI-Subject", row.subject);
}

void Server::Impl::api_models(const httplib::Request& req, httplib::Response& res) {
  SearchQuery query;
  query.text = req.get_param_value("q");
  query.task = req.get_param_value("task");
  query.license = req.get_param_value("license");
  query.sort = req.get_param_value("sort");
  query.cursor = req.get_param_value("cursor");
  std::uint64_t number = 0;
  if (req.has_param("max_bytes")) {
    if (!parse_uint(req.get_param_value("max_bytes"), number)) return send_error(res, 400, "INVALID", "max_bytes must be a number");
    query.max_bytes = number;
  }
  if (req.has_param("limit")) {
    if (!parse_uint(req.get_param_value("limit"), number) || number == 0 || number > 100)
      return send_error(res, 400, "INVALID", "limit must be 1..100");
    query.limit = static_cast<int>(number);
  }
  if (req.has_param("min_accuracy")) {
    try {
      std::size_t used = 0;
      const std::string text = req.get_param_value("min_accuracy");
      query.min_accuracy = std::stod(text, &used);
      if (used != text.size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      return send_error(res, 400, "INVALID", "min_accuracy must be a number");
    }
  }
  if (!query.cursor.empty() && !parse_uint(query.cursor, number)) return send_error(res, 400, "INVALID", "bad cursor");
  if (!query.sort.empty() && query.sort != "relevance" && query.sort != "name" && query.sort != "updated" &&
      query.sort != "size")
    return send_error(res, 400, "INVALID", "sort must be relevance, name, updated or size");
  if (query.text.size() > 512) return send_error(res, 400, "INVALID", "q is longer than 512 characters");
  res.set_content(catalog->search(query).dump(), "application/json");
}

void Server::Impl::api_model(const std::string& name, httplib::Response& res) {
  if (!valid_repository(name)) return send_error(res, 400, "NAME_INVALID", "invalid model name '" + name + "'");
  auto model = catalog->model(name);
  if (!model) return send_error(res, 404, "NAME_UNKNOWN", "no model '" + name + "'");
  add_signatures(*model);
  res.set_content(model->dump(), "application/json");
}


// Whether the release has a signature document (tag sha256-HEX.sig, as push --sign stores it) that
// verifies for this name, version and manifest digest against the public key it carries. Whether that
// key is trusted stays the puller's decision (pull --trust); the page shows the key id.
json Server::Impl::signature_status(const std::string& repo, const std::string& version, const std::string& digest) {
  const auto signature = catalog->resolve_tag(repo, "sha256-" + detail::digest_hex(digest) + ".sig");
  if (!signature) return {{"status", "unsigned"}};
  try {
    const json manifest = json::parse(detail::read_file(blob_path(*signature)));
    const std::string layer = manifest.at("layers").at(0).at("digest").get<std::string>();
    if (!valid_digest(layer)) throw std::invalid_argument("bad layer digest");
    const json document = json::parse(detail::read_file(blob_path(layer)));
    const std::string public_hex = document.at("public_key").get<std::string>();
    const detail::PublicKey key{public_hex, sha256_digest(public_hex).substr(7, 16)};
    const std::string id = detail::verify_release(document, {key}, repo, version, digest, repo + ":" + version);
    return {{"status", "verified"}, {"key_id", id}, {"signature_digest", *signature}};
  } catch (const std::exception& e) {
    return {{"status", "invalid"}, {"message", e.what()}};
  }
}

void Server::Impl::add_signatures(json& model) {
  if (!model.contains("versions")) return;
  for (json& v : model["versions"]) v["signature"] = signature_status(model["name"], v["version"], v["digest"]);
  for (const json& v : model["versions"]) {
    if (v["version"] == model["latest"]) model["signature"] = v["signature"];
  }
  if (!model.contains("signature")) model["signature"] = signature_status(model["name"], "", model["digest"]);
}

void Server::Impl::api_classify(const std::string& name, const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader) {
  if (!valid_repository(name))
    return send_field_error(res, 400, "NAME_INVALID", "name", "invalid model name '" + name + "'", true);
  int top = 5;
  if (req.has_param("top")) {
    std::uint64_t value = 0;
    if (!parse_uint(req.get_param_value("top"), value) || value < 1 || value > 100)
      return send_field_error(res, 400, "INVALID", "top", "top must be 1..100", true);
    top = static_cast<int>(value);
  }
  std::uint64_t declared = 0;
  if (req.has_header("Content-Length") && parse_uint(req.get_header_value("Content-Length"), declared) &&
      declared > options.max_image_bytes)
    return send_field_error(res, 413, "IMAGE_TOO_LARGE", "image",
                            "the body has " + std::to_string(declared) + " bytes, above the limit of " +
                                std::to_string(options.max_image_bytes),
                            true);
  // The release: ?version= (a tag) or the newest push.
  std::string version = req.get_param_value("version");
  std::string digest;
  if (!version.empty()) {
    if (!valid_tag(version)) return send_field_error(res, 400, "TAG_INVALID", "version", "invalid version '" + version + "'", true);
    const auto resolved = catalog->resolve_tag(name, version);
    if (!resolved) return send_field_error(res, 404, "MANIFEST_UNKNOWN", "version", "no version '" + version + "' of '" + name + "'", true);
    digest = *resolved;
  } else {
    const auto model = catalog->model(name);
    if (!model) return send_field_error(res, 404, "NAME_UNKNOWN", "name", "no model '" + name + "'", true);
    version = (*model)["latest"].get<std::string>();
    digest = (*model)["digest"].get<std::string>();
  }
  std::string package;
  try {
    const json manifest = json::parse(detail::read_file(blob_path(digest)));
    if (manifest.value("artifactType", std::string()) != kArtifactType)
      return send_field_error(res, 422, "NOT_A_MODEL", "name", "'" + name + ":" + version + "' is not an espresso model", true);
    for (const json& layer : manifest.at("layers")) {
      if (layer.value("mediaType", std::string()) == kPackageMediaType) package = layer.at("digest").get<std::string>();
    }
  } catch (const std::exception& e) {
    return send_field_error(res, 500, "UNKNOWN", "name", std::string("the manifest cannot be read: ") + e.what(), true);
  }
  if (!valid_digest(package))
    return send_field_error(res, 422, "NOT_A_MODEL", "name", "'" + name + ":" + version + "' has no package", true);

  // The image: the raw body, or the form field "image" of a multipart body.
  std::string body;
  bool too_large = false;
  bool field_seen = false;
  const auto keep = [&](const char* data, std::size_t length) {
    if (body.size() + length > options.max_image_bytes) {
      too_large = true;
      return false;
    }
    body.append(data, length);
    return true;
  };
  bool ok = false;
  if (req.is_multipart_form_data()) {
    bool in_image = false;
    ok = reader(
        [&](const httplib::MultipartFormData& part) {
          in_image = part.name == "image";
          field_seen = field_seen || in_image;
          return true;
        },
        [&](const char* data, std::size_t length) { return in_image ? keep(data, length) : true; });
    if (ok && !field_seen)
      return send_field_error(res, 400, "IMAGE_MISSING", "image", "the form has no field 'image'");
  } else {
    ok = reader(keep);
  }
  if (too_large)
    return send_field_error(res, 413, "IMAGE_TOO_LARGE", "image",
                            "the image is larger than the limit of " + std::to_string(options.max_image_bytes) + " bytes",
                            true);
  if (!ok) return send_field_error(res, 400, "IMAGE_INVALID", "image", "the body could not be read", true);
  if (body.empty()) return send_field_error(res, 400, "IMAGE_MISSING", "image", "the body holds no image");
  try {
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(body.data());
    json answer = try_it->classify(name, version, digest, blob_path(package), package,
                                   std::span<const std::uint8_t>(bytes, body.size()), top);
    res.set_content(answer.dump(), "application/json");
  } catch (const detail::TryItError& e) {
    send_field_error(res, e.status, e.code, e.field, e.message);
  }
}

// ---- pull-through cache ---------------------------------------------------------------------------

void Server::Impl::once(const std::string& key, const std::function<void()>& fetch) {
  std::promise<void> promise;
  std::shared_future<void> outcome;
  bool leader = false;
  {
    std::lock_guard lock(proxy_mutex);
    const auto found = fetching.find(key);
    if (found != fetching.end()) {
      outcome = found->second;
    } else {
      outcome = promise.get_future().share();
      fetching.emplace(key, outcome);
      leader = true;
    }
  }
  if (leader) {
    try {
      fetch();
      promise.set_value();
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
    std::lock_guard lock(proxy_mutex);
    fetching.erase(key);
  }
  outcome.get();
}

void Server::Impl::ensure_blob(const std::string& repo, const std::string& digest, std::uint64_t size) {
  if (fs::exists(blob_path(digest))) return;
  once("blob " + digest, [&] {
    if (!fs::exists(blob_path(digest))) upstream->fetch_blob(repo, digest, size, options.root);
  });
}

void Server::Impl::cache_manifest(const std::string& repo, const std::string& reference, int depth) {
  const detail::UpstreamManifest fetched = upstream->manifest(repo, reference, options.max_manifest_bytes);
  const std::string what = "upstream " + upstream->url() + ": manifest " + repo + ":" + reference;
  if (!valid_digest(reference) && catalog->resolve_tag(repo, reference) == fetched.digest) return;  // unchanged
  detail::PushedManifest pushed;
  try {
    pushed = detail::read_pushed_manifest(fetched.bytes, fetched.media_type);
  } catch (const StoreError& e) {
    throw detail::UpstreamError(502, "MANIFEST_INVALID", what + ": " + e.what());
  }
  // What it references comes first, so that here a manifest is never recorded without its content.
  if (pushed.index && depth > 0) throw detail::UpstreamError(502, "MANIFEST_INVALID", what + ": an index inside an index");
  for (const Descriptor& d : pushed.references) {
    if (pushed.index) {
      if (!catalog->manifest(repo, d.digest)) cache_manifest(repo, d.digest, depth + 1);
      continue;
    }
    try {
      ensure_blob(repo, d.digest, d.size);
    } catch (const detail::UpstreamError& e) {
      if (e.status() != 404) throw;
      // The manifest is there but not its content: the upstream is broken, not the request.
      throw detail::UpstreamError(502, "BLOB_UNKNOWN", what + " names a blob the upstream lacks: " + e.what());
    }
  }
  httplib::Response answer;
  store_manifest(repo, valid_digest(reference) ? fetched.digest : reference, fetched.bytes, fetched.media_type, answer);
  if (answer.status != 201) {
    const json body = json::parse(answer.body, nullptr, false);
    std::string why = answer.body;
    if (body.is_object() && body.contains("errors") && body["errors"].is_array() && !body["errors"].empty())
      why = body["errors"][0].value("message", why);
    throw detail::UpstreamError(502, "MANIFEST_INVALID", what + " is refused here: " + why);
  }
}

std::string Server::Impl::proxy_resolve(const std::string& repo, const std::string& reference) {
  if (valid_digest(reference)) {
    // Content addressed: once here, never asked again.
    if (!catalog->manifest(repo, reference)) {
      once("manifest " + repo + "@" + reference, [&] {
        if (!catalog->manifest(repo, reference)) cache_manifest(repo, reference, 0);
      });
    }
    return reference;
  }
  const std::string key = repo + ":" + reference;
  const auto fresh = [&] {
    std::lock_guard lock(proxy_mutex);
    const auto checked = tag_checked.find(key);
    return checked != tag_checked.end() && std::chrono::steady_clock::now() - checked->second < options.upstream_recheck;
  };
  const auto local = catalog->resolve_tag(repo, reference);
  if (local && fresh()) return *local;
  try {
    once("manifest " + key, [&] {
      cache_manifest(repo, reference, 0);
      std::lock_guard lock(proxy_mutex);
      tag_checked[key] = std::chrono::steady_clock::now();
    });
  } catch (const detail::UpstreamError&) {
    // The upstream is down, slow, broken or forgot the tag: what is here is still a complete release.
    if (local) return *local;
    throw;
  }
  const auto resolved = catalog->resolve_tag(repo, reference);
  if (!resolved) throw detail::UpstreamError(404, "MANIFEST_UNKNOWN", "no tag '" + reference + "' in " + repo);
  return *resolved;
}

void Server::Impl::proxy_tags(const Route& route, const httplib::Request& req, httplib::Response& res) {
  std::string query;
  std::uint64_t n = 0;
  if (req.has_param("n")) {
    if (!parse_uint(req.get_param_value("n"), n) || n == 0 || n > 10000)
      return send_error(res, 400, "PAGINATION_NUMBER_INVALID", "n must be 1..10000");
    query = "n=" + std::to_string(n);
  }
  if (req.has_param("last")) {
    const std::string last = req.get_param_value("last");
    if (!valid_tag(last)) return send_error(res, 400, "TAG_INVALID", "invalid tag '" + last + "'");
    query += (query.empty() ? "last=" : "&last=") + last;
  }
  try {
    const detail::UpstreamTags tags = upstream->tags(route.repo, query);
    if (!tags.link.empty() && tags.link.rfind("</v2/" + route.repo + "/tags/list?", 0) == 0) res.set_header("Link", tags.link);
    res.set_content(tags.body, "application/json");
  } catch (const detail::UpstreamError& e) {
    if (e.status() == 404 || !catalog->repo_exists(route.repo)) return send_error(res, e.status(), e.code(), e.what());
    // The upstream cannot answer: the tags cached here.
    const std::vector<std::string> tags = catalog->tags(route.repo, req.get_param_value("last"), n == 0 ? 1000 : static_cast<int>(n));
    res.set_header("Warning", "110 - \"upstream unavailable; tags cached here\"");
    res.set_content(json({{"name", route.repo}, {"tags", tags}}).dump(), "application/json");
  }
}

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.options = std::move(options);
  if (s.options.root.empty()) throw StoreError("store serve: --root is required");
  s.blobs = s.options.root / "blobs" / "sha256";
  s.uploads = s.options.root / "uploads";
  s.temp = s.options.root / "tmp";
  std::error_code ec;
  for (const fs::path& folder : {s.blobs, s.uploads, s.temp}) {
    fs::create_directories(folder, ec);
    if (ec) throw FileError(folder.string() + ": cannot be created: " + ec.message());
  }
  s.catalog = std::make_unique<detail::Catalog>(s.options.root / "catalog.db");
  s.auth = std::make_unique<detail::AuthStore>(s.options.root);
  if (s.options.auth) s.auth->secret();  // made now, so a bad root fails at start
  if (!s.options.upstream.empty()) {
    s.upstream = std::make_unique<detail::Upstream>(s.options.upstream, s.options.upstream_credentials,
                                                    s.options.upstream_timeout);
    fs::create_directories(s.options.root / "partial" / "sha256", ec);
    if (ec) throw FileError((s.options.root / "partial").string() + ": cannot be created: " + ec.message());
  }
  if (s.options.tls_cert.empty() != s.options.tls_key.empty())
    throw StoreError("store serve: --tls-cert and --tls-key go together");
  if (s.options.tls_cert.empty()) {
    s.server = std::make_unique<httplib::Server>();
  } else {
    for (const fs::path& file : {s.options.tls_cert, s.options.tls_key})
      if (!fs::is_regular_file(file, ec)) throw FileError(file.string() + ": no such file (TLS certificate or key)");
    auto tls = std::make_unique<httplib::SSLServer>(s.options.tls_cert.c_str(), s.options.tls_key.c_str());
    if (!tls->is_valid())
      throw StoreError("store serve: " + s.options.tls_cert.string() + " and " + s.options.tls_key.string() +
                       " are not a PEM certificate (chain) and its private key");
    s.server = std::move(tls);
  }
  s.try_it = std::make_unique<detail::TryIt>(s.options.root / "packages", s.options.classify_budget_bytes);
  // Leftovers of a crash: temporary files, and upload files no session knows.
  for (const auto& entry : fs::directory_iterator(s.blobs)) {
    if (entry.path().filename().string().rfind(".tmp-", 0) == 0) fs::remove(entry.path(), ec);
  }
  const std::vector<std::string> known = s.catalog->all_uploads();
  for (const auto& entry : fs::directory_iterator(s.uploads)) {
    if (std::find(known.begin(), known.end(), entry.path().filename().string()) == known.end())
      fs::remove(entry.path(), ec);
  }
  s.http().new_task_queue = [threads = s.options.threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  s.http().set_read_timeout(30, 0);
  s.http().set_write_timeout(30, 0);
  s.http().set_keep_alive_max_count(1000);
  // Headers and body go out in separate writes; without NODELAY each small request waits for the peer's
  // delayed ACK (about 40 ms).
  s.http().set_tcp_nodelay(true);
  s.setup_routes();
}

Server::~Server() { stop(); }

int Server::bind() {
  Impl& s = *impl_;
  if (s.options.port == 0) {
    s.port = s.http().bind_to_any_port(s.options.host);
  } else {
    s.port = s.http().bind_to_port(s.options.host, s.options.port) ? s.options.port : -1;
  }
  if (s.port <= 0)
    throw StoreError("store serve: cannot listen on " + s.options.host + ":" + std::to_string(s.options.port));
  return s.port;
}

void Server::run() {
  Impl& s = *impl_;
  std::thread janitor([&s, this] {
    const auto period = std::chrono::seconds(std::clamp<std::int64_t>(s.options.upload_ttl.count() / 4, 1, 600));
    std::unique_lock lock(s.janitor_mutex);
    while (!s.stopping) {
      s.janitor_wake.wait_for(lock, period);
      if (!s.stopping) expire_uploads();
    }
  });
  s.http().listen_after_bind();
  {
    std::lock_guard lock(s.janitor_mutex);
    s.stopping = true;
  }
  s.janitor_wake.notify_all();
  janitor.join();
}

void Server::stop() {
  if (impl_) impl_->http().stop();
}

int Server::port() const { return impl_->port; }

std::size_t Server::expire_uploads() {
  Impl& s = *impl_;
  const std::vector<std::string> stale = s.catalog->uploads_idle_since(now_seconds() - s.options.upload_ttl.count());
  for (const std::string& id : stale) s.remove_upload(id);
  return stale.size();
}

}  // namespace espresso::store

namespace espresso::store {

FsckReport Server::fsck() {
  Impl& s = *impl_;
  FsckReport report;
  for (const auto& entry : fs::directory_iterator(s.blobs)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0) continue;
    ++report.blobs;
    const std::string digest = "sha256:" + name;
    if (!valid_digest(digest) || sha256_file_digest(entry.path()) != digest) report.bad.push_back(digest);
  }
  for (const std::string& digest : s.catalog->referenced_blobs()) {
    if (!fs::exists(s.blob_path(digest))) report.missing.push_back(digest);
  }
  return report;
}

}  // namespace espresso::store
