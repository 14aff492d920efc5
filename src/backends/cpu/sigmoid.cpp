// Sigmoid, threaded; exp keeps it scalar.
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"

namespace espresso::cpu {

std::unique_ptr<Kernel> make_sigmoid(const Layer&, const std::vector<Shape>&) {
  return make_map_kernel([](float x) { return 1.0f / (1.0f + std::exp(-x)); });
}

}  // namespace espresso::cpu
