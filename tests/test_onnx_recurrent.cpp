// ONNX import of LSTM, GRU and RNN: ONNX's own node tests, PyTorch's outputs for exported nn.LSTM,
// nn.GRU and nn.RNN, and the errors for inconsistent models.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <span>

#include "espresso/espresso.h"
#include "import/onnx/onnx.pb.h"
#include "test_support.h"

namespace espresso {
namespace {

std::string onnx_test_data() {
  const char* env = std::getenv("ESPRESSO_ONNX_TESTDATA");
  return env != nullptr ? env : "/usr/share/libonnx-testdata/data";
}

TEST(OnnxRecurrent, NodeTestsPass) {
  const std::string node = onnx_test_data() + "/node/";
  if (!std::filesystem::exists(node)) GTEST_SKIP() << "libonnx-testdata is not installed (" << node << ")";
  std::vector<std::string> dirs;
  for (const char* test : {"lstm_defaults", "lstm_batchwise", "lstm_with_initial_bias", "lstm_with_peepholes",
                           "gru_defaults", "gru_batchwise", "gru_seq_length", "gru_with_initial_bias",
                           "rnn_seq_length", "simple_rnn_defaults", "simple_rnn_batchwise",
                           "simple_rnn_with_initial_bias", "expand_dim_changed", "expand_dim_unchanged"}) {
    dirs.push_back(node + "test_" + test);
  }
  const OnnxConformanceReport report = run_onnx_conformance(dirs);
  ASSERT_EQ(report.results.size(), dirs.size());
  for (const OnnxTestResult& r : report.results) {
    EXPECT_EQ(r.status, OnnxTestStatus::pass)
        << r.dir << ": " << r.detail << " (max error " << r.max_error << ")";
  }
}

// The same node tests in a GPU net, where the layers run on the CUDA kernels
// (backends/cuda/recurrent.cu; OnnxRecurrent.GpuNetRunsTheLayersOnTheGpu checks that they do).
TEST(OnnxRecurrent, NodeTestsPassInAGpuNet) {
  const std::string node = onnx_test_data() + "/node/";
  if (!std::filesystem::exists(node)) GTEST_SKIP() << "libonnx-testdata is not installed (" << node << ")";
  if (!testing::have_gpu()) GTEST_SKIP() << testing::no_gpu_reason() << ": GPU run not checked";
  OnnxConformanceOptions options;
  options.device = Device::cuda(0);
  std::vector<std::string> dirs;
  for (const char* test : {"lstm_defaults", "lstm_batchwise", "lstm_with_initial_bias", "lstm_with_peepholes",
                           "gru_defaults", "gru_batchwise", "gru_seq_length", "gru_with_initial_bias",
                           "rnn_seq_length", "simple_rnn_defaults", "simple_rnn_batchwise",
                           "simple_rnn_with_initial_bias"}) {
    dirs.push_back(node + "test_" + test);
  }
  const OnnxConformanceReport report = run_onnx_conformance(dirs, options);
  ASSERT_EQ(report.results.size(), dirs.size());
  for (const OnnxTestResult& r : report.results) {
    EXPECT_EQ(r.status, OnnxTestStatus::pass) << r.dir << ": " << r.detail << " (max error " << r.max_error << ")";
  }
}

// scripts/torch_recurrent_reference.py writes the models and PyTorch's outputs; it needs Debian's
// python3-torch and python3-onnx, and the test skips visibly without them.
void expect_pytorch_outputs(const Device& device) {
  if (std::system("/usr/bin/python3 -c 'import torch, onnx' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3-torch or python3-onnx is not installed: PyTorch's references not checked";
  }
  testing::TempDir dir;
  const std::string command = std::string("/usr/bin/python3 ") + ESPRESSO_SOURCE_DIR +
                              "/scripts/torch_recurrent_reference.py " + dir.path() + " >" + dir.file("log") +
                              " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  OnnxConformanceOptions options;
  options.device = device;
  const OnnxConformanceReport report = run_onnx_conformance({dir.path()}, options);
  ASSERT_EQ(report.results.size(), 8u);
  for (const OnnxTestResult& r : report.results) {
    EXPECT_EQ(r.status, OnnxTestStatus::pass) << r.dir << ": " << r.detail;
    EXPECT_LE(r.max_relative_error, 1e-5) << r.dir;
    std::printf("%s on %s: relative error %.3g\n", std::filesystem::path(r.dir).filename().c_str(),
                device.str().c_str(), r.max_relative_error);
  }
}

TEST(OnnxRecurrent, MatchesPyTorch) { expect_pytorch_outputs(Device::cpu()); }

TEST(OnnxRecurrent, MatchesPyTorchOnTheGpu) {
  if (!testing::have_gpu()) GTEST_SKIP() << testing::no_gpu_reason() << ": GPU run not checked";
  expect_pytorch_outputs(Device::cuda(0));
}

onnx::TensorProto tensor(const std::string& name, const std::vector<std::int64_t>& dims, float fill) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  std::int64_t count = 1;
  for (std::int64_t d : dims) {
    t.add_dims(d);
    count *= d;
  }
  for (std::int64_t i = 0; i < count; ++i) t.add_float_data(fill);
  return t;
}

// X [T=4, N=2, I=3] through an LSTM node 'encoder' whose W and R are given with `hidden` rows.
onnx::ModelProto lstm_model(std::int64_t w_hidden, std::int64_t attr_hidden) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(14);
  onnx::GraphProto& g = *model.mutable_graph();
  g.set_name("recurrent");
  onnx::ValueInfoProto& x = *g.add_input();
  x.set_name("x");
  x.mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  for (std::int64_t d : {4, 2, 3})
    x.mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(d);
  *g.add_initializer() = tensor("W", {1, 4 * w_hidden, 3}, 0.1f);
  *g.add_initializer() = tensor("R", {1, 4 * w_hidden, w_hidden}, 0.1f);
  onnx::NodeProto& node = *g.add_node();
  node.set_name("encoder");
  node.set_op_type("LSTM");
  for (const char* in : {"x", "W", "R"}) node.add_input(in);
  node.add_output("y");
  onnx::AttributeProto& a = *node.add_attribute();
  a.set_name("hidden_size");
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(attr_hidden);
  g.add_output()->set_name("y");
  return model;
}

Graph load(const onnx::ModelProto& model) {
  const std::string bytes = model.SerializeAsString();
  return load_onnx(std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()), "model.onnx");
}

void expect_model_error(const onnx::ModelProto& model, const std::string& words) {
  try {
    load(model);
    ADD_FAILURE() << "no ModelError";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("node 'encoder' (LSTM)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

// A GPU net runs the LSTM on its CUDA kernel (not on the CPU beside it), for inference and training.
TEST(OnnxRecurrent, GpuNetRunsTheLayersOnTheGpu) {
  if (!testing::have_gpu()) GTEST_SKIP() << testing::no_gpu_reason() << ": GPU run not checked";
  for (const bool training : {false, true}) {
    NetOptions options;
    options.device = Device::cuda(0);
    options.training = training;
    Net net(load(lstm_model(5, 5)), options);
    bool found = false;
    for (const LayerSummary& layer : net.summary()) {
      if (layer.name != "encoder") continue;
      found = true;
      EXPECT_EQ(layer.device, Device::cuda(0)) << "training " << training;
      EXPECT_EQ(layer.kernel, "cublas-recurrent") << "training " << training;
    }
    EXPECT_TRUE(found);
  }
}

TEST(OnnxRecurrent, InconsistentModelsNameTheNode) {
  EXPECT_NO_THROW(load(lstm_model(5, 5)));
  expect_model_error(lstm_model(5, 6), "inconsistent hidden sizes");

  onnx::ModelProto lengths = lstm_model(5, 5);
  onnx::TensorProto lens;
  lens.set_name("lens");
  lens.set_data_type(onnx::TensorProto::INT32);
  lens.add_dims(2);
  lens.add_int32_data(4);
  lens.add_int32_data(9);
  *lengths.mutable_graph()->add_initializer() = lens;
  onnx::NodeProto& node = *lengths.mutable_graph()->mutable_node(0);
  node.add_input("");  // no B
  node.add_input("lens");
  expect_model_error(lengths, "sequence_lens[1] is 9, past the input's 4 steps");
}

}  // namespace
}  // namespace espresso

namespace espresso {
namespace {

Tensor random_tensor(const Shape& shape, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(shape.numel()));
  for (float& x : v) x = u(rng);
  return Tensor::from(shape, v);
}

// Export and re-import reproduce the layers: every attribute and optional input survives the trip.
TEST(OnnxRecurrent, ExportRoundTrip) {
  Graph g;
  g.name = "recurrent_export";
  g.inputs = {{"x", Shape{5, 2, 3}},
              {"lens", Shape{2}},
              {"h0", Shape{2, 2, 4}},
              {"c0", Shape{2, 2, 4}},
              {"xb", Shape{2, 5, 3}}};
  LayerSpec lstm;
  lstm.name = "lstm";
  lstm.type = "LSTM";
  lstm.inputs = {"x", "lens", "h0", "c0"};
  lstm.outputs = {"lstm_y", "lstm_h", "lstm_c"};
  lstm.attrs.set("hidden_size", std::int64_t{4});
  lstm.attrs.set("direction", std::string("bidirectional"));
  lstm.attrs.set("sequence_lens", std::int64_t{1});
  lstm.attrs.set("initial_state", std::int64_t{1});
  lstm.attrs.set("peepholes", std::int64_t{1});
  lstm.attrs.set("clip", 1.5);
  lstm.weights = {random_tensor(Shape{2, 16, 3}, 1), random_tensor(Shape{2, 16, 4}, 2),
                  random_tensor(Shape{2, 32}, 3), random_tensor(Shape{2, 12}, 4)};
  LayerSpec gru;
  gru.name = "gru";
  gru.type = "GRU";
  gru.inputs = {"xb"};
  gru.outputs = {"gru_y", "gru_h"};
  gru.attrs.set("hidden_size", std::int64_t{3});
  gru.attrs.set("layout", std::int64_t{1});
  gru.attrs.set("linear_before_reset", std::int64_t{1});
  gru.attrs.set("activations", std::string("HardSigmoid,Softsign"));
  gru.attrs.set("activation_alpha", std::vector<double>{0.3});
  gru.attrs.set("activation_beta", std::vector<double>{0.4});
  gru.weights = {random_tensor(Shape{1, 9, 3}, 5), random_tensor(Shape{1, 9, 3}, 6),
                 random_tensor(Shape{1, 18}, 7)};
  LayerSpec rnn;
  rnn.name = "rnn";
  rnn.type = "RNN";
  rnn.inputs = {"x"};
  rnn.outputs = {"rnn_y"};
  rnn.attrs.set("hidden_size", std::int64_t{2});
  rnn.attrs.set("direction", std::string("reverse"));
  rnn.attrs.set("activations", std::string("LeakyRelu"));
  rnn.attrs.set("bias", std::int64_t{0});
  rnn.weights = {random_tensor(Shape{1, 2, 3}, 8), random_tensor(Shape{1, 2, 2}, 9)};
  g.layers = {lstm, gru, rnn};
  g.outputs = {"lstm_y", "lstm_h", "lstm_c", "gru_y", "gru_h", "rnn_y"};

  testing::TempDir dir;
  const std::string path = dir.file("recurrent.onnx");
  export_onnx(g, path);
  const std::map<std::string, Tensor> inputs{{"x", random_tensor(Shape{5, 2, 3}, 10)},
                                             {"lens", Tensor::from(Shape{2}, {5.0f, 3.0f})},
                                             {"h0", random_tensor(Shape{2, 2, 4}, 11)},
                                             {"c0", random_tensor(Shape{2, 2, 4}, 12)},
                                             {"xb", random_tensor(Shape{2, 5, 3}, 13)}};
  Net original(g), reloaded(load_onnx(path));
  const auto expected = original.forward(inputs);
  const auto got = reloaded.forward(inputs);
  for (const std::string& name : g.outputs) {
    const std::vector<float> e = expected.at(name).to_vector(), r = got.at(name).to_vector();
    ASSERT_EQ(e.size(), r.size()) << name;
    for (std::size_t i = 0; i < e.size(); ++i) EXPECT_FLOAT_EQ(e[i], r[i]) << name << " at " << i;
  }
  testing::expect_onnx_checker_accepts(path);
}

}  // namespace
}  // namespace espresso
