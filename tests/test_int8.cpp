// int8 end to end: ONNX's quantization node tests (Debian's libonnx-testdata), Caffe LeNet on the
// MNIST test set in fp32, with Precision::int8 (dynamic ranges) and after calibration (quantize_graph,
// stored in and read back from a .esp), and bad quantized ONNX models.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "test_support.h"
#include "espresso/data.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/net.h"
#include "espresso/onnx.h"
#include "espresso/package.h"
#include "espresso/quantize.h"
#include "import/onnx/onnx.pb.h"

namespace espresso::testing {
namespace {

namespace fs = std::filesystem;

std::string onnx_test_data() {
  const char* env = std::getenv("ESPRESSO_ONNX_TESTDATA");
  return env != nullptr ? env : "/usr/share/libonnx-testdata/data";
}

// The CPU, and a GPU where there is one (else a visible skip naming `what`).
std::vector<Device> cpu_and_gpu(const char* what) {
  std::vector<Device> devices{Device::cpu()};
  if (have_gpu()) {
    devices.push_back(Device::cuda());
  } else {
    std::printf("[ SKIPPED  ] no CUDA device: %s not run on a GPU\n", what);
  }
  return devices;
}

TEST(Int8, OnnxQuantizationNodeTests) {
  const std::string node = onnx_test_data() + "/node";
  if (!fs::exists(node)) GTEST_SKIP() << "libonnx-testdata is not installed (" << node << ")";
  std::vector<std::string> dirs;
  for (const char* name :
       {"test_quantizelinear", "test_quantizelinear_axis", "test_dequantizelinear", "test_dequantizelinear_axis",
        "test_dynamicquantizelinear", "test_dynamicquantizelinear_max_adjusted",
        "test_dynamicquantizelinear_min_adjusted", "test_qlinearconv", "test_qlinearmatmul_2D",
        "test_qlinearmatmul_3D", "test_convinteger_with_padding", "test_convinteger_without_padding",
        "test_basic_convinteger", "test_matmulinteger"}) {
    if (fs::exists(node + "/" + name)) dirs.push_back(node + "/" + name);
  }
  ASSERT_FALSE(dirs.empty());
  for (const Device& device : cpu_and_gpu("the node tests")) {
    // Integers must come out exact: a tolerance below half a step.
    OnnxConformanceOptions options;
    options.device = device;
    options.rtol = 0;
    options.atol = 1e-3;
    const OnnxConformanceReport report = run_onnx_conformance(dirs, options);
    for (const OnnxTestResult& r : report.results) {
      EXPECT_EQ(r.status, OnnxTestStatus::pass) << fs::path(r.dir).filename() << " on " << device.str()
                                                << ": " << r.detail << " (max error " << r.max_error << ")";
    }
    std::printf("%d of %zu quantization node tests pass on %s\n", report.count(OnnxTestStatus::pass),
                report.results.size(), device.str().c_str());
  }
}

// com.microsoft's quantized operators, as ONNX Runtime's quantizer writes them (QOperator format), against
// ONNX Runtime's own outputs (tests/onnx_microsoft/make_tests.py made the folders): quantized outputs within
// one step (its average pooling rounds in fixed point), float ones (QGemm without y_scale) to 1e-4.
TEST(Int8, MicrosoftQuantizedOperatorsMatchOnnxRuntime) {
  const fs::path root = fs::path(ESPRESSO_SOURCE_DIR) / "tests" / "onnx_microsoft";
  std::vector<std::string> quantized, real;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!entry.is_directory()) continue;
    const bool float_output = entry.path().filename().string().find("float_output") != std::string::npos;
    (float_output ? real : quantized).push_back(entry.path().string());
  }
  ASSERT_GE(quantized.size(), 15u) << root;
  ASSERT_FALSE(real.empty()) << root;
  for (const Device& device : cpu_and_gpu("the com.microsoft operators")) {
    for (const bool steps : {true, false}) {
      OnnxConformanceOptions options;
      options.device = device;
      options.rtol = steps ? 0.0 : 1e-4;
      options.atol = steps ? 1.0 : 1e-4;
      const OnnxConformanceReport report = run_onnx_conformance(steps ? quantized : real, options);
      for (const OnnxTestResult& r : report.results) {
        EXPECT_EQ(r.status, OnnxTestStatus::pass) << fs::path(r.dir).filename() << " on " << device.str()
                                                  << ": " << r.detail << " (max error " << r.max_error << ")";
      }
    }
  }
}

// Bad com.microsoft quantized nodes name the node and what is wrong with it.
TEST(Int8, BadMicrosoftQuantizedNodesNameNodeAndField) {
  const fs::path root = fs::path(ESPRESSO_SOURCE_DIR) / "tests" / "onnx_microsoft";
  auto load = [&](const std::string& test) {
    onnx::ModelProto model;
    const std::string bytes = read_bytes((root / test / "model.onnx").string());
    EXPECT_TRUE(model.ParseFromString(bytes)) << test;
    return model;
  };
  auto expect_error = [](const onnx::ModelProto& model, const std::string& needle) {
    std::string bytes;
    model.SerializeToString(&bytes);
    try {
      load_onnx(std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
      ADD_FAILURE() << "no error; expected one mentioning " << needle;
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(model.graph().node(0).op_type()), std::string::npos) << message;
      EXPECT_NE(message.find(needle), std::string::npos) << message;
    }
  };
  onnx::ModelProto concat = load("test_qlinearconcat_uint8");
  concat.mutable_graph()->mutable_node(0)->mutable_input()->RemoveLast();
  expect_error(concat, "(tensor, scale, zero point) triples");

  onnx::ModelProto add = load("test_qlinearadd_uint8");
  for (onnx::TensorProto& t : *add.mutable_graph()->mutable_initializer()) {
    if (t.name() != "b_scale") continue;
    const float scale = t.float_data_size() ? t.float_data(0) : 0.08f;
    t.clear_raw_data();
    t.clear_float_data();
    t.add_dims(2);
    t.add_float_data(scale);
    t.add_float_data(scale);
  }
  expect_error(add, "'b_scale') has 2 values; it must be one (per tensor)");

  onnx::ModelProto pool = load("test_qlinearglobalaveragepool_uint8");
  for (onnx::AttributeProto& a : *pool.mutable_graph()->mutable_node(0)->mutable_attribute()) {
    if (a.name() == "channels_last") a.set_i(1);
  }
  expect_error(pool, "channels_last=1 (NHWC) is not supported");
}

class Int8Lenet : public SharedDataTest {};

double accuracy(Net& net, const data::LabeledImages& set, std::int64_t count) {
  const std::int64_t batch = 100, plane = set.height * set.width;
  std::int64_t correct = 0;
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    std::vector<float> values(static_cast<std::size_t>(n * plane));
    for (std::int64_t i = 0; i < n * plane; ++i) values[static_cast<std::size_t>(i)] = set.image(first)[i] * 0.00390625f;
    const auto out = net.forward({{"data", Tensor::from(Shape{n, 1, set.height, set.width}, values)}});
    const Tensor& prob = out.at("prob");
    const std::int64_t classes = prob.numel() / n;
    for (std::int64_t i = 0; i < n; ++i) {
      const float* row = prob.data<float>() + i * classes;
      if (std::max_element(row, row + classes) - row == set.labels[static_cast<std::size_t>(first + i)]) ++correct;
    }
  }
  return static_cast<double>(correct) / static_cast<double>(count);
}

TEST_F(Int8Lenet, MnistAccuracyInt8AgainstFp32) {
  const fs::path lenet = shared_data_dir() / "caffe/lenet";
  const Graph graph = load_model((lenet / "lenet.prototxt").string(), (lenet / "lenet_iter_10000.caffemodel").string());
  const data::LabeledImages test = data::load_mnist((shared_data_dir() / "mnist").string(), data::Split::test);
  const data::LabeledImages train = data::load_mnist((shared_data_dir() / "mnist").string(), data::Split::train);

  Net fp32(graph);
  const double reference = accuracy(fp32, test, test.count);

  NetOptions int8_options;
  int8_options.precision = Precision::int8;
  Net dynamic(graph, int8_options);
  const double dynamic_accuracy = accuracy(dynamic, test, test.count);
  int int8_layers = 0;
  for (const LayerSummary& row : dynamic.summary()) int8_layers += row.precision == "int8";
  EXPECT_EQ(int8_layers, 2);  // conv1 and conv2

  // Calibrated on 500 training images, stored in a .esp and read back.
  std::int64_t fed = 0;
  auto feed = [&](std::map<std::string, Tensor>& batch) {
    if (fed >= 500) return false;
    std::vector<float> values(static_cast<std::size_t>(100 * 28 * 28));
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = train.image(fed)[i] * 0.00390625f;
    batch["data"] = Tensor::from(Shape{100, 1, 28, 28}, values);
    fed += 100;
    return true;
  };
  QuantizeReport report;
  const Graph quantized = quantize_graph(graph, feed, {}, &report);
  EXPECT_EQ(report.images, 500);
  ASSERT_EQ(report.layers.size(), 2u);
  TempDir dir;
  save_package(quantized, dir.file("lenet-int8.esp"));
  Net calibrated(load_package(dir.file("lenet-int8.esp")));
  const double calibrated_accuracy = accuracy(calibrated, test, test.count);
  std::printf("LeNet on MNIST test: fp32 %.4f, int8 dynamic %.4f, int8 calibrated %.4f\n", reference,
              dynamic_accuracy, calibrated_accuracy);
  EXPECT_GE(calibrated_accuracy, 0.99);
  // The entropy method on the same images (its threshold search once picked the tightest clip).
  fed = 0;
  Net entropy(quantize_graph(graph, feed, {.method = CalibrationMethod::entropy}));
  const double entropy_accuracy = accuracy(entropy, test, test.count);
  std::printf("LeNet int8 calibrated with entropy: %.4f\n", entropy_accuracy);
  EXPECT_GE(entropy_accuracy, 0.99);
  EXPECT_GE(dynamic_accuracy, 0.99);
  EXPECT_LE(reference - calibrated_accuracy, 0.005);
  if (!have_gpu()) {
    std::printf("[ SKIPPED  ] no CUDA device: LeNet int8 not run on a GPU\n");
    return;
  }
  // The same two int8 nets on the GPU's int8 kernels.
  Net gpu_dynamic(graph, {.device = Device::cuda(), .precision = Precision::int8});
  Net gpu_calibrated(load_package(dir.file("lenet-int8.esp")), {.device = Device::cuda()});
  const double gpu_dynamic_accuracy = accuracy(gpu_dynamic, test, test.count);
  const double gpu_calibrated_accuracy = accuracy(gpu_calibrated, test, test.count);
  std::printf("LeNet on MNIST test on the GPU: int8 dynamic %.4f, int8 calibrated %.4f\n",
              gpu_dynamic_accuracy, gpu_calibrated_accuracy);
  EXPECT_GE(gpu_dynamic_accuracy, 0.99);
  EXPECT_GE(gpu_calibrated_accuracy, 0.99);
  for (Net* net : {&gpu_dynamic, &gpu_calibrated}) {
    for (const LayerSummary& row : net->summary()) {
      if (row.type == "Convolution" || row.type == "QuantizedConvolution") {
        EXPECT_EQ(row.precision, "int8") << row.name;
        EXPECT_EQ(row.device.str(), Device::cuda().str()) << row.name;
      }
    }
  }
}

// Int8 convolutions of assorted shapes as small nets, on the GPU against the CPU's int8 kernels: both
// quantize by the same rules and sum the same integers, so only float rounding in the epilogue may differ.
// The ReLU after each convolution, and in residual_block() the Add and clip, are taken over by the kernel.
TEST(CudaInt8, ConvolutionsMatchTheCpuKernels) {
  REQUIRE_GPU();
  struct Case {
    std::int64_t in, out, kernel, pad, stride, dilation, group, height, width, batch;
  };
  const Case cases[] = {
      {3, 16, 3, 1, 1, 1, 1, 17, 19, 2},    // a first layer: three channels padded to sixteen
      {40, 70, 3, 1, 2, 1, 1, 15, 15, 3},   // channels over several loads, rows over two blocks, stride 2
      {32, 32, 3, 1, 1, 1, 32, 12, 12, 2},  // depthwise
      {24, 48, 1, 0, 1, 1, 2, 9, 7, 1},     // grouped pointwise
      {16, 24, 3, 2, 1, 2, 1, 11, 13, 2},   // dilated
      {64, 130, 7, 3, 2, 1, 1, 23, 23, 1},  // a large window
      {5, 20, 5, 0, 1, 1, 1, 5, 40, 4},     // no padding, a wide image
      {12, 8, 3, 1, 1, 1, 1, 10, 10, 2},    // few outputs: the direct kernel
  };
  std::mt19937 rng(11);
  for (const Case& c : cases) {
    Graph g;
    g.inputs = {{"data", Shape{c.batch, c.in, c.height, c.width}}};
    LayerSpec conv = conv_layer("conv", "data", "c", c.out, c.kernel, c.pad, c.stride);
    conv.attrs.set("dilation", c.dilation);
    conv.attrs.set("group", c.group);
    set_random_conv_weights(conv, c.in / c.group, rng);
    g.layers = {conv, layer("relu", "ReLU", {"c"}, {"r"})};
    g.outputs = {"r"};
    std::vector<float> x(static_cast<std::size_t>(c.batch * c.in * c.height * c.width));
    std::uniform_real_distribution<float> uniform(-1.0f, 3.0f);
    for (float& v : x) v = uniform(rng);
    const Tensor input = Tensor::from(g.inputs[0].shape, x);
    Net cpu(g, {.precision = Precision::int8});
    Net gpu(g, {.device = Device::cuda(), .precision = Precision::int8});
    const std::vector<float> expected = cpu.forward({{"data", input}}).at("r").to_vector();
    const std::vector<float> got = gpu.forward({{"data", input}}).at("r").to_vector();
    ASSERT_EQ(got.size(), expected.size());
    EXPECT_LE(normalized_error(expected, got), 1e-5)
        << "in " << c.in << " out " << c.out << " kernel " << c.kernel << " group " << c.group << " dilation "
        << c.dilation;
    EXPECT_EQ(gpu.summary().at(0).precision, "int8");
    // Fewer than 16 outputs per group would leave most of a tensor-core tile empty; the ReLU is fused.
    const std::string kernel = c.out / c.group < 16 ? "int8-direct+clamp" : "int8-mma+clamp";
    EXPECT_EQ(gpu.summary().at(0).kernel, kernel);
  }
  // Residual Add and clip fused into the int8 kernels; a batch of two.
  const Graph block = residual_block();
  std::vector<float> x(static_cast<std::size_t>(block.inputs[0].shape.numel()));
  for (std::size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  const Tensor input = Tensor::from(block.inputs[0].shape, x);
  Net cpu(block, {.precision = Precision::int8});
  Net gpu(block, {.device = Device::cuda(), .precision = Precision::int8});
  EXPECT_LE(normalized_error(cpu.forward({{"data", input}}).at("out").to_vector(),
                             gpu.forward({{"data", input}}).at("out").to_vector()),
            1e-5);
  expect_residual_block_fused(gpu.summary());
}

TEST(Int8, CalibrationNeedsEightImages) {
  Graph graph;
  graph.name = "tiny";
  graph.inputs = {{"x", Shape{1, 1, 4, 4}}};
  LayerSpec conv = layer("conv", "Convolution", {"x"}, {"y"});
  conv.attrs.set("num_output", std::int64_t{2});
  conv.attrs.set("kernel", std::vector<std::int64_t>{3, 3});
  conv.weights = {Tensor::from(Shape{2, 1, 3, 3}, std::vector<float>(18, 0.5f)), Tensor::zeros(Shape{2})};
  graph.layers = {conv};
  graph.outputs = {"y"};
  int calls = 0;
  auto feed = [&](std::map<std::string, Tensor>& batch) {
    if (calls++ > 0) return false;
    batch["x"] = Tensor::zeros(Shape{3, 1, 4, 4});
    return true;
  };
  try {
    quantize_graph(graph, feed);
    ADD_FAILURE() << "no error for 3 calibration images";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("at least 8 images, got 3"), std::string::npos) << e.what();
  }
}

// A QLinearConv whose scale or zero point is bad names the node and the field.
TEST(Int8, BadQuantizedOnnxNamesNodeAndField) {
  auto model_with = [](float x_scale, int x_zero, int w_scale_count) {
    onnx::ModelProto model;
    model.set_ir_version(7);
    model.add_opset_import()->set_version(13);
    onnx::GraphProto* g = model.mutable_graph();
    g->set_name("bad");
    auto* input = g->add_input();
    input->set_name("x");
    input->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::UINT8);
    for (int d : {1, 1, 3, 3}) input->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(d);
    auto scalar = [&](const std::string& name, int type, double v) {
      onnx::TensorProto* t = g->add_initializer();
      t->set_name(name);
      t->set_data_type(type);
      if (type == onnx::TensorProto::FLOAT) t->add_float_data(static_cast<float>(v));
      else t->add_int32_data(static_cast<int>(v));
    };
    scalar("xs", onnx::TensorProto::FLOAT, x_scale);
    scalar("xz", onnx::TensorProto::UINT8, x_zero);
    onnx::TensorProto* w = g->add_initializer();
    w->set_name("w");
    w->set_data_type(onnx::TensorProto::INT8);
    for (int d : {2, 1, 1, 1}) w->add_dims(d);
    w->add_int32_data(1);
    w->add_int32_data(2);
    onnx::TensorProto* ws = g->add_initializer();
    ws->set_name("ws");
    ws->set_data_type(onnx::TensorProto::FLOAT);
    ws->add_dims(w_scale_count);
    for (int i = 0; i < w_scale_count; ++i) ws->add_float_data(0.5f);
    scalar("wz", onnx::TensorProto::INT8, 0);
    scalar("ys", onnx::TensorProto::FLOAT, 0.1);
    scalar("yz", onnx::TensorProto::UINT8, 0);
    onnx::NodeProto* node = g->add_node();
    node->set_name("qconv");
    node->set_op_type("QLinearConv");
    for (const char* name : {"x", "xs", "xz", "w", "ws", "wz", "ys", "yz"}) node->add_input(name);
    node->add_output("y");
    g->add_output()->set_name("y");
    std::string bytes;
    model.SerializeToString(&bytes);
    return bytes;
  };
  auto expect = [&](const std::string& bytes, const std::string& needle) {
    try {
      load_onnx(std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
      ADD_FAILURE() << "no error; expected one mentioning " << needle;
    } catch (const ModelError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("qconv"), std::string::npos) << message;
      EXPECT_NE(message.find(needle), std::string::npos) << message;
    }
  };
  expect(model_with(0.0f, 0, 2), "'xs', the scale");
  expect(model_with(-0.5f, 0, 2), "scales must be positive");
  expect(model_with(0.5f, 0, 3), "w_scale has 3 values for 2 output channels");
  // And a good one loads.
  const std::string good = model_with(0.5f, 3, 2);
  EXPECT_NO_THROW(load_onnx(std::span<const std::byte>(reinterpret_cast<const std::byte*>(good.data()), good.size())));
}

// A QDQ Conv (QuantizeLinear → DequantizeLinear on the input, per-channel int8 weights through
// DequantizeLinear) becomes one QuantizedConvolution, and computes what the float graph means.
TEST(Int8, QdqConvFoldsIntoQuantizedConvolution) {
  const float x_scale = 0.05f;
  const int x_zero = 128;
  const double y_scale = 0.125, y_zero = 100;
  const std::vector<float> w_scale = {0.02f, 0.03f};
  std::vector<int> w_q;
  for (int i = 0; i < 2 * 2 * 3 * 3; ++i) w_q.push_back((i * 37) % 255 - 127);
  const std::vector<float> bias = {0.25f, -0.5f};
  // Without and with the output's QuantizeLinear → DequantizeLinear (folded into the convolution), with that
  // pair after a Relu (one Quantize layer that dequantizes again), and as QLinearConv → DequantizeLinear (the
  // operator form; folded into the convolution too).
  for (const int mode : {0, 1, 2, 3}) {
    const bool requantized = mode > 0, after_relu = mode == 2, operator_form = mode == 3;
    SCOPED_TRACE(mode == 0       ? "real output"
                 : after_relu    ? "relu, requantized"
                 : operator_form ? "QLinearConv"
                                 : "requantized output");
    onnx::ModelProto model;
    model.set_ir_version(7);
    model.add_opset_import()->set_version(13);
    onnx::GraphProto* g = model.mutable_graph();
    g->set_name("qdq");
    auto* input = g->add_input();
    input->set_name("x");
    input->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    for (int d : {1, 2, 5, 5}) input->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(d);
    auto tensor = [&](const std::string& name, int type, std::vector<std::int64_t> dims, const std::vector<double>& values) {
      onnx::TensorProto* t = g->add_initializer();
      t->set_name(name);
      t->set_data_type(type);
      for (std::int64_t d : dims) t->add_dims(d);
      for (double v : values) {
        if (type == onnx::TensorProto::FLOAT) t->add_float_data(static_cast<float>(v));
        else t->add_int32_data(static_cast<int>(v));
      }
    };
    tensor("xs", onnx::TensorProto::FLOAT, {}, {x_scale});
    tensor("xz", onnx::TensorProto::UINT8, {}, {x_zero});
    tensor("w", onnx::TensorProto::INT8, {2, 2, 3, 3}, std::vector<double>(w_q.begin(), w_q.end()));
    tensor("ws", onnx::TensorProto::FLOAT, {2}, {w_scale[0], w_scale[1]});
    tensor("wz", onnx::TensorProto::INT8, {2}, {0, 0});
    // The bias as QDQ tools write it: int32 in units of x_scale · w_scale, through DequantizeLinear.
    const std::vector<double> b_scale = {x_scale * w_scale[0], x_scale * w_scale[1]};
    const std::vector<double> b_q = {std::round(bias[0] / b_scale[0]), std::round(bias[1] / b_scale[1])};
    tensor("bq", onnx::TensorProto::INT32, {2}, b_q);
    tensor("bs", onnx::TensorProto::FLOAT, {2}, b_scale);
    auto node = [&](const std::string& op, std::vector<std::string> in, const std::string& out) {
      onnx::NodeProto* n = g->add_node();
      n->set_name(out + "_node");
      n->set_op_type(op);
      for (const auto& i : in) n->add_input(i);
      n->add_output(out);
      return n;
    };
    node("QuantizeLinear", {"x", "xs", "xz"}, "xq");
    if (requantized) {
      tensor("ys", onnx::TensorProto::FLOAT, {}, {y_scale});
      tensor("yz", onnx::TensorProto::UINT8, {}, {y_zero});
    }
    onnx::NodeProto* conv = nullptr;
    if (operator_form) {
      conv = node("QLinearConv", {"xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bq"}, "yq");
    } else {
      node("DequantizeLinear", {"xq", "xs", "xz"}, "xd");
      onnx::AttributeProto* axis = node("DequantizeLinear", {"w", "ws", "wz"}, "wd")->add_attribute();
      axis->set_name("axis");
      axis->set_type(onnx::AttributeProto::INT);
      axis->set_i(0);
      onnx::AttributeProto* bias_axis = node("DequantizeLinear", {"bq", "bs"}, "b")->add_attribute();
      bias_axis->set_name("axis");
      bias_axis->set_type(onnx::AttributeProto::INT);
      bias_axis->set_i(0);
      conv = node("Conv", {"xd", "wd", "b"}, "y");
    }
    onnx::AttributeProto* pads = conv->add_attribute();
    pads->set_name("pads");
    pads->set_type(onnx::AttributeProto::INTS);
    for (int p : {1, 1, 1, 1}) pads->add_ints(p);
    if (requantized) {  // the convolution's output through QuantizeLinear → DequantizeLinear, as QDQ tools end it
      if (after_relu) node("Relu", {"y"}, "yr");
      if (!operator_form) node("QuantizeLinear", {after_relu ? "yr" : "y", "ys", "yz"}, "yq");
      node("DequantizeLinear", {"yq", "ys", "yz"}, "yd");
    }
    const std::string output = requantized ? "yd" : "y";
    g->add_output()->set_name(output);
    std::string bytes;
    model.SerializeToString(&bytes);
    const Graph graph = load_onnx(std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
    int quantized = 0, requantize = 0, round_trips = 0;
    for (const LayerSpec& layer : graph.layers) {
      if (layer.type == "QuantizedConvolution") {
        ++quantized;
        // The input's QuantizeLinear folded in (QLinearConv reads the integers).
        EXPECT_EQ(layer.attrs.get_string("input", ""), operator_form ? "quantized" : "real");
        EXPECT_EQ(layer.attrs.get_string("output", "real"),
                  requantized && !after_relu ? "dequantized" : "real");
      }
      requantize += layer.type == "Dequantize" || layer.type == "Quantize";
      round_trips += layer.type == "Quantize" && layer.attrs.get_int("dequantize", 0) == 1;
    }
    EXPECT_EQ(quantized, 1);
    EXPECT_EQ(requantize, after_relu || operator_form ? 1 : 0);  // QLinearConv's input: a Quantize layer
    EXPECT_EQ(round_trips, after_relu ? 1 : 0);

    std::vector<float> x(50);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i)) * 3.0);
    Net net(graph);
    const Tensor y = net.forward({{"x", Tensor::from(Shape{1, 2, 5, 5}, x)}}).at(output);
    // The float graph's meaning, in double: x quantized and back, conv with the dequantized weights.
    std::vector<double> xd(x.size());
    for (std::size_t i = 0; i < x.size(); ++i)
      xd[i] = (std::clamp(std::nearbyint(x[i] / x_scale) + x_zero, 0.0f, 255.0f) - x_zero) * static_cast<double>(x_scale);
    double worst = 0, top = 0;
    for (int oc = 0; oc < 2; ++oc) {
      for (int oy = 0; oy < 5; ++oy) {
        for (int ox = 0; ox < 5; ++ox) {
          double sum = b_q[static_cast<std::size_t>(oc)] * static_cast<float>(b_scale[static_cast<std::size_t>(oc)]);
          for (int ic = 0; ic < 2; ++ic)
            for (int ky = 0; ky < 3; ++ky)
              for (int kx = 0; kx < 3; ++kx) {
                const int iy = oy - 1 + ky, ix = ox - 1 + kx;
                if (iy < 0 || iy >= 5 || ix < 0 || ix >= 5) continue;
                sum += xd[static_cast<std::size_t>((ic * 5 + iy) * 5 + ix)] *
                       w_q[static_cast<std::size_t>(((oc * 2 + ic) * 3 + ky) * 3 + kx)] * w_scale[static_cast<std::size_t>(oc)];
              }
          if (after_relu) sum = std::max(sum, 0.0);
          if (requantized) sum = (std::clamp(std::nearbyint(sum / y_scale) + y_zero, 0.0, 255.0) - y_zero) * y_scale;
          const float got = y.data<float>()[(oc * 5 + oy) * 5 + ox];
          worst = std::max(worst, std::abs(got - sum));
          top = std::max(top, std::abs(sum));
        }
      }
    }
    // Requantized: a real value within 1e-5 of a rounding tie may land one step away.
    EXPECT_LE(worst, requantized ? y_scale * 1.0001 : 1e-5 * top) << "max error " << worst << " of " << top;
  }
}

}  // namespace
}  // namespace espresso::testing
