// A binary caffemodel, as the weights of LeNet's deploy net (the seeds are LeNet's trained weights in
// both blob forms): parsing, V1 upgrade, blob shapes against the layers.
#include <span>

#include "espresso/import.h"
#include "fuzz_target.h"

namespace {

constexpr const char* kLeNet = R"(name: "LeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 1 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 20 kernel_size: 5 stride: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 50 kernel_size: 5 stride: 1 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 500 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
)";

}  // namespace

ESPRESSO_FUZZ_TARGET(caffemodel) {
  if (size == 0) return;  // no weights: not this target's format
  const espresso::Graph graph =
      espresso::load_caffe(kLeNet, std::as_bytes(std::span(data, size)), "fuzz.caffemodel");
  espresso::fuzz::infer_shapes(graph);
}
