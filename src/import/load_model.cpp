#include <filesystem>
#include <string>
#include <system_error>

#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/onnx.h"
#include "espresso/package.h"
#include "layers/registry.h"

namespace espresso {
namespace {

void require_file(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) throw FileError(path + ": no such file");
}

Graph load_by_extension(const std::string& model_path, const std::string& weights_path) {
  const std::string extension = std::filesystem::path(model_path).extension().string();
  if (extension == ".prototxt" || extension == ".pt") {
    require_file(model_path);
    if (!weights_path.empty()) require_file(weights_path);
    return load_caffe(model_path, weights_path);
  }
  if (extension == ".onnx" || extension == ".esp") {
    require_file(model_path);
    if (!weights_path.empty()) {
      throw UnsupportedError(model_path + ": " + extension + " files carry their own weights; drop '" +
                             weights_path + "'");
    }
    return extension == ".onnx" ? load_onnx(model_path) : load_package(model_path);
  }
  throw UnsupportedError(model_path + ": unknown model format '" + extension +
                         "' (supported: .prototxt/.pt for Caffe, .onnx, .esp)");
}

}  // namespace

Graph load_model(const std::string& model_path, const std::string& weights_path) {
  Graph graph = load_by_extension(model_path, weights_path);
  // Every layer's attributes against its schema, so that a bad value is reported with its file.
  try {
    check_layer_attributes(graph);
  } catch (const ModelError& e) {
    throw ModelError(model_path + ": " + e.what());
  }
  return graph;
}

}  // namespace espresso
