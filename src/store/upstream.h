// The server's side of `store serve --upstream URL` (docs/store.md, "Pull-through cache"): how it
// talks to the upstream registry. It is the client's own registry code (store/client.cpp: bearer-token
// challenges, the verified and resumable blob download), so the upstream is spoken to exactly as
// `espresso pull` speaks to a registry.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "espresso/store.h"

namespace espresso::store::detail {

// The upstream could not give what was asked. `status` is what our server answers: 404 when the
// upstream says it has no such thing, 502 when it answered badly (an error status, bytes that do not
// match their digest, a malformed manifest), 504 when it could not be reached in time. The message
// names the upstream.
class UpstreamError : public StoreError {
 public:
  UpstreamError(int status, std::string code, const std::string& message)
      : StoreError(message), status_(status), code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string code_;
};

struct UpstreamManifest {
  std::string bytes;
  std::string media_type;  // the Content-Type the upstream gave
  std::string digest;      // sha256 of the bytes (checked against the upstream's Docker-Content-Digest)
};

struct UpstreamTags {
  std::string body;  // the upstream's JSON answer
  std::string link;  // its Link header, if any
};

class Upstream {
 public:
  // `url`: http://HOST:PORT, https://HOST[:PORT] or HOST:PORT (HTTPS, or plain HTTP for loopback as the
  // client does). `credentials`: an `espresso login` credentials file for the upstream's token service
  // (empty: anonymous). `timeout`: how long the upstream may stay silent (504 after). Throws StoreError
  // for a malformed URL.
  Upstream(const std::string& url, const std::filesystem::path& credentials, std::chrono::seconds timeout);

  // The URL as given, for messages.
  const std::string& url() const { return url_; }

  // GET /v2/REPO/manifests/REFERENCE (a tag or a digest). A digest reference must match the bytes.
  // Throws UpstreamError.
  UpstreamManifest manifest(const std::string& repo, const std::string& reference, std::size_t max_bytes) const;

  // GET /v2/REPO/tags/list with `query` ("n=..&last=.."). Throws UpstreamError.
  UpstreamTags tags(const std::string& repo, const std::string& query) const;

  // Downloads blob `digest` of REPO into ROOT/blobs/sha256/HEX through ROOT/partial/sha256/HEX (flocked,
  // resumable), hashed while it arrives and renamed into place only when the digest matches; fsynced.
  // `size` 0: asked with HEAD first. Returns the bytes transferred. Throws UpstreamError; a blob whose
  // bytes do not match is never renamed into blobs/ (502 DIGEST_INVALID).
  std::uint64_t fetch_blob(const std::string& repo, const std::string& digest, std::uint64_t size,
                           const std::filesystem::path& root) const;

 private:
  std::string url_;
  std::string registry_;  // host[:port]
  ClientOptions options_;  // how the upstream is reached: transport, CA file, credentials, timeout
};

}  // namespace espresso::store::detail
