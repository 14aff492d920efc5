#include "layers/filler.h"

#include <cmath>

#include "espresso/errors.h"

namespace espresso {
namespace {

FillerType parse_type(const std::string& name, const std::string& attr) {
  if (name == "constant") return FillerType::constant;
  if (name == "uniform") return FillerType::uniform;
  if (name == "gaussian") return FillerType::gaussian;
  if (name == "xavier") return FillerType::xavier;
  if (name == "msra") return FillerType::msra;
  if (name == "bilinear") return FillerType::bilinear;
  throw ModelError("attribute '" + attr + "' names an unknown filler \"" + name +
                   "\" (constant, uniform, gaussian, xavier, msra, bilinear)");
}

VarianceNorm parse_norm(const std::string& name, const std::string& attr) {
  if (name == "fan_in") return VarianceNorm::fan_in;
  if (name == "fan_out") return VarianceNorm::fan_out;
  if (name == "average") return VarianceNorm::average;
  throw ModelError("attribute '" + attr + "' must be \"fan_in\", \"fan_out\" or \"average\", got \"" + name +
                   "\"");
}

double fan(const Filler& filler, const Shape& shape) {
  const auto count = static_cast<double>(shape.numel());
  const double fan_in = shape.rank() > 0 && shape[0] > 0 ? count / static_cast<double>(shape[0]) : count;
  const double fan_out = shape.rank() > 1 && shape[1] > 0 ? count / static_cast<double>(shape[1]) : count;
  switch (filler.variance_norm) {
    case VarianceNorm::fan_out:
      return fan_out;
    case VarianceNorm::average:
      return (fan_in + fan_out) / 2;
    case VarianceNorm::fan_in:
      break;
  }
  return fan_in;
}

}  // namespace

Filler read_filler(const Attributes& attrs, const std::string& prefix, const Filler& fallback) {
  if (!attrs.has(prefix + ".type")) return fallback;
  Filler f;
  f.type = parse_type(attrs.get_string(prefix + ".type", "constant"), prefix + ".type");
  f.value = attrs.get_float(prefix + ".value", 0.0);
  f.min = attrs.get_float(prefix + ".min", 0.0);
  f.max = attrs.get_float(prefix + ".max", 1.0);
  f.mean = attrs.get_float(prefix + ".mean", 0.0);
  f.std = attrs.get_float(prefix + ".std", 1.0);
  f.sparse = attrs.get_int(prefix + ".sparse", -1);
  f.variance_norm =
      parse_norm(attrs.get_string(prefix + ".variance_norm", "fan_in"), prefix + ".variance_norm");
  if (f.type == FillerType::uniform && !(f.min <= f.max)) {
    throw ModelError("attributes '" + prefix + ".min' and '" + prefix + ".max' are not an ordered range");
  }
  if (f.type == FillerType::gaussian && !(f.std >= 0)) {
    throw ModelError("attribute '" + prefix + ".std' must be non-negative");
  }
  return f;
}

void fill(const Filler& filler, Tensor& blob, std::mt19937_64& engine) {
  float* data = blob.data<float>();
  const Shape& shape = blob.shape();
  const std::int64_t count = blob.numel();
  switch (filler.type) {
    case FillerType::constant:
      for (std::int64_t i = 0; i < count; ++i) data[i] = static_cast<float>(filler.value);
      return;
    case FillerType::uniform: {
      std::uniform_real_distribution<double> uniform(filler.min, filler.max);
      for (std::int64_t i = 0; i < count; ++i) data[i] = static_cast<float>(uniform(engine));
      return;
    }
    case FillerType::gaussian: {
      std::normal_distribution<double> normal(filler.mean, filler.std);
      // Caffe's sparse form keeps about `sparse` non-zeros per output (row of dimension 0).
      const double keep = filler.sparse >= 0 && shape.rank() > 0 && shape[0] > 0
                              ? static_cast<double>(filler.sparse) / static_cast<double>(shape[0])
                              : 1.0;
      std::bernoulli_distribution kept(std::min(keep, 1.0));
      for (std::int64_t i = 0; i < count; ++i) {
        const double v = normal(engine);
        data[i] = filler.sparse >= 0 && !kept(engine) ? 0.0f : static_cast<float>(v);
      }
      return;
    }
    case FillerType::xavier: {
      const double scale = std::sqrt(3.0 / fan(filler, shape));
      std::uniform_real_distribution<double> uniform(-scale, scale);
      for (std::int64_t i = 0; i < count; ++i) data[i] = static_cast<float>(uniform(engine));
      return;
    }
    case FillerType::msra: {
      std::normal_distribution<double> normal(0.0, std::sqrt(2.0 / fan(filler, shape)));
      for (std::int64_t i = 0; i < count; ++i) data[i] = static_cast<float>(normal(engine));
      return;
    }
    case FillerType::bilinear: {
      if (shape.rank() != 4 || shape[2] != shape[3]) {
        throw ShapeError("the bilinear filler needs a 4-D blob with square kernels, got " + shape.str());
      }
      // Upsampling weights: each tap weighs 1 − distance to the kernel's centre, per axis.
      const std::int64_t size = shape[3];
      const double factor = std::ceil(static_cast<double>(size) / 2);
      const double centre =
          (2 * factor - 1 - static_cast<double>(static_cast<std::int64_t>(factor) % 2)) / (2 * factor);
      for (std::int64_t i = 0; i < count; ++i) {
        const auto x = static_cast<double>(i % size), y = static_cast<double>((i / size) % size);
        data[i] =
            static_cast<float>((1 - std::abs(x / factor - centre)) * (1 - std::abs(y / factor - centre)));
      }
      return;
    }
  }
}

}  // namespace espresso
