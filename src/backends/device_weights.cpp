#include "espresso/device_weights.h"

#include <vector>

#include "backends/registry.h"
#include "espresso/errors.h"

namespace espresso {
namespace {

// Wide enough for every vector load and cuDNN's preferred alignment.
constexpr std::size_t kDeviceAlignment = 256;

std::size_t align_up(std::size_t n) {
  return (n + kDeviceAlignment - 1) / kDeviceAlignment * kDeviceAlignment;
}

// Each distinct weight once (layers may share a blob), in host address order so that the weights of
// an mmap'ed package are read front to back.
std::vector<Tensor> distinct_weights(const Graph& graph) {
  std::map<const void*, Tensor> by_address;
  for (const LayerSpec& layer : graph.layers) {
    for (const Tensor& w : layer.weights) {
      if (w.bytes() == 0) continue;
      if (!w.device().is_cpu()) {
        throw UnsupportedError("layer '" + layer.name + "': weights to upload must be on the CPU, found " +
                               w.device().str());
      }
      by_address.emplace(w.raw(), w);
    }
  }
  std::vector<Tensor> weights;
  for (auto& [address, w] : by_address) weights.push_back(std::move(w));
  return weights;
}

}  // namespace

std::size_t DeviceWeights::bytes_needed(const Graph& graph) {
  std::size_t bytes = 0;
  for (const Tensor& w : distinct_weights(graph)) bytes += align_up(w.bytes());
  return bytes;
}

std::shared_ptr<const DeviceWeights> DeviceWeights::upload(const Graph& graph, Device device) {
  if (device.is_cpu())
    throw UnsupportedError("DeviceWeights hold weights on a GPU; CPU nets use the host weights");
  std::shared_ptr<DeviceWeights> resident(new DeviceWeights);
  resident->device_ = device;
  const std::vector<Tensor> weights = distinct_weights(graph);
  for (const Tensor& w : weights) resident->bytes_ += align_up(w.bytes());
  if (resident->bytes_ == 0) return resident;

  Backend& backend = backend_for(device);
  const std::shared_ptr<void> memory =
      backend.allocate(resident->bytes_, device, "the weights of model '" + graph.name + "'");
  auto* base = static_cast<std::byte*>(memory.get());
  std::vector<UploadPiece> pieces;
  std::size_t offset = 0;
  for (const Tensor& w : weights) {
    // Every device tensor shares the one allocation; the last of them to go frees it.
    Tensor copy = Tensor::wrap(base + offset, w.shape(), w.dtype(), device, memory);
    pieces.push_back({copy.raw(), w.raw(), w.bytes()});
    resident->copies_.emplace(w.raw(), Copy{w, std::move(copy)});
    offset += align_up(w.bytes());
  }
  backend.upload(device, pieces);
  return resident;
}

const Tensor* DeviceWeights::find(const Tensor& host) const {
  auto it = copies_.find(host.raw());
  if (it == copies_.end()) return nullptr;
  const Tensor& copy = it->second.device;
  // A view of the same memory with another shape or type is not the uploaded tensor.
  if (copy.shape() != host.shape() || copy.dtype() != host.dtype()) return nullptr;
  return &copy;
}

}  // namespace espresso
