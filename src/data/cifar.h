// CIFAR-10 binary batches: records of one label byte and 32x32 planar R, G, B bytes.
#pragma once

#include <string>
#include <vector>

#include "espresso/data.h"

namespace espresso::data {

// Reads the given batch files in order; throws DataError naming the file when its size is not
// a whole number of records or a label is not in [0, 10).
LabeledImages read_cifar10_batches(const std::vector<std::string>& paths);
// One batch file's bytes (named `path` in messages) appended to `set`, with the same errors.
void append_cifar10_batch(const std::string& bytes, const std::string& path, LabeledImages& set);

// Test split: `test_batch.bin`, or when that is absent every `test_batch*.bin`; train split:
// every `data_batch_*.bin`. Files are read in name order.
LabeledImages load_cifar10(const std::string& dir, Split split);

}  // namespace espresso::data
