// The receiving end of a blob download: bytes go into a few large buffers that the network code fills
// in place (no copy between the socket and the buffer), and each full buffer is hashed on one thread
// and written to the file on another while the next one fills. A download is then limited by the
// slowest of receiving, SHA-256 and writing rather than by their sum.
//
// Small downloads (below one buffer) start no thread: finish() hashes and writes them inline.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "store/digest.h"

namespace espresso::store::detail {

class HashingWriter {
 public:
  // Writes to `fd` from byte `position` on; `hash` must already cover bytes [0, position).
  // `expected` (bytes still to come) sizes the buffers.
  HashingWriter(int fd, std::uint64_t position, Sha256& hash, std::uint64_t expected);
  ~HashingWriter();
  HashingWriter(const HashingWriter&) = delete;
  HashingWriter& operator=(const HashingWriter&) = delete;

  // Free room in the buffer being filled (never empty); waits while every buffer is in flight.
  std::span<char> space();
  // `n` bytes were placed at the start of space(). False once a write has failed.
  bool commit(std::size_t n);
  // Copies bytes in (for callers that cannot receive in place).
  bool append(const char* data, std::size_t n);
  // Starts over at byte 0 with another hash; only before the first commit or append.
  void restart(Sha256& hash);
  // Hashes and writes what is left and waits for both threads. True when every write succeeded;
  // position() is then the file offset after the last byte.
  bool finish();
  std::uint64_t position() const { return next_offset_; }

 private:
  struct Buffer {
    std::unique_ptr<char[]> data;
    std::size_t used = 0;
    std::uint64_t offset = 0;
    int pending = 0;  // workers still to process it
  };
  void dispatch();
  void release(int index);
  void write_loop();
  void hash_loop();
  bool write_buffer(const Buffer& buffer);

  int fd_;
  Sha256* hash_;
  std::uint64_t next_offset_;
  std::size_t capacity_;
  std::vector<Buffer> buffers_;
  int current_ = -1;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<int> free_;
  std::deque<int> to_write_;
  std::deque<int> to_hash_;
  bool stopping_ = false;
  bool failed_ = false;
  std::thread writer_;
  std::thread hasher_;
};

}  // namespace espresso::store::detail
