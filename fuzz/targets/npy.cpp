// A .npy array (mean files).
#include "data/npy.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(npy) { espresso::data::parse_npy(std::string(espresso::fuzz::as_text(data, size)), "fuzz.npy"); }
