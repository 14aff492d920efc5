// `espresso demo`: trains LeNet on Fashion-MNIST end to end (solver, data, training, test, snapshot, .esp
// package, a few classifications and the training curve), in a few minutes on a laptop CPU.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "espresso/devices.h"
#include "common.h"
#include "espresso/data.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/package.h"
#include "espresso/trainer.h"

namespace espresso::cli {
namespace {

namespace fs = std::filesystem;

const char* const kClassNames[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

struct DemoOptions {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string output = "demo_output";
  std::string device = "auto";
  int iterations = 2500;  // under three epochs of 64 images
  int threads = 0;
};

// Caffe's LeNet layers from conv1 to ip2, shared by the train/test and the deploy nets.
const char* const kLeNetBody = R"(
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 500
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
)";

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw FileError(path.string() + ": cannot write");
}

std::string data_layer(const std::string& phase, const std::string& source, int batch) {
  return "layer { name: \"fashion\" type: \"Data\" top: \"data\" top: \"label\"\n"
         "  include { phase: " +
         phase +
         " }\n"
         "  transform_param { scale: 0.00390625 }\n"
         "  data_param { source: \"idx:" +
         source + "\" batch_size: " + std::to_string(batch) + " } }\n";
}

// The prototxts and the solver, written to the output folder so the run can be repeated with
// `espresso train` and inspected.
std::string write_recipe(const DemoOptions& o, const fs::path& out) {
  const std::string data = fs::absolute(o.data).string();
  write_file(out / "lenet_fashion_train_test.prototxt",
             "name: \"LeNet-FashionMNIST\"\n" + data_layer("TRAIN", data, 64) +
                 data_layer("TEST", data, 100) + kLeNetBody +
                 "layer { name: \"accuracy\" type: \"Accuracy\" bottom: \"ip2\" bottom: \"label\" top: "
                 "\"accuracy\"\n"
                 "  include { phase: TEST } }\n"
                 "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"ip2\" bottom: \"label\" top: "
                 "\"loss\" }\n");
  write_file(out / "lenet_fashion_deploy.prototxt",
             "name: \"LeNet-FashionMNIST\"\n"
             "layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 1 dim: "
             "28 dim: 28 } } }\n" +
                 std::string(kLeNetBody) +
                 "layer { name: \"prob\" type: \"Softmax\" bottom: \"ip2\" top: \"prob\" }\n");
  const fs::path solver = out / "lenet_fashion_solver.prototxt";
  write_file(solver, "net: \"" + (out / "lenet_fashion_train_test.prototxt").string() +
                         "\"\n"
                         "test_iter: 100\ntest_interval: 500\ntest_initialization: false\n"
                         "type: \"Adam\"\nbase_lr: 0.001\nmomentum: 0.9\nmomentum2: 0.999\nweight_decay: 0.0005\n"
                         "lr_policy: \"cosine\"\n"
                         "display: 100\naverage_loss: 20\nmax_iter: " +
                         std::to_string(o.iterations) + "\nsnapshot: 0\nsnapshot_prefix: \"" +
                         (out / "lenet_fashion").string() + "\"\nrandom_seed: 1\n");
  return solver.string();
}

Device pick_device(const std::string& requested) {
  if (requested != "auto") return Device::parse(requested);
  return device_available(Device::cuda(0)) ? Device::cuda(0) : Device::cpu();
}

std::unique_ptr<train::Trainer> make_trainer(const std::string& solver, Device device) {
  train::TrainerOptions options;
  options.device = device;
  return std::make_unique<train::Trainer>(solver, options);
}

int run_demo(const DemoOptions& o) {
  apply_threads(o.threads);
  const auto start = std::chrono::steady_clock::now();
  const fs::path out = fs::absolute(o.output);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw FileError(out.string() + ": cannot create the output folder (" + ec.message() + ")");
  if (!fs::is_directory(o.data))
    throw FileError(o.data +
                    ": no Fashion-MNIST here (install Debian's dataset-fashion-mnist or pass --data)");
  const std::string solver = write_recipe(o, out);

  Device device = pick_device(o.device);
  std::printf("== espresso demo: LeNet on Fashion-MNIST (%s), %d iterations on %s\n", o.data.c_str(),
              o.iterations, device.str().c_str());
  std::unique_ptr<train::Trainer> trainer;
  try {
    trainer = make_trainer(solver, device);
    trainer->step(1);
  } catch (const UnsupportedError& e) {
    if (device.is_cpu()) throw;
    std::printf("training on %s is not available (%s); using the CPU\n", device.str().c_str(), e.what());
    device = Device::cpu();
    trainer = make_trainer(solver, device);
  }
  trainer->solve();
  const std::vector<std::vector<train::TestOutput>> results =
      trainer->last_test_iteration() == trainer->iteration() ? trainer->last_test() : trainer->test_all();
  double accuracy = 0.0;
  for (const train::TestOutput& output : results.at(0)) {
    if (output.name == "accuracy") accuracy = output.value;
  }
  const std::string caffemodel =
      trainer->snapshot_prefix() + "_iter_" + std::to_string(trainer->iteration()) + ".caffemodel";

  // The deploy net with the trained weights, read back through the Caffe importer.
  Graph graph = load_caffe((out / "lenet_fashion_deploy.prototxt").string(), caffemodel);
  graph.metadata.name = "lenet-fashion-mnist";
  graph.metadata.description = "LeNet trained on Fashion-MNIST by espresso demo";
  graph.metadata.task = "classification";
  graph.metadata.labels.assign(std::begin(kClassNames), std::end(kClassNames));
  graph.metadata.preprocessing.scale = 0.00390625;
  graph.metadata.preprocessing.size = {28, 28};
  graph.metadata.metrics["fashion_mnist_top1"] = accuracy;
  graph.metadata.source_format = "caffe";
  const std::string package = (out / "lenet_fashion.esp").string();
  save_package(graph, package);

  const data::LabeledImages test = data::load_mnist(o.data, data::Split::test);
  Net net(graph, NetOptions{});
  std::printf("\n== classifying test images with %s\n", package.c_str());
  constexpr int kShown = 8;
  for (int i = 0; i < kShown; ++i) {
    std::vector<float> pixels(test.image(i), test.image(i) + test.image_size());
    for (float& p : pixels) p *= 0.00390625f;
    const Tensor prob = net.forward({{"data", Tensor::from(Shape{1, 1, 28, 28}, pixels)}}).at("prob");
    const std::int64_t predicted = argmax(prob.data<float>(), prob.numel());
    const int label = test.labels[static_cast<std::size_t>(i)];
    std::printf("  test image %d: label %-12s predicted %-12s (%.1f%%)%s\n", i, kClassNames[label],
                kClassNames[predicted], 100.0 * prob.data<float>()[predicted],
                predicted == label ? "" : "  <- wrong");
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("\n== result: test accuracy %.2f%% on 10,000 Fashion-MNIST test images, %.0f s on %s\n",
              100.0 * accuracy, seconds, device.str().c_str());
  std::printf(
      "   weights:  %s\n   package:  %s\n   curve:    %s_curve.png (blue: loss, red: accuracy), %s_log.csv\n",
      caffemodel.c_str(), package.c_str(), trainer->snapshot_prefix().c_str(),
      trainer->snapshot_prefix().c_str());
  return 0;
}

}  // namespace

Verb add_demo_verb(CLI::App& app) {
  auto options = std::make_shared<DemoOptions>();
  CLI::App* command = app.add_subcommand("demo", "Train LeNet on Fashion-MNIST, test, save and classify");
  command->add_option("--data", options->data, "Fashion-MNIST folder (IDX files)");
  command->add_option("--output", options->output, "Folder for the recipe, weights, package and curve");
  command->add_option("--device", options->device, "auto (a GPU when present), cpu, cuda or cuda:N");
  command->add_option("--iterations", options->iterations, "Training iterations of 64 images")
      ->check(CLI::PositiveNumber);
  add_threads_option(*command, options->threads);
  return {command, [options] { return run_demo(*options); }};
}

}  // namespace espresso::cli
