// One LMDB record: a serialised Caffe Datum (raw bytes, floats or an encoded image).
#include "data/datum.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(datum) {
  espresso::data::Sample sample;
  espresso::data::decode_datum(espresso::fuzz::as_text(data, size), sample, "fuzz record");
}
