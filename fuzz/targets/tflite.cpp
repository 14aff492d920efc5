// A TensorFlow Lite FlatBuffer from memory: tables, vectors and unions through the bounds-checked
// reader, every operator's import and shape inference.
#include <span>

#include "espresso/tflite.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(tflite) {
  espresso::fuzz::infer_shapes(espresso::load_tflite(std::as_bytes(std::span(data, size)), "fuzz.tflite"));
}
