#include "layers/gru.h"

namespace espresso {

const LayerSchema& GRULayer::schema() {
  static const LayerSchema schema = [] {
    LayerSchema s{
        .attributes = RecurrentLayer::common_attributes("Sigmoid,Tanh"),
        .weights = "W [D, 3H, I], R [D, 3H, H], B [D, 6H] (if bias)",
        .notes = "ONNX GRU (gates z r h); inputs X [, cont] [, sequence_lens] [, initial_h]; outputs Y, Y_h",
    };
    s.attributes.push_back(flag("linear_before_reset", false));
    return s;
  }();
  return schema;
}

}  // namespace espresso
