// The training memory table of `espresso train --report-memory` and `espresso info --training`.
#pragma once

#include <iosfwd>

#include "espresso/devices.h"
#include "espresso/trainer.h"

namespace espresso::cli {

// One row per category (weights, weight gradients, solver history, activations, activation gradients,
// workspace, test nets), planned bytes against naive ones (every tensor and gradient in its own
// buffer, as Caffe keeps them), and the totals.
void print_training_memory(const train::TrainingMemory& memory, std::ostream& out);
// The moment the net's arena is fullest and its largest buffers then.
void print_busiest_moment(const MemoryReport& net, std::ostream& out);
// What the device allocator held at its peak, by purpose (`espresso bench --train --report-memory`).
void print_peak_by_purpose(const DeviceMemoryUse& use, std::ostream& out);

}  // namespace espresso::cli
