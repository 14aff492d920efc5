// The CUDA backend's device-level functions, used by its own files; the rest of espresso reaches
// them through the Backend interface (make_cuda_backend in cuda_backend.cpp).
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace espresso::cuda {

// GPUs visible to this process; 0 without a GPU or driver.
int device_count();
// Throws DeviceError unless `device` is a usable GPU ("no CUDA device found", index out of range).
void require_device(Device device);
// Every visible GPU.
std::vector<DeviceInfo> list_devices();

// Device memory from the caching pool. `purpose` (a layer, "activation arena") goes into the
// out-of-memory error. Freed memory returns to the pool's cache once the last owner drops it, so
// owners must not drop memory that queued work still uses.
std::shared_ptr<void> allocate(std::size_t bytes, Device device, const std::string& purpose = "");
MemoryStats pool_stats(Device device);
// Starts the pool's peak_in_use_bytes again from what is in use now.
void reset_pool_peak(Device device);

// While any thread records a CUDA graph, CUDA refuses calls that synchronise the device implicitly
// (cudaMalloc/cudaFree, pinned allocations, creating or destroying streams and cuBLAS/cuDNN handles)
// and invalidates the recording. Captures and those calls hold this lock; it is recursive because the
// capturing thread itself may reach them.
std::recursive_mutex& capture_exclusion();
// Copies `bytes` between any two devices (cpu included); returns once the copy has completed.
void copy(void* destination, Device destination_device, const void* source, Device source_device,
          std::size_t bytes);
// Page-locked host memory (at least 64-byte aligned) that copy() moves to and from `device` with one DMA
// on its transfer stream instead of bouncing through the staging chunks.
std::shared_ptr<void> allocate_pinned(std::size_t bytes, Device device);
// Sets device memory to zero; returns once done.
void fill_zero(void* destination, Device device, std::size_t bytes);
// Copies every piece to `device` as one stream of pinned staging chunks: small pieces share a chunk,
// and the source pages of chunk k+1 are read ahead (an mmap'ed file pages in) while chunk k copies.
// Returns once everything has arrived.
void upload(Device device, const std::vector<UploadPiece>& pieces);

}  // namespace espresso::cuda
