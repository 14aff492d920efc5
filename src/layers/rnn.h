// ONNX's RNN: H = f(X·Wᵀ + H·Rᵀ + Wb + Rb) (recurrent.h has the tensors).
#pragma once

#include "layers/recurrent.h"

namespace espresso {

class RNNLayer final : public RecurrentLayer {
 public:
  static const LayerSchema& schema();
  explicit RNNLayer(const LayerSpec& spec) : RecurrentLayer(spec, Cell::rnn) {}
};

}  // namespace espresso
