// `espresso convert MODEL [--weights W] -o OUT`: any model espresso reads, written as ONNX (.onnx) or as
// an .esp package with its metadata.
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>

#include "common.h"
#include "espresso/data.h"
#include "espresso/espresso.h"
#include "espresso/onnx.h"
#include "espresso/package.h"

namespace espresso::cli {
namespace {

struct ConvertOptions {
  ModelOptions model;
  std::string output;
  std::string name, version, description, task, license, author, labels, mean, size, channel_order;
  std::vector<std::string> metrics;  // KEY=VALUE
  double scale = 0.0;
  bool compress = false;
  bool rgb = false;
};

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw FileError("labels file '" + path + "' cannot be read");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

// Metadata options override what the source model already says.
void apply_metadata(const ConvertOptions& o, Graph& graph) {
  ModelMetadata& m = graph.metadata;
  const auto set = [](std::string& field, const std::string& value) {
    if (!value.empty()) field = value;
  };
  set(m.name, o.name.empty() && m.name.empty() ? std::filesystem::path(o.model.model).stem().string() : o.name);
  set(m.version, o.version);
  set(m.description, o.description);
  set(m.task, o.task);
  set(m.license, o.license);
  set(m.author, o.author);
  set(m.preprocessing.channel_order, o.rgb ? std::string("rgb") : o.channel_order);
  for (const std::string& metric : o.metrics) {
    const std::size_t eq = metric.find('=');
    std::size_t used = 0;
    double value = 0.0;
    try {
      if (eq == std::string::npos || eq == 0) throw std::invalid_argument("no key");
      value = std::stod(metric.substr(eq + 1), &used);
    } catch (const std::exception&) {
      used = std::string::npos;
    }
    if (used != metric.size() - eq - 1)
      throw UnsupportedError("--metric '" + metric + "': expected KEY=NUMBER, e.g. mnist_top1=0.9905");
    m.metrics[metric.substr(0, eq)] = value;
  }
  if (!o.labels.empty()) m.labels = read_lines(o.labels);
  if (o.scale != 0.0) m.preprocessing.scale = o.scale;
  if (!o.mean.empty()) {
    const int channels = !graph.inputs.empty() && graph.inputs[0].shape.rank() == 4
                             ? static_cast<int>(graph.inputs[0].shape[1])
                             : 1;
    const std::vector<float> mean = data::parse_mean(o.mean, channels);
    m.preprocessing.mean.assign(mean.begin(), mean.end());
  }
  if (!o.size.empty()) {
    const auto x = o.size.find('x');
    m.preprocessing.size = {std::stoll(o.size.substr(0, x)), std::stoll(o.size.substr(x + 1))};
  }
  if (m.source_format.empty()) {
    const std::string ext = std::filesystem::path(o.model.model).extension().string();
    m.source_format = ext == ".onnx" ? "onnx" : ext == ".esp" ? "esp" : "caffe";
  }
  m.created = utc_now();
}

int run_convert(const ConvertOptions& options) {
  Graph graph = load_model(options.model.model, options.model.weights);
  const std::string ext = std::filesystem::path(options.output).extension().string();
  if (ext == ".onnx") {
    export_onnx(graph, options.output);
    std::printf("wrote %s (%zu layers, ONNX IR 7, opset 13)\n", options.output.c_str(), graph.layers.size());
  } else if (ext == ".esp") {
    apply_metadata(options, graph);
    save_package(graph, options.output, {.compress = options.compress});
    std::printf("wrote %s (%zu layers, %zu bytes%s)\n", options.output.c_str(), graph.layers.size(),
                static_cast<std::size_t>(std::filesystem::file_size(options.output)),
                options.compress ? ", compressed" : "");
  } else {
    throw UnsupportedError("output '" + options.output + "': unknown format '" + ext + "' (use .onnx or .esp)");
  }
  return 0;
}

}  // namespace

Verb add_convert_verb(CLI::App& app) {
  auto options = std::make_shared<ConvertOptions>();
  CLI::App* command = app.add_subcommand("convert", "Convert a model to ONNX (.onnx) or an espresso package (.esp)");
  add_model_options(*command, options->model);
  command->add_option("-o,--output", options->output, "The file to write: .onnx or .esp")->required();
  command->add_option("--name", options->name, "Package: model name (default: the file's stem)");
  command->add_option("--version", options->version, "Package: model version");
  command->add_option("--description", options->description, "Package: one-line description");
  command->add_option("--task", options->task, "Package: task, e.g. classification");
  command->add_option("--license", options->license, "Package: licence of the weights");
  command->add_option("--author", options->author, "Package: author");
  command->add_option("--labels", options->labels, "Package: class labels file, one per line");
  command->add_option("--scale", options->scale, "Package: input scale (after mean subtraction)");
  command->add_option("--mean", options->mean, "Package: per-channel mean, comma-separated or .npy");
  command->add_option("--size", options->size, "Package: input HxW, e.g. 224x224");
  command->add_option("--channel-order", options->channel_order, "Package: bgr or rgb")
      ->check(CLI::IsMember({"bgr", "rgb"}));
  command->add_flag("--rgb", options->rgb, "Package: the same as --channel-order rgb");
  command->add_option("--metric", options->metrics,
                      "Package: a measured metric KEY=VALUE, e.g. mnist_top1=0.9905 (repeatable; keys with 'acc' or "
                      "'top1' are the accuracy that search filters on)");
  command->add_flag("--compress", options->compress,
                    "Package: store weights of at most 256 distinct values (pruned, weight-shared models) as "
                    "codebook indices, sparse and Huffman-coded where that is smaller (lossless)");
  return {command, [options] { return run_convert(*options); }};
}

}  // namespace espresso::cli
