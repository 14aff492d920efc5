// NCCL, opened at run time: builds and machines without NCCL still build and train on one device. Only
// the handful of entry points used here are declared (as in nccl.h and cuda.h, whose ABI is stable).
// The CUDA driver API gives the stream NCCL runs on; the backend's primary context is made current so
// that NCCL and the net share the device's memory.
#include <dlfcn.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "espresso/errors.h"
#include "train/tcp_communicator.h"

namespace espresso::train {
namespace {

using Clock = std::chrono::steady_clock;

// nccl.h
using ncclComm_t = struct ncclComm*;
struct ncclUniqueId {
  char internal[128];
};
using ncclResult_t = int;
constexpr ncclResult_t ncclSuccess = 0;
constexpr ncclResult_t ncclInProgress = 7;
constexpr int ncclFloat32 = 7;
constexpr int ncclAvg = 4;
// cuda.h
using CUresult = int;
using CUdevice = int;
using CUcontext = struct CUctx_st*;
using CUstream = struct CUstream_st*;
constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_NOT_READY = 600;
constexpr unsigned CU_STREAM_NON_BLOCKING = 1;

struct Nccl {
  void* library = nullptr;
  ncclResult_t (*GetVersion)(int*) = nullptr;
  ncclResult_t (*GetUniqueId)(ncclUniqueId*) = nullptr;
  ncclResult_t (*CommInitRank)(ncclComm_t*, int, ncclUniqueId, int) = nullptr;
  ncclResult_t (*CommDestroy)(ncclComm_t) = nullptr;
  ncclResult_t (*CommAbort)(ncclComm_t) = nullptr;
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t*) = nullptr;
  ncclResult_t (*AllReduce)(const void*, void*, std::size_t, int, int, ncclComm_t, CUstream) = nullptr;
  ncclResult_t (*GroupStart)() = nullptr;
  ncclResult_t (*GroupEnd)() = nullptr;
  const char* (*GetErrorString)(ncclResult_t) = nullptr;
  std::string version;
  std::string error;  // why it could not be loaded
};

struct Driver {
  void* library = nullptr;
  CUresult (*Init)(unsigned) = nullptr;
  CUresult (*DeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*DevicePrimaryCtxRetain)(CUcontext*, CUdevice) = nullptr;
  CUresult (*DevicePrimaryCtxRelease)(CUdevice) = nullptr;
  CUresult (*CtxSetCurrent)(CUcontext) = nullptr;
  CUresult (*StreamCreate)(CUstream*, unsigned) = nullptr;
  CUresult (*StreamDestroy)(CUstream) = nullptr;
  CUresult (*StreamQuery)(CUstream) = nullptr;
  std::string error;
};

template <class F>
bool bind(void* library, const char* symbol, F& function) {
  function = reinterpret_cast<F>(dlsym(library, symbol));
  return function != nullptr;
}

const Nccl& nccl() {
  static const Nccl loaded = [] {
    Nccl n;
    std::vector<std::string> candidates;
    if (const char* chosen = std::getenv("ESPRESSO_NCCL_LIBRARY")) candidates.emplace_back(chosen);
    candidates.emplace_back("libnccl.so.2");
    for (const char* home : {std::getenv("CUDA_HOME"), std::getenv("CUDA_PATH")}) {
      if (home) {
        candidates.push_back(std::string(home) + "/lib/libnccl.so.2");
        candidates.push_back(std::string(home) + "/lib64/libnccl.so.2");
      }
    }
    for (const char* folder : {"/usr/local/cuda/lib", "/usr/local/cuda/lib64", "/usr/local/cuda-13.0/lib",
                               "/usr/lib/x86_64-linux-gnu"})
      candidates.push_back(std::string(folder) + "/libnccl.so.2");
    for (const std::string& path : candidates) {
      n.library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (n.library) break;
    }
    if (!n.library) {
      n.error =
          "libnccl.so.2 not found (tried the library path, $ESPRESSO_NCCL_LIBRARY, $CUDA_HOME/lib and "
          "/usr/local/cuda/lib)";
      return n;
    }
    const bool complete =
        bind(n.library, "ncclGetVersion", n.GetVersion) &&
        bind(n.library, "ncclGetUniqueId", n.GetUniqueId) &&
        bind(n.library, "ncclCommInitRank", n.CommInitRank) &&
        bind(n.library, "ncclCommDestroy", n.CommDestroy) && bind(n.library, "ncclCommAbort", n.CommAbort) &&
        bind(n.library, "ncclCommGetAsyncError", n.CommGetAsyncError) &&
        bind(n.library, "ncclAllReduce", n.AllReduce) && bind(n.library, "ncclGroupStart", n.GroupStart) &&
        bind(n.library, "ncclGroupEnd", n.GroupEnd) &&
        bind(n.library, "ncclGetErrorString", n.GetErrorString);
    if (!complete) {
      n.error = "libnccl.so.2 lacks an entry point espresso needs (NCCL older than 2.10?)";
      n.library = nullptr;
      return n;
    }
    int code = 0;
    n.GetVersion(&code);
    // 2.9 and older: 2903; 2.10 onwards: 21003.
    const int major = code >= 10000 ? code / 10000 : code / 1000;
    const int minor = code >= 10000 ? code / 100 % 100 : code / 100 % 10;
    n.version = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(code % 100);
    if (code < 21000) {
      n.error = "NCCL " + n.version + " is too old (ncclAvg needs 2.10 or newer)";
      n.library = nullptr;
    }
    return n;
  }();
  return loaded;
}

const Driver& driver() {
  static const Driver loaded = [] {
    Driver d;
    d.library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!d.library) {
      d.error = "the CUDA driver (libcuda.so.1) is not installed";
      return d;
    }
    const bool complete = bind(d.library, "cuInit", d.Init) && bind(d.library, "cuDeviceGet", d.DeviceGet) &&
                          bind(d.library, "cuDevicePrimaryCtxRetain", d.DevicePrimaryCtxRetain) &&
                          bind(d.library, "cuDevicePrimaryCtxRelease_v2", d.DevicePrimaryCtxRelease) &&
                          bind(d.library, "cuCtxSetCurrent", d.CtxSetCurrent) &&
                          bind(d.library, "cuStreamCreate", d.StreamCreate) &&
                          bind(d.library, "cuStreamDestroy_v2", d.StreamDestroy) &&
                          bind(d.library, "cuStreamQuery", d.StreamQuery);
    if (!complete) {
      d.error = "the CUDA driver lacks an entry point espresso needs";
      d.library = nullptr;
    }
    return d;
  }();
  return loaded;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const DistributedOptions& options, int device_index)
      : control_(options), timeout_(options.timeout_seconds), device_index_(device_index) {
    const Nccl& n = nccl();
    const Driver& d = driver();
    CUdevice device = 0;
    if (d.Init(0) != CUDA_SUCCESS || d.DeviceGet(&device, device_index) != CUDA_SUCCESS ||
        d.DevicePrimaryCtxRetain(&context_, device) != CUDA_SUCCESS ||
        d.CtxSetCurrent(context_) != CUDA_SUCCESS) {
      throw DeviceError(who() + ": cannot use cuda:" + std::to_string(device_index) +
                        " through the CUDA driver");
    }
    retained_ = true;
    if (d.StreamCreate(&stream_, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS)
      throw DeviceError(who() + ": cannot create a CUDA stream on cuda:" + std::to_string(device_index));
    // Rank 0 makes NCCL's id and hands it out over the TCP connections.
    ncclUniqueId id{};
    if (control_.rank() == 0) check(n.GetUniqueId(&id), "ncclGetUniqueId");
    control_.broadcast(&id, sizeof id, 0);
    check(n.CommInitRank(&comm_, control_.world_size(), id, control_.rank()), "ncclCommInitRank");
  }

  ~NcclCommunicator() override {
    const Driver& d = driver();
    if (comm_) (broken_ ? nccl().CommAbort : nccl().CommDestroy)(comm_);
    if (stream_) d.StreamDestroy(stream_);
    if (retained_) {
      CUdevice device = 0;
      if (d.DeviceGet(&device, device_index_) == CUDA_SUCCESS) d.DevicePrimaryCtxRelease(device);
    }
  }

  int rank() const override { return control_.rank(); }
  int world_size() const override { return control_.world_size(); }
  std::string name() const override { return "nccl " + nccl().version; }
  void all_reduce(float* data, std::size_t count, bool average) override {
    control_.all_reduce(data, count, average);
  }
  void broadcast(void* data, std::size_t bytes, int root) override { control_.broadcast(data, bytes, root); }
  void barrier() override { control_.barrier(); }
  std::vector<std::string> gather_text(const std::string& text) override {
    return control_.gather_text(text);
  }
  std::string broadcast_text(const std::string& text) override { return control_.broadcast_text(text); }

  void start_average(std::vector<Tensor> tensors) override {
    for (const Tensor& t : tensors) {
      if (t.device() != Device::cuda(device_index_) || t.dtype() != DType::f32)
        throw UnsupportedError(who() + ": NCCL averages f32 tensors on cuda:" +
                               std::to_string(device_index_) + ", found one on " + t.device().str());
    }
    const Nccl& n = nccl();
    driver().CtxSetCurrent(context_);
    check(n.GroupStart(), "ncclGroupStart");
    for (Tensor& t : tensors) {
      if (t.numel() == 0) continue;
      check(n.AllReduce(t.raw(), t.raw(), static_cast<std::size_t>(t.numel()), ncclFloat32, ncclAvg, comm_,
                        stream_),
            "ncclAllReduce");
    }
    check(n.GroupEnd(), "ncclGroupEnd");
  }

  void finish() override {
    const Driver& d = driver();
    d.CtxSetCurrent(context_);
    const Clock::time_point deadline =
        Clock::now() + std::chrono::milliseconds(static_cast<long long>(timeout_ * 1000));
    for (int spins = 0;; ++spins) {
      const CUresult state = d.StreamQuery(stream_);
      if (state == CUDA_SUCCESS) return;
      if (state != CUDA_ERROR_NOT_READY) {
        broken_ = true;
        throw DeviceError(who() + ": the NCCL stream failed (CUDA driver error " + std::to_string(state) +
                          ")");
      }
      ncclResult_t async = ncclSuccess;
      nccl().CommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        broken_ = true;
        throw DistributedError(who() + ": NCCL failed: " + nccl().GetErrorString(async));
      }
      if (spins % 64 == 0) {
        try {
          control_.check_peers();  // a dead rank: stop now rather than wait for NCCL's own timeout
        } catch (...) {
          broken_ = true;
          throw;
        }
      }
      if (Clock::now() > deadline) {
        broken_ = true;
        throw DistributedError(who() + ": the gradient all-reduce did not finish within " +
                               std::to_string(static_cast<long long>(timeout_)) + " s (a rank hung?)");
      }
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  std::string who() const { return "rank " + std::to_string(control_.rank()); }
  void check(ncclResult_t result, const char* what) {
    if (result == ncclSuccess) return;
    broken_ = true;
    throw DistributedError(who() + ": " + what + " failed: " + nccl().GetErrorString(result));
  }

  TcpCommunicator control_;
  double timeout_;
  int device_index_;
  CUcontext context_ = nullptr;
  bool retained_ = false;
  CUstream stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
  bool broken_ = false;
};

}  // namespace

bool nccl_available(std::string* version_or_why) {
  const Nccl& n = nccl();
  const bool found = n.library != nullptr;
  if (version_or_why) *version_or_why = found ? n.version : n.error;
  return found;
}

std::unique_ptr<Communicator> connect_nccl(const DistributedOptions& options, int device_index) {
  // The GPU machines need NVLink multicast off; respect a setting the user made.
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  const Nccl& n = nccl();
  if (!n.library) throw UnsupportedError("NCCL cannot be used: " + n.error);
  if (!driver().library) throw UnsupportedError("NCCL cannot be used: " + driver().error);
  return std::make_unique<NcclCommunicator>(options, device_index);
}

}  // namespace espresso::train
