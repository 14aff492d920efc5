// A whole file's bytes through mmap, or a private copy of bytes given in memory (named for messages,
// e.g. "<memory>"). Pages are private copy-on-write, so code that writes to a tensor wrapping them
// changes only its own copy.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace espresso {

class MappedFile {
 public:
  // Throws FileError naming the path when it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  // Page-aligned anonymous memory holding a copy of `size` bytes; throws FileError naming `name` when
  // it cannot be had.
  static std::shared_ptr<MappedFile> copy_of(const void* data, std::size_t size, const std::string& name);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  std::byte* mutable_data() { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::string path_;
};

}  // namespace espresso
