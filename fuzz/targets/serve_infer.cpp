// A KServe v2 inference request body as `espresso serve` receives it: the first byte chooses whether an
// Inference-Header-Content-Length accompanies the body (the binary tensor extension) and, if so, its
// value in the next two bytes, so the fuzzer explores both forms and lengths that lie.
#include <optional>

#include "fuzz_target.h"
#include "serve/protocol.h"

ESPRESSO_FUZZ_TARGET(serve_infer) {
  std::string_view text = espresso::fuzz::as_text(data, size);
  std::optional<std::size_t> header_length;
  if (!text.empty() && (text[0] & 1) && text.size() >= 3) {
    header_length = static_cast<std::size_t>(static_cast<unsigned char>(text[1])) |
                    static_cast<std::size_t>(static_cast<unsigned char>(text[2])) << 8;
    text.remove_prefix(3);
  } else if (!text.empty()) {
    text.remove_prefix(1);
  }
  espresso::serve::parse_infer_request(text, header_length);
}
