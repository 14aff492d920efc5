// docs/layers.md's table is generated from the layer schemas; this test fails when it is stale, and
// rewrites it when run with ESPRESSO_UPDATE_DOCS=1.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "layers/registry.h"

namespace espresso::testing {
namespace {

constexpr const char* kBegin = "<!-- table generated from the layer schemas:";
constexpr const char* kEnd = "<!-- end of generated table -->";

TEST(Docs, EveryLayerDeclaresASchema) {
  for (const std::string& type : known_layer_types()) {
    if (!is_custom_layer_type(type)) {
      EXPECT_NE(layer_schema(type), nullptr) << type;
    }
  }
}

TEST(Docs, LayersTableMatchesTheSchemas) {
  const std::string path = std::string(ESPRESSO_SOURCE_DIR) + "/docs/layers.md";
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const std::size_t begin_marker = text.find(kBegin);
  ASSERT_NE(begin_marker, std::string::npos) << path << " lacks the marker " << kBegin;
  const std::size_t begin = text.find('\n', begin_marker) + 1;
  const std::size_t end = text.find(kEnd, begin);
  ASSERT_NE(end, std::string::npos) << path << " lacks the marker " << kEnd;

  const std::string generated = layers_markdown_table();
  if (std::getenv("ESPRESSO_UPDATE_DOCS") != nullptr) {
    std::ofstream(path) << text.substr(0, begin) << generated << text.substr(end);
    return;
  }
  EXPECT_EQ(text.substr(begin, end - begin), generated)
      << path << " is stale: run ESPRESSO_UPDATE_DOCS=1 build/tests/espresso_tests --gtest_filter='Docs.*'";
}

}  // namespace
}  // namespace espresso::testing
