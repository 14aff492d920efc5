// Layers an application adds: a type name with its shape function and CPU forward. A registered type is
// known to Net, Model, Session, the Caffe importer and .esp packages like a built-in one; in a GPU net it
// runs on the CPU (the executor moves it there). Its attributes are not checked against a schema, and it
// has no backward, so nets that train through it are refused.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "espresso/graph.h"
#include "espresso/tensor.h"

namespace espresso {

class CustomLayer {
 public:
  virtual ~CustomLayer() = default;
  // One shape per output for these input shapes; throw ShapeError for inputs that do not fit.
  virtual std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const = 0;
  // The learned blobs it expects (LayerSpec::weights), in order.
  virtual std::vector<Shape> weight_shapes(const std::vector<Shape>& /*inputs*/) const { return {}; }
  // CPU f32 tensors of the shapes above; the weights are the LayerSpec's.
  virtual void forward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& weights,
                       std::vector<Tensor>& outputs) const = 0;
};

// Makes the layer of one LayerSpec (read its attributes here; throw ModelError for bad ones).
using CustomLayerFactory = std::function<std::unique_ptr<CustomLayer>(const LayerSpec& spec)>;

// Registers `type` for the whole process. Throws ModelError when it names a built-in type or one already
// registered. Safe to call from any thread.
void register_layer(const std::string& type, CustomLayerFactory factory);

}  // namespace espresso
