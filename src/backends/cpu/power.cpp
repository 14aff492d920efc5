// Power, threaded, with the common exponents computed without pow().
#include "layers/power.h"

#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"

namespace espresso::cpu {

std::unique_ptr<Kernel> make_power(const Layer& layer, const std::vector<Shape>&) {
  const auto& power = static_cast<const PowerLayer&>(layer);
  const float p = power.power(), scale = power.scale(), shift = power.shift();
  if (p == 1.0f) return make_map_kernel([=](float x) { return shift + scale * x; });
  if (p == 2.0f) {
    return make_map_kernel([=](float x) {
      const float base = shift + scale * x;
      return base * base;
    });
  }
  if (p == 0.5f) return make_map_kernel([=](float x) { return std::sqrt(shift + scale * x); });
  return make_map_kernel([=](float x) { return std::pow(shift + scale * x, p); });
}

}  // namespace espresso::cpu
