// An IDX file (MNIST's format): the first byte picks images or labels, the rest is the file.
#include "data/idx.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(idx) {
  if (size == 0) return;
  const std::string bytes(espresso::fuzz::as_text(data + 1, size - 1));
  if (data[0] & 1) {
    espresso::data::parse_idx_labels(bytes, "fuzz-labels-idx1-ubyte");
  } else {
    espresso::data::parse_idx_images(bytes, "fuzz-images-idx3-ubyte");
  }
}
