// Every stored fuzz input (tests/fuzz/seeds/<target>/, tests/fuzz/regressions/<target>/) replayed
// through the same entry points the fuzzers use (fuzz/targets/*.cpp). An input passes when the target
// accepts it or refuses it with one of espresso's typed errors; the sanitizer CI job replays the same
// files under ASan and UBSan (scripts/sanitize_ci.sh).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "fuzz_table.h"

namespace {

namespace fs = std::filesystem;
using espresso::fuzz::kTargets;
using espresso::fuzz::TargetRow;

std::vector<fs::path> stored_inputs(const std::string& kind, std::string_view target) {
  std::vector<fs::path> files;
  const fs::path dir = fs::path(ESPRESSO_SOURCE_DIR) / "tests" / "fuzz" / kind / std::string(target);
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

class FuzzRegressions : public testing::TestWithParam<TargetRow> {};

TEST_P(FuzzRegressions, StoredInputsAreAcceptedOrRefusedWithTypedErrors) {
  const TargetRow& target = GetParam();
  const auto seeds = stored_inputs("seeds", target.name);
  // Every target gets small committed seeds, so that this test exercises it in every build.
  EXPECT_FALSE(seeds.empty()) << "no seeds in tests/fuzz/seeds/" << target.name;
  auto files = stored_inputs("regressions", target.name);
  files.insert(files.end(), seeds.begin(), seeds.end());
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NO_THROW(target.run(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size())) << file;
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzRegressions, testing::ValuesIn(kTargets),
                         [](const testing::TestParamInfo<TargetRow>& row) { return std::string(row.param.name); });

}  // namespace
