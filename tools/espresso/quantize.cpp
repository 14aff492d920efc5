// `espresso quantize`: post-training int8 quantization with calibration (docs/int8.md). Runs the fp32
// model on calibration images (a labelled dataset's split, or image files), chooses each convolution
// input's range, and writes a .esp package whose convolutions compute on 8-bit integers.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common.h"
#include "espresso/data.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/package.h"
#include "espresso/quantize.h"

namespace espresso::cli {
namespace {

struct QuantizeCliOptions {
  ModelOptions model;
  std::vector<std::string> calibrate;
  std::string dataset;  // empty: `calibrate` names image files or folders of them
  std::string split = "train";
  std::string out;
  std::string method = "minmax";
  std::string ranges;  // optional JSON file of the calibrated ranges
  double percentile = 99.99;
  std::int64_t limit = 500;
  std::int64_t batch = 50;
  bool rgb = false;
  InputOptions input;
  int threads = 0;
};

void require_existing(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw FileError(what + " file '" + path + "' does not exist");
}

bool is_image_file(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

int run_quantize(const QuantizeCliOptions& options) {
  apply_threads(options.threads);
  const std::string model = resolve_model(options.model.model);
  require_existing(model, "model");
  Graph graph = load_model(model, options.model.weights);
  Net probe(graph);
  const ImageInput input = configure_input(probe, options.input, 1);
  const std::int64_t plane = input.height * input.width, image_size = input.channels * plane;

  // The calibration images, preprocessed as for eval/classify, in batches.
  std::vector<std::vector<float>> images;
  if (!options.dataset.empty()) {
    if (options.calibrate.size() != 1) throw UnsupportedError("--calibrate takes one dataset folder with --dataset");
    const data::LabeledImages set =
        data::load_dataset(data::parse_dataset_kind(options.dataset), options.calibrate[0], data::parse_split(options.split));
    if (set.channels != input.channels || set.height != input.height || set.width != input.width)
      throw DataError(set.description + ": images are " + std::to_string(set.channels) + "x" + std::to_string(set.height) +
                      "x" + std::to_string(set.width) + " but the net's input '" + input.name + "' takes " +
                      std::to_string(input.channels) + "x" + std::to_string(input.height) + "x" + std::to_string(input.width));
    const std::int64_t count = std::min(options.limit, set.count);
    for (std::int64_t i = 0; i < count; ++i) {
      std::vector<float> image(static_cast<std::size_t>(image_size));
      input.preprocess.apply(set.image(i), 1, input.channels, plane, image.data());
      images.push_back(std::move(image));
    }
  } else {
    std::vector<std::string> files;
    for (const std::string& entry : options.calibrate) {
      if (std::filesystem::is_directory(entry)) {
        std::vector<std::string> found;
        for (const auto& f : std::filesystem::directory_iterator(entry))
          if (f.is_regular_file() && is_image_file(f.path())) found.push_back(f.path().string());
        std::sort(found.begin(), found.end());
        files.insert(files.end(), found.begin(), found.end());
      } else {
        require_existing(entry, "calibration image");
        files.push_back(entry);
      }
    }
    const data::ImageLayout layout{static_cast<int>(input.channels), static_cast<int>(input.height),
                                   static_cast<int>(input.width), !options.rgb};
    for (const std::string& path : files) {
      if (static_cast<std::int64_t>(images.size()) >= options.limit) break;
      const std::vector<float> pixels = data::load_image(path, layout);
      std::vector<float> image(static_cast<std::size_t>(image_size));
      input.preprocess.apply(pixels.data(), 1, input.channels, plane, image.data());
      images.push_back(std::move(image));
    }
  }

  QuantizeOptions quantize;
  quantize.method = parse_calibration_method(options.method);
  quantize.percentile = options.percentile;
  std::size_t next = 0;
  auto feed = [&](std::map<std::string, Tensor>& batch) {
    if (next >= images.size()) return false;
    const std::size_t count = std::min<std::size_t>(static_cast<std::size_t>(options.batch), images.size() - next);
    std::vector<float> values;
    for (std::size_t i = 0; i < count; ++i) values.insert(values.end(), images[next + i].begin(), images[next + i].end());
    batch[input.name] = Tensor::from(Shape{static_cast<std::int64_t>(count), input.channels, input.height, input.width}, values);
    next += count;
    return true;
  };
  QuantizeReport report;
  Graph quantized = quantize_graph(graph, feed, quantize, &report);
  save_package(quantized, options.out);
  std::cout << "calibrated on " << report.images << " images (" << options.method << ")\n";
  for (const QuantizedLayerReport& layer : report.layers) {
    std::printf("  %-24s input %-20s range [%.4g, %.4g]  scale %.4g  zero point %lld\n", layer.layer.c_str(),
                layer.input.c_str(), layer.min, layer.max, layer.scale, static_cast<long long>(layer.zero_point));
  }
  if (!options.ranges.empty()) {
    nlohmann::json table = nlohmann::json::object();
    for (const QuantizedLayerReport& layer : report.layers) {
      table[layer.input] = {std::min(layer.min, 0.0), std::max(layer.max, 0.0)};
      table[layer.output] = {std::min(layer.output_min, 0.0), std::max(layer.output_max, 0.0)};
    }
    std::ofstream file(options.ranges);
    if (!(file << table.dump(1) << "\n")) throw FileError("cannot write the ranges file '" + options.ranges + "'");
  }
  for (const std::string& kept : report.kept) std::cout << "  kept in fp32: " << kept << "\n";
  std::cout << "wrote " << options.out << " (" << report.layers.size() << " int8 convolutions)\n";
  return 0;
}

}  // namespace

Verb add_quantize_verb(CLI::App& app) {
  auto options = std::make_shared<QuantizeCliOptions>();
  CLI::App* command = app.add_subcommand("quantize", "Quantize a model's convolutions to int8 with calibration data");
  add_model_options(*command, options->model);
  command->add_option("--calibrate", options->calibrate,
                      "Calibration data: a dataset folder (with --dataset), or image files / folders of images")
      ->required();
  command->add_option("--dataset", options->dataset, "Format of the --calibrate folder")
      ->check(CLI::IsMember({"mnist", "fashion-mnist", "cifar10"}));
  command->add_option("--split", options->split, "Which split of the dataset to calibrate on")
      ->check(CLI::IsMember({"train", "test"}))
      ->capture_default_str();
  command->add_option("-o,--out", options->out, "The .esp package to write")->required();
  command->add_option("--method", options->method, "How each input's range is chosen")
      ->check(CLI::IsMember({"minmax", "percentile", "entropy"}))
      ->capture_default_str();
  command->add_option("--percentile", options->percentile, "Percentage of values kept inside the range (--method percentile)")
      ->capture_default_str();
  command->add_option("--limit", options->limit, "Calibrate on at most N images")->check(CLI::PositiveNumber)->capture_default_str();
  command->add_option("--batch", options->batch, "Images per forward pass")->check(CLI::PositiveNumber)->capture_default_str();
  command->add_option("--ranges", options->ranges,
                      "Also write each quantized convolution's input and output range (min, max) as JSON, by tensor");
  command->add_flag("--rgb", options->rgb, "Image files in RGB order (default BGR, as Caffe)");
  add_input_options(*command, options->input);
  add_threads_option(*command, options->threads);
  return {command, [options] { return run_quantize(*options); }};
}

}  // namespace espresso::cli
