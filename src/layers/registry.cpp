#include "layers/registry.h"

#include <algorithm>
#include <iterator>

#include "layers/absval.h"
#include "layers/accuracy.h"
#include "layers/activation.h"
#include "layers/batch_norm.h"
#include "layers/bias.h"
#include "layers/binary.h"
#include "layers/concat.h"
#include "layers/constant.h"
#include "layers/convolution.h"
#include "layers/deconvolution.h"
#include "layers/dropout.h"
#include "layers/eltwise.h"
#include "layers/euclidean_loss.h"
#include "layers/flatten.h"
#include "layers/gather.h"
#include "layers/inner_product.h"
#include "layers/log_softmax.h"
#include "layers/lrn.h"
#include "layers/matmul.h"
#include "layers/pad.h"
#include "layers/pooling.h"
#include "layers/power.h"
#include "layers/prelu.h"
#include "layers/reduce.h"
#include "layers/relu.h"
#include "layers/reshape.h"
#include "layers/resize.h"
#include "layers/scale.h"
#include "layers/sigmoid.h"
#include "layers/sigmoid_cross_entropy_loss.h"
#include "layers/slice.h"
#include "layers/softmax.h"
#include "layers/softmax_with_loss.h"
#include "layers/split.h"
#include "layers/strided_slice.h"
#include "layers/tanh.h"
#include "layers/transpose.h"

namespace espresso {
namespace {

using Factory = std::unique_ptr<Layer> (*)(const LayerSpec&);

template <class T>
std::unique_ptr<Layer> make(const LayerSpec& spec) {
  return std::make_unique<T>(spec);
}

struct Entry {
  const char* type;
  Factory create;
};

// Every layer type espresso knows, by its espresso name (docs/layers.md).
constexpr Entry kLayers[] = {
    {"AbsVal", make<AbsValLayer>},
    {"Accuracy", make<AccuracyLayer>},
    {"Activation", make<ActivationLayer>},
    {"BatchNorm", make<BatchNormLayer>},
    {"Bias", make<BiasLayer>},
    {"Binary", make<BinaryLayer>},
    {"Concat", make<ConcatLayer>},
    {"Constant", make<ConstantLayer>},
    {"Convolution", make<ConvolutionLayer>},
    {"Deconvolution", make<DeconvolutionLayer>},
    {"Dropout", make<DropoutLayer>},
    {"Eltwise", make<EltwiseLayer>},
    {"EuclideanLoss", make<EuclideanLossLayer>},
    {"Flatten", make<FlattenLayer>},
    {"Gather", make<GatherLayer>},
    {"InnerProduct", make<InnerProductLayer>},
    {"LRN", make<LRNLayer>},
    {"LogSoftmax", make<LogSoftmaxLayer>},
    {"MatMul", make<MatMulLayer>},
    {"Pad", make<PadLayer>},
    {"Pooling", make<PoolingLayer>},
    {"Power", make<PowerLayer>},
    {"PReLU", make<PReLULayer>},
    {"ReLU", make<ReLULayer>},
    {"Reduce", make<ReduceLayer>},
    {"Reshape", make<ReshapeLayer>},
    {"Resize", make<ResizeLayer>},
    {"Scale", make<ScaleLayer>},
    {"Sigmoid", make<SigmoidLayer>},
    {"SigmoidCrossEntropyLoss", make<SigmoidCrossEntropyLossLayer>},
    {"Slice", make<SliceLayer>},
    {"Softmax", make<SoftmaxLayer>},
    {"SoftmaxWithLoss", make<SoftmaxWithLossLayer>},
    {"Split", make<SplitLayer>},
    {"StridedSlice", make<StridedSliceLayer>},
    {"TanH", make<TanHLayer>},
    {"Transpose", make<TransposeLayer>},
};

const Entry* find(const std::string& type) {
  auto it =
      std::find_if(std::begin(kLayers), std::end(kLayers), [&](const Entry& e) { return type == e.type; });
  return it == std::end(kLayers) ? nullptr : &*it;
}

}  // namespace

std::unique_ptr<Layer> create_layer(const LayerSpec& spec) {
  const Entry* entry = find(spec.type);
  if (entry == nullptr) {
    throw ModelError("layer '" + spec.name + "': unknown layer type '" + spec.type + "'");
  }
  try {
    return entry->create(spec);
  } catch (const ModelError& e) {
    // Attribute errors do not know their layer; add it.
    const std::string prefix = "layer '" + spec.name + "'";
    if (std::string(e.what()).rfind(prefix, 0) == 0) throw;
    throw ModelError(prefix + " (" + spec.type + "): " + e.what());
  }
}

bool is_known_layer_type(const std::string& type) { return find(type) != nullptr; }

std::vector<std::string> known_layer_types() {
  std::vector<std::string> types;
  for (const Entry& e : kLayers) types.emplace_back(e.type);
  std::sort(types.begin(), types.end());
  return types;
}

}  // namespace espresso
