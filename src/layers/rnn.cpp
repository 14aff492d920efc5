#include "layers/rnn.h"

namespace espresso {

const LayerSchema& RNNLayer::schema() {
  static const LayerSchema schema = [] {
    LayerSchema s{
        .attributes = RecurrentLayer::common_attributes("Tanh"),
        .weights = "W [D, H, I], R [D, H, H], B [D, 2H] (if bias)",
        .notes = "ONNX RNN; inputs X [, cont] [, sequence_lens] [, initial_h]; outputs Y, Y_h",
    };

    return s;
  }();
  return schema;
}

}  // namespace espresso
