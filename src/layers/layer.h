// Layer: parameters, shape inference and the plain reference kernel of one layer type.
// The reference is the test oracle for every fast variant; keep it simple and obviously right.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "espresso/errors.h"
#include "espresso/graph.h"
#include "espresso/tensor.h"

namespace espresso {

class Layer {
 public:
  explicit Layer(const LayerSpec& spec) : spec_(spec) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& name() const { return spec_.name; }
  const std::string& type() const { return spec_.type; }
  const LayerSpec& spec() const { return spec_; }
  const std::vector<Tensor>& weights() const { return spec_.weights; }
  std::vector<Tensor>& weights() { return spec_.weights; }

  // Checks the input shapes and returns one shape per output in spec().outputs.
  // Throws ShapeError (through fail()) when the inputs do not fit.
  virtual std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const = 0;
  // The learned blobs this layer expects for these inputs, in order.
  virtual std::vector<Shape> weight_shapes(const std::vector<Shape>& /*inputs*/) const { return {}; }
  // The reference kernel: CPU, fp32, straightforward loops.
  virtual void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const = 0;
  // True when output 0 may share input 0's buffer (element-wise layers).
  virtual bool in_place() const { return false; }
  // Multiply-accumulates for these inputs (convolution and matrix-product layers).
  virtual std::int64_t macs(const std::vector<Shape>& /*inputs*/) const { return 0; }

 protected:
  // "layer 'conv1' (Convolution): <what>"
  std::string describe(const std::string& what) const;
  [[noreturn]] void fail_shape(const std::string& what) const;
  [[noreturn]] void fail_model(const std::string& what) const;
  // Throws ShapeError unless the input count lies in [min, max].
  void expect_inputs(const std::vector<Shape>& inputs, std::size_t min, std::size_t max) const;

 private:
  LayerSpec spec_;
};

}  // namespace espresso
