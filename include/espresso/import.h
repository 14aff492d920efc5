// Loading models from files into a Graph.
#pragma once

#include <string>

#include "espresso/graph.h"

namespace espresso {

enum class Phase { train, test };

// Caffe: a prototxt (V1 `layers {}` or current `layer {}` form) and optionally a caffemodel
// (either blob-shape form). Layers excluded from `phase` by include/exclude rules are dropped.
// Throws FileError, ParseError or ModelError naming the file and the layer or field.
Graph load_caffe(const std::string& prototxt_path, const std::string& caffemodel_path = "",
                 Phase phase = Phase::test);

// Picks the importer from the file name: .prototxt/.pt (Caffe, with optional .caffemodel weights),
// .onnx or .esp (weights inside).
Graph load_model(const std::string& model_path, const std::string& weights_path = "");

}  // namespace espresso
