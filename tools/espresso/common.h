// Pieces shared by the CLI verbs: loading a net, input preprocessing options, threads, number
// formatting.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "espresso/data.h"
#include "espresso/net.h"

namespace espresso::cli {

// A registered subcommand and what to run when the command line selected it.
struct Verb {
  CLI::App* command = nullptr;
  std::function<int()> run;
};

Verb add_info_verb(CLI::App& app);
Verb add_classify_verb(CLI::App& app);
Verb add_eval_verb(CLI::App& app);
Verb add_convert_verb(CLI::App& app);
Verb add_onnx_test_verb(CLI::App& app);
Verb add_devices_verb(CLI::App& app);
Verb add_bench_verb(CLI::App& app);
Verb add_convert_data_verb(CLI::App& app);
Verb add_classify_text_verb(CLI::App& app);
Verb add_train_verb(CLI::App& app);
Verb add_demo_verb(CLI::App& app);
// The model store (docs/store.md).
Verb add_push_verb(CLI::App& app);
Verb add_pull_verb(CLI::App& app);
Verb add_search_verb(CLI::App& app);
Verb add_show_verb(CLI::App& app);
Verb add_cache_verb(CLI::App& app);
Verb add_store_verb(CLI::App& app);
Verb add_keygen_verb(CLI::App& app);
Verb add_login_verb(CLI::App& app);
Verb add_logout_verb(CLI::App& app);
Verb add_trust_verb(CLI::App& app);
Verb add_compress_verb(CLI::App& app);
Verb add_serve_verb(CLI::App& app);
Verb add_quantize_verb(CLI::App& app);  // docs/int8.md

struct ModelOptions {
  std::string model;
  std::string weights;
  std::string device = "cpu";
  std::string precision = "fp32";
  bool strict_precision = false;
};
void add_model_options(CLI::App& command, ModelOptions& options);
// Adds --device (cpu, cuda, cuda:N) to a verb that computes.
void add_device_option(CLI::App& command, ModelOptions& options);
// Adds --precision fp32|tf32|fp16|bf16 and --strict (docs/precision.md).
void add_precision_option(CLI::App& command, ModelOptions& options);
// Loads the model (and weights) onto the chosen device; throws FileError naming a file that does not
// exist.
Net open_net(const ModelOptions& options, NetOptions net_options = {});
// A model path as given, or for a store reference (that is not a file here) the cached package,
// pulled on first use.
std::string resolve_model(const std::string& model);

// The net's inputs and outputs as seen from the host. On the CPU these are the net's own buffers; on a
// GPU, `staging` is a host buffer that upload_input() copies to the device.
Tensor& host_input(Net& net, const std::string& name, Tensor& staging);
void upload_input(Net& net, const std::string& name, const Tensor& staging);
Tensor host_output(const Net& net, const std::string& name);

// "HOST:PORT" or "[IPV6]:PORT" of a server's --listen; throws UnsupportedError naming the option.
void parse_listen(const std::string& listen, std::string& host, int& port);

void add_threads_option(CLI::App& command, int& threads);
// 0 leaves the choice to ESPRESSO_NUM_THREADS, else the hardware's thread count.
void apply_threads(int threads);

struct InputOptions {
  float scale = 1.0f;
  std::string mean;
  std::string size;  // "HxW"; empty for the net's own
};
void add_input_options(CLI::App& command, InputOptions& options);

// The net's single NCHW image input, resized as the options ask, and how to fill it.
struct ImageInput {
  std::string name;
  std::int64_t channels = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;
  data::Preprocess preprocess;
};
// Throws UnsupportedError when the net does not have exactly one rank-4 input.
ImageInput configure_input(Net& net, const InputOptions& options, std::int64_t batch);

// The name of the net's only output; `verb` names the caller in the error otherwise.
std::string single_output(const Net& net, const std::string& verb);
// The type of the layer that produces `tensor` ("" for a graph input).
std::string producer_type(const Net& net, const std::string& tensor);
// Prints `title`, then the `top` largest of `classes` values, best first, as "  1. class 7  prob 0.998" (the
// value's name is left out when empty), with the class's label when `labels` are given.
void print_top_classes(const std::string& title, const float* values, std::int64_t classes, std::int64_t top,
                       const std::vector<std::string>& labels, const std::string& value_name);
// Index of the largest of `count` values.
std::int64_t argmax(const float* values, std::int64_t count);

// 431080 -> "431,080".
std::string with_commas(std::int64_t value);
// (4586000, "FLOP") -> "4.59 MFLOP"; (2293000, " multiply-adds") -> "2.29 M multiply-adds";
// values below 1000 are printed whole, without a prefix.
std::string si(double value, const std::string& unit);
// 53248 -> "52.0 KiB".
std::string binary_bytes(std::size_t bytes);

}  // namespace espresso::cli
