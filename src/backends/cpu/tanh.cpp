// TanH, threaded.
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"

namespace espresso::cpu {

std::unique_ptr<Kernel> make_tanh(const Layer&, const std::vector<Shape>&) {
  return make_map_kernel([](float x) { return std::tanh(x); });
}

}  // namespace espresso::cpu
