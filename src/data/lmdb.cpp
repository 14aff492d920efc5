#include "data/lmdb.h"

#include <lmdb.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>

#include "espresso/errors.h"

namespace espresso::data {
namespace {

// Caffe's map size: a sparse 1 TiB reservation; the file grows only as records are written.
constexpr std::size_t kMapSize = std::size_t{1} << 40;
constexpr int kRecordsPerCommit = 4096;
// A reader hands the pages it has read back to the page cache after this many records: the file is
// mapped, and every page once read would otherwise count towards the process's resident memory until
// the whole database (60 MB for MNIST) is resident.
constexpr std::int64_t kRecordsPerRelease = 2048;

void check(int rc, const std::string& path, const char* what) {
  if (rc != MDB_SUCCESS) throw DataError(path + ": LMDB cannot " + what + " (" + mdb_strerror(rc) + ")");
}

}  // namespace

// The handles close with the Impl, so a constructor that throws half-way leaks nothing.
struct LmdbWriter::Impl {
  std::string path;
  MDB_env* env = nullptr;
  MDB_txn* txn = nullptr;
  MDB_dbi dbi = 0;
  int pending = 0;

  ~Impl() {
    if (txn) mdb_txn_abort(txn);
    if (env) mdb_env_close(env);
  }

  void begin() {
    check(mdb_txn_begin(env, nullptr, 0, &txn), path, "begin a transaction");
    check(mdb_dbi_open(txn, nullptr, 0, &dbi), path, "open the database");
  }
  void commit() {
    MDB_txn* done = txn;
    txn = nullptr;
    pending = 0;
    check(mdb_txn_commit(done), path, "commit");
  }
};

LmdbWriter::LmdbWriter(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  std::error_code ec;
  if (std::filesystem::exists(std::filesystem::path(path) / "data.mdb", ec))
    throw DataError(path + ": an LMDB database exists already; remove it first");
  std::filesystem::create_directories(path, ec);
  if (ec) throw FileError(path + ": cannot create the directory (" + ec.message() + ")");
  check(mdb_env_create(&impl_->env), path, "create an environment");
  check(mdb_env_set_mapsize(impl_->env, kMapSize), path, "set the map size");
  check(mdb_env_open(impl_->env, path.c_str(), 0, 0664), path, "open the environment");
  impl_->begin();
}

LmdbWriter::~LmdbWriter() = default;

void LmdbWriter::put(std::string_view key, std::string_view value) {
  if (!impl_->txn) impl_->begin();
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  MDB_val v{value.size(), const_cast<char*>(value.data())};
  check(mdb_put(impl_->txn, impl_->dbi, &k, &v, 0), impl_->path, "write a record");
  if (++impl_->pending >= kRecordsPerCommit) impl_->commit();
}

void LmdbWriter::finish() {
  if (impl_->txn) impl_->commit();
}

struct LmdbReader::Impl {
  std::string path;
  MDB_env* env = nullptr;
  MDB_txn* txn = nullptr;
  MDB_dbi dbi = 0;
  MDB_cursor* cursor = nullptr;
  std::int64_t size = 0;
  std::int64_t position = -1;  // where the cursor stands
  MDB_val key{};
  MDB_val value{};
  std::int64_t steps = 0;  // cursor moves since the last release
  // The span of the map the records read since the last release lie in.
  std::uintptr_t low = UINTPTR_MAX, high = 0;

  ~Impl() {
    if (cursor) mdb_cursor_close(cursor);
    if (txn) mdb_txn_abort(txn);
    if (env) mdb_env_close(env);
  }

  // The map is read-only and file-backed: dropped pages are read again from the page cache when the
  // cursor comes back to them, so nothing it holds becomes invalid.
  void release_pages() {
    if (high <= low) return;
    const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
    const std::uintptr_t first = low / page * page;
    madvise(reinterpret_cast<void*>(first), high - first, MADV_DONTNEED);
    low = UINTPTR_MAX;
    high = 0;
  }

  void step(MDB_cursor_op op) {
    if (++steps >= kRecordsPerRelease) {
      release_pages();
      steps = 0;
    }
    const int rc = mdb_cursor_get(cursor, &key, &value, op);
    if (rc == MDB_NOTFOUND) throw DataError(path + ": LMDB ended before record " + std::to_string(position));
    check(rc, path, "read a record");
    const auto start = reinterpret_cast<std::uintptr_t>(value.mv_data);
    low = std::min(low, start);
    high = std::max(high, start + value.mv_size);
  }
};

LmdbReader::LmdbReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(std::filesystem::path(path) / "data.mdb", ec))
    throw FileError(path + ": no LMDB database here (data.mdb is missing)");
  Impl& s = *impl_;
  check(mdb_env_create(&s.env), path, "create an environment");
  check(mdb_env_set_mapsize(s.env, kMapSize), path, "set the map size");
  check(mdb_env_open(s.env, path.c_str(), MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0664), path,
        "open the database");
  check(mdb_txn_begin(s.env, nullptr, MDB_RDONLY, &s.txn), path, "begin a read transaction");
  check(mdb_dbi_open(s.txn, nullptr, 0, &s.dbi), path, "open the database");
  MDB_stat stat{};
  check(mdb_stat(s.txn, s.dbi, &stat), path, "read its statistics");
  s.size = static_cast<std::int64_t>(stat.ms_entries);
  if (s.size == 0) throw DataError(path + ": the LMDB database holds no records");
  check(mdb_cursor_open(s.txn, s.dbi, &s.cursor), path, "open a cursor");
}

LmdbReader::~LmdbReader() = default;

std::int64_t LmdbReader::size() const { return impl_->size; }
const std::string& LmdbReader::path() const { return impl_->path; }

std::string_view LmdbReader::value_at(std::int64_t position) {
  Impl& s = *impl_;
  if (position < 0 || position >= s.size)
    throw DataError(s.path + ": record " + std::to_string(position) + " is out of range");
  if (position == s.position + 1 && s.position >= 0) {
    s.step(MDB_NEXT);
  } else if (position != s.position) {
    s.step(MDB_FIRST);
    for (std::int64_t i = 0; i < position; ++i) s.step(MDB_NEXT);
  }
  s.position = position;
  return {static_cast<const char*>(s.value.mv_data), s.value.mv_size};
}

std::string_view LmdbReader::key() const {
  return {static_cast<const char*>(impl_->key.mv_data), impl_->key.mv_size};
}

}  // namespace espresso::data
