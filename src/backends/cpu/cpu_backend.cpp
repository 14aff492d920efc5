#include "backends/cpu/cpu_backend.h"

#include <cstring>

namespace espresso::cpu {
namespace {

struct Entry {
  const char* type;
  KernelFactory create;
};

// Layer types with a fast CPU kernel; every other layer runs its reference kernel.
constexpr Entry kKernels[] = {
    {"Convolution", make_convolution},
    {"Deconvolution", make_deconvolution},
    {"InnerProduct", make_inner_product},
    {"LRN", make_lrn},
    {"Pooling", make_pooling},
    {"ReLU", make_relu},
};

}  // namespace

std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs) {
  for (const Entry& e : kKernels) {
    if (layer.type() == e.type) return e.create(layer, inputs);
  }
  return nullptr;
}

}  // namespace espresso::cpu
