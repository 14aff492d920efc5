#include "common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <numeric>

#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/store.h"
#include "store_common.h"

namespace espresso::cli {

namespace {

void require_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw FileError(what + " file '" + path + "' does not exist");
  if (!std::filesystem::is_regular_file(path, ec))
    throw FileError(what + " file '" + path + "' is not a file");
}

// "HxW" with positive dimensions.
bool parse_size(const std::string& text, std::int64_t& height, std::int64_t& width) {
  const std::size_t x = text.find('x');
  if (x == std::string::npos || x == 0 || x + 1 == text.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (i != x && (text[i] < '0' || text[i] > '9')) return false;
  }
  if (x > 6 || text.size() - x - 1 > 6) return false;
  height = std::stoll(text.substr(0, x));
  width = std::stoll(text.substr(x + 1));
  return height > 0 && width > 0;
}

}  // namespace

void add_model_options(CLI::App& command, ModelOptions& options) {
  command.add_option("model", options.model, "Model: Caffe .prototxt, .onnx, .esp or a store reference REGISTRY/NAME:VERSION")->required();
  command.add_option("-w,--weights", options.weights, "Learned weights for a Caffe model (.caffemodel)");
}

void add_device_option(CLI::App& command, ModelOptions& options) {
  command.add_option("--device", options.device, "cpu, cuda, cuda:N, vulkan or vulkan:N")->capture_default_str();
}

void add_precision_option(CLI::App& command, ModelOptions& options) {
  command
      .add_option(
          "--precision", options.precision,
          "fp32, tf32 (GPU convolutions and GEMMs on TF32 tensor cores), fp16 or bf16 (GPU activations and "
          "weights in that type, fp32 accumulation), int8 (CPU convolutions on 8-bit integers); layers without "
          "such a kernel run in fp32")
      ->check(CLI::IsMember({"fp32", "tf32", "fp16", "bf16", "int8"}))
      ->capture_default_str();
  command.add_flag("--strict", options.strict_precision,
                   "Fail instead of running layers in fp32 that have no kernel in the asked precision");
}

std::string resolve_model(const std::string& model) {
  std::error_code ec;
  if (std::filesystem::exists(model, ec) || !store::Reference::looks_like(model)) return model;
  store::Client client(store_client_options(false));
  return client.pull(parse_reference(model)).package.string();
}

Net open_net(const ModelOptions& options, NetOptions net_options) {
  const std::string model = resolve_model(options.model);
  require_file(model, "model");
  if (!options.weights.empty()) require_file(options.weights, "weights");
  net_options.device = Device::parse(options.device);
  net_options.precision = parse_precision(options.precision);
  net_options.strict_precision = options.strict_precision;
  Net net(load_model(model, options.weights), net_options);
  if (net_options.precision != Precision::fp32) {
    std::string fallen;
    int count = 0;
    for (const LayerSummary& layer : net.summary()) {
      if (layer.precision_note != "fallback") continue;
      if (++count <= 5) fallen += (fallen.empty() ? "" : ", ") + layer.name;
    }
    if (count > 0) {
      std::fprintf(
          stderr,
          "note: %d layer(s) have no %s kernel on %s and run in fp32 (%s%s); --strict makes this an error\n",
          count, options.precision.c_str(), net_options.device.str().c_str(), fallen.c_str(),
          count > 5 ? ", ..." : "");
    }
  }
  if (!net_options.device.is_cpu() && !net_options.training) {
    for (const LayerSummary& layer : net.summary()) {
      if (layer.device != net_options.device) {
        std::fprintf(stderr, "warning: layer '%s' (%s) has no %s kernel; it runs on the CPU, its inputs copied across\n",
                     layer.name.c_str(), layer.type.c_str(), net_options.device.str().c_str());
      }
    }
  }
  return net;
}

Tensor& host_input(Net& net, const std::string& name, Tensor& staging) {
  Tensor& input = net.input(name);
  if (input.device().is_cpu()) return input;
  if (staging.shape() != input.shape()) staging = Tensor::empty(input.shape());
  return staging;
}

void upload_input(Net& net, const std::string& name, const Tensor& staging) {
  Tensor& input = net.input(name);
  if (!input.device().is_cpu()) input.copy_from(staging);
}

Tensor host_output(const Net& net, const std::string& name) {
  const Tensor& output = net.tensor(name);
  return output.device().is_cpu() ? output : output.to(Device::cpu());
}

void parse_listen(const std::string& listen, std::string& host, int& port) {
  const std::size_t colon = listen.rfind(':');
  if (colon == std::string::npos) throw UnsupportedError("--listen '" + listen + "': expected HOST:PORT");
  host = listen.substr(0, colon);
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (const std::exception&) {
    throw UnsupportedError("--listen '" + listen + "': the port is not a number");
  }
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
}

void add_threads_option(CLI::App& command, int& threads) {
  command.add_option("--threads", threads, "Worker threads (default: ESPRESSO_NUM_THREADS, else all cores)")
      ->check(CLI::NonNegativeNumber);
}

void apply_threads(int threads) { set_num_threads(threads); }

void add_input_options(CLI::App& command, InputOptions& options) {
  command.add_option("--scale", options.scale, "Multiply inputs by S after mean subtraction (Caffe's scale)");
  command.add_option("--mean", options.mean,
                     "Per-channel mean to subtract: comma-separated values or a .npy file ((C,) or (C,H,W))");
  command
      .add_option("--size", options.size,
                  "Input height x width, e.g. 224x224 (default: the net's input size)")
      ->check(CLI::Validator(
          [](std::string& text) {
            std::int64_t h = 0, w = 0;
            return parse_size(text, h, w) ? std::string() : "expected HxW with positive sizes, e.g. 28x28";
          },
          "HxW"));
}

ImageInput configure_input(Net& net, const InputOptions& options, std::int64_t batch) {
  const std::vector<std::string> inputs = net.input_names();
  if (inputs.size() != 1) {
    throw UnsupportedError("the net has " + std::to_string(inputs.size()) +
                           " inputs; image input needs exactly one");
  }
  ImageInput input;
  input.name = inputs[0];
  const Shape shape = net.input_shape(input.name);
  if (shape.rank() != 4) {
    throw UnsupportedError("input '" + input.name + "' has shape " + shape.str() +
                           "; image input needs an N x C x H x W input");
  }
  input.channels = shape[1];
  input.height = shape[2];
  input.width = shape[3];
  if (!options.size.empty()) parse_size(options.size, input.height, input.width);
  net.reshape(input.name, Shape{batch, input.channels, input.height, input.width});
  if (!options.mean.empty())
    input.preprocess.mean = data::parse_mean(options.mean, static_cast<int>(input.channels));
  input.preprocess.scale = options.scale;
  return input;
}

std::string single_output(const Net& net, const std::string& verb) {
  const std::vector<std::string> outputs = net.output_names();
  if (outputs.size() != 1) {
    std::string names;
    for (const std::string& name : outputs) {
      if (!names.empty()) names += ", ";
      names += name;
    }
    throw UnsupportedError(verb + " needs a net with one output; this one has " +
                           std::to_string(outputs.size()) + (names.empty() ? "" : ": " + names));
  }
  return outputs[0];
}

std::string producer_type(const Net& net, const std::string& tensor) {
  std::string type;
  for (const LayerSpec& layer : net.graph().layers) {
    for (const std::string& output : layer.outputs) {
      if (output == tensor) type = layer.type;
    }
  }
  return type;
}

std::int64_t argmax(const float* values, std::int64_t count) {
  std::int64_t best = 0;
  for (std::int64_t i = 1; i < count; ++i) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

std::string with_commas(std::int64_t value) {
  const std::string digits = std::to_string(value < 0 ? -value : value);
  std::string text;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) text += ',';
    text += digits[i];
  }
  return value < 0 ? "-" + text : text;
}

std::string si(double value, const std::string& unit) {
  static const char* const prefixes[] = {"k", "M", "G", "T", "P"};
  if (std::fabs(value) < 1000.0) {
    const std::size_t start = unit.find_first_not_of(' ');
    return with_commas(std::llround(value)) + " " + (start == std::string::npos ? unit : unit.substr(start));
  }
  int index = -1;
  while (std::fabs(value) >= 1000.0 && index < 4) {
    value /= 1000.0;
    ++index;
  }
  char number[32];
  std::snprintf(number, sizeof number, "%.2f", value);
  return std::string(number) + " " + prefixes[index] + unit;
}

std::string binary_bytes(std::size_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int index = 0;
  while (value >= 1024.0 && index < 4) {
    value /= 1024.0;
    ++index;
  }
  char text[32];
  std::snprintf(text, sizeof text, index == 0 ? "%.0f %s" : "%.1f %s", value, units[index]);
  return text;
}

void print_top_classes(const std::string& title, const float* values, std::int64_t classes, std::int64_t top,
                       const std::vector<std::string>& labels, const std::string& value_name) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(classes));
  std::iota(order.begin(), order.end(), 0);
  const auto k = static_cast<std::size_t>(std::min(top, classes));
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                    [&](std::int64_t a, std::int64_t b) { return values[a] > values[b]; });
  std::cout << title << '\n';
  const std::string name = value_name.empty() ? "" : value_name + " ";
  for (std::size_t rank = 0; rank < k; ++rank) {
    const std::int64_t cls = order[rank];
    char line[96];
    std::snprintf(line, sizeof line, "  %zu. class %lld  %s%.6f", rank + 1, static_cast<long long>(cls), name.c_str(),
                  static_cast<double>(values[cls]));
    std::cout << line;
    if (!labels.empty()) std::cout << "  " << labels[static_cast<std::size_t>(cls)];
    std::cout << '\n';
  }
}

}  // namespace espresso::cli
