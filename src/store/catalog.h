// The server's SQLite catalog: manifests, tags, upload sessions and the searchable model cards. One
// connection behind a mutex; every change is one transaction, so a tag moves atomically and a crash
// leaves either the old or the new state (WAL, synchronous=FULL).
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "espresso/store.h"

struct sqlite3;

namespace espresso::store::detail {

struct ManifestRow {
  std::string digest;
  std::string media_type;
  std::string artifact_type;
  std::uint64_t size = 0;
};

struct NewManifest {
  std::string repo;
  std::string digest;
  std::string media_type;
  std::string artifact_type;
  std::string subject;  // digest of the manifest it refers to, or empty
  std::uint64_t size = 0;
  std::string tag;      // empty: pushed by digest
  std::optional<nlohmann::json> card;  // an espresso model's card, indexed for search
  std::vector<std::string> blobs;      // digests it references
};

class Catalog {
 public:
  explicit Catalog(const std::filesystem::path& file);
  ~Catalog();
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  void put_manifest(const NewManifest& manifest, std::int64_t now);
  std::optional<std::string> resolve_tag(const std::string& repo, const std::string& tag);
  std::optional<ManifestRow> manifest(const std::string& repo, const std::string& digest);
  bool repo_exists(const std::string& repo);
  std::vector<std::string> tags(const std::string& repo, const std::string& last, int limit);
  std::vector<ManifestRow> referrers(const std::string& repo, const std::string& subject, const std::string& artifact_type);
  // Every tagged manifest: (repo, tag, digest).
  std::vector<std::array<std::string, 3>> all_tags();
  // The blobs every stored manifest references.
  std::vector<std::string> referenced_blobs();

  void begin_upload(const std::string& id, const std::string& repo, std::int64_t now);
  std::optional<std::string> upload_repo(const std::string& id);
  void touch_upload(const std::string& id, std::int64_t now);
  void end_upload(const std::string& id);
  std::vector<std::string> uploads_idle_since(std::int64_t before);
  std::vector<std::string> all_uploads();

  nlohmann::json search(const SearchQuery& query);
  std::optional<nlohmann::json> model(const std::string& repo);

 private:
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
};

}  // namespace espresso::store::detail
