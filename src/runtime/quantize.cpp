// Post-training quantization (include/espresso/quantize.h). Two passes over the calibration data:
// the first measures each convolution input's range, the second (percentile and entropy only)
// builds a 2048-bin histogram of magnitudes over it, from which the clipping threshold is chosen.
#include "espresso/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "espresso/errors.h"
#include "espresso/net.h"

namespace espresso {

CalibrationMethod parse_calibration_method(const std::string& text) {
  if (text == "minmax") return CalibrationMethod::minmax;
  if (text == "percentile") return CalibrationMethod::percentile;
  if (text == "entropy") return CalibrationMethod::entropy;
  throw UnsupportedError("unknown calibration method '" + text + "'; expected minmax, percentile or entropy");
}

namespace {

constexpr int kBins = 2048;

struct Range {
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  std::vector<double> histogram;  // of |x| over [0, max(|min|, |max|)]
  double top() const { return std::max(std::abs(min), std::abs(max)); }
};

// Σ p log(p / q) over the bins where p > 0 (q is smoothed where it is 0).
double kl_divergence(const std::vector<double>& p, const std::vector<double>& q) {
  double sp = 0, sq = 0;
  for (double v : p) sp += v;
  for (double v : q) sq += v;
  if (sp <= 0 || sq <= 0) return std::numeric_limits<double>::infinity();
  double d = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0) continue;
    const double pi = p[i] / sp, qi = std::max(q[i] / sq, 1e-12);
    d += pi * std::log(pi / qi);
  }
  return d;
}

// The magnitude threshold (in bins) that loses least information when [0, threshold] is cut into
// 128 levels and everything above is clipped to the last one (TensorRT's calibration).
int entropy_threshold(const std::vector<double>& h) {
  constexpr int kLevels = 128;
  int best = kBins;
  double best_divergence = std::numeric_limits<double>::infinity();
  for (int t = kLevels; t <= kBins; t += 16) {
    // P: the first t bins with everything above clipped into the last one; Q: the same t bins without
    // the clipped mass, merged into 128 levels, each level spread over its non-empty bins. (Q built from
    // P itself would equal P at t = 128 and make the tightest threshold look perfect.)
    const std::vector<double> sliced(h.begin(), h.begin() + t);
    std::vector<double> p = sliced;
    for (int i = t; i < kBins; ++i) p[static_cast<std::size_t>(t - 1)] += h[static_cast<std::size_t>(i)];
    std::vector<double> q(static_cast<std::size_t>(t), 0.0);
    const double width = static_cast<double>(t) / kLevels;
    for (int level = 0; level < kLevels; ++level) {
      const int begin = static_cast<int>(std::floor(level * width));
      const int end = std::max(begin + 1, static_cast<int>(std::floor((level + 1) * width)));
      double sum = 0;
      int used = 0;
      for (int i = begin; i < end && i < t; ++i) {
        sum += sliced[static_cast<std::size_t>(i)];
        used += sliced[static_cast<std::size_t>(i)] > 0;
      }
      for (int i = begin; i < end && i < t; ++i)
        if (sliced[static_cast<std::size_t>(i)] > 0) q[static_cast<std::size_t>(i)] = sum / used;
    }
    const double d = kl_divergence(p, q);
    if (d < best_divergence) {
      best_divergence = d;
      best = t;
    }
  }
  return best;
}

// The range [lo, hi] the input is quantized over.
void choose_range(const Range& r, const QuantizeOptions& options, double& lo, double& hi) {
  lo = std::min(r.min, 0.0);
  hi = std::max(r.max, 0.0);
  if (options.method == CalibrationMethod::minmax || r.histogram.empty() || r.top() <= 0) return;
  double total = 0;
  for (double v : r.histogram) total += v;
  int bins = kBins;
  if (options.method == CalibrationMethod::percentile) {
    const double keep = total * options.percentile / 100.0;
    double seen = 0;
    for (bins = 0; bins < kBins && seen < keep; ++bins) seen += r.histogram[static_cast<std::size_t>(bins)];
  } else {
    // The first bin holds the exact zeros (ReLU outputs, image backgrounds): so much mass there makes
    // the smallest threshold look best to KL, so it is left out, as the zero bin needs no resolution.
    std::vector<double> h = r.histogram;
    h[0] = 0;
    bins = entropy_threshold(h);
  }
  const double threshold = r.top() * bins / kBins;
  lo = std::max(lo, -threshold);
  hi = std::min(hi, threshold);
}

}  // namespace

Graph quantize_graph(const Graph& graph, const std::function<bool(std::map<std::string, Tensor>& batch)>& next,
                     const QuantizeOptions& options, QuantizeReport* report) {
  if (!(options.percentile > 0 && options.percentile <= 100))
    throw UnsupportedError("calibration percentile " + std::to_string(options.percentile) + " must lie in (0, 100]");
  // The convolutions to quantize and the tensors they read.
  std::map<std::string, Range> ranges;
  std::vector<std::size_t> convolutions;
  QuantizeReport local;
  QuantizeReport& out = report ? *report : local;
  out = {};
  for (std::size_t i = 0; i < graph.layers.size(); ++i) {
    const LayerSpec& spec = graph.layers[i];
    if (spec.type != "Convolution") continue;
    const auto kernel = spec.attrs.get_ints("kernel", {});
    if (kernel.empty() || kernel.size() > 2 || spec.inputs.size() != 1) {
      out.kept.push_back(spec.name + " (" + std::to_string(kernel.size()) + "-D windows)");
      continue;
    }
    convolutions.push_back(i);
    ranges[spec.inputs[0]];
    ranges[spec.outputs.at(0)];
  }
  NetOptions net_options;
  net_options.keep_intermediates = true;
  Net net(graph, net_options);
  // Pass 1 (and 2 when a histogram is needed), over the same batches kept in memory.
  std::vector<std::map<std::string, Tensor>> batches;
  for (std::map<std::string, Tensor> batch; next(batch); batch.clear()) {
    if (batch.empty()) break;
    out.images += batch.begin()->second.shape()[0];
    batches.push_back(batch);
  }
  if (out.images < options.min_images)
    throw DataError("calibration needs at least " + std::to_string(options.min_images) + " images, got " +
                    std::to_string(out.images));
  const bool histogram = options.method != CalibrationMethod::minmax;
  for (int pass = 0; pass < (histogram ? 2 : 1); ++pass) {
    for (const auto& batch : batches) {
      for (const auto& [name, tensor] : batch) {
        if (tensor.shape() != net.input_shape(name)) net.reshape(name, tensor.shape());
      }
      net.forward(batch);
      for (auto& [name, range] : ranges) {
        const Tensor t = net.tensor(name).to(Device::cpu());
        const float* v = t.data<float>();
        if (pass == 0) {
          for (std::int64_t k = 0; k < t.numel(); ++k) {
            range.min = std::min(range.min, static_cast<double>(v[k]));
            range.max = std::max(range.max, static_cast<double>(v[k]));
          }
          continue;
        }
        if (range.histogram.empty()) range.histogram.assign(kBins, 0.0);
        const double top = range.top();
        if (top <= 0) continue;
        for (std::int64_t k = 0; k < t.numel(); ++k) {
          const int bin = std::min(kBins - 1, static_cast<int>(std::abs(static_cast<double>(v[k])) / top * kBins));
          range.histogram[static_cast<std::size_t>(bin)] += 1;
        }
      }
    }
  }

  Graph result = graph;
  for (std::size_t i : convolutions) {
    LayerSpec& spec = result.layers[i];
    const Range& range = ranges.at(spec.inputs[0]);
    double lo = 0, hi = 0;
    choose_range(range, options, lo, hi);
    const double scale = hi > lo ? (hi - lo) / 255.0 : 1.0;
    const auto zero = static_cast<std::int64_t>(std::clamp(std::nearbyint(-lo / scale), 0.0, 255.0));
    // Weights: symmetric int8, one scale per output channel.
    const Tensor& w = spec.weights.at(0);
    const std::int64_t channels = w.shape()[0], depth = w.numel() / std::max<std::int64_t>(channels, 1);
    std::vector<float> q(static_cast<std::size_t>(w.numel())), scales(static_cast<std::size_t>(channels)),
        zeros(static_cast<std::size_t>(channels), 0.0f);
    const float* wv = w.data<float>();
    for (std::int64_t c = 0; c < channels; ++c) {
      double top = 0;
      for (std::int64_t p = 0; p < depth; ++p) top = std::max(top, std::abs(static_cast<double>(wv[c * depth + p])));
      const double s = top > 0 ? top / 127.0 : 1.0;
      scales[static_cast<std::size_t>(c)] = static_cast<float>(s);
      for (std::int64_t p = 0; p < depth; ++p)
        q[static_cast<std::size_t>(c * depth + p)] =
            std::clamp(std::nearbyint(wv[c * depth + p] / static_cast<float>(s)), -127.0f, 127.0f);
    }
    std::vector<Tensor> weights{Tensor::from(w.shape(), q), Tensor::from(Shape{channels}, scales),
                                Tensor::from(Shape{channels}, zeros)};
    const bool bias = spec.attrs.get_int("bias", 1) != 0 && spec.weights.size() > 1;
    if (bias) weights.push_back(spec.weights[1]);
    spec.type = "QuantizedConvolution";
    spec.attrs.set("bias", static_cast<std::int64_t>(bias));
    spec.attrs.set("input", std::string("real"));
    spec.attrs.set("input_type", std::string("uint8"));
    spec.attrs.set("input_scale", scale);
    spec.attrs.set("input_zero_point", zero);
    spec.attrs.set("weight_type", std::string("int8"));
    spec.weights = std::move(weights);
    const Range& produced = ranges.at(spec.outputs.at(0));
    out.layers.push_back({spec.name, spec.inputs[0], spec.outputs[0], range.min, range.max, scale, zero, produced.min, produced.max});
  }
  return result;
}

}  // namespace espresso
