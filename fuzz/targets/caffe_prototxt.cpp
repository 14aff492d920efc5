// A Caffe text-format net (either layer form), imported and shape-inferred.
#include "espresso/import.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(caffe_prototxt) {
  const espresso::Graph graph = espresso::load_caffe(espresso::fuzz::as_text(data, size), {}, "fuzz.prototxt");
  espresso::fuzz::infer_shapes(graph);
}
