#pragma once

#include "layers/layer.h"

namespace espresso {

// Pads every axis: `pads` holds the begin amounts of all axes, then the end amounts (ONNX order;
// negative amounts crop). `mode`: "constant" (fills `value`, default 0), "reflect" (mirrors without
// repeating the edge) or "edge" (repeats the edge).
class PadLayer final : public Layer {
 public:
  enum class Mode { constant, reflect, edge };

  static const LayerSchema& schema();
  explicit PadLayer(const LayerSpec& spec);
  std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const override;
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const override;
  void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                std::vector<Tensor>& weight_grads) const override;
  const std::vector<std::int64_t>& pads() const { return pads_; }
  Mode mode() const { return mode_; }
  float value() const { return value_; }

 private:
  template <class Visit>
  void map_outputs(const Shape& in, const Shape& out, Visit&& visit) const;

  std::vector<std::int64_t> pads_;
  Mode mode_;
  float value_;
};

}  // namespace espresso
