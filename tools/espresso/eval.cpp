// `espresso eval`: top-1 accuracy of a classifier on a labelled dataset.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "espresso/data.h"
#include "espresso/errors.h"

namespace espresso::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct EvalOptions {
  ModelOptions model;
  std::string dataset;
  std::string data_dir;
  std::string split = "test";
  InputOptions input;
  std::int64_t batch = 64;
  std::int64_t limit = 0;
  int threads = 0;
};

// Redrawn in place on a terminal; a few plain lines when stderr is a file or a pipe.
class Progress {
 public:
  explicit Progress(std::int64_t total) : total_(total), terminal_(isatty(STDERR_FILENO) != 0) {}

  void update(std::int64_t done) {
    const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    const double rate = seconds > 0.0 ? static_cast<double>(done) / seconds : 0.0;
    if (terminal_) {
      const auto now = Clock::now();
      if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
      last_draw_ = now;
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(kWidth * done / std::max<std::int64_t>(total_, 1));
      std::fprintf(stderr, "\r[%s%s] %s/%s images, %s images/s ", std::string(filled, '#').c_str(),
                   std::string(kWidth - filled, '.').c_str(), with_commas(done).c_str(),
                   with_commas(total_).c_str(), with_commas(std::llround(rate)).c_str());
      if (done == total_) std::fputc('\n', stderr);
    } else {
      constexpr int kSteps = 4;
      const std::int64_t step = done * kSteps / std::max<std::int64_t>(total_, 1);
      if (step <= reported_step_) return;
      reported_step_ = step;
      std::fprintf(stderr, "eval: %s/%s images (%lld%%)\n", with_commas(done).c_str(),
                   with_commas(total_).c_str(),
                   static_cast<long long>(done * 100 / std::max<std::int64_t>(total_, 1)));
    }
    std::fflush(stderr);
  }

 private:
  std::int64_t total_;
  bool terminal_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_draw_{};
  std::int64_t reported_step_ = 0;
};

// The dataset's images at the net's input size, planar, 8 bits per value.
std::vector<std::uint8_t> resized_image(const data::LabeledImages& set, std::int64_t index,
                                        std::int64_t height, std::int64_t width) {
  const std::uint8_t* image = set.image(index);
  const std::int64_t plane = set.height * set.width;
  std::vector<std::uint8_t> resized;
  for (std::int64_t c = 0; c < set.channels; ++c) {
    const std::vector<std::uint8_t> channel(image + c * plane, image + (c + 1) * plane);
    const std::vector<std::uint8_t> scaled =
        data::resize_image(channel, static_cast<int>(set.height), static_cast<int>(set.width), 1,
                           static_cast<int>(height), static_cast<int>(width));
    resized.insert(resized.end(), scaled.begin(), scaled.end());
  }
  return resized;
}

int run_eval(const EvalOptions& options) {
  apply_threads(options.threads);
  const data::DatasetKind kind = data::parse_dataset_kind(options.dataset);
  const data::Split split = data::parse_split(options.split);
  const data::LabeledImages set = data::load_dataset(kind, options.data_dir, split);
  Net net = open_net(options.model);
  const std::int64_t total = options.limit > 0 ? std::min(options.limit, set.count) : set.count;
  if (total == 0) throw DataError(set.description + ": the dataset holds no images");

  const std::int64_t batch = std::min(options.batch, total);
  const ImageInput input = configure_input(net, options.input, batch);
  if (input.channels != set.channels) {
    throw DataError(set.description + ": images have " + std::to_string(set.channels) +
                    " channel(s) but the net's input '" + input.name + "' takes " +
                    std::to_string(input.channels));
  }
  const bool resize = input.height != set.height || input.width != set.width;
  const std::string output = single_output(net, "eval");
  const std::int64_t plane = input.height * input.width;
  const std::int64_t image_size = input.channels * plane;

  Tensor staging;
  Progress progress(total);
  std::int64_t correct = 0;
  const auto start = Clock::now();
  for (std::int64_t first = 0; first < total; first += batch) {
    const std::int64_t count = std::min(batch, total - first);
    if (count != net.input_shape(input.name)[0]) net.set_batch(count);
    float* destination = host_input(net, input.name, staging).data<float>();
    if (resize) {
      for (std::int64_t i = 0; i < count; ++i) {
        const std::vector<std::uint8_t> image = resized_image(set, first + i, input.height, input.width);
        input.preprocess.apply(image.data(), 1, input.channels, plane, destination + i * image_size);
      }
    } else {
      input.preprocess.apply(set.image(first), count, input.channels, plane, destination);
    }
    upload_input(net, input.name, staging);
    net.forward();

    const Tensor result = host_output(net, output);
    const std::int64_t classes = result.numel() / count;
    const float* values = result.data<float>();
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t label = set.labels[static_cast<std::size_t>(first + i)];
      if (label >= classes) {
        throw DataError(set.description + ": image " + std::to_string(first + i) + " has label " +
                        std::to_string(label) + " but the net's output '" + output + "' has only " +
                        std::to_string(classes) + " classes");
      }
      if (argmax(values + i * classes, classes) == label) ++correct;
    }
    progress.update(first + count);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  char accuracy[32];
  std::snprintf(accuracy, sizeof accuracy, "%.4f", static_cast<double>(correct) / static_cast<double>(total));
  std::cout << "accuracy: " << accuracy << " (" << correct << "/" << total << ")\n";
  char elapsed[32];
  std::snprintf(elapsed, sizeof elapsed, "%.2f", seconds);
  std::cout << "throughput: "
            << with_commas(std::llround(static_cast<double>(total) / std::max(seconds, 1e-9)))
            << " images/s (" << with_commas(total) << " images in " << elapsed << " s, batch " << batch
            << ", " << num_threads() << (num_threads() == 1 ? " thread)\n" : " threads)\n");
  return 0;
}

}  // namespace

Verb add_eval_verb(CLI::App& app) {
  auto options = std::make_shared<EvalOptions>();
  CLI::App* command = app.add_subcommand("eval", "Measure top-1 accuracy on a labelled dataset");
  add_model_options(*command, options->model);
  add_device_option(*command, options->model);
  add_precision_option(*command, options->model);
  command->add_option("--dataset", options->dataset, "Dataset format")
      ->required()
      ->check(CLI::IsMember({"mnist", "fashion-mnist", "cifar10"}));
  command->add_option("--data", options->data_dir, "Directory holding the dataset files")->required();
  command->add_option("--split", options->split, "Which split to evaluate")
      ->check(CLI::IsMember({"train", "test"}))
      ->capture_default_str();
  add_input_options(*command, options->input);
  command->add_option("--batch", options->batch, "Images per forward pass")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--limit", options->limit, "Evaluate only the first N images (0: all)")
      ->check(CLI::NonNegativeNumber);
  add_threads_option(*command, options->threads);
  return {command, [options] { return run_eval(*options); }};
}

}  // namespace espresso::cli
