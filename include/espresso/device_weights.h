// A model's weights resident on a GPU: uploaded once and shared, read-only, by any number of Nets
// (each with its own stream, activation arena, plan and CUDA graph).
#pragma once

#include <cstddef>
#include <map>
#include <memory>

#include "espresso/graph.h"
#include "espresso/tensor.h"

namespace espresso {

class DeviceWeights {
 public:
  // Device memory that upload() takes for `graph`: every distinct weight tensor once, aligned.
  static std::size_t bytes_needed(const Graph& graph);
  // Copies every weight of `graph` to the GPU `device` in one allocation and one pass through the
  // pinned staging buffers (an mmap'ed package is read ahead while earlier chunks copy). The host
  // tensors are held, so their addresses stay valid as lookup keys. Throws DeviceError.
  static std::shared_ptr<const DeviceWeights> upload(const Graph& graph, Device device);

  Device device() const { return device_; }
  std::size_t bytes() const { return bytes_; }
  std::size_t tensor_count() const { return copies_.size(); }
  // The device copy of `host` (a weight of the uploaded graph, or another handle to its memory), or
  // nullptr for tensors that were not uploaded. Safe to call from any thread.
  const Tensor* find(const Tensor& host) const;

 private:
  DeviceWeights() = default;

  struct Copy {
    Tensor host;
    Tensor device;
  };
  Device device_;
  std::size_t bytes_ = 0;
  std::map<const void*, Copy> copies_;
};

}  // namespace espresso
