// Limits on what an untrusted input (a model, its weights, a dataset record, an image) may ask for.
// Every loader checks the sizes a file declares against these before it allocates, so a hostile or
// corrupt file fails with a LimitError naming the file and field instead of exhausting memory or
// overflowing a size computation. docs/security.md lists each limit, its default and where it applies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "espresso/errors.h"

namespace espresso {

struct Limits {
  // Elements in one tensor: weights, constants, graph inputs, layer outputs, dataset records.
  std::int64_t max_tensor_elements = std::int64_t{1} << 32;
  // Bytes of one tensor (elements times the element size).
  std::int64_t max_tensor_bytes = std::int64_t{16} << 30;
  // Dimensions of one tensor.
  int max_rank = 32;
  // Activation memory one net may plan (the arenas of all its devices); NetOptions can set its own.
  std::int64_t max_planned_bytes = std::int64_t{32} << 30;
  // Pixels (width x height) of one image, checked on the header before decoding.
  std::int64_t max_image_pixels = std::int64_t{1} << 28;
  // Nesting of protobuf messages (ONNX subgraphs inside attributes inside nodes, ...).
  int max_nesting_depth = 100;
  // Layers or nodes in one model.
  std::int64_t max_layers = std::int64_t{1} << 20;
  // Bytes of one name (layers, tensors, attributes, inputs, outputs).
  std::int64_t max_name_bytes = std::int64_t{1} << 16;
  // Iterations of one run of a Loop layer (ONNX Loop, TensorFlow Lite WHILE): a loop that would run
  // more, bounded or not, stops with a LimitError naming the layer instead of hanging.
  std::int64_t max_loop_iterations = std::int64_t{1} << 20;
  // Nesting of control-flow subgraphs (an If inside a Loop body inside ...).
  int max_subgraph_depth = 16;
};

// The process-wide limits (the defaults above until set_limits is called). Thread-safe.
Limits limits();
void set_limits(const Limits& limits);

// Product of `dims`, checked before anything is allocated for it: a negative dimension, more than
// max_rank dimensions, a product that overflows or exceeds max_tensor_elements, or more than
// max_tensor_bytes at `element_bytes` each throws LimitError "WHAT: ...". Use it wherever a shape
// comes from a file.
std::int64_t checked_numel(std::span<const std::int64_t> dims, std::size_t element_bytes, const std::string& what);

// a * b for sizes from files; LimitError "WHAT: ..." when it overflows or exceeds `cap`.
std::int64_t checked_product(std::int64_t a, std::int64_t b, std::int64_t cap, const std::string& what);

// A value from a file used as an integer (a shape, an axis, an index stored as a float tensor):
// LimitError "WHAT: ..." when it is NaN, infinite or outside the 64-bit range, else truncated.
std::int64_t checked_integer(double value, const std::string& what);

// A name from a file: LimitError when it is longer than max_name_bytes.
void check_name_length(std::size_t bytes, const std::string& what);

}  // namespace espresso
