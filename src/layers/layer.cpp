#include "layers/layer.h"

namespace espresso {

std::string Layer::describe(const std::string& what) const {
  return "layer '" + name() + "' (" + type() + "): " + what;
}

void Layer::fail_shape(const std::string& what) const { throw ShapeError(describe(what)); }

void Layer::fail_model(const std::string& what) const { throw ModelError(describe(what)); }

void Layer::expect_inputs(const std::vector<Shape>& inputs, std::size_t min, std::size_t max) const {
  if (inputs.size() < min || inputs.size() > max) {
    const std::string wanted =
        min == max ? std::to_string(min) : std::to_string(min) + " to " + std::to_string(max);
    fail_shape("takes " + wanted + " input(s), got " + std::to_string(inputs.size()));
  }
}

void Layer::backward(const std::vector<Tensor>&, const std::vector<Tensor>&, const std::vector<Tensor>&,
                     std::vector<Tensor>&, std::vector<Tensor>&) const {
  throw UnsupportedError(describe("has no backward pass; it cannot be trained through"));
}

}  // namespace espresso
