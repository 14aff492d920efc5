#include "store/catalog.h"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <climits>
#include <sstream>

namespace espresso::store::detail {
namespace {

// A prepared statement that finalizes itself.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &statement_, nullptr) != SQLITE_OK)
      throw StoreError(std::string("catalog: cannot prepare query: ") + sqlite3_errmsg(db));
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, const std::string& text) {
    sqlite3_bind_text(statement_, index, text.c_str(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind(int index, std::int64_t value) {
    sqlite3_bind_int64(statement_, index, value);
    return *this;
  }
  Statement& bind(int index, double value) {
    sqlite3_bind_double(statement_, index, value);
    return *this;
  }
  Statement& bind_null(int index) {
    sqlite3_bind_null(statement_, index);
    return *this;
  }
  // True while there is a row.
  bool step() {
    const int rc = sqlite3_step(statement_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw StoreError(std::string("catalog: ") + sqlite3_errmsg(db_));
  }
  std::string text(int column) const {
    const unsigned char* value = sqlite3_column_text(statement_, column);
    return value == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(value));
  }
  std::int64_t integer(int column) const { return sqlite3_column_int64(statement_, column); }
  double real(int column) const { return sqlite3_column_double(statement_, column); }
  bool is_null(int column) const { return sqlite3_column_type(statement_, column) == SQLITE_NULL; }

 private:
  sqlite3* db_;
  sqlite3_stmt* statement_ = nullptr;
};

void exec(sqlite3* db, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string text = message != nullptr ? message : "unknown error";
    sqlite3_free(message);
    throw StoreError("catalog: " + text);
  }
}

// Commits at the end of a scope unless an exception leaves it first.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) { exec(db_, "BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (!committed_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec(db_, "COMMIT");
    committed_ = true;
  }

 private:
  sqlite3* db_;
  bool committed_ = false;
};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS manifests(repo TEXT NOT NULL, digest TEXT NOT NULL, media_type TEXT NOT NULL,
  artifact_type TEXT NOT NULL, subject TEXT NOT NULL, size INTEGER NOT NULL, created INTEGER NOT NULL,
  PRIMARY KEY(repo, digest));
CREATE INDEX IF NOT EXISTS manifests_subject ON manifests(repo, subject);
CREATE TABLE IF NOT EXISTS manifest_blobs(repo TEXT NOT NULL, manifest TEXT NOT NULL, blob TEXT NOT NULL,
  PRIMARY KEY(repo, manifest, blob));
CREATE TABLE IF NOT EXISTS tags(repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL, updated INTEGER NOT NULL,
  PRIMARY KEY(repo, tag));
CREATE TABLE IF NOT EXISTS uploads(id TEXT PRIMARY KEY, repo TEXT NOT NULL, touched INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cards(repo TEXT PRIMARY KEY, tag TEXT NOT NULL, digest TEXT NOT NULL, name TEXT NOT NULL,
  description TEXT NOT NULL, task TEXT NOT NULL, license TEXT NOT NULL, size_bytes INTEGER NOT NULL,
  accuracy REAL, updated INTEGER NOT NULL, card TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS cards_text USING fts5(repo UNINDEXED, name, description, task, labels, author,
  tokenize = 'unicode61');
)sql";

// The best accuracy-like metric of a card (keys holding "acc" or "top1"), or none.
std::optional<double> best_accuracy(const nlohmann::json& card) {
  std::optional<double> best;
  if (!card.contains("metrics") || !card["metrics"].is_object()) return best;
  for (const auto& [key, value] : card["metrics"].items()) {
    if (!value.is_number()) continue;
    if (key.find("acc") == std::string::npos && key.find("top1") == std::string::npos) continue;
    const double v = value.get<double>();
    if (!best || v > *best) best = v;
  }
  return best;
}

std::string string_field(const nlohmann::json& card, const char* key) {
  return card.contains(key) && card[key].is_string() ? card[key].get<std::string>() : std::string();
}

// User text as an FTS5 query: every word quoted (no operators get through) and matched as a prefix.
std::string fts_query(const std::string& text) {
  std::istringstream words(text);
  std::string query;
  for (std::string word; words >> word;) {
    std::string quoted = "\"";
    for (char c : word) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
    query += (query.empty() ? "" : " ") + quoted + "\"*";
  }
  return query;
}

}  // namespace

Catalog::Catalog(const std::filesystem::path& file) {
  if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string message = db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw FileError(file.string() + ": cannot open the catalog: " + message);
  }
  sqlite3_busy_timeout(db_, 5000);
  exec(db_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
  exec(db_, kSchema);
}

Catalog::~Catalog() { sqlite3_close(db_); }

void Catalog::put_manifest(const NewManifest& m, std::int64_t now) {
  std::lock_guard lock(mutex_);
  Transaction transaction(db_);
  Statement(db_,
            "INSERT OR IGNORE INTO manifests(repo, digest, media_type, artifact_type, subject, size, created) "
            "VALUES(?, ?, ?, ?, ?, ?, ?)")
      .bind(1, m.repo).bind(2, m.digest).bind(3, m.media_type).bind(4, m.artifact_type).bind(5, m.subject)
      .bind(6, static_cast<std::int64_t>(m.size)).bind(7, now).step();
  for (const std::string& blob : m.blobs) {
    Statement(db_, "INSERT OR IGNORE INTO manifest_blobs(repo, manifest, blob) VALUES(?, ?, ?)")
        .bind(1, m.repo).bind(2, m.digest).bind(3, blob).step();
  }
  if (!m.tag.empty()) {
    Statement(db_, "INSERT INTO tags(repo, tag, digest, updated) VALUES(?, ?, ?, ?) "
                   "ON CONFLICT(repo, tag) DO UPDATE SET digest = excluded.digest, updated = excluded.updated")
        .bind(1, m.repo).bind(2, m.tag).bind(3, m.digest).bind(4, now).step();
  }
  if (m.card && !m.tag.empty()) {
    const nlohmann::json& card = *m.card;
    Statement upsert(db_,
                     "INSERT INTO cards(repo, tag, digest, name, description, task, license, size_bytes, accuracy, "
                     "updated, card) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo) DO UPDATE SET "
                     "tag = excluded.tag, digest = excluded.digest, name = excluded.name, description = "
                     "excluded.description, task = excluded.task, license = excluded.license, size_bytes = "
                     "excluded.size_bytes, accuracy = excluded.accuracy, updated = excluded.updated, card = excluded.card");
    upsert.bind(1, m.repo).bind(2, m.tag).bind(3, m.digest).bind(4, string_field(card, "name"))
        .bind(5, string_field(card, "description")).bind(6, string_field(card, "task"))
        .bind(7, string_field(card, "license"))
        .bind(8, static_cast<std::int64_t>(card.value("size_bytes", std::uint64_t{0})));
    if (const auto accuracy = best_accuracy(card)) {
      upsert.bind(9, *accuracy);
    } else {
      upsert.bind_null(9);
    }
    upsert.bind(10, now).bind(11, card.dump()).step();
    std::string labels;
    if (card.contains("labels") && card["labels"].is_array()) {
      for (const auto& label : card["labels"]) {
        if (label.is_string()) labels += label.get<std::string>() + " ";
      }
    }
    Statement(db_, "DELETE FROM cards_text WHERE repo = ?").bind(1, m.repo).step();
    Statement(db_, "INSERT INTO cards_text(repo, name, description, task, labels, author) VALUES(?, ?, ?, ?, ?, ?)")
        .bind(1, m.repo).bind(2, m.repo + " " + string_field(card, "name")).bind(3, string_field(card, "description"))
        .bind(4, string_field(card, "task")).bind(5, labels).bind(6, string_field(card, "author")).step();
  }
  transaction.commit();
}

std::optional<std::string> Catalog::resolve_tag(const std::string& repo, const std::string& tag) {
  std::lock_guard lock(mutex_);
  Statement query(db_, "SELECT digest FROM tags WHERE repo = ? AND tag = ?");
  query.bind(1, repo).bind(2, tag);
  if (!query.step()) return std::nullopt;
  return query.text(0);
}

std::optional<ManifestRow> Catalog::manifest(const std::string& repo, const std::string& digest) {
  std::lock_guard lock(mutex_);
  Statement query(db_, "SELECT digest, media_type, artifact_type, size FROM manifests WHERE repo = ? AND digest = ?");
  query.bind(1, repo).bind(2, digest);
  if (!query.step()) return std::nullopt;
  return ManifestRow{query.text(0), query.text(1), query.text(2), static_cast<std::uint64_t>(query.integer(3))};
}

bool Catalog::repo_exists(const std::string& repo) {
  std::lock_guard lock(mutex_);
  Statement query(db_, "SELECT 1 FROM manifests WHERE repo = ? LIMIT 1");
  query.bind(1, repo);
  return query.step();
}

std::vector<std::string> Catalog::tags(const std::string& repo, const std::string& last, int limit) {
  std::lock_guard lock(mutex_);
  Statement query(db_, "SELECT tag FROM tags WHERE repo = ? AND tag > ? ORDER BY tag LIMIT ?");
  query.bind(1, repo).bind(2, last).bind(3, static_cast<std::int64_t>(limit));
  std::vector<std::string> tags;
  while (query.step()) tags.push_back(query.text(0));
  return tags;
}

std::vector<ManifestRow> Catalog::referrers(const std::string& repo, const std::string& subject,
                                            const std::string& artifact_type) {
  std::lock_guard lock(mutex_);
  Statement query(db_, "SELECT digest, media_type, artifact_type, size FROM manifests WHERE repo = ? AND subject = ? "
                       "AND (? = '' OR artifact_type = ?) ORDER BY created, digest");
  query.bind(1, repo).bind(2, subject).bind(3, artifact_type).bind(4, artifact_type);
  std::vector<ManifestRow> rows;
  while (query.step())
    rows.push_back({query.text(0), query.text(1), query.text(2), static_cast<std::uint64_t>(query.integer(3))});
  return rows;
}

std::vector<std::array<std::string, 3>> Catalog::all_tags() {
  std::lock_guard lock(mutex_);
  Statement query(db_, "SELECT repo, tag, digest FROM tags ORDER BY repo, tag");
  std::vector<std::array<std::string, 3>> rows;
  while (query.step()) rows.push_back({query.text(0), query.text(1), query.text(2)});
  return rows;
}

std::vector<std::string> Catalog::referenced_blobs() {
  std::lock_guard lock(mutex_);
  Statement query(db_, "SELECT DISTINCT blob FROM manifest_blobs UNION SELECT DISTINCT digest FROM manifests");
  std::vector<std::string> blobs;
  while (query.step()) blobs.push_back(query.text(0));
  return blobs;
}

void Catalog::begin_upload(const std::string& id, const std::string& repo, std::int64_t now) {
  std::lock_guard lock(mutex_);
  Statement(db_, "INSERT INTO uploads(id, repo, touched) VALUES(?, ?, ?)").bind(1, id).bind(2, repo).bind(3, now).step();
}

std::optional<std::string> Catalog::upload_repo(const std::string& id) {
  std::lock_guard lock(mutex_);
  Statement query(db_, "SELECT repo FROM uploads WHERE id = ?");
  query.bind(1, id);
  if (!query.step()) return std::nullopt;
  return query.text(0);
}

void Catalog::touch_upload(const std::string& id, std::int64_t now) {
  std::lock_guard lock(mutex_);
  Statement(db_, "UPDATE uploads SET touched = ? WHERE id = ?").bind(1, now).bind(2, id).step();
}

void Catalog::end_upload(const std::string& id) {
  std::lock_guard lock(mutex_);
  Statement(db_, "DELETE FROM uploads WHERE id = ?").bind(1, id).step();
}

std::vector<std::string> Catalog::uploads_idle_since(std::int64_t before) {
  std::lock_guard lock(mutex_);
  Statement query(db_, "SELECT id FROM uploads WHERE touched < ?");
  query.bind(1, before);
  std::vector<std::string> ids;
  while (query.step()) ids.push_back(query.text(0));
  return ids;
}

std::vector<std::string> Catalog::all_uploads() { return uploads_idle_since(INT64_MAX); }

nlohmann::json Catalog::search(const SearchQuery& q) {
  std::lock_guard lock(mutex_);
  const std::string text = fts_query(q.text);
  std::string order = q.sort;
  if (order.empty()) order = text.empty() ? "name" : "relevance";
  if (order == "relevance" && text.empty()) order = "name";
  const char* order_by = order == "relevance" ? "rank, c.repo"
                         : order == "updated" ? "c.updated DESC, c.repo"
                         : order == "size"    ? "c.size_bytes, c.repo"
                                              : "c.repo";
  const std::int64_t offset = q.cursor.empty() ? 0 : std::stoll(q.cursor);
  const int limit = std::clamp(q.limit, 1, 100);
  std::string sql = text.empty()
                        ? "SELECT c.repo, c.tag, c.digest, c.card, 0.0 AS rank FROM cards c WHERE 1"
                        : "SELECT c.repo, c.tag, c.digest, c.card, bm25(cards_text, 0.0, 10.0, 2.0, 4.0, 1.0, 1.0) AS rank "
                          "FROM cards_text JOIN cards c ON c.repo = cards_text.repo WHERE cards_text MATCH :q";
  sql += " AND (:task = '' OR c.task = :task) AND (:license = '' OR lower(c.license) = lower(:license))"
         " AND (:max_bytes = 0 OR c.size_bytes <= :max_bytes) AND (:min_acc <= 0 OR c.accuracy >= :min_acc)";
  sql += std::string(" ORDER BY ") + order_by + " LIMIT :limit OFFSET :offset";
  Statement query(db_, sql.c_str());
  int index = 1;
  if (!text.empty()) query.bind(index++, text);
  // Named parameters repeat; SQLite numbers each distinct name once, in order of first appearance.
  query.bind(index, q.task);
  query.bind(index + 1, q.license);
  query.bind(index + 2, static_cast<std::int64_t>(q.max_bytes));
  query.bind(index + 3, q.min_accuracy);
  query.bind(index + 4, static_cast<std::int64_t>(limit + 1));
  query.bind(index + 5, offset);
  nlohmann::json models = nlohmann::json::array();
  bool more = false;
  while (query.step()) {
    if (static_cast<int>(models.size()) == limit) {
      more = true;
      break;
    }
    nlohmann::json card = nlohmann::json::parse(query.text(3), nullptr, false);
    nlohmann::json entry = {{"name", query.text(0)}, {"version", query.text(1)}, {"digest", query.text(2)}};
    for (const char* key : {"description", "task", "license", "author", "size_bytes", "params", "flops", "metrics"}) {
      if (card.is_object() && card.contains(key)) entry[key] = card[key];
    }
    if (!text.empty()) entry["score"] = -query.real(4);
    models.push_back(entry);
  }
  nlohmann::json answer = {{"models", models}};
  answer["next_cursor"] = more ? nlohmann::json(std::to_string(offset + limit)) : nlohmann::json(nullptr);
  return answer;
}

std::optional<nlohmann::json> Catalog::model(const std::string& repo) {
  std::lock_guard lock(mutex_);
  Statement card(db_, "SELECT card, tag, digest FROM cards WHERE repo = ?");
  card.bind(1, repo);
  if (!card.step()) return std::nullopt;
  nlohmann::json answer = {{"name", repo},
                           {"latest", card.text(1)},
                           {"digest", card.text(2)},
                           {"card", nlohmann::json::parse(card.text(0), nullptr, false)}};
  Statement versions(db_, "SELECT t.tag, t.digest, t.updated FROM tags t JOIN manifests m ON m.repo = t.repo AND "
                          "m.digest = t.digest WHERE t.repo = ? AND m.artifact_type = ? ORDER BY t.updated DESC, t.tag");
  versions.bind(1, repo).bind(2, std::string(kArtifactType));
  nlohmann::json list = nlohmann::json::array();
  while (versions.step())
    list.push_back({{"version", versions.text(0)}, {"digest", versions.text(1)}, {"updated", versions.integer(2)}});
  answer["versions"] = list;
  return answer;
}

}  // namespace espresso::store::detail
