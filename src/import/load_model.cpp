#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/onnx.h"
#include "espresso/package.h"
#include "espresso/tflite.h"
#include "layers/registry.h"

namespace espresso {
namespace {

void require_file(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) throw FileError(path + ": no such file");
}

Graph load_by_extension(const std::string& model_path, const std::string& weights_path) {
  const ModelFormat format = model_format_of(model_path);
  require_file(model_path);
  if (format == ModelFormat::caffe) {
    if (!weights_path.empty()) require_file(weights_path);
    if (std::filesystem::path(weights_path).extension() == ".net") return load_caffe_compressed(model_path, weights_path);
    return load_caffe(model_path, weights_path);
  }
  if (!weights_path.empty()) {
    throw UnsupportedError(model_path + ": " + format_name(format) + " files carry their own weights; drop '" +
                           weights_path + "'");
  }
  switch (format) {
    case ModelFormat::onnx:
      return load_onnx(model_path);
    case ModelFormat::esp:
      return load_package(model_path);
    default:
      return load_tflite(model_path);
  }
}

}  // namespace

const char* format_name(ModelFormat format) {
  switch (format) {
    case ModelFormat::caffe:
      return "caffe";
    case ModelFormat::onnx:
      return "onnx";
    case ModelFormat::esp:
      return "esp";
    case ModelFormat::tflite:
      return "tflite";
  }
  return "unknown";
}

ModelFormat model_format_of(const std::string& model_path) {
  const std::string extension = std::filesystem::path(model_path).extension().string();
  if (extension == ".prototxt" || extension == ".pt") return ModelFormat::caffe;
  if (extension == ".onnx") return ModelFormat::onnx;
  if (extension == ".esp") return ModelFormat::esp;
  if (extension == ".tflite") return ModelFormat::tflite;
  // Any other name: TensorFlow Lite files say what they are (the FlatBuffer identifier "TFL3").
  char header[8] = {};
  std::ifstream file(model_path, std::ios::binary);
  if (file.read(header, sizeof header) && std::memcmp(header + 4, "TFL3", 4) == 0) return ModelFormat::tflite;
  throw UnsupportedError(model_path + ": unknown model format '" + extension +
                         "' (supported: .prototxt/.pt for Caffe, .onnx, .esp, .tflite)");
}

namespace {

// Every layer's attributes against its schema, so that a bad value is reported with its file.
Graph checked(Graph graph, const std::string& name) {
  try {
    check_layer_attributes(graph);
  } catch (const ModelError& e) {
    throw ModelError(name + ": " + e.what());
  }
  return graph;
}

}  // namespace

Graph load_model(const std::string& model_path, const std::string& weights_path) {
  return checked(load_by_extension(model_path, weights_path), model_path);
}

Graph load_model(std::span<const std::byte> model, ModelFormat format, std::span<const std::byte> weights,
                 const std::string& name) {
  if (format != ModelFormat::caffe && !weights.empty()) {
    throw UnsupportedError(name + ": ONNX and .esp models carry their own weights; pass none");
  }
  switch (format) {
    case ModelFormat::caffe:
      return checked(load_caffe(std::string_view(reinterpret_cast<const char*>(model.data()), model.size()),
                                weights, name),
                     name);
    case ModelFormat::onnx:
      return checked(load_onnx(model, name), name);
    case ModelFormat::esp:
      return checked(load_package(model, name), name);
    case ModelFormat::tflite:
      return checked(load_tflite(model, name), name);
  }
  throw UnsupportedError(name + ": unknown model format");
}

}  // namespace espresso
