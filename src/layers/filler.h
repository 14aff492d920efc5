// Weight fillers with Caffe's semantics, read from a layer's `weight_filler.*` / `bias_filler.*`
// attributes (docs/layers.md). A Net in training mode fills the blobs a model does not provide.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "espresso/graph.h"
#include "espresso/tensor.h"

namespace espresso {

enum class FillerType { constant, uniform, gaussian, xavier, msra, bilinear };
// Which fan sets the variance of xavier and msra: inputs, outputs or their mean.
enum class VarianceNorm { fan_in, fan_out, average };

struct Filler {
  FillerType type = FillerType::constant;
  double value = 0;          // constant
  double min = 0, max = 1;   // uniform
  double mean = 0, std = 1;  // gaussian
  std::int64_t sparse = -1;  // gaussian: expected non-zeros per output when >= 0
  VarianceNorm variance_norm = VarianceNorm::fan_in;
};

// The filler described by `<prefix>.type`, `<prefix>.value`, ... in `attrs`, or `fallback` when
// `<prefix>.type` is absent. Throws ModelError naming the attribute for unknown types or modes.
Filler read_filler(const Attributes& attrs, const std::string& prefix, const Filler& fallback = {});

// Fills a CPU f32 blob. Fans follow Caffe: fan_in = count / shape[0], fan_out = count / shape[1]
// (count for rank 1). Bilinear needs a 4-D blob with square kernels (ShapeError otherwise).
void fill(const Filler& filler, Tensor& blob, std::mt19937_64& engine);

}  // namespace espresso
