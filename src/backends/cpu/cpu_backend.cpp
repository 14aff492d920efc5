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
    {"AbsVal", make_absval},
    {"Activation", make_activation},
    {"BatchNorm", make_batch_norm},
    {"Bias", make_bias},
    {"Binary", make_binary},
    {"Convolution", make_convolution},
    {"Deconvolution", make_deconvolution},
    {"Eltwise", make_eltwise},
    {"InnerProduct", make_inner_product},
    {"LRN", make_lrn},
    {"MatMul", make_matmul},
    {"Pooling", make_pooling},
    {"Power", make_power},
    {"PReLU", make_prelu},
    {"ReLU", make_relu},
    {"Scale", make_scale},
    {"Sigmoid", make_sigmoid},
    {"Softmax", make_softmax},
    {"TanH", make_tanh},
};

}  // namespace

std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs) {
  for (const Entry& e : kKernels) {
    if (layer.type() == e.type) return e.create(layer, inputs);
  }
  return nullptr;
}

}  // namespace espresso::cpu
