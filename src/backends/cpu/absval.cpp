// AbsVal, threaded; the compiler vectorises the loop.
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"

namespace espresso::cpu {

std::unique_ptr<Kernel> make_absval(const Layer&, const std::vector<Shape>&) {
  return make_map_kernel([](float x) { return std::abs(x); });
}

}  // namespace espresso::cpu
