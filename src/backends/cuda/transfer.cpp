// Copies between host and device go through pinned staging buffers: a plain cudaMemcpy from
// pageable memory may return before the data has arrived, and pinned chunks let the host-side
// memcpy of one chunk overlap the DMA of the other. Host memory that is pinned already (from
// allocate_pinned: the batch staging of `espresso serve`) is copied with one DMA, no staging memcpy.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "backends/cuda/check.h"
#include "backends/cuda/cuda_backend.h"
#include "espresso/errors.h"

namespace espresso::cuda {
namespace {

constexpr std::size_t kChunk = std::size_t{4} << 20;
constexpr int kChunks = 2;

// The page-locked host ranges allocate_pinned handed out and that are still alive.
class PinnedRanges {
 public:
  void add(const void* begin, std::size_t bytes) {
    std::unique_lock lock(mutex_);
    ranges_[reinterpret_cast<std::uintptr_t>(begin)] = bytes;
  }
  void remove(const void* begin) {
    std::unique_lock lock(mutex_);
    ranges_.erase(reinterpret_cast<std::uintptr_t>(begin));
  }
  // Whether [begin, begin + bytes) lies within one pinned allocation.
  bool contains(const void* begin, std::size_t bytes) const {
    const auto address = reinterpret_cast<std::uintptr_t>(begin);
    std::shared_lock lock(mutex_);
    auto it = ranges_.upper_bound(address);
    if (it == ranges_.begin()) return false;
    --it;
    return address - it->first <= it->second && bytes <= it->second - (address - it->first);
  }

 private:
  mutable std::shared_mutex mutex_;
  std::map<std::uintptr_t, std::size_t> ranges_;
};

PinnedRanges& pinned_ranges() {
  static auto* ranges = new PinnedRanges;  // never destroyed: pinned memory may outlive static objects
  return *ranges;
}

// One per device: a stream of its own, so copies never wait on a Net's queued work, and its
// staging chunks.
class Transfers {
  // A part of an upload: `bytes` from `source` through the chunk's staging buffer at `staging_offset`.
  struct Segment {
    std::size_t staging_offset;
    std::byte* destination;
    const std::byte* source;
    std::size_t bytes;
  };

  // Packs the pieces end to end into chunk-sized groups of segments.
  static std::vector<std::vector<Segment>> split_into_chunks(const std::vector<UploadPiece>& pieces) {
    std::vector<std::vector<Segment>> chunks;
    std::size_t fill = kChunk;
    for (const UploadPiece& piece : pieces) {
      auto* destination = static_cast<std::byte*>(piece.device_destination);
      const auto* source = static_cast<const std::byte*>(piece.host_source);
      for (std::size_t offset = 0; offset < piece.bytes;) {
        if (fill == kChunk) {
          chunks.emplace_back();
          fill = 0;
        }
        const std::size_t n = std::min(kChunk - fill, piece.bytes - offset);
        chunks.back().push_back({fill, destination + offset, source + offset, n});
        fill += n;
        offset += n;
      }
    }
    return chunks;
  }

  // Asks the kernel to page in a chunk's sources in the background; a hint, so failures (memory
  // that is not a mapping) do not matter.
  static void read_ahead(const std::vector<Segment>& chunk) {
    static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    for (const Segment& s : chunk) {
      const auto begin = reinterpret_cast<std::uintptr_t>(s.source) / page * page;
      const auto end = reinterpret_cast<std::uintptr_t>(s.source) + s.bytes;
      ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);
    }
  }

 public:
  explicit Transfers(int device) : device_(device) {
    const std::lock_guard exclusion(capture_exclusion());
    DeviceGuard guard(device_);
    ESPRESSO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    for (int k = 0; k < kChunks; ++k) {
      ESPRESSO_CUDA_CHECK(cudaHostAlloc(&staging_[k], kChunk, cudaHostAllocPortable));
      ESPRESSO_CUDA_CHECK(cudaEventCreateWithFlags(&done_[k], cudaEventDisableTiming));
    }
  }

  void upload(void* device_destination, const void* host_source, std::size_t bytes) {
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    if (pinned_ranges().contains(host_source, bytes)) {
      ESPRESSO_CUDA_CHECK(
          cudaMemcpyAsync(device_destination, host_source, bytes, cudaMemcpyHostToDevice, stream_));
      ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return;
    }
    const auto* source = static_cast<const std::byte*>(host_source);
    auto* destination = static_cast<std::byte*>(device_destination);
    for (std::size_t offset = 0, k = 0; offset < bytes; offset += kChunk, k = (k + 1) % kChunks) {
      const std::size_t n = std::min(kChunk, bytes - offset);
      // The chunk's previous DMA must have read it before we overwrite it.
      ESPRESSO_CUDA_CHECK(cudaEventSynchronize(done_[k]));
      std::memcpy(staging_[k], source + offset, n);
      ESPRESSO_CUDA_CHECK(
          cudaMemcpyAsync(destination + offset, staging_[k], n, cudaMemcpyHostToDevice, stream_));
      ESPRESSO_CUDA_CHECK(cudaEventRecord(done_[k], stream_));
    }
    ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void upload(const std::vector<UploadPiece>& pieces) {
    const std::vector<std::vector<Segment>> chunks = split_into_chunks(pieces);
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      if (i + 1 < chunks.size()) read_ahead(chunks[i + 1]);
      const std::size_t k = i % kChunks;
      ESPRESSO_CUDA_CHECK(cudaEventSynchronize(done_[k]));
      auto* staging = static_cast<std::byte*>(staging_[k]);
      for (const Segment& s : chunks[i]) std::memcpy(staging + s.staging_offset, s.source, s.bytes);
      for (const Segment& s : chunks[i]) {
        ESPRESSO_CUDA_CHECK(
            cudaMemcpyAsync(s.destination, staging + s.staging_offset, s.bytes, cudaMemcpyHostToDevice, stream_));
      }
      ESPRESSO_CUDA_CHECK(cudaEventRecord(done_[k], stream_));
    }
    ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void download(void* host_destination, const void* device_source, std::size_t bytes) {
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    if (pinned_ranges().contains(host_destination, bytes)) {
      ESPRESSO_CUDA_CHECK(
          cudaMemcpyAsync(host_destination, device_source, bytes, cudaMemcpyDeviceToHost, stream_));
      ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return;
    }
    const auto* source = static_cast<const std::byte*>(device_source);
    auto* destination = static_cast<std::byte*>(host_destination);
    // Queue chunk i+1's DMA before unpacking chunk i.
    std::size_t pending_offset = 0, pending_bytes = 0;
    int pending_chunk = -1;
    auto unpack_pending = [&] {
      if (pending_chunk < 0) return;
      ESPRESSO_CUDA_CHECK(cudaEventSynchronize(done_[pending_chunk]));
      std::memcpy(destination + pending_offset, staging_[pending_chunk], pending_bytes);
      pending_chunk = -1;
    };
    for (std::size_t offset = 0, k = 0; offset < bytes; offset += kChunk, k = (k + 1) % kChunks) {
      const std::size_t n = std::min(kChunk, bytes - offset);
      ESPRESSO_CUDA_CHECK(cudaMemcpyAsync(staging_[k], source + offset, n, cudaMemcpyDeviceToHost, stream_));
      ESPRESSO_CUDA_CHECK(cudaEventRecord(done_[k], stream_));
      unpack_pending();
      pending_offset = offset;
      pending_bytes = n;
      pending_chunk = static_cast<int>(k);
    }
    unpack_pending();
  }

  void device_copy(void* destination, int destination_device, const void* source, std::size_t bytes) {
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    if (destination_device == device_) {
      ESPRESSO_CUDA_CHECK(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToDevice, stream_));
    } else {
      ESPRESSO_CUDA_CHECK(
          cudaMemcpyPeerAsync(destination, destination_device, source, device_, bytes, stream_));
    }
    ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void zero(void* destination, std::size_t bytes) {
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    ESPRESSO_CUDA_CHECK(cudaMemsetAsync(destination, 0, bytes, stream_));
    ESPRESSO_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  int device_;
  std::mutex mutex_;
  cudaStream_t stream_ = nullptr;
  void* staging_[kChunks] = {};
  cudaEvent_t done_[kChunks] = {};
};

// Never destroyed, like the memory pool: the driver releases everything at exit.
Transfers& transfers(int device) {
  static std::mutex mutex;
  static auto* by_device = new std::map<int, std::unique_ptr<Transfers>>;
  std::lock_guard lock(mutex);
  std::unique_ptr<Transfers>& slot = (*by_device)[device];
  if (!slot) slot = std::make_unique<Transfers>(device);
  return *slot;
}

}  // namespace

void copy(void* destination, Device destination_device, const void* source, Device source_device,
          std::size_t bytes) {
  if (bytes == 0) return;
  if (destination_device.is_cpu() && source_device.is_cpu()) {
    if (destination != source) std::memmove(destination, source, bytes);
    return;
  }
  if (!destination_device.is_cpu()) require_device(destination_device);
  if (!source_device.is_cpu()) require_device(source_device);
  if (source_device.is_cpu()) {
    transfers(destination_device.index).upload(destination, source, bytes);
  } else if (destination_device.is_cpu()) {
    transfers(source_device.index).download(destination, source, bytes);
  } else if (destination != source) {
    transfers(source_device.index).device_copy(destination, destination_device.index, source, bytes);
  }
}

std::shared_ptr<void> allocate_pinned(std::size_t bytes, Device device) {
  require_device(device);
  void* memory = nullptr;
  {
    // cudaHostAlloc synchronises implicitly: never while another thread records a CUDA graph.
    const std::lock_guard exclusion(capture_exclusion());
    DeviceGuard guard(device.index);
    const cudaError_t status = cudaHostAlloc(&memory, std::max<std::size_t>(bytes, 64), cudaHostAllocPortable);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      throw DeviceError("out of memory allocating " + std::to_string(bytes) +
                        " bytes of page-locked host memory for " + device.str() + ": " +
                        cudaGetErrorString(status));
    }
  }
  pinned_ranges().add(memory, std::max<std::size_t>(bytes, 64));
  return std::shared_ptr<void>(memory, [](void* p) {
    pinned_ranges().remove(p);
    const std::lock_guard exclusion(capture_exclusion());
    (void)cudaFreeHost(p);
  });
}

void upload(Device device, const std::vector<UploadPiece>& pieces) {
  require_device(device);
  transfers(device.index).upload(pieces);
}

void fill_zero(void* destination, Device device, std::size_t bytes) {
  if (bytes == 0) return;
  require_device(device);
  transfers(device.index).zero(destination, bytes);
}

}  // namespace espresso::cuda
