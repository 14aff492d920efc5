// Incremental SHA-256 (OpenSSL's EVP, several times faster than libsodium's) and small file helpers
// shared by the store's server and client.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace espresso::store::detail {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, std::size_t size);
  // "sha256:" and 64 hex digits; the object cannot be updated afterwards.
  std::string finish();

 private:
  void* context_;
};

// Hashes `size` bytes of an open file from offset 0 into `hash` (for resuming a partial download).
void hash_prefix(int fd, std::uint64_t size, Sha256& hash, const std::string& name);

// The hex part of a valid digest.
inline std::string digest_hex(std::string_view digest) { return std::string(digest.substr(7)); }

// Writes bytes to `path` through a unique temporary file in the same folder, fsynced and renamed.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);
std::string read_file(const std::filesystem::path& path);
// fsync of a folder, so a rename into it survives a crash.
void sync_directory(const std::filesystem::path& folder);
// A name unique to this process, thread and moment, for temporary files.
std::string unique_suffix();

}  // namespace espresso::store::detail
