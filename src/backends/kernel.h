// Kernel: a layer's forward pass prepared by a backend for fixed input shapes.
#pragma once

#include <memory>
#include <vector>

#include "layers/layer.h"

namespace espresso {

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) = 0;
  // A short description for profiles and `espresso info`, e.g. "im2col+sgemm".
  virtual const char* name() const = 0;
};

// Runs the layer's own reference forward.
class ReferenceKernel final : public Kernel {
 public:
  explicit ReferenceKernel(const Layer& layer) : layer_(layer) {}
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    layer_.forward(inputs, outputs);
  }
  const char* name() const override { return "reference"; }

 private:
  const Layer& layer_;
};

}  // namespace espresso
