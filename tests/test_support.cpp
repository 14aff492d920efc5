#include "test_support.h"

#include <stdlib.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

#include "backends/cuda/cuda_backend.h"

namespace espresso::testing {

namespace fs = std::filesystem;

fs::path shared_data_dir() {
  const char* env = std::getenv("ESPRESSO_DATA");
  return env != nullptr ? fs::path(env) : fs::path(ESPRESSO_DEFAULT_DATA_DIR);
}

void SharedDataTest::SetUp() {
  if (!fs::exists(shared_data_dir() / "MANIFEST.md")) {
    GTEST_SKIP() << "shared data not found at " << shared_data_dir() << " (set ESPRESSO_DATA)";
  }
}

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "espresso_test_XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("cannot create a temporary directory");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

std::string TempDir::file(const std::string& name) const { return (fs::path(path_) / name).string(); }

std::string TempDir::write(const std::string& name, const std::string& bytes) const {
  const std::string path = file(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool have_gpu() { return cuda::device_count() > 0; }

LayerSpec layer(const std::string& name, const std::string& type, std::vector<std::string> inputs,
                std::vector<std::string> outputs) {
  LayerSpec s;
  s.name = name;
  s.type = type;
  s.inputs = std::move(inputs);
  s.outputs = std::move(outputs);
  return s;
}

}  // namespace espresso::testing
