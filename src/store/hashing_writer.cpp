#include "store/hashing_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace espresso::store::detail {

namespace {

// Four 8 MiB buffers: large enough that each thread hand-off and write call moves megabytes, few
// enough that a pull holds at most 32 MiB.
constexpr std::size_t kBufferBytes = 8 << 20;
constexpr int kBuffers = 4;

}  // namespace

HashingWriter::HashingWriter(int fd, std::uint64_t position, Sha256& hash, std::uint64_t expected)
    : fd_(fd),
      hash_(&hash),
      next_offset_(position),
      capacity_(static_cast<std::size_t>(std::clamp<std::uint64_t>(expected + 1, 64 << 10, kBufferBytes))),
      buffers_(kBuffers) {
  for (int i = 0; i < kBuffers; ++i) free_.push_back(i);
}

HashingWriter::~HashingWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (hasher_.joinable()) hasher_.join();
}

std::span<char> HashingWriter::space() {
  if (current_ < 0) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !free_.empty(); });
    current_ = free_.front();
    free_.pop_front();
    lock.unlock();
    Buffer& b = buffers_[static_cast<std::size_t>(current_)];
    if (!b.data) b.data.reset(new char[capacity_]);
    b.used = 0;
    b.offset = next_offset_;
  }
  Buffer& b = buffers_[static_cast<std::size_t>(current_)];
  return {b.data.get() + b.used, capacity_ - b.used};
}

bool HashingWriter::commit(std::size_t n) {
  Buffer& b = buffers_[static_cast<std::size_t>(current_)];
  b.used += n;
  next_offset_ += n;
  if (b.used == capacity_) dispatch();
  std::lock_guard lock(mutex_);
  return !failed_;
}

bool HashingWriter::append(const char* data, std::size_t n) {
  while (n > 0) {
    const std::span<char> room = space();
    const std::size_t take = std::min(n, room.size());
    std::memcpy(room.data(), data, take);
    if (!commit(take)) return false;
    data += take;
    n -= take;
  }
  std::lock_guard lock(mutex_);
  return !failed_;
}

void HashingWriter::restart(Sha256& hash) {
  hash_ = &hash;
  next_offset_ = 0;
  if (current_ >= 0) buffers_[static_cast<std::size_t>(current_)].offset = 0;
}

void HashingWriter::dispatch() {
  const int index = current_;
  current_ = -1;
  if (!writer_.joinable()) {
    writer_ = std::thread([this] { write_loop(); });
    hasher_ = std::thread([this] { hash_loop(); });
  }
  {
    std::lock_guard lock(mutex_);
    buffers_[static_cast<std::size_t>(index)].pending = 2;
    to_write_.push_back(index);
    to_hash_.push_back(index);
  }
  changed_.notify_all();
}

void HashingWriter::release(int index) {
  {
    std::lock_guard lock(mutex_);
    if (--buffers_[static_cast<std::size_t>(index)].pending == 0) free_.push_back(index);
  }
  changed_.notify_all();
}

bool HashingWriter::write_buffer(const Buffer& buffer) {
  std::size_t done = 0;
  while (done < buffer.used) {
    const ssize_t n = ::pwrite(fd_, buffer.data.get() + done, buffer.used - done, static_cast<off_t>(buffer.offset + done));
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

void HashingWriter::write_loop() {
  for (;;) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopping_ || !to_write_.empty(); });
    if (to_write_.empty()) return;
    const int index = to_write_.front();
    to_write_.pop_front();
    const bool skip = failed_;
    lock.unlock();
    if (!skip && !write_buffer(buffers_[static_cast<std::size_t>(index)])) {
      lock.lock();
      failed_ = true;
      lock.unlock();
    }
    release(index);
  }
}

void HashingWriter::hash_loop() {
  for (;;) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopping_ || !to_hash_.empty(); });
    if (to_hash_.empty()) return;
    const int index = to_hash_.front();
    to_hash_.pop_front();
    lock.unlock();
    const Buffer& b = buffers_[static_cast<std::size_t>(index)];
    hash_->update(b.data.get(), b.used);
    release(index);
  }
}

bool HashingWriter::finish() {
  // The last, partly filled buffer is handled here: the queues drain first, so order holds.
  const int last = current_;
  current_ = -1;
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return static_cast<int>(free_.size()) == kBuffers - (last >= 0 ? 1 : 0); });
    if (failed_) return false;
  }
  if (last >= 0) {
    Buffer& b = buffers_[static_cast<std::size_t>(last)];
    hash_->update(b.data.get(), b.used);
    const bool ok = write_buffer(b);
    b.used = 0;
    std::lock_guard lock(mutex_);
    free_.push_back(last);
    if (!ok) failed_ = true;
    return ok;
  }
  return true;
}

}  // namespace espresso::store::detail
