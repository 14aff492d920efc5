#include <filesystem>
#include <string>
#include <system_error>

#include "espresso/errors.h"
#include "espresso/import.h"

namespace espresso {
namespace {

void require_file(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) throw FileError(path + ": no such file");
}

}  // namespace

Graph load_model(const std::string& model_path, const std::string& weights_path) {
  const std::string extension = std::filesystem::path(model_path).extension().string();
  if (extension == ".prototxt" || extension == ".pt") {
    require_file(model_path);
    if (!weights_path.empty()) require_file(weights_path);
    return load_caffe(model_path, weights_path);
  }
  throw UnsupportedError(model_path + ": unknown model format '" + extension +
                         "' (supported: .prototxt and .pt for Caffe)");
}

}  // namespace espresso
