#pragma once

#include <cstdint>
#include <vector>

#include "layers/layer.h"
#include "layers/window.h"

namespace espresso {

enum class PoolMethod { max, average };

// Pooling geometry resolved for one input shape, per spatial axis.
struct PoolGeometry {
  std::int64_t batch = 0;
  std::int64_t channels = 0;
  std::vector<std::int64_t> in_size, out_size, kernel, stride, pad;

  int axes() const { return static_cast<int>(in_size.size()); }
  // The window of output position `o` on axis `a`: [begin, end) in input coordinates, clipped
  // to the input, and the extent an average divides by along this axis.
  struct Span {
    std::int64_t begin, end, divisor;
  };
  Span span(int a, std::int64_t o, bool count_include_pad) const;
};

// MAX or AVE pooling over 1 or more spatial axes, with Caffe's ceil rounding (the last window
// must start inside the input or its left padding) or ONNX's floor rounding.
class PoolingLayer final : public Layer {
 public:
  static const LayerSchema& schema();
  explicit PoolingLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;

  // Throws ShapeError when the input does not fit.
  PoolGeometry geometry(const Shape& input) const;
  PoolMethod method() const { return method_; }
  bool count_include_pad() const { return count_include_pad_; }

 private:
  template <class Visit>
  void for_each_window(const PoolGeometry& g, Visit visit) const;

  PoolMethod method_;
  bool global_;
  bool ceil_;
  bool count_include_pad_;
  AxisValues kernel_, stride_, pad_;
};

}  // namespace espresso
