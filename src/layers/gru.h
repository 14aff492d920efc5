// ONNX's GRU: gates z, r, h; linear_before_reset applies the reset gate after Rh (recurrent.h has the
// tensors).
#pragma once

#include "layers/recurrent.h"

namespace espresso {

class GRULayer final : public RecurrentLayer {
 public:
  static const LayerSchema& schema();
  explicit GRULayer(const LayerSpec& spec) : RecurrentLayer(spec, Cell::gru) {}
};

}  // namespace espresso
