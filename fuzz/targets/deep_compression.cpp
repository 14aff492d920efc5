// Deep Compression weights (.net) for a Caffe net: the input is the prototxt text, a NUL byte, then
// the .net bytes, so mutations reach both the layer list the decoder walks and the encoded weights.
#include <cstring>
#include <span>
#include <string_view>

#include "espresso/import.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(deep_compression) {
  const auto* end = static_cast<const std::uint8_t*>(std::memchr(data, 0, size));
  if (end == nullptr) return;
  const std::size_t text_size = static_cast<std::size_t>(end - data);
  const std::string_view prototxt = espresso::fuzz::as_text(data, text_size);
  const auto net = std::as_bytes(std::span(data + text_size + 1, size - text_size - 1));
  espresso::fuzz::infer_shapes(espresso::load_caffe_compressed(prototxt, net, "fuzz.net"));
}
