// An image file (JPEG, PNG, BMP and stb's other formats) decoded and converted to a 3-channel 32x32
// layout, as `espresso classify` does.
#include <span>

#include "data/image_decode.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(image) {
  espresso::data::image_to_layout(std::span(data, size), {.channels = 3, .height = 32, .width = 32}, "fuzz.img");
}
