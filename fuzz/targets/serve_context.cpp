// A request context (the X-Espresso-Context header and /api/v1/recommend bodies) and, written to a
// file, a request log line by line as the context model's trainer reads it.
#include <fstream>

#include "espresso/context_model.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(serve_context) {
  const std::string text(espresso::fuzz::as_text(data, size));
  try {
    espresso::serve::to_json(espresso::serve::parse_request_context(text, 1'700'000'000));
  } catch (const espresso::Error&) {
  }
  const std::string log = espresso::fuzz::scratch_dir() + "/requests.jsonl";
  std::ofstream(log, std::ios::binary | std::ios::trunc) << text;
  espresso::serve::read_request_log(log);
}
