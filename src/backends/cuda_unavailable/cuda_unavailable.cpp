// The CUDA backend's entry points in builds without CUDA: nothing is found, and asking for a GPU
// says why.
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/device_info.h"
#include "espresso/errors.h"

namespace espresso::cuda {
namespace {

[[noreturn]] void fail_not_built(const std::string& what) {
  throw DeviceError(
      what + ": CUDA backend not built (configure with -DESPRESSO_CUDA=ON on a machine with nvcc and cuDNN)");
}

}  // namespace

bool built() { return false; }
int device_count() { return 0; }
std::vector<DeviceInfo> list_devices() { return {}; }
void require_device(Device device) { fail_not_built("device " + device.str()); }

std::shared_ptr<void> allocate(std::size_t, Device device, const std::string&) {
  fail_not_built("allocating on " + device.str());
}

void copy(void*, Device destination_device, const void*, Device source_device, std::size_t) {
  fail_not_built("copying from " + source_device.str() + " to " + destination_device.str());
}

void fill_zero(void*, Device device, std::size_t) { fail_not_built("writing to " + device.str()); }

void upload(Device device, const std::vector<UploadPiece>&) { fail_not_built("uploading to " + device.str()); }

PoolStats pool_stats(Device) { return {}; }

std::unique_ptr<Context> create_context(Device device, std::shared_ptr<const DeviceWeights>) {
  fail_not_built("device " + device.str());
}

void fill(Context& context, Tensor&, float) { fail_not_built("writing to " + context.device().str()); }

void apply_update(Context& context, const train::UpdateRule&, Tensor&, Tensor&, Tensor&, Tensor*) {
  fail_not_built("training on " + context.device().str());
}

double sum_of_squares(Context& context, const Tensor&) { fail_not_built("reading " + context.device().str()); }

bool has_kernel(const std::string&) { return false; }

void check_supported(const std::vector<const Layer*>&) { fail_not_built("running on a GPU"); }

std::unique_ptr<Kernel> make_kernel(const Layer&, const std::vector<Shape>&, Context&) { return nullptr; }

}  // namespace espresso::cuda
