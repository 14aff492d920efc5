// A caching pool over cudaMalloc. Nets plan their memory once per input shape, so the same sizes
// come back again and again; keeping freed blocks avoids cudaMalloc/cudaFree, which synchronise
// the whole device.
#include <algorithm>
#include <map>
#include <mutex>
#include <string>

#include "backends/cuda/check.h"
#include "backends/cuda/cuda_backend.h"
#include "espresso/errors.h"

namespace espresso::cuda {
namespace {

constexpr std::size_t kMinBlock = 512;
constexpr std::size_t kSmallLimit = std::size_t{1} << 20;
constexpr std::size_t kLargeGranule = std::size_t{2} << 20;

// Small blocks come in powers of two, large ones in 2 MiB steps: few distinct sizes, so freed
// blocks are found again, and at most 2 MiB (or half a small block) wasted.
std::size_t size_class(std::size_t bytes) {
  if (bytes <= kSmallLimit) {
    std::size_t size = kMinBlock;
    while (size < bytes) size *= 2;
    return size;
  }
  return (bytes + kLargeGranule - 1) / kLargeGranule * kLargeGranule;
}

std::string describe_bytes(std::size_t bytes) {
  const double mib = static_cast<double>(bytes) / (1 << 20);
  return std::to_string(bytes) + " bytes (" + std::to_string(static_cast<long long>(mib + 0.5)) + " MiB)";
}

class Pool {
 public:
  std::shared_ptr<void> allocate(std::size_t bytes, int device, const std::string& purpose) {
    const std::size_t size = size_class(bytes);
    // Taken before the pool's own lock, always in this order: a miss calls cudaMalloc.
    std::lock_guard exclusion(capture_exclusion());
    std::lock_guard lock(mutex_);
    PerDevice& pool = devices_[device];
    void* block = nullptr;
    if (auto it = pool.cached.find(size); it != pool.cached.end()) {
      block = it->second;
      pool.cached.erase(it);
      pool.cached_bytes -= size;
    } else {
      block = fresh_block(pool, size, bytes, device, purpose);
    }
    pool.in_use_bytes += size;
    // Entries stay when their count drops to zero, so the release can hold on to its own.
    const auto use = pool.by_purpose.try_emplace(purpose.empty() ? "tensors" : purpose, 0).first;
    use->second += size;
    if (pool.in_use_bytes > pool.peak_in_use_bytes) {
      pool.peak_in_use_bytes = pool.in_use_bytes;
      pool.at_peak = pool.by_purpose;
    }
    return {block, [this, device, size, use](void* p) { release(p, device, size, use); }};
  }

  MemoryStats stats(int device) {
    std::lock_guard lock(mutex_);
    const PerDevice& pool = devices_[device];
    MemoryStats stats{pool.in_use_bytes, pool.cached_bytes, pool.peak_in_use_bytes, {}};
    for (const auto& [purpose, bytes] : pool.at_peak) {
      if (bytes > 0) stats.peak_by_purpose.emplace_back(purpose, bytes);
    }
    std::stable_sort(stats.peak_by_purpose.begin(), stats.peak_by_purpose.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    return stats;
  }

  void reset_peak(int device) {
    std::lock_guard lock(mutex_);
    PerDevice& pool = devices_[device];
    pool.peak_in_use_bytes = pool.in_use_bytes;
    pool.at_peak = pool.by_purpose;
  }

 private:
  struct PerDevice {
    std::multimap<std::size_t, void*> cached;
    std::size_t in_use_bytes = 0;
    std::size_t cached_bytes = 0;
    std::size_t peak_in_use_bytes = 0;
    std::map<std::string, std::size_t> by_purpose;  // bytes in use, by the purpose allocate() was given
    std::map<std::string, std::size_t> at_peak;     // by_purpose when in_use_bytes last reached its peak
  };

  void* fresh_block(PerDevice& pool, std::size_t size, std::size_t asked, int device,
                    const std::string& purpose) {
    DeviceGuard guard(device);
    void* block = nullptr;
    cudaError_t status = cudaMalloc(&block, size);
    if (status == cudaErrorMemoryAllocation) {
      // The cache may hold the memory we need in blocks of other sizes: give it back and retry once.
      cudaGetLastError();
      free_cached(pool);
      status = cudaMalloc(&block, size);
    }
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw OutOfMemoryError("out of memory on cuda:" + std::to_string(device) + ": could not allocate " +
                             describe_bytes(asked) + (purpose.empty() ? "" : " for " + purpose) +
                             "; espresso holds " + describe_bytes(pool.in_use_bytes) + " in use");
    }
    check(status, "cudaMalloc");
    return block;
  }

  void free_cached(PerDevice& pool) {
    for (const auto& [size, block] : pool.cached) cudaFree(block);
    pool.cached.clear();
    pool.cached_bytes = 0;
  }

  void release(void* block, int device, std::size_t size, std::map<std::string, std::size_t>::iterator use) {
    std::lock_guard lock(mutex_);
    PerDevice& pool = devices_[device];
    pool.in_use_bytes -= size;
    use->second -= size;
    pool.cached.emplace(size, block);
    pool.cached_bytes += size;
  }

  std::mutex mutex_;
  std::map<int, PerDevice> devices_;
};

// Never destroyed: tensors may outlive static destruction, and the driver reclaims device memory
// at process exit anyway.
Pool& pool() {
  static Pool* instance = new Pool;
  return *instance;
}

}  // namespace

std::shared_ptr<void> allocate(std::size_t bytes, Device device, const std::string& purpose) {
  require_device(device);
  return pool().allocate(bytes, device.index, purpose);
}

MemoryStats pool_stats(Device device) { return pool().stats(device.index); }

void reset_pool_peak(Device device) { pool().reset_peak(device.index); }

}  // namespace espresso::cuda
