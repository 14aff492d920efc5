// TensorFlow Lite: loading .tflite FlatBuffers into a Graph (docs/tflite.md).
#pragma once

#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "espresso/graph.h"

namespace espresso {

// Loads subgraph 0 of a .tflite model. Rank-4 tensors are NHWC in the file and NCHW in the Graph:
// rank-4 inputs become N x C x H x W, convolution and pooling weights are permuted at load time, and
// layout transposes are inserted only where an operator needs the file's order (reshapes, fully
// connected layers, graph outputs, which keep the file's shapes). fp16 and int8/uint8 weights behind
// DEQUANTIZE and sparse weights behind DENSIFY become fp32 constants. Throws ParseError (corrupt
// FlatBuffer), UnsupportedError (listing every unsupported or CUSTOM operator at once; quantized
// activations) or ModelError (bad shapes, buffers or options), each naming the file and the tensor
// or operator.
Graph load_tflite(const std::string& path);
// The same from the file's bytes; `name` stands for the file in messages.
Graph load_tflite(std::span<const std::byte> bytes, const std::string& name = "<memory>");

struct TfliteImportOptions {
  // Shapes of inputs by name, in the file's order (NHWC for rank 4): for inputs whose shape_signature
  // holds -1 (dimensions fixed only at run time, where the file's shape is a placeholder). Fixed
  // dimensions must match. The imported graph keeps such dimensions free: a Net replans for inputs of
  // other lengths.
  std::map<std::string, Shape> input_shapes;
};
Graph load_tflite(const std::string& path, const TfliteImportOptions& options);
Graph load_tflite(std::span<const std::byte> bytes, const std::string& name, const TfliteImportOptions& options);

// True when `bytes` carry TensorFlow Lite's "TFL3" FlatBuffer identifier.
bool is_tflite(std::span<const std::byte> bytes);

// The TensorFlow Lite builtin operators load_tflite understands, sorted.
std::vector<std::string> tflite_supported_ops();

}  // namespace espresso
