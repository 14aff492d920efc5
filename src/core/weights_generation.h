// A process-wide count of the moments weights may have changed in place, so that kernels which
// pack weights once (backends/cpu) know when to pack them again. Bumped wherever the library hands
// out writable views of a net's weights (Net::weights, Net::parameters) and after every backward
// pass, which a solver update follows; a kernel compares the count with the one it packed at.
#pragma once

#include <cstdint>

namespace espresso {

std::uint64_t weights_generation();
void note_weights_may_change();

}  // namespace espresso
