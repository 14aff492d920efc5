// ONNX's LSTM: gates i, o, f, c; peepholes; input_forget couples f = 1 − i (recurrent.h has the tensors).
#pragma once

#include "layers/recurrent.h"

namespace espresso {

class LSTMLayer final : public RecurrentLayer {
 public:
  static const LayerSchema& schema();
  explicit LSTMLayer(const LayerSpec& spec) : RecurrentLayer(spec, Cell::lstm) {}
};

}  // namespace espresso
