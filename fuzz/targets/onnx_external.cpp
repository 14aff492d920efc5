// An ONNX model loaded from a file in a folder that also holds `weights.bin` (16 bytes), a
// subfolder, and a symlink `outside.bin` to a file outside the folder: external_data locations and
// ranges from the input are resolved against them; nothing outside the folder may be read.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "espresso/onnx.h"
#include "fuzz_target.h"

namespace {

namespace fs = std::filesystem;

const fs::path& model_folder() {
  static const fs::path folder = [] {
    const fs::path root = fs::path(espresso::fuzz::scratch_dir()) / "onnx_external";
    const fs::path model = root / "model";
    fs::create_directories(model / "sub");
    const float values[4] = {1, 2, 3, 4};
    std::ofstream(model / "weights.bin", std::ios::binary).write(reinterpret_cast<const char*>(values), 16);
    std::ofstream(model / "sub" / "weights.bin", std::ios::binary).write(reinterpret_cast<const char*>(values), 16);
    std::ofstream(root / "secret.bin", std::ios::binary).write(reinterpret_cast<const char*>(values), 16);
    std::error_code ignored;
    fs::create_symlink(root / "secret.bin", model / "outside.bin", ignored);
    return model;
  }();
  return folder;
}

}  // namespace

ESPRESSO_FUZZ_TARGET(onnx_external) {
  const fs::path path = model_folder() / "model.onnx";
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                static_cast<std::streamsize>(size));
  const espresso::Graph graph = espresso::load_onnx(path.string());
  espresso::fuzz::infer_shapes(graph);
}
