#include "layers/registry.h"

#include <algorithm>
#include <iterator>

#include "layers/absval.h"
#include "layers/accuracy.h"
#include "layers/batch_norm.h"
#include "layers/bias.h"
#include "layers/concat.h"
#include "layers/convolution.h"
#include "layers/deconvolution.h"
#include "layers/dropout.h"
#include "layers/eltwise.h"
#include "layers/flatten.h"
#include "layers/inner_product.h"
#include "layers/lrn.h"
#include "layers/pooling.h"
#include "layers/power.h"
#include "layers/prelu.h"
#include "layers/relu.h"
#include "layers/reshape.h"
#include "layers/scale.h"
#include "layers/sigmoid.h"
#include "layers/slice.h"
#include "layers/softmax.h"
#include "layers/softmax_with_loss.h"
#include "layers/split.h"
#include "layers/tanh.h"

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
    {"BatchNorm", make<BatchNormLayer>},
    {"Bias", make<BiasLayer>},
    {"Concat", make<ConcatLayer>},
    {"Convolution", make<ConvolutionLayer>},
    {"Deconvolution", make<DeconvolutionLayer>},
    {"Dropout", make<DropoutLayer>},
    {"Eltwise", make<EltwiseLayer>},
    {"Flatten", make<FlattenLayer>},
    {"InnerProduct", make<InnerProductLayer>},
    {"LRN", make<LRNLayer>},
    {"Pooling", make<PoolingLayer>},
    {"Power", make<PowerLayer>},
    {"PReLU", make<PReLULayer>},
    {"ReLU", make<ReLULayer>},
    {"Reshape", make<ReshapeLayer>},
    {"Scale", make<ScaleLayer>},
    {"Sigmoid", make<SigmoidLayer>},
    {"Slice", make<SliceLayer>},
    {"Softmax", make<SoftmaxLayer>},
    {"SoftmaxWithLoss", make<SoftmaxWithLossLayer>},
    {"Split", make<SplitLayer>},
    {"TanH", make<TanHLayer>},
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
