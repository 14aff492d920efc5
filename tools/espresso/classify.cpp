// `espresso classify`: the top-K classes of each image.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "common.h"
#include "espresso/data.h"
#include "espresso/errors.h"

namespace espresso::cli {

namespace {

struct ClassifyOptions {
  ModelOptions model;
  std::vector<std::string> images;
  std::string labels;
  std::string output;  // empty: the net's only output
  int top = 5;
  bool rgb = false;
  InputOptions input;
  int threads = 0;
};

// One label per line; whole lines are kept so synset_words lines show their WordNet id too.
std::vector<std::string> read_labels(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw FileError("labels file '" + path + "' cannot be opened");
  std::vector<std::string> labels;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(line);
  }
  while (!labels.empty() && labels.back().empty()) labels.pop_back();
  return labels;
}

int run_classify(const ClassifyOptions& options) {
  apply_threads(options.threads);
  Net net = open_net(options.model);
  const ImageInput input = configure_input(net, options.input, 1);
  std::string output = options.output;
  if (output.empty()) {
    output = single_output(net, "classify");
  } else {
    const std::vector<std::string> outputs = net.output_names();
    if (std::find(outputs.begin(), outputs.end(), output) == outputs.end()) {
      throw UnsupportedError("--output '" + output + "' is not an output of the net");
    }
  }
  const char* value_name = producer_type(net, output) == "Softmax" ? "prob" : "score";
  std::vector<std::string> labels;
  if (!options.labels.empty()) labels = read_labels(options.labels);

  const data::ImageLayout layout{static_cast<int>(input.channels), static_cast<int>(input.height),
                                 static_cast<int>(input.width), !options.rgb};
  Tensor staging;
  for (const std::string& path : options.images) {
    const std::vector<float> pixels = data::load_image(path, layout);
    input.preprocess.apply(pixels.data(), 1, input.channels, input.height * input.width,
                           host_input(net, input.name, staging).data<float>());
    upload_input(net, input.name, staging);
    net.forward();

    const Tensor result = host_output(net, output);
    const std::int64_t classes = result.numel();
    if (!labels.empty() && static_cast<std::int64_t>(labels.size()) != classes) {
      throw DataError("labels file '" + options.labels + "' has " + std::to_string(labels.size()) +
                      " labels but the net's output '" + output + "' has " + std::to_string(classes) +
                      " values");
    }
    print_top_classes(path, result.data<float>(), classes, options.top, labels, value_name);
  }
  return 0;
}

}  // namespace

Verb add_classify_verb(CLI::App& app) {
  auto options = std::make_shared<ClassifyOptions>();
  CLI::App* command = app.add_subcommand("classify", "Print the top classes of images");
  add_model_options(*command, options->model);
  add_device_option(*command, options->model);
  add_precision_option(*command, options->model);
  command->add_option("images", options->images, "Image files (JPEG, PNG, BMP, ...)")->required();
  command->add_option("--labels", options->labels, "Class names, one per line (e.g. synset_words.txt)");
  command->add_option("--output", options->output, "The output to rank, for nets with several (e.g. a detector's scores)");
  command->add_option("-k,--top", options->top, "How many classes to show per image")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_flag("--rgb", options->rgb, "Feed colour channels as R,G,B (default: Caffe's B,G,R)");
  add_input_options(*command, options->input);
  add_threads_option(*command, options->threads);
  return {command, [options] { return run_classify(*options); }};
}

}  // namespace espresso::cli
