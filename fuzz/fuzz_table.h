// The table of fuzz targets, generated from the files in fuzz/targets/ (fuzz/CMakeLists.txt).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#define ESPRESSO_FUZZ_TABLE_ROW(name) int espresso_fuzz_##name(const std::uint8_t* data, std::size_t size);
#include "fuzz_targets.inc"
#undef ESPRESSO_FUZZ_TABLE_ROW

namespace espresso::fuzz {

struct TargetRow {
  std::string_view name;
  int (*run)(const std::uint8_t* data, std::size_t size);
};

inline constexpr TargetRow kTargets[] = {
#define ESPRESSO_FUZZ_TABLE_ROW(name) {#name, espresso_fuzz_##name},
#include "fuzz_targets.inc"
#undef ESPRESSO_FUZZ_TABLE_ROW
};

}  // namespace espresso::fuzz
