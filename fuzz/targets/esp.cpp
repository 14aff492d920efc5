// An .esp package from memory, checksums verified (the fuzzer's engine skips them rarely; seeds are real
// packages) and not (so mutations reach the manifest and the tensor table).
#include <span>

#include "espresso/package.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(esp) {
  const auto bytes = std::as_bytes(std::span(data, size));
  try {
    espresso::fuzz::infer_shapes(espresso::load_package(bytes, "fuzz.esp"));
  } catch (const espresso::Error&) {
  }
  espresso::fuzz::infer_shapes(espresso::load_package(bytes, "fuzz.esp", {.verify = false}));
}
