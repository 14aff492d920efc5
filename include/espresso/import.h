// Loading models from files into a Graph.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "espresso/graph.h"

namespace espresso {

enum class Phase { train, test };

// Caffe: a prototxt (V1 `layers {}` or current `layer {}` form) and optionally a caffemodel
// (either blob-shape form). Layers excluded from `phase` by include/exclude rules are dropped.
// Throws FileError, ParseError or ModelError naming the file and the layer or field.
Graph load_caffe(const std::string& prototxt_path, const std::string& caffemodel_path = "",
                 Phase phase = Phase::test);

// The same from memory: the prototxt's text and the caffemodel's bytes (empty: no weights); `name`
// stands for the files in messages.
Graph load_caffe(std::string_view prototxt, std::span<const std::byte> caffemodel, const std::string& name = "<memory>",
                 Phase phase = Phase::test);

// Deep Compression's released compressed weights (Han et al.'s `.net` files, e.g. the compressed
// SqueezeNet v1.0): the prototxt gives the layers and shapes, the `.net` file the pruned, weight-shared
// weights, decoded to dense f32 (docs/compression.md). Throws ModelError naming the file and layer for
// bad counts, indices or lengths.
Graph load_caffe_compressed(const std::string& prototxt_path, const std::string& net_path, Phase phase = Phase::test);
Graph load_caffe_compressed(std::string_view prototxt, std::span<const std::byte> net,
                            const std::string& name = "<memory>", Phase phase = Phase::test);
// Decodes such `.net` bytes into the weights of `graph` (a Caffe import without weights).
void apply_deep_compression(Graph& graph, std::span<const std::byte> net, const std::string& name);

// Picks the importer from the file name: .prototxt/.pt (Caffe, with optional .caffemodel weights),
// .onnx, .esp or .tflite (weights inside); Caffe weights ending in .net are Deep Compression's format
// (above). Checks every layer's attributes against its schema.
Graph load_model(const std::string& model_path, const std::string& weights_path = "");

enum class ModelFormat { caffe, onnx, esp, tflite };
// "caffe", "onnx", "esp" or "tflite".
const char* format_name(ModelFormat format);
// The format load_model(path) reads `path` as: by extension, else TensorFlow Lite's file identifier.
// Throws UnsupportedError for anything else.
ModelFormat model_format_of(const std::string& model_path);
// A model held in memory (an app's bundled resource, a download): for Caffe `model` is the prototxt and
// `weights` the caffemodel; ONNX and .esp carry their weights, so `weights` must be empty. The bytes
// are copied or parsed; the caller's buffers may go afterwards. Errors name `name`.
Graph load_model(std::span<const std::byte> model, ModelFormat format, std::span<const std::byte> weights = {},
                 const std::string& name = "<memory>");

}  // namespace espresso
