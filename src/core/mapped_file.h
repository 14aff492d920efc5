// A read-only view of a whole file through mmap. Pages are private copy-on-write, so code that
// writes to a tensor wrapping the mapping changes only its own copy.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace espresso {

class MappedFile {
 public:
  // Throws FileError naming the path when it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
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
