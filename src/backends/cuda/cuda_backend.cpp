#include "backends/cuda/cuda_backend.h"

#include <algorithm>
#include <iterator>

#include "backends/cuda/kernels.h"
#include "espresso/errors.h"

namespace espresso::cuda {
namespace {

struct Entry {
  const char* type;
  KernelFactory create;
};

// Layer types with a CUDA kernel. A net runs on a GPU only when every layer has one.
constexpr Entry kKernels[] = {
    {"AbsVal", make_absval},
    {"Accuracy", make_accuracy},
    {"Activation", make_activation},
    {"BatchNorm", make_batch_norm},
    {"Bias", make_bias},
    {"Binary", make_binary},
    {"Concat", make_concat},
    {"Constant", make_constant},
    {"Convolution", make_convolution},
    {"Deconvolution", make_deconvolution},
    {"Dropout", make_dropout},
    {"Eltwise", make_eltwise},
    {"EuclideanLoss", make_euclidean_loss},
    {"Flatten", make_copy},
    {"Gather", make_gather},
    {"InnerProduct", make_inner_product},
    {"LogSoftmax", make_log_softmax},
    {"LRN", make_lrn},
    {"MatMul", make_matmul},
    {"Pad", make_pad},
    {"Pooling", make_pooling},
    {"Power", make_power},
    {"PReLU", make_prelu},
    {"Reduce", make_reduce},
    {"ReLU", make_relu},
    {"Reshape", make_copy},
    {"Resize", make_resize},
    {"Scale", make_scale},
    {"Sigmoid", make_sigmoid},
    {"SigmoidCrossEntropyLoss", make_sigmoid_cross_entropy_loss},
    {"Slice", make_slice},
    {"Softmax", make_softmax},
    {"SoftmaxWithLoss", make_softmax_with_loss},
    {"Split", make_copy},
    {"StridedSlice", make_strided_slice},
    {"Transpose", make_transpose},
    {"TanH", make_tanh},
};

const Entry* find(const std::string& type) {
  auto it =
      std::find_if(std::begin(kKernels), std::end(kKernels), [&](const Entry& e) { return type == e.type; });
  return it == std::end(kKernels) ? nullptr : &*it;
}

}  // namespace

std::unique_ptr<Context> create_context(Device device, std::shared_ptr<const DeviceWeights> shared_weights) {
  return std::make_unique<StreamContext>(device, std::move(shared_weights));
}

bool has_kernel(const std::string& layer_type) { return find(layer_type) != nullptr; }

void check_supported(const std::vector<const Layer*>& layers) {
  std::string missing;
  for (const Layer* layer : layers) {
    if (!has_kernel(layer->type())) {
      missing += (missing.empty() ? "" : ", ") + ("'" + layer->name() + "' (" + layer->type() + ")");
    }
  }
  if (!missing.empty())
    throw UnsupportedError("no CUDA kernel for layers " + missing + "; run them on the CPU");
}

std::unique_ptr<Kernel> make_kernel(const Layer& layer, const std::vector<Shape>& inputs, Context& context) {
  const Entry* entry = find(layer.type());
  if (entry == nullptr) return nullptr;
  return entry->create(layer, inputs, static_cast<StreamContext&>(context));
}

}  // namespace espresso::cuda
