// The training executor: loss, backward through a whole net, parameters and their sharing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "espresso/espresso.h"
#include "test_support.h"
#include "espresso/solver.h"

namespace espresso {
namespace {

using testing::layer;

Tensor random_tensor(const Shape& shape, std::mt19937& rng, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(static_cast<std::size_t>(shape.numel()));
  for (float& v : values) v = normal(rng);
  return Tensor::from(shape, values);
}

// Caffe's LeNet (conv 20, pool, conv 50, pool, ip 500, relu, ip 10, softmax loss) on 28x28 images,
// with random weights scaled like Xavier fillers.
Graph lenet(std::int64_t batch, std::mt19937& rng) {
  Graph g;
  g.name = "lenet";
  g.inputs = {{"data", Shape{batch, 1, 28, 28}}, {"label", Shape{batch}}};
  LayerSpec conv1 = layer("conv1", "Convolution", {"data"}, {"conv1"});
  conv1.attrs.set("num_output", std::int64_t{20});
  conv1.attrs.set("kernel", std::int64_t{5});
  conv1.weights = {random_tensor(Shape{20, 1, 5, 5}, rng, 0.2f), random_tensor(Shape{20}, rng, 0.1f)};
  LayerSpec pool1 = layer("pool1", "Pooling", {"conv1"}, {"pool1"});
  pool1.attrs.set("kernel", std::int64_t{2});
  pool1.attrs.set("stride", std::int64_t{2});
  LayerSpec conv2 = layer("conv2", "Convolution", {"pool1"}, {"conv2"});
  conv2.attrs.set("num_output", std::int64_t{50});
  conv2.attrs.set("kernel", std::int64_t{5});
  conv2.weights = {random_tensor(Shape{50, 20, 5, 5}, rng, 0.05f), random_tensor(Shape{50}, rng, 0.1f)};
  LayerSpec pool2 = layer("pool2", "Pooling", {"conv2"}, {"pool2"});
  pool2.attrs.set("kernel", std::int64_t{2});
  pool2.attrs.set("stride", std::int64_t{2});
  LayerSpec ip1 = layer("ip1", "InnerProduct", {"pool2"}, {"ip1"});
  ip1.attrs.set("num_output", std::int64_t{500});
  ip1.weights = {random_tensor(Shape{500, 800}, rng, 0.05f), random_tensor(Shape{500}, rng, 0.1f)};
  LayerSpec relu1 = layer("relu1", "ReLU", {"ip1"}, {"relu1"});
  LayerSpec ip2 = layer("ip2", "InnerProduct", {"relu1"}, {"ip2"});
  ip2.attrs.set("num_output", std::int64_t{10});
  ip2.weights = {random_tensor(Shape{10, 500}, rng, 0.05f), random_tensor(Shape{10}, rng, 0.1f)};
  LayerSpec loss = layer("loss", "SoftmaxWithLoss", {"ip2", "label"}, {"loss"});
  g.layers = {conv1, pool1, conv2, pool2, ip1, relu1, ip2, loss};
  return g;
}

void fill_inputs(Net& net, std::int64_t batch, std::mt19937& rng) {
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::vector<float> image(static_cast<std::size_t>(batch * 28 * 28));
  for (float& v : image) v = pixel(rng);
  net.input("data").copy_from(Tensor::from(Shape{batch, 1, 28, 28}, image));
  std::vector<float> labels(static_cast<std::size_t>(batch));
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<float>((3 * i + 1) % 10);
  net.input("label").copy_from(Tensor::from(Shape{batch}, labels));
}

double max_abs_difference(const Tensor& a, const Tensor& b, double& scale) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  double diff = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(x[i] - y[i])));
    scale = std::max(scale, static_cast<double>(std::abs(x[i])));
  }
  return diff;
}

float loss_at(Net& net) {
  net.forward();
  return net.loss();
}

}  // namespace

TEST(Training, LeNetGradientsMatchNumericDirectionalDerivatives) {
  constexpr std::int64_t kBatch = 3;
  std::mt19937 rng(7);
  Net net(lenet(kBatch, rng), {.training = true});
  fill_inputs(net, kBatch, rng);
  net.forward();
  const float loss = net.loss();
  EXPECT_EQ(loss, net.tensor("loss").to_vector()[0]);
  EXPECT_GT(loss, 0.0f);
  net.backward();

  std::vector<Parameter> params = net.parameters();
  ASSERT_EQ(params.size(), 8u);
  // The loss is float, so each blob is checked along one random direction (central differences over
  // the whole blob average out rounding), and a few single elements of each blob as well.
  for (Parameter& p : params) {
    SCOPED_TRACE(p.layer + " weight " + std::to_string(p.index));
    ASSERT_EQ(p.grad.shape(), p.value.shape());
    const std::vector<float> grad = p.grad.to_vector();
    float* value = p.value.data<float>();
    const auto n = static_cast<std::size_t>(p.value.numel());
    std::vector<float> saved(value, value + n);
    std::vector<float> direction(n);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    double analytic = 0, norm = 0;
    for (std::size_t i = 0; i < n; ++i) {
      direction[i] = normal(rng);
      analytic += static_cast<double>(grad[i]) * direction[i];
      norm += static_cast<double>(grad[i]) * grad[i];
    }
    const double step = 1e-3 / std::sqrt(static_cast<double>(n));
    for (std::size_t i = 0; i < n; ++i) value[i] = saved[i] + static_cast<float>(step) * direction[i];
    const double plus = loss_at(net);
    for (std::size_t i = 0; i < n; ++i) value[i] = saved[i] - static_cast<float>(step) * direction[i];
    const double minus = loss_at(net);
    std::copy(saved.begin(), saved.end(), value);
    const double numeric = (plus - minus) / (2 * step);
    // Relative to |grad| · |direction| ≈ |grad| · √n, the size of a typical directional derivative.
    EXPECT_NEAR(numeric, analytic, 2e-2 * std::sqrt(norm * static_cast<double>(n)) + 1e-6)
        << "directional derivative";

    for (int k = 0; k < 3; ++k) {
      const std::size_t at = static_cast<std::size_t>(rng()) % n;
      const float h = 2e-3f;
      value[at] = saved[at] + h;
      const double up = loss_at(net);
      value[at] = saved[at] - h;
      const double down = loss_at(net);
      value[at] = saved[at];
      EXPECT_NEAR((up - down) / (2 * h), grad[at], 2e-2 * std::sqrt(norm / static_cast<double>(n)) + 2e-4)
          << "element " << at;
    }
  }
}

TEST(Training, FastAndReferenceKernelsGiveTheSameGradients) {
  constexpr std::int64_t kBatch = 4;
  std::mt19937 rng(11);
  const Graph g = lenet(kBatch, rng);
  // Gradients of tensors are read below: every one in its own buffer.
  Net fast(g, {.keep_intermediates = true, .training = true});
  Net reference(g, {.reference_kernels = true, .keep_intermediates = true, .training = true});
  for (Net* net : {&fast, &reference}) {
    std::mt19937 inputs(3);
    fill_inputs(*net, kBatch, inputs);
    net->forward();
    net->backward();
  }
  EXPECT_NEAR(fast.loss(), reference.loss(), 1e-5);
  const std::vector<Parameter> a = fast.parameters(), b = reference.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    double scale = 1e-12;
    const double diff = max_abs_difference(b[i].grad, a[i].grad, scale);
    EXPECT_LE(diff / scale, 1e-4) << a[i].layer << " weight " << a[i].index;
  }
  for (const char* name : {"conv1", "pool1", "conv2", "ip1", "relu1", "ip2"}) {
    double scale = 1e-12;
    const double diff = max_abs_difference(reference.gradient(name), fast.gradient(name), scale);
    EXPECT_LE(diff / scale, 1e-4) << "gradient of " << name;
  }
}

TEST(Training, InputsAndLabelsTakeNoGradient) {
  std::mt19937 rng(5);
  Net net(lenet(2, rng), {.keep_intermediates = true, .training = true});
  fill_inputs(net, 2, rng);
  net.forward();
  net.backward();
  EXPECT_THROW(net.gradient("data"), ModelError);
  EXPECT_THROW(net.gradient("label"), ModelError);
  EXPECT_NO_THROW(net.gradient("conv1"));
}

TEST(Training, LossWeightsScaleTheLossAndGradients) {
  std::mt19937 rng(9);
  Graph g = lenet(2, rng);
  Net plain(g, {.training = true});
  g.layers.back().attrs.set("loss_weight", std::vector<double>{2.5});
  Net weighted(g, {.training = true});
  for (Net* net : {&plain, &weighted}) {
    std::mt19937 inputs(1);
    fill_inputs(*net, 2, inputs);
    net->forward();
    net->backward();
  }
  EXPECT_NEAR(weighted.loss(), 2.5f * plain.loss(), 1e-5);
  const std::vector<float> a = plain.parameters()[0].grad.to_vector();
  const std::vector<float> b = weighted.parameters()[0].grad.to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], 2.5f * a[i], 1e-5f + 1e-4f * std::abs(b[i]));

  g.layers.back().attrs.set("loss_weight", std::vector<double>{1.0, 1.0});
  EXPECT_THROW(Net(g, {.training = true}), ModelError);
}

TEST(Training, SharedParametersAppearOnceAndSumTheirGradients) {
  // y = ip_a(x) + ip_b(x) through one shared weight: its gradient is the sum of both uses.
  Graph g;
  g.name = "shared";
  g.inputs = {{"x", Shape{3, 4}}, {"label", Shape{3}}};
  std::mt19937 rng(2);
  const Tensor w = random_tensor(Shape{4, 4}, rng, 0.5f);
  LayerSpec a = layer("a", "InnerProduct", {"x"}, {"ya"});
  a.attrs.set("num_output", std::int64_t{4});
  a.attrs.set("bias", std::int64_t{0});
  a.weights = {w.clone()};
  a.params = {{"tied", 1.0f, 1.0f}};
  LayerSpec relu = layer("relu", "ReLU", {"ya"}, {"ra"});
  LayerSpec b = a;
  b.name = "b";
  b.inputs = {"ra"};
  b.outputs = {"yb"};
  LayerSpec loss = layer("loss", "SoftmaxWithLoss", {"yb", "label"}, {"loss"});
  g.layers = {a, relu, b, loss};
  Net net(g, {.keep_intermediates = true, .training = true});
  net.input("x").copy_from(random_tensor(Shape{3, 4}, rng, 1.0f));
  net.input("label").copy_from(Tensor::from(Shape{3}, {0.0f, 3.0f, 2.0f}));
  net.forward();
  net.backward();
  const std::vector<Parameter> params = net.parameters();
  ASSERT_EQ(params.size(), 1u);
  EXPECT_EQ(params[0].layer, "a");
  EXPECT_EQ(params[0].spec.name, "tied");

  // The same sum by hand: dW = dyaᵀ·x + dybᵀ·ra.
  const std::vector<float> x = net.tensor("x").to_vector(), ra = net.tensor("ra").to_vector();
  const std::vector<float> dya = net.gradient("ya").to_vector(), dyb = net.gradient("yb").to_vector();
  const std::vector<float> grad = params[0].grad.to_vector();
  for (int o = 0; o < 4; ++o) {
    for (int k = 0; k < 4; ++k) {
      double expected = 0;
      for (int m = 0; m < 3; ++m) {
        expected += dya[static_cast<std::size_t>(m * 4 + o)] * x[static_cast<std::size_t>(m * 4 + k)];
      }
      for (int m = 0; m < 3; ++m) {
        expected += dyb[static_cast<std::size_t>(m * 4 + o)] * ra[static_cast<std::size_t>(m * 4 + k)];
      }
      EXPECT_NEAR(grad[static_cast<std::size_t>(o * 4 + k)], expected, 1e-5);
    }
  }
}

TEST(Training, BackwardZeroesGradientsEachTime) {
  std::mt19937 rng(4);
  // Two backward() after one forward(): only a net that keeps every buffer allows that.
  Net net(lenet(2, rng), {.keep_intermediates = true, .training = true});
  fill_inputs(net, 2, rng);
  net.forward();
  net.backward();
  const std::vector<float> first = net.parameters()[2].grad.to_vector();
  net.backward();
  EXPECT_EQ(net.parameters()[2].grad.to_vector(), first);
}

TEST(Training, NeedsTrainingMode) {
  std::mt19937 rng(1);
  Net inference(lenet(1, rng));
  EXPECT_THROW(inference.loss(), UnsupportedError);
  EXPECT_THROW(inference.backward(), UnsupportedError);
  EXPECT_EQ(inference.parameters().size(), 8u);
  Net training(lenet(1, rng), {.training = true});
  EXPECT_THROW(training.backward(), ModelError);  // before any forward()
}

// The same LeNet, batches and solver on the CPU and on the GPU: every iteration's loss and the weights
// after the last update agree to float rounding (the GPU sums in other orders).
TEST(Training, GpuStepsMatchTheCpu) {
  REQUIRE_GPU();
  constexpr std::int64_t kBatch = 16;
  constexpr int kSteps = 5;
  std::mt19937 weights_rng(11);
  const Graph graph = lenet(kBatch, weights_rng);
  train::SolverConfig config;
  config.type = train::SolverType::nesterov;
  config.base_lr = 0.01;
  config.momentum = 0.9;
  config.weight_decay = 5e-4;
  Net cpu(graph, {.training = true});
  Net gpu(graph, {.device = Device::cuda(0), .training = true});
  train::Solver cpu_solver(config), gpu_solver(config);
  std::vector<Parameter> cpu_params = cpu.parameters(), gpu_params = gpu.parameters();
  ASSERT_EQ(cpu_params.size(), gpu_params.size());
  EXPECT_EQ(gpu_params[0].value.device(), Device::cuda(0));
  std::mt19937 cpu_data(5), gpu_data(5);
  for (int step = 0; step < kSteps; ++step) {
    fill_inputs(cpu, kBatch, cpu_data);
    fill_inputs(gpu, kBatch, gpu_data);
    cpu.forward();
    gpu.forward();
    EXPECT_NEAR(gpu.loss(), cpu.loss(), 1e-4 * std::abs(cpu.loss())) << "step " << step;
    cpu.backward();
    gpu.backward();
    cpu_solver.update(cpu_params, step);
    gpu_solver.update(gpu_params, step);
  }
  for (std::size_t i = 0; i < cpu_params.size(); ++i) {
    double scale = 1e-12;
    const double diff = max_abs_difference(cpu_params[i].value, gpu_params[i].value.to(Device::cpu()), scale);
    EXPECT_LE(diff / scale, 1e-4) << cpu_params[i].layer << " blob " << cpu_params[i].index;
  }
}

// A convolution-heavy net for the GPU's convolution algorithms: 5x5 with padding, 1x1, a strided 3x3
// and grouped 3x3 convolutions (each a problem cuDNN times separately), pooling, a classifier.
Graph conv_net(std::int64_t batch, std::mt19937& rng) {
  Graph g;
  g.name = "conv_net";
  g.inputs = {{"data", Shape{batch, 3, 16, 16}}, {"label", Shape{batch}}};
  const auto conv = [&](const std::string& name, const std::string& bottom, std::int64_t in, std::int64_t out,
                        std::int64_t kernel, std::int64_t stride, std::int64_t pad, std::int64_t group) {
    LayerSpec spec = testing::conv_layer(name, bottom, name, out, kernel, pad, stride);
    spec.attrs.set("group", group);
    const float scale = 1.0f / std::sqrt(static_cast<float>(in / group * kernel * kernel));
    spec.weights = {random_tensor(Shape{out, in / group, kernel, kernel}, rng, scale),
                    random_tensor(Shape{out}, rng, 0.1f)};
    return spec;
  };
  const auto relu = [](const std::string& name) { return layer(name + "_relu", "ReLU", {name}, {name + "_r"}); };
  LayerSpec pool = layer("pool", "Pooling", {"cccp1_r"}, {"pool"});
  pool.attrs.set("kernel", std::int64_t{3});
  pool.attrs.set("stride", std::int64_t{2});
  LayerSpec ip = layer("ip", "InnerProduct", {"conv3_r"}, {"ip"});
  ip.attrs.set("num_output", std::int64_t{10});
  ip.weights = {random_tensor(Shape{10, 32 * 4 * 4}, rng, 0.05f), random_tensor(Shape{10}, rng, 0.1f)};
  g.layers = {conv("conv1", "data", 3, 32, 5, 1, 2, 1), relu("conv1"),   conv("cccp1", "conv1_r", 32, 24, 1, 1, 0, 1),
              relu("cccp1"), pool, conv("conv2", "pool", 24, 48, 3, 2, 1, 1), relu("conv2"),
              conv("conv3", "conv2_r", 48, 32, 3, 1, 1, 4), relu("conv3"), ip,
              layer("loss", "SoftmaxWithLoss", {"ip", "label"}, {"loss"})};
  return g;
}

void fill_images(Net& net, std::int64_t batch, std::mt19937& rng) {
  net.input("data").copy_from(random_tensor(Shape{batch, 3, 16, 16}, rng, 1.0f));
  std::vector<float> labels(static_cast<std::size_t>(batch));
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<float>((7 * i + 2) % 10);
  net.input("label").copy_from(Tensor::from(Shape{batch}, labels));
}

// Weights after `steps` SGD steps of conv_net on `device`, from the same weights and batches each time.
std::vector<Tensor> trained_conv_net(Device device, int steps) {
  constexpr std::int64_t kBatch = 8;
  std::mt19937 weights_rng(21), data_rng(22);
  Net net(conv_net(kBatch, weights_rng), {.device = device, .training = true});
  train::SolverConfig config;
  config.base_lr = 0.05;
  config.momentum = 0.9;
  train::Solver solver(config);
  std::vector<Parameter> params = net.parameters();
  for (int step = 0; step < steps; ++step) {
    fill_images(net, kBatch, data_rng);
    net.forward();
    net.backward();
    solver.update(params, step);
  }
  std::vector<Tensor> weights;
  for (const Parameter& p : params) weights.push_back(p.value.to(Device::cpu()));
  return weights;
}

// cuDNN's training algorithms chosen by timing among all (the default), by timing with deterministic
// ones first, and by its heuristic: each trains like the CPU's naive-order convolutions.
TEST(Training, GpuConvolutionAlgorithmsMatchTheCpu) {
  REQUIRE_GPU();
  constexpr int kSteps = 3;
  const std::vector<Tensor> cpu = trained_conv_net(Device::cpu(), kSteps);
  const std::vector<std::pair<const char*, const char*>> settings = {{"ESPRESSO_CONV_AUTOTUNE", nullptr},
                                                                     {"ESPRESSO_CONV_DETERMINISTIC", "1"},
                                                                     {"ESPRESSO_CONV_AUTOTUNE", "0"}};
  for (const auto& [name, value] : settings) {
    testing::ScopedEnv env(name, value);
    const std::vector<Tensor> gpu = trained_conv_net(Device::cuda(0), kSteps);
    ASSERT_EQ(gpu.size(), cpu.size());
    for (std::size_t i = 0; i < cpu.size(); ++i) {
      double scale = 1e-12;
      const double diff = max_abs_difference(cpu[i], gpu[i], scale);
      EXPECT_LE(diff / scale, 1e-4) << name << "=" << (value ? value : "(unset)") << ", parameter " << i;
    }
  }
}

// With deterministic algorithms asked for, two trainings give the very same weights.
TEST(Training, GpuConvolutionTrainingIsDeterministic) {
  REQUIRE_GPU();
  const testing::ScopedEnv deterministic("ESPRESSO_CONV_DETERMINISTIC", "1");
  const std::vector<Tensor> first = trained_conv_net(Device::cuda(0), 3);
  const std::vector<Tensor> second = trained_conv_net(Device::cuda(0), 3);
  ASSERT_EQ(first.size(), second.size());
  for (std::size_t i = 0; i < first.size(); ++i) EXPECT_EQ(first[i].to_vector(), second[i].to_vector()) << i;
}

// bench/models/resnet18.prototxt (written by make_resnet18.py) against torchvision's resnet18: its
// 11,689,512 trainable parameters (BatchNorm's running statistics aside, as torch keeps them as
// buffers), 56x56 after the stem, 7x7x512 before the global pooling, 1000 classes.
// The source tree's bench/models/resnet18.prototxt: absent where only a test bundle was carried (a GPU machine).
std::string bench_resnet18() {
  const std::string path = std::string(ESPRESSO_SOURCE_DIR) + "/bench/models/resnet18.prototxt";
  return std::filesystem::exists(path) ? path : "";
}

TEST(Training, BenchResNet18HasTorchvisionsShape) {
  const std::string path = bench_resnet18();
  if (path.empty()) GTEST_SKIP() << "no source tree at " << ESPRESSO_SOURCE_DIR << ": bench/models/resnet18.prototxt";
  Graph graph = load_caffe(path);
  Net net(graph, {.keep_intermediates = true});
  std::int64_t params = 0;
  for (const LayerSummary& layer : net.summary()) {
    if (layer.type != "BatchNorm") params += layer.params;
  }
  EXPECT_EQ(params, 11'689'512);
  EXPECT_EQ(net.tensor("pool1").shape(), (Shape{1, 64, 56, 56}));
  EXPECT_EQ(net.tensor("layer4_1_sum").shape(), (Shape{1, 512, 7, 7}));
  EXPECT_EQ(net.tensor(net.output_names()[0]).shape(), (Shape{1, 1000}));
}

// It trains on the CPU (BatchNorm, Scale and ReLU in place, Eltwise, global pooling): on small images,
// SGD steps on one batch lower its loss.
TEST(Training, BenchResNet18Trains) {
  const std::string path = bench_resnet18();
  if (path.empty()) GTEST_SKIP() << "no source tree at " << ESPRESSO_SOURCE_DIR << ": bench/models/resnet18.prototxt";
  Graph graph = load_caffe(path);
  constexpr std::int64_t kBatch = 2;
  graph.inputs[0].shape = Shape{kBatch, 3, 32, 32};
  auto prob = std::find_if(graph.layers.begin(), graph.layers.end(), [](const LayerSpec& l) { return l.type == "Softmax"; });
  ASSERT_NE(prob, graph.layers.end());
  *prob = layer("loss", "SoftmaxWithLoss", {"fc", "label"}, {"loss"});
  graph.inputs.push_back({"label", Shape{kBatch}});
  graph.outputs = {"loss"};
  Net net(graph, {.training = true});
  std::mt19937 rng(4);
  net.input("data").copy_from(random_tensor(Shape{kBatch, 3, 32, 32}, rng, 1.0f));
  net.input("label").copy_from(Tensor::from(Shape{kBatch}, std::vector<float>{141, 592}));
  train::SolverConfig config;
  config.base_lr = 0.01;
  config.momentum = 0.9;
  train::Solver solver(config);
  std::vector<Parameter> params = net.parameters();
  float first = 0.0f, last = 0.0f;
  for (int step = 0; step < 3; ++step) {
    net.forward();
    (step == 0 ? first : last) = net.loss();
    net.backward();
    solver.update(params, step);
  }
  EXPECT_TRUE(std::isfinite(first));
  EXPECT_LT(last, first);
}

TEST(Training, GpuLossNamesABadLabel) {
  REQUIRE_GPU();
  std::mt19937 rng(3);
  Net gpu(lenet(2, rng), {.device = Device::cuda(0), .training = true});
  fill_inputs(gpu, 2, rng);
  gpu.input("label").copy_from(Tensor::from(Shape{2}, std::vector<float>{1.0f, 12.0f}));
  try {
    gpu.forward();
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("'loss' (SoftmaxWithLoss): label 1 is 12"), std::string::npos) << message;
  }
}

}  // namespace espresso
