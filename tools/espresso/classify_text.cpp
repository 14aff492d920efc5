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
  std::string test;  // a TSV of label<TAB>text lines to score
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
  const data::CharVocabulary vocabulary = data::CharVocabulary::load(
      folder ? (fs::path(options.vocabulary) / "vocab.txt").string() : options.vocabulary);
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
  if (shape.rank() < 2)
    throw UnsupportedError("classify-text: input '" + input + "' has no batch axis: " + shape.str());
  shape[0] = 1;
  net.reshape(input, shape);
  const std::int64_t length = shape.numel();
  const std::string output = single_output(net, "classify-text");
  Tensor staging;
  auto scores = [&](const std::string& text) {
    const std::vector<float> indices = vocabulary.encode(text, length);
    std::copy(indices.begin(), indices.end(), host_input(net, input, staging).data<float>());
    upload_input(net, input, staging);
    net.forward();
    return host_output(net, output);
  };
  if (!options.test.empty()) {
    // Accuracy and the confusion matrix (rows: true label, columns: predicted) over a labelled TSV.
    if (labels.empty()) throw DataError("--test needs the labels (--labels, or labels.txt beside vocab.txt)");
    std::ifstream in(options.test);
    if (!in) throw FileError(options.test + ": cannot open");
    const std::size_t classes = labels.size();
    std::vector<std::vector<std::int64_t>> confusion(classes, std::vector<std::int64_t>(classes, 0));
    std::int64_t total = 0, correct = 0;
    int number = 0;
    for (std::string line; std::getline(in, line);) {
      ++number;
      if (line.empty()) continue;
      const std::size_t tab = line.find('\t');
      const auto label =
          std::find(labels.begin(), labels.end(), line.substr(0, tab == std::string::npos ? 0 : tab));
      if (tab == std::string::npos || label == labels.end()) {
        throw DataError(options.test + ":" + std::to_string(number) +
                        ": expected `label<TAB>text` with a known label");
      }
      const Tensor result = scores(line.substr(tab + 1));
      if (static_cast<std::size_t>(result.numel()) != classes) {
        throw DataError("there are " + std::to_string(classes) + " labels but the net's output '" + output +
                        "' has " + std::to_string(result.numel()) + " values");
      }
      const auto predicted = static_cast<std::size_t>(argmax(result.data<float>(), result.numel()));
      const auto truth = static_cast<std::size_t>(label - labels.begin());
      ++confusion[truth][predicted];
      ++total;
      correct += predicted == truth ? 1 : 0;
    }
    std::printf("confusion matrix (rows: true, columns: predicted)\n%6s", "");
    for (const std::string& l : labels) std::printf(" %6s", l.c_str());
    std::printf("\n");
    for (std::size_t r = 0; r < classes; ++r) {
      std::printf("%6s", labels[r].c_str());
      for (std::size_t c = 0; c < classes; ++c)
        std::printf(" %6lld", static_cast<long long>(confusion[r][c]));
      std::printf("\n");
    }
    std::printf("accuracy: %.4f (%lld/%lld)\n",
                total ? static_cast<double>(correct) / static_cast<double>(total) : 0.0,
                static_cast<long long>(correct), static_cast<long long>(total));
    return 0;
  }
  for (const std::string& text : options.texts) {
    const Tensor result = scores(text);
    const std::int64_t classes = result.numel();
    if (!labels.empty() && static_cast<std::int64_t>(labels.size()) != classes) {
      throw DataError("there are " + std::to_string(labels.size()) + " labels but the net's output '" +
                      output + "' has " + std::to_string(classes) + " values");
    }
    print_top_classes(text, result.data<float>(), classes, options.top, labels, "");
  }
  return 0;
}

}  // namespace

Verb add_classify_text_verb(CLI::App& app) {
  auto options = std::make_shared<ClassifyTextOptions>();
  CLI::App* command = app.add_subcommand("classify-text", "Print the top classes of texts");
  add_model_options(*command, options->model);
  add_device_option(*command, options->model);
  CLI::Option* texts = command->add_option("texts", options->texts, "Texts (UTF-8), one argument each");
  command
      ->add_option("--test", options->test,
                   "Score a TSV of label<TAB>text lines: accuracy and confusion matrix")
      ->excludes(texts);
  command->parse_complete_callback([options] {
    if (options->texts.empty() && options->test.empty()) throw CLI::RequiredError("texts or --test");
  });
  command
      ->add_option("--vocab", options->vocabulary,
                   "The training LMDB of convert-data --format text (vocab.txt, labels.txt), or a vocab.txt")
      ->required();
  command->add_option("--labels", options->labels,
                      "Class names, one per line (default: the LMDB's labels.txt)");
  command->add_option("-k,--top", options->top, "How many classes to show per text")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_threads_option(*command, options->threads);
  return {command, [options] { return run_classify_text(*options); }};
}

}  // namespace espresso::cli
