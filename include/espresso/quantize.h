// Post-training int8 quantization with calibration (docs/int8.md): the fp32 net runs on calibration
// batches, the range of every convolution's input is measured, and each convolution becomes a
// QuantizedConvolution with int8 weights (symmetric, one scale per output channel) and a uint8 input
// of calibrated scale and zero point (one per tensor). save_package() then stores the result in a .esp.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "espresso/graph.h"
#include "espresso/tensor.h"

namespace espresso {

enum class CalibrationMethod : std::uint8_t {
  minmax,      // the smallest and largest value seen
  percentile,  // clip the largest magnitudes: keep `percentile` % of the values inside the range
  entropy,     // the clipping threshold whose 128-level histogram is closest (KL divergence) to the original
};
// "minmax", "percentile" or "entropy"; throws UnsupportedError naming them otherwise.
CalibrationMethod parse_calibration_method(const std::string& text);

struct QuantizeOptions {
  CalibrationMethod method = CalibrationMethod::minmax;
  double percentile = 99.99;
  // Fewer calibration images than this is a DataError (the ranges would be guesses).
  std::int64_t min_images = 8;
};

// One quantized layer: its input's calibrated range and the scale and zero point chosen.
struct QuantizedLayerReport {
  std::string layer, input, output;
  double min = 0, max = 0, scale = 0;  // the input's observed range, and the scale chosen
  std::int64_t zero_point = 0;
  double output_min = 0, output_max = 0;  // the output's observed range (for tools writing QDQ models)
};

struct QuantizeReport {
  std::int64_t images = 0;
  std::vector<QuantizedLayerReport> layers;
  std::vector<std::string> kept;  // convolutions left in fp32 (with the reason)
};

// Calls `next` until it returns false; each call fills the graph's inputs (name → tensor, batch in
// dimension 0) with one calibration batch. Returns the graph with its Convolution layers (1-D and 2-D)
// replaced by QuantizedConvolution layers; everything else is unchanged.
Graph quantize_graph(const Graph& graph, const std::function<bool(std::map<std::string, Tensor>& batch)>& next,
                     const QuantizeOptions& options = {}, QuantizeReport* report = nullptr);

}  // namespace espresso
