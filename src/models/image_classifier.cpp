// classify_image: image bytes -> top-K classes of a single-image-input classifier, preprocessed as the
// model's package says.
#include "espresso/image_classifier.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <stdexcept>

#include "data/image_decode.h"
#include "espresso/errors.h"

namespace espresso {

namespace {

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

std::string model_name(const Graph& graph) {
  const std::string& name = graph.metadata.name.empty() ? graph.name : graph.metadata.name;
  return name.empty() ? "the model" : "model '" + name + "'";
}

// The type of the layer that writes `tensor` last ("" for a graph input).
std::string producer_type(const Graph& graph, const std::string& tensor) {
  std::string type;
  for (const LayerSpec& layer : graph.layers) {
    for (const std::string& output : layer.outputs) {
      if (output == tensor) type = layer.type;
    }
  }
  return type;
}

}  // namespace

void check_image_classifier(const Model& model) {
  const Graph& graph = model.graph();
  const std::string who = model_name(graph);
  const std::string& task = graph.metadata.task;
  if (!task.empty() && task != "classification" && task != "image-classification") {
    throw UnsupportedError(who + " has task '" + task + "'; classifying an image needs a classification model");
  }
  if (graph.inputs.size() != 1) {
    throw UnsupportedError(who + " has " + std::to_string(graph.inputs.size()) +
                           " inputs; classifying an image needs exactly one");
  }
  const InputSpec& input = graph.inputs[0];
  if (input.shape.rank() != 4 || (input.shape[1] != 1 && input.shape[1] != 3)) {
    throw UnsupportedError(who + ": input '" + input.name + "' has shape " + input.shape.str() +
                           "; classifying an image needs an N x C x H x W input with 1 or 3 channels");
  }
  if (graph.outputs.size() != 1) {
    throw UnsupportedError(who + " has " + std::to_string(graph.outputs.size()) +
                           " outputs; classifying an image needs exactly one");
  }
}

ImageClassification classify_image(Session& session, std::span<const std::uint8_t> image,
                                   const ImageClassifierOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (options.top < 1) throw std::invalid_argument("classify_image: top must be at least 1");
  const Model& model = session.model();
  check_image_classifier(model);
  const Graph& graph = model.graph();
  const std::string who = model_name(graph);
  const Preprocessing& pre = options.preprocessing ? *options.preprocessing : graph.metadata.preprocessing;
  const std::vector<std::string>& labels = options.labels.empty() ? graph.metadata.labels : options.labels;

  const InputSpec& spec = graph.inputs[0];
  const std::int64_t channels = spec.shape[1];
  std::int64_t height = spec.shape[2];
  std::int64_t width = spec.shape[3];
  if (!pre.size.empty()) {
    if (pre.size.size() != 2 || pre.size[0] < 1 || pre.size[1] < 1) {
      throw DataError(who + ": preprocessing size must be two positive values (H, W)");
    }
    height = pre.size[0];
    width = pre.size[1];
  }
  if (height < 1 || width < 1) {
    throw UnsupportedError(who + ": input '" + spec.name + "' has no fixed height and width and the package " +
                           "gives no preprocessing size");
  }
  std::vector<float> mean(static_cast<std::size_t>(channels), 0.0f);
  if (pre.mean.size() == 1) {
    std::fill(mean.begin(), mean.end(), static_cast<float>(pre.mean[0]));
  } else if (pre.mean.size() == static_cast<std::size_t>(channels)) {
    std::transform(pre.mean.begin(), pre.mean.end(), mean.begin(), [](double m) { return static_cast<float>(m); });
  } else if (!pre.mean.empty()) {
    throw DataError(who + ": preprocessing mean has " + std::to_string(pre.mean.size()) + " values for " +
                    std::to_string(channels) + " input channels");
  }
  if (pre.channel_order != "bgr" && pre.channel_order != "rgb" && !pre.channel_order.empty()) {
    throw DataError(who + ": preprocessing channel order '" + pre.channel_order + "' is not bgr or rgb");
  }

  const data::ImageLayout layout{static_cast<int>(channels), static_cast<int>(height), static_cast<int>(width),
                                 pre.channel_order != "rgb"};
  const std::vector<float> pixels = data::image_to_layout(image, layout, options.what);
  Tensor input = Tensor::empty(Shape{1, channels, height, width});
  float* out = input.data<float>();
  const std::int64_t plane = height * width;
  const float scale = static_cast<float>(pre.scale);
  for (std::int64_t c = 0; c < channels; ++c) {
    const float m = mean[static_cast<std::size_t>(c)];
    for (std::int64_t i = 0; i < plane; ++i) out[c * plane + i] = (pixels[c * plane + i] - m) * scale;
  }
  ImageClassification result;
  result.decode_ms = ms_since(start);

  const auto forward_start = std::chrono::steady_clock::now();
  const std::string& output = graph.outputs[0];
  std::map<std::string, Tensor> outputs = session.run({{spec.name, input}});
  result.forward_ms = ms_since(forward_start);
  const Tensor& scores = outputs.at(output);
  if (scores.dtype() != DType::f32) throw UnsupportedError(who + ": output '" + output + "' is not float32");
  const std::int64_t classes = scores.numel();
  if (classes < 1) throw UnsupportedError(who + ": output '" + output + "' is empty");
  if (!labels.empty() && static_cast<std::int64_t>(labels.size()) != classes) {
    throw UnsupportedError(who + " has " + std::to_string(labels.size()) + " labels but its output '" + output +
                           "' has " + std::to_string(classes) + " values");
  }

  const float* values = scores.data<float>();
  std::vector<double> probability(static_cast<std::size_t>(classes));
  result.output = output;
  result.softmax_applied = producer_type(graph, output) != "Softmax";
  if (result.softmax_applied) {
    const double top = *std::max_element(values, values + classes);
    double sum = 0.0;
    for (std::int64_t i = 0; i < classes; ++i) {
      probability[static_cast<std::size_t>(i)] = std::exp(static_cast<double>(values[i]) - top);
      sum += probability[static_cast<std::size_t>(i)];
    }
    for (double& p : probability) p /= sum;
  } else {
    for (std::int64_t i = 0; i < classes; ++i) probability[static_cast<std::size_t>(i)] = values[i];
  }
  std::vector<std::int64_t> order(static_cast<std::size_t>(classes));
  std::iota(order.begin(), order.end(), 0);
  const auto k = static_cast<std::size_t>(std::min<std::int64_t>(options.top, classes));
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                    [&](std::int64_t a, std::int64_t b) {
                      const double pa = probability[static_cast<std::size_t>(a)];
                      const double pb = probability[static_cast<std::size_t>(b)];
                      return pa > pb || (pa == pb && a < b);
                    });
  for (std::size_t i = 0; i < k; ++i) {
    const std::int64_t index = order[i];
    result.top.push_back({index, labels.empty() ? "" : labels[static_cast<std::size_t>(index)],
                          probability[static_cast<std::size_t>(index)]});
  }
  result.milliseconds = ms_since(start);
  return result;
}

}  // namespace espresso
