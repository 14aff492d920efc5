// An ONNX model from memory: protobuf, initializers, every node's import and shape inference, constant
// folding.
#include <span>

#include "espresso/onnx.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(onnx) {
  const espresso::Graph graph = espresso::load_onnx(std::as_bytes(std::span(data, size)), "fuzz.onnx");
  espresso::fuzz::infer_shapes(graph);
}
