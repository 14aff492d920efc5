// Layers an application adds: a type name with its shape function, CPU forward and, to train through
// it, CPU backward. A registered type is known to Net, Model, Session, the Caffe importer and .esp
// packages like a built-in one; in a GPU net it runs on the CPU (the executor moves it there, with its
// inputs and outputs copied across), so GPU training through it is refused. Registered with a schema,
// its attributes are checked like a built-in layer's (unknown, misspelled, mistyped, out-of-range and
// missing ones are ModelErrors naming layer and attribute) and its defaults filled in before the factory
// sees the spec; describe_layer_type() shows the schema.
#pragma once

#include <functional>
#include <limits>
#include <memory>
#include <optional>
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
  // Training: given the forward's inputs, weights and outputs and the loss's gradients with respect to
  // the outputs, ADDS the gradients with respect to the inputs into `input_grads` (an entry that is not
  // defined() needs none) and with respect to the weights into `weight_grads` (same order), as built-in
  // layers do (the executor zeroes them first). The default throws UnsupportedError, so nets that train
  // through a layer without it are refused.
  virtual void backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& weights,
                        const std::vector<Tensor>& outputs, const std::vector<Tensor>& output_grads,
                        std::vector<Tensor>& input_grads, std::vector<Tensor>& weight_grads) const;
};

// Makes the layer of one LayerSpec (read its attributes here; throw ModelError for bad ones).
using CustomLayerFactory = std::function<std::unique_ptr<CustomLayer>(const LayerSpec& spec)>;

// One attribute of a custom layer's schema.
struct CustomAttribute {
  enum class Kind { integer, number, text, integers, numbers };
  std::string name;
  Kind kind = Kind::number;
  // The value when the attribute is absent (filled in before the factory runs); none for required ones
  // and for optional ones without a default (the factory then tests has()).
  std::optional<AttrValue> fallback = std::nullopt;
  bool required = false;
  // Inclusive bounds for every number of the value.
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  // The accepted words of a text attribute; empty: any text.
  std::vector<std::string> choices = {};
};

struct CustomLayerSchema {
  std::vector<CustomAttribute> attributes;
  std::string weights;  // the learned blobs, in order, for describe_layer_type ("" for none)
  std::string notes;
};

// Registers `type` for the whole process. Without a schema the layer's attributes reach its factory
// unchecked; with one, they are checked and completed first. Throws ModelError when the type names a
// built-in type or one already registered, or when the schema is inconsistent (a default outside its
// range, a name twice). Safe to call from any thread.
void register_layer(const std::string& type, CustomLayerFactory factory);
void register_layer(const std::string& type, CustomLayerFactory factory, const CustomLayerSchema& schema);

// A layer type's schema in one line, built-in or registered: "| type | attributes (default) | weights |
// notes |" as in docs/layers.md. Throws ModelError for an unknown type, or a registered one without a
// schema.
std::string describe_layer_type(const std::string& type);

}  // namespace espresso
