// Caffe's LMDB datasets: a directory holding data.mdb, one record (a serialised Datum) per key.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace espresso::data {

// Writes records in key order; commits every few thousand records and at finish(). The directory is
// created and must not hold a database already.
class LmdbWriter {
 public:
  explicit LmdbWriter(const std::string& path);
  ~LmdbWriter();
  LmdbWriter(const LmdbWriter&) = delete;
  LmdbWriter& operator=(const LmdbWriter&) = delete;

  void put(std::string_view key, std::string_view value);
  // Commits what is pending; throws DataError naming the database when LMDB refuses.
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads records in key order, read-only and without a lock file, so databases on read-only media
// work. Not thread-safe: one reader per thread.
class LmdbReader {
 public:
  // Throws FileError when there is no database at `path`, DataError when it is not a valid one.
  explicit LmdbReader(const std::string& path);
  ~LmdbReader();
  LmdbReader(const LmdbReader&) = delete;
  LmdbReader& operator=(const LmdbReader&) = delete;

  std::int64_t size() const;
  const std::string& path() const;
  // The record at `position` (0-based, key order). Consecutive positions cost one cursor step; the
  // view stays valid until the next call.
  std::string_view value_at(std::int64_t position);
  std::string_view key() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace espresso::data
