// The fuzz targets: one file per input format under fuzz/targets/, each defining
//
//   ESPRESSO_FUZZ_TARGET(name) { ...feed `data`, `size` to the format's entry point... }
//
// The build generates, for every such file, a libFuzzer executable `fuzz_<name>` (ESPRESSO_FUZZ=ON,
// clang) and a row in the table that the plain replay driver and the test suite use to run stored
// inputs (tests/fuzz/regressions/<name>/, tests/fuzz/seeds/<name>/) through the same function in any
// build. A target returns normally for accepted input and for input refused with one of espresso's
// typed errors (run_guarded); anything else (a crash, a sanitizer report, another exception) is a bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "espresso/errors.h"
#include "espresso/graph.h"
#include "espresso/limits.h"

#define ESPRESSO_FUZZ_TARGET(name) \
  void espresso_fuzz_body_##name(const std::uint8_t* data, std::size_t size); \
  int espresso_fuzz_##name(const std::uint8_t* data, std::size_t size) { \
    return espresso::fuzz::run_guarded(data, size, espresso_fuzz_body_##name); \
  } \
  void espresso_fuzz_body_##name(const std::uint8_t* data, [[maybe_unused]] std::size_t size)

namespace espresso::fuzz {

// Tighter limits while a target runs (restored afterwards): the defaults allow gigabytes, which would
// make the fuzzer report out-of-memory for inputs that are correctly within the limits. The hostile-input
// tests check the defaults themselves.
class FuzzLimits {
 public:
  FuzzLimits();
  ~FuzzLimits();
  FuzzLimits(const FuzzLimits&) = delete;
  FuzzLimits& operator=(const FuzzLimits&) = delete;

 private:
  Limits saved_;
};

// Typed errors are the expected answer to bad input; other exceptions propagate (and fail).
inline int run_guarded(const std::uint8_t* data, std::size_t size, void (*body)(const std::uint8_t*, std::size_t)) {
  const FuzzLimits limits;
  try {
    body(data, size);
  } catch (const espresso::Error&) {
  }
  return 0;
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Runs every layer's shape inference over the graph's declared input shapes, as Net does before it
// plans, so that attribute values from the file reach the layers' shape arithmetic.
void infer_shapes(const Graph& graph);

// A scratch folder of this process, created on first use.
std::string scratch_dir();

}  // namespace espresso::fuzz
