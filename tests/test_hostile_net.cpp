// Hostile models against Net: attributes that ask for huge outputs or weights, and the per-net cap on
// planned activation memory (hostile_support.h runs each case bounded).
#include "espresso/import.h"
#include "espresso/net.h"
#include "espresso/onnx.h"
#include "hostile_support.h"

namespace espresso::hostile {
namespace {

TEST(HostileModels, HugeLayerOutputsAndWeightsAreRefused) {
  Scratch dir;
  // A layer attribute that asks for a 2^40-element output: caught by shape inference.
  const std::string wide = dir.write("wide.prototxt", R"(name: "wide"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1024 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 1073741824 } }
)");
  expect_refused<LimitError>("Caffe InnerProduct 2^40 weights", [&] { Net net(load_model(wide)); net.forward(); },
                             "layer 'ip' (InnerProduct) weight 0");
}

TEST(HostileModels, PlannedMemoryIsCappedPerNet) {
  // 64 MiB of activations against a cap of 16 MiB.
  Scratch dir;
  const Graph graph = load_onnx(save(dir, "relu.onnx", relu_model({1, 4, 2048, 2048})));
  expect_refused<LimitError>("planned memory above NetOptions cap", [&] {
    Net net(graph, {.max_planned_bytes = 16 << 20});
    net.forward();
  }, "max_planned_bytes");
}

}  // namespace
}  // namespace espresso::hostile
