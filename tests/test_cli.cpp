// The espresso command line, run as a separate process: output, messages and exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "espresso/data.h"
#include "test_support.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

namespace espresso {
namespace {

namespace fs = std::filesystem;

std::string data_dir() { return testing::shared_data_dir().string(); }

std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

using testing::TempDir;

// These run the shared LeNet and MNIST files.
class Cli : public testing::SharedDataTest {};
class CliAcceptance : public testing::SharedDataTest {};

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs the CLI with `args` (already shell-quoted), capturing stdout and stderr apart.
Result run_cli(const std::string& args) {
  TempDir dir;
  const std::string err_path = dir.file("stderr");
  const std::string command = quote(testing::espresso_cli()) + " " + args + " 2>" + quote(err_path);
  Result result;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(err_path);
  result.err.assign(std::istreambuf_iterator<char>(err), std::istreambuf_iterator<char>());
  return result;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string lenet_dir() { return data_dir() + "/caffe/lenet"; }
std::string lenet_model() { return quote(lenet_dir() + "/lenet.prototxt"); }
std::string lenet_weights() { return quote(lenet_dir() + "/lenet_iter_10000.caffemodel"); }

// An error run: exit code 1 and exactly one `error:` line on stderr that names `part`.
void expect_runtime_error(const Result& result, const std::string& part) {
  EXPECT_EQ(result.code, 1) << result.err;
  EXPECT_TRUE(result.err.starts_with("error: ")) << result.err;
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  EXPECT_TRUE(contains(result.err, part)) << "expected '" << part << "' in: " << result.err;
}

TEST_F(Cli, PrintsVersion) {
  const Result result = run_cli("--version");
  EXPECT_EQ(result.code, 0);
  EXPECT_TRUE(contains(result.out, std::string("espresso ") + ESPRESSO_VERSION)) << result.out;
}

TEST_F(Cli, EveryVerbHasHelp) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> verbs = {
      {"info", {"--weights"}},
      {"classify", {"--labels", "--top", "--rgb", "--scale", "--mean", "--size", "--threads"}},
      {"eval", {"--dataset", "--data", "--split", "--batch", "--limit", "--scale", "--mean", "--threads"}}};
  for (const auto& [verb, options] : verbs) {
    const Result result = run_cli(verb + " --help");
    EXPECT_EQ(result.code, 0) << verb;
    EXPECT_TRUE(contains(result.out, "Usage:")) << result.out;
    for (const std::string& option : options)
      EXPECT_TRUE(contains(result.out, option)) << verb << " " << option;
  }
  const Result top = run_cli("--help");
  EXPECT_EQ(top.code, 0);
  for (const char* verb : {"info", "classify", "eval"}) EXPECT_TRUE(contains(top.out, verb)) << top.out;
}

TEST_F(Cli, UsageErrorsExitWithTwo) {
  const std::vector<std::string> bad = {
      "",                                                    // no verb
      "frobnicate",                                          // unknown verb
      "eval m.prototxt --data d",                            // --dataset missing
      "eval m.prototxt --dataset imagenet --data d",         // unknown dataset
      "eval m.prototxt --dataset mnist --data d --batch 0",  // batch must be positive
      "classify m.prototxt",                                 // no images
      "classify m.prototxt a.png --size 28",                 // not HxW
      "classify m.prototxt a.png --top 0",
      "info m.prototxt --bogus",
  };
  for (const std::string& args : bad) {
    const Result result = run_cli(args);
    EXPECT_EQ(result.code, 2) << args << ": " << result.err;
    EXPECT_TRUE(contains(result.err, "--help")) << args << ": " << result.err;
  }
}

TEST_F(Cli, MissingFilesAreNamed) {
  expect_runtime_error(run_cli("info /nonexistent/espresso/model.prototxt"),
                       "/nonexistent/espresso/model.prototxt");
  expect_runtime_error(run_cli("info " + lenet_model() + " --weights /nonexistent/espresso/w.caffemodel"),
                       "/nonexistent/espresso/w.caffemodel");
  expect_runtime_error(run_cli("classify /nonexistent/espresso/m.prototxt x.png"),
                       "/nonexistent/espresso/m.prototxt");
}

TEST_F(Cli, WrongDatasetDirectoryIsAnError) {
  TempDir dir;
  expect_runtime_error(run_cli("eval " + lenet_model() + " --dataset mnist --data " + quote(dir.path())),
                       "t10k-images-idx3-ubyte");
  expect_runtime_error(run_cli("eval " + lenet_model() + " --dataset cifar10 --data " + quote(dir.path())),
                       "test_batch");
  expect_runtime_error(
      run_cli("eval " + lenet_model() + " --dataset mnist --data /nonexistent/espresso/mnist"),
      "/nonexistent/espresso/mnist");
}

TEST_F(Cli, UnreadableImageIsAnError) {
  TempDir dir;
  std::ofstream(dir.file("broken.png")) << "not an image";
  expect_runtime_error(
      run_cli("classify " + lenet_model() + " -w " + lenet_weights() + " " + quote(dir.file("broken.png"))),
      "broken.png");
  expect_runtime_error(run_cli("classify " + lenet_model() + " " + quote(dir.file("absent.png"))),
                       "absent.png");
}

TEST_F(Cli, BadMeanIsAnError) {
  TempDir dir;
  std::vector<std::uint8_t> pixels(28 * 28, 0);
  ASSERT_NE(stbi_write_png(dir.file("zero.png").c_str(), 28, 28, 1, pixels.data(), 28), 0);
  expect_runtime_error(
      run_cli("classify " + lenet_model() + " " + quote(dir.file("zero.png")) + " --mean 1,2,3"), "3 values");
}

// Acceptance: the trained Caffe LeNet reaches its reference accuracy (99.05 %) on MNIST t10k.
void expect_lenet_accuracy(const std::string& model) {
  const Result result =
      run_cli("eval " + quote(model) + " --weights " + lenet_weights() + " --dataset mnist --data " +
              quote(data_dir() + "/mnist") + " --scale 0.00390625 --batch 100");
  ASSERT_EQ(result.code, 0) << result.err;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(result.out, match, std::regex(R"(accuracy: (0\.\d{4}) \((\d+)/(\d+)\))")))
      << result.out;
  EXPECT_GE(std::stod(match[1]), 0.99) << result.out;
  EXPECT_EQ(match[3], "10000");
  EXPECT_TRUE(contains(result.out, "images/s")) << result.out;
  EXPECT_TRUE(contains(result.err, "10,000/10,000")) << result.err;
}

TEST_F(CliAcceptance, EvalLenetV1Format) { expect_lenet_accuracy(lenet_dir() + "/lenet.prototxt"); }

TEST_F(CliAcceptance, EvalLenetCurrentFormat) {
  expect_lenet_accuracy(lenet_dir() + "/v2_format/lenet.prototxt");
}

const std::vector<const char*> cpu_conv_kernels = {"packed-gemm-", "direct-", "winograd-", "channel-gemm-",
                                                   "im2col+sgemm"};

TEST_F(CliAcceptance, InfoLenet) {
  const Result result = run_cli("info " + lenet_model() + " --weights " + lenet_weights());
  ASSERT_EQ(result.code, 0) << result.err;
  EXPECT_TRUE(contains(result.out, "431,080 params")) << result.out;
  EXPECT_TRUE(contains(result.out, "4.59 MFLOP")) << result.out;
  EXPECT_TRUE(contains(result.out, "2.29 M multiply-adds")) << result.out;
  EXPECT_TRUE(contains(result.out, "1x20x24x24")) << result.out;
  EXPECT_TRUE(contains(result.out, "400,500")) << result.out;  // ip1: 800 x 500 weights + 500 biases
  EXPECT_TRUE(contains(result.out, "planned")) << result.out;
  // The kernel column: on AVX2 processors the convolution tactic each shape measured fastest, im2col +
  // OpenBLAS elsewhere.
  EXPECT_TRUE(std::any_of(cpu_conv_kernels.begin(), cpu_conv_kernels.end(), [&](const char* name) {
    return contains(result.out, name);
  })) << result.out;
}

TEST_F(CliAcceptance, ClassifyMnistDigits) {
  const data::LabeledImages digits = data::load_mnist(data_dir() + "/mnist", data::Split::test);
  TempDir dir;
  std::string images;
  constexpr int kDigits = 8;
  for (int i = 0; i < kDigits; ++i) {
    const std::string path = dir.file("digit" + std::to_string(i) + ".png");
    ASSERT_NE(stbi_write_png(path.c_str(), 28, 28, 1, digits.image(i), 28), 0);
    images += " " + quote(path);
  }
  const Result result = run_cli("classify " + lenet_model() + " -w " + lenet_weights() + images +
                                " --scale 0.00390625 --top 3");
  ASSERT_EQ(result.code, 0) << result.err;
  for (int i = 0; i < kDigits; ++i) {
    const std::string path = dir.file("digit" + std::to_string(i) + ".png");
    const std::size_t at = result.out.find(path + "\n");
    ASSERT_NE(at, std::string::npos) << result.out;
    const std::string expected =
        "  1. class " + std::to_string(digits.labels[static_cast<std::size_t>(i)]) + "  prob ";
    EXPECT_EQ(result.out.compare(at + path.size() + 1, expected.size(), expected), 0) << result.out;
  }
}

// The same eval line from a model converted to .esp and to .onnx as from the Caffe original.
TEST_F(CliAcceptance, ConvertedModelsGiveTheSameAccuracy) {
  TempDir dir;
  const std::string eval_args =
      " --dataset mnist --data " + quote(data_dir() + "/mnist") + " --scale 0.00390625 --limit 2000";
  const Result original = run_cli("eval " + lenet_model() + " -w " + lenet_weights() + eval_args);
  ASSERT_EQ(original.code, 0) << original.err;
  const std::string accuracy = original.out.substr(0, original.out.find('\n'));
  ASSERT_TRUE(accuracy.starts_with("accuracy: ")) << original.out;
  for (const char* extension : {".esp", ".onnx"}) {
    const std::string converted = dir.file(std::string("lenet") + extension);
    const Result wrote = run_cli("convert " + lenet_model() + " -w " + lenet_weights() + " -o " + quote(converted) +
                                 " --name lenet --scale 0.00390625");
    ASSERT_EQ(wrote.code, 0) << wrote.err;
    const Result again = run_cli("eval " + quote(converted) + eval_args);
    ASSERT_EQ(again.code, 0) << again.err;
    EXPECT_EQ(again.out.substr(0, again.out.find('\n')), accuracy) << extension;
  }
  expect_runtime_error(run_cli("convert " + lenet_model() + " -o " + quote(dir.file("lenet.txt"))), "'.txt'");
  expect_runtime_error(run_cli("info " + quote(dir.file("lenet.esp")) + " -w " + lenet_weights()), "own weights");
}

TEST_F(CliAcceptance, BenchPrintsATableAndJson) {
  const Result table = run_cli("bench " + lenet_model() + " -w " + lenet_weights() + " --batch 1,3 --iterations 3");
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_TRUE(contains(table.out, "images/s")) << table.out;
  const Result json = run_cli("bench " + lenet_model() + " --batch 2 --iterations 2 --json");
  ASSERT_EQ(json.code, 0) << json.err;
  EXPECT_TRUE(contains(json.out, "\"batch\": 2,")) << json.out;
  EXPECT_EQ(run_cli("bench " + lenet_model() + " --batch 0").code, 1);
}

// Both phases on each listed device, the speed-up against the first, and the energy or why there is none.
TEST_F(CliAcceptance, BenchComparesDevicesForInferenceAndTraining) {
  const Result compare = run_cli("bench " + lenet_model() + " -w " + lenet_weights() +
                                 " --compare cpu,cpu --batch 2 --iterations 2 --warmup 0");
  ASSERT_EQ(compare.code, 0) << compare.err;
  for (const char* expected : {"inference  cpu", "training   cpu", "1.00x", "energy/image"})
    EXPECT_TRUE(contains(compare.out, expected)) << expected << "\n" << compare.out;
  EXPECT_FALSE(contains(compare.out, "not run")) << compare.out;
  expect_runtime_error(run_cli("bench " + lenet_model() + " --compare cpu"), "at least two devices");
}

// --train: training steps alone on --device, with the peak device memory (none on the CPU).
TEST_F(CliAcceptance, BenchTrainsOnOneDevice) {
  const Result table = run_cli("bench " + lenet_model() + " --train --batch 2 --iterations 2 --warmup 0");
  ASSERT_EQ(table.code, 0) << table.err;
  for (const char* expected : {"training on cpu", "peak device MiB", "n/a"})
    EXPECT_TRUE(contains(table.out, expected)) << expected << "\n" << table.out;
  const Result json = run_cli("bench " + lenet_model() + " --train --batch 3 --iterations 2 --warmup 0 --json");
  ASSERT_EQ(json.code, 0) << json.err;
  for (const char* expected : {"\"phase\": \"training\"", "\"batch\": 3,", "\"peak_device_mib\": null"})
    EXPECT_TRUE(contains(json.out, expected)) << expected << "\n" << json.out;
  EXPECT_NE(run_cli("bench " + lenet_model() + " --train --compare cpu,cpu").code, 0);
}

// A character model's input is row indices for its Embed layer: bench feeds it whole numbers below the
// table's size (uniform values in [-1, 1) are no indices, and the net refuses them).
TEST_F(CliAcceptance, BenchFeedsIndicesToEmbedInputs) {
  const std::string model = quote(std::string(ESPRESSO_SOURCE_DIR) + "/examples/langid/charcnn_deploy.prototxt");
  const Result inference = run_cli("bench " + model + " --batch 2 --iterations 2 --warmup 0");
  ASSERT_EQ(inference.code, 0) << inference.err;
  const Result training = run_cli("bench " + model + " --train --batch 2 --iterations 2 --warmup 0");
  ASSERT_EQ(training.code, 0) << training.err;
}

TEST_F(Cli, DevicesAndMissingGpu) {
  const Result devices = run_cli("devices");
  ASSERT_EQ(devices.code, 0) << devices.err;
  EXPECT_TRUE(devices.out.starts_with("cpu ")) << devices.out;
  if (contains(devices.out, "no CUDA device")) {
    expect_runtime_error(run_cli("info " + lenet_model() + " --device cuda"), "CUDA");
  }
  expect_runtime_error(run_cli("info " + lenet_model() + " --device tpu"), "unknown device 'tpu'");
}

}  // namespace
}  // namespace espresso
