#include "layers/lstm.h"

namespace espresso {

const LayerSchema& LSTMLayer::schema() {
  static const LayerSchema schema = [] {
    LayerSchema s{
        .attributes = RecurrentLayer::common_attributes("Sigmoid,Tanh,Tanh"),
        .weights = "W [D, 4H, I], R [D, 4H, H], B [D, 8H] (if bias), P [D, 3H] (if peepholes)",
        .notes =
            "ONNX LSTM (gates i o f c; peepholes i o f); inputs X [, cont] [, sequence_lens] [, initial_h, "
            "initial_c]; outputs Y, Y_h, Y_c",
    };
    s.attributes.push_back(flag("input_forget", false));
    s.attributes.push_back(flag("peepholes", false));
    return s;
  }();
  return schema;
}

}  // namespace espresso
