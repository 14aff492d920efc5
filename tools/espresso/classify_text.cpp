// `espresso classify-text`: the top-K classes of texts, for models trained on `convert-data --format text`.
#include <algorithm>
#include <cstdio>
#include <filesystem>
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

struct ClassifyTextOptions {
  ModelOptions model;
  std::vector<std::string> texts;
  std::string vocabulary;  // an LMDB folder of convert-data --format text, or its vocab.txt
  std::string labels;
  int top = 3;
  int threads = 0;
};

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw FileError("labels file '" + path + "' cannot be opened");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

int run_classify_text(const ClassifyTextOptions& options) {
  namespace fs = std::filesystem;
  apply_threads(options.threads);
  const bool folder = fs::is_directory(options.vocabulary);
  const data::CharVocabulary vocabulary =
      data::CharVocabulary::load(folder ? (fs::path(options.vocabulary) / "vocab.txt").string() : options.vocabulary);
  std::vector<std::string> labels;
  if (!options.labels.empty()) {
    labels = read_lines(options.labels);
  } else if (folder && fs::exists(fs::path(options.vocabulary) / "labels.txt")) {
    labels = read_lines((fs::path(options.vocabulary) / "labels.txt").string());
  }
  Net net = open_net(options.model);
  if (net.input_names().size() != 1) throw UnsupportedError("classify-text needs a net with one input");
  const std::string input = net.input_names()[0];
  Shape shape = net.input_shape(input);
  if (shape.rank() < 2) throw UnsupportedError("classify-text: input '" + input + "' has no batch axis: " + shape.str());
  shape[0] = 1;
  net.reshape(input, shape);
  const std::int64_t length = shape.numel();
  const std::string output = single_output(net, "classify-text");
  Tensor staging;
  for (const std::string& text : options.texts) {
    const std::vector<float> indices = vocabulary.encode(text, length);
    std::copy(indices.begin(), indices.end(), host_input(net, input, staging).data<float>());
    upload_input(net, input, staging);
    net.forward();
    const Tensor result = host_output(net, output);
    const std::int64_t classes = result.numel();
    if (!labels.empty() && static_cast<std::int64_t>(labels.size()) != classes) {
      throw DataError("there are " + std::to_string(labels.size()) + " labels but the net's output '" + output +
                      "' has " + std::to_string(classes) + " values");
    }
    const float* values = result.data<float>();
    std::vector<std::int64_t> order(static_cast<std::size_t>(classes));
    std::iota(order.begin(), order.end(), 0);
    const auto k = static_cast<std::size_t>(std::min<std::int64_t>(options.top, classes));
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      [&](std::int64_t a, std::int64_t b) { return values[a] > values[b]; });
    std::cout << text << '\n';
    for (std::size_t rank = 0; rank < k; ++rank) {
      const std::int64_t cls = order[rank];
      char line[96];
      std::snprintf(line, sizeof line, "  %zu. class %lld  %.6f", rank + 1, static_cast<long long>(cls),
                    static_cast<double>(values[cls]));
      std::cout << line;
      if (!labels.empty()) std::cout << "  " << labels[static_cast<std::size_t>(cls)];
      std::cout << '\n';
    }
  }
  return 0;
}

}  // namespace

Verb add_classify_text_verb(CLI::App& app) {
  auto options = std::make_shared<ClassifyTextOptions>();
  CLI::App* command = app.add_subcommand("classify-text", "Print the top classes of texts");
  add_model_options(*command, options->model);
  add_device_option(*command, options->model);
  command->add_option("texts", options->texts, "Texts (UTF-8), one argument each")->required();
  command->add_option("--vocab", options->vocabulary,
                      "The training LMDB of convert-data --format text (vocab.txt, labels.txt), or a vocab.txt")
      ->required();
  command->add_option("--labels", options->labels, "Class names, one per line (default: the LMDB's labels.txt)");
  command->add_option("-k,--top", options->top, "How many classes to show per text")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_threads_option(*command, options->threads);
  return {command, [options] { return run_classify_text(*options); }};
}

}  // namespace espresso::cli
