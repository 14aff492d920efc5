// The Caffe importer on the real LeNet files (both text formats, V1 weights) and on broken inputs.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "espresso/espresso.h"
#include "layers/registry.h"
#include "test_support.h"

namespace espresso {
namespace {

namespace fs = std::filesystem;

using testing::read_bytes;
using testing::TempDir;

// Every test here reads the shared LeNet files.
class CaffeImport : public testing::SharedDataTest {};

fs::path data_dir() { return testing::shared_data_dir() / "caffe" / "lenet"; }

std::string v1_deploy() { return (data_dir() / "lenet.prototxt").string(); }
std::string v2_deploy() { return (data_dir() / "v2_format" / "lenet.prototxt").string(); }
std::string v1_train_test() { return (data_dir() / "lenet_train_test.prototxt").string(); }
std::string v2_train_test() { return (data_dir() / "v2_format" / "lenet_train_test.prototxt").string(); }
std::string weights() { return (data_dir() / "lenet_iter_10000.caffemodel").string(); }

template <class E, class F>
std::string error_of(F&& load) {
  try {
    load();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception";
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const LayerSpec& layer(const Graph& g, const std::string& name) {
  const LayerSpec* spec = g.find_layer(name);
  if (spec == nullptr) throw std::runtime_error("no layer " + name);
  return *spec;
}

std::vector<std::string> layer_names(const Graph& g) {
  std::vector<std::string> names;
  for (const LayerSpec& l : g.layers) names.push_back(l.name);
  return names;
}

void expect_lenet_deploy(const Graph& g) {
  EXPECT_EQ(g.name, "LeNet");
  ASSERT_EQ(g.inputs.size(), 1u);
  EXPECT_EQ(g.inputs[0].name, "data");
  EXPECT_EQ(g.inputs[0].shape, (Shape{64, 1, 28, 28}));
  EXPECT_EQ(layer_names(g),
            (std::vector<std::string>{"conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"}));

  const LayerSpec& conv1 = layer(g, "conv1");
  EXPECT_EQ(conv1.type, "Convolution");
  EXPECT_EQ(conv1.attrs.require_int("num_output"), 20);
  EXPECT_EQ(conv1.attrs.get_ints("kernel", {}), (std::vector<std::int64_t>{5}));
  EXPECT_EQ(conv1.attrs.get_ints("stride", {}), (std::vector<std::int64_t>{1}));
  EXPECT_EQ(conv1.attrs.get_int("bias", 0), 1);
  ASSERT_EQ(conv1.params.size(), 2u);
  EXPECT_EQ(conv1.params[0].lr_mult, 1.0f);
  EXPECT_EQ(conv1.params[1].lr_mult, 2.0f);

  const LayerSpec& pool1 = layer(g, "pool1");
  EXPECT_EQ(pool1.type, "Pooling");
  EXPECT_EQ(pool1.attrs.get_string("method", ""), "max");
  EXPECT_EQ(pool1.attrs.get_ints("kernel", {}), (std::vector<std::int64_t>{2}));
  EXPECT_EQ(pool1.attrs.get_ints("stride", {}), (std::vector<std::int64_t>{2}));
  EXPECT_EQ(pool1.attrs.get_string("round", ""), "ceil");

  EXPECT_EQ(layer(g, "ip1").type, "InnerProduct");
  EXPECT_EQ(layer(g, "ip1").attrs.require_int("num_output"), 500);
  EXPECT_EQ(layer(g, "ip2").attrs.require_int("num_output"), 10);
  EXPECT_EQ(layer(g, "prob").type, "Softmax");

  // relu1 works in place on ip1: it writes a new tensor and "ip1" now names that one.
  const LayerSpec& relu1 = layer(g, "relu1");
  EXPECT_EQ(relu1.inputs, (std::vector<std::string>{"ip1"}));
  ASSERT_EQ(relu1.outputs.size(), 1u);
  EXPECT_NE(relu1.outputs[0], "ip1");
  EXPECT_EQ(g.aliases.at("ip1"), relu1.outputs[0]);
  EXPECT_EQ(layer(g, "ip2").inputs, relu1.outputs);
  EXPECT_EQ(g.outputs, (std::vector<std::string>{"prob"}));
}

void expect_lenet_weights(const Graph& g) {
  const std::vector<std::pair<std::string, std::vector<Shape>>> expected = {
      {"conv1", {Shape{20, 1, 5, 5}, Shape{20}}},
      {"conv2", {Shape{50, 20, 5, 5}, Shape{50}}},
      {"ip1", {Shape{500, 800}, Shape{500}}},
      {"ip2", {Shape{10, 500}, Shape{10}}}};
  for (const auto& [name, shapes] : expected) {
    const LayerSpec& l = layer(g, name);
    ASSERT_EQ(l.weights.size(), shapes.size()) << name;
    for (std::size_t i = 0; i < shapes.size(); ++i)
      EXPECT_EQ(l.weights[i].shape(), shapes[i]) << name << " " << i;
  }
  for (const char* name : {"pool1", "pool2", "relu1", "prob"}) {
    if (const LayerSpec* l = g.find_layer(name)) {
      EXPECT_TRUE(l->weights.empty()) << name;
    }
  }
}

TEST_F(CaffeImport, LoadsV1LeNetWithWeights) {
  const Graph g = load_caffe(v1_deploy(), weights());
  expect_lenet_deploy(g);
  expect_lenet_weights(g);
}

TEST_F(CaffeImport, LoadsV2LeNetWithTheSameWeights) {
  const Graph v1 = load_caffe(v1_deploy(), weights());
  const Graph v2 = load_caffe(v2_deploy(), weights());
  expect_lenet_deploy(v2);
  expect_lenet_weights(v2);
  for (const char* name : {"conv1", "conv2", "ip1", "ip2"}) {
    const LayerSpec& a = layer(v1, name);
    const LayerSpec& b = layer(v2, name);
    ASSERT_EQ(a.weights.size(), b.weights.size());
    for (std::size_t i = 0; i < a.weights.size(); ++i)
      EXPECT_EQ(a.weights[i].to_vector(), b.weights[i].to_vector());
  }
  // Trained weights, not zeros.
  double sum = 0;
  for (float v : layer(v2, "conv1").weights[0].to_vector()) sum += std::abs(v);
  EXPECT_GT(sum, 1.0);
}

TEST_F(CaffeImport, PrototxtAloneHasNoWeights) {
  const Graph g = load_caffe(v2_deploy());
  expect_lenet_deploy(g);
  for (const LayerSpec& l : g.layers) EXPECT_TRUE(l.weights.empty()) << l.name;
}

TEST_F(CaffeImport, NetSummaryCountsParamsAndFlops) {
  for (const std::string& prototxt : {v1_deploy(), v2_deploy()}) {
    Graph g = load_caffe(prototxt, weights());
    Net net(std::move(g));
    net.set_batch(1);
    std::int64_t params = 0, flops = 0;
    for (const LayerSummary& row : net.summary()) {
      params += row.params;
      flops += row.flops;
    }
    EXPECT_EQ(params, 431080);
    EXPECT_EQ(flops, 2 * 2293000);
  }
}

TEST_F(CaffeImport, PhaseRulesPickTheLayers) {
  for (const std::string& prototxt : {v1_train_test(), v2_train_test()}) {
    SCOPED_TRACE(prototxt);
    const Graph train = load_caffe(prototxt, weights(), Phase::train);
    const Graph test = load_caffe(prototxt, weights(), Phase::test);
    const std::vector<std::string> body = {"conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2"};
    std::vector<std::string> train_names = {"mnist"}, test_names = {"mnist"};
    train_names.insert(train_names.end(), body.begin(), body.end());
    test_names.insert(test_names.end(), body.begin(), body.end());
    train_names.push_back("loss");
    test_names.insert(test_names.end(), {"accuracy", "loss"});
    // The V1 file orders accuracy before loss too.
    EXPECT_EQ(layer_names(train), train_names);
    EXPECT_EQ(layer_names(test), test_names);

    EXPECT_TRUE(train.inputs.empty());
    const LayerSpec& train_data = layer(train, "mnist");
    EXPECT_EQ(train_data.type, "Data");
    EXPECT_EQ(train_data.outputs, (std::vector<std::string>{"data", "label"}));
    EXPECT_EQ(train_data.attrs.get_string("source", ""), "examples/mnist/mnist_train_lmdb");
    EXPECT_EQ(train_data.attrs.get_int("batch_size", 0), 64);
    EXPECT_EQ(train_data.attrs.get_string("backend", ""), "lmdb");
    EXPECT_DOUBLE_EQ(train_data.attrs.get_float("scale", 0), 0.00390625);
    EXPECT_EQ(layer(test, "mnist").attrs.get_string("source", ""), "examples/mnist/mnist_test_lmdb");
    EXPECT_EQ(layer(test, "mnist").attrs.get_int("batch_size", 0), 100);

    EXPECT_EQ(layer(train, "loss").type, "SoftmaxWithLoss");
    EXPECT_EQ(layer(train, "loss").attrs.get_string("normalization", ""), "valid");
    EXPECT_EQ(layer(test, "accuracy").type, "Accuracy");
    EXPECT_EQ(train.outputs, (std::vector<std::string>{"loss"}));
    EXPECT_EQ(test.outputs, (std::vector<std::string>{"accuracy", "loss"}));
    expect_lenet_weights(test);
  }
}

TEST_F(CaffeImport, TruncatedCaffemodelsFailCleanly) {
  const TempDir dir;
  const std::string bytes = read_bytes(weights());
  ASSERT_GT(bytes.size(), 1000u);
  std::vector<std::size_t> cuts;
  for (std::size_t i = 0; i <= 64; ++i) cuts.push_back(i);
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::size_t> anywhere(65, bytes.size() - 1);
  for (int i = 0; i < 160; ++i) cuts.push_back(anywhere(rng));
  cuts.push_back(bytes.size() - 1);
  int failures = 0;
  for (std::size_t cut : cuts) {
    const std::string path = dir.write("cut.caffemodel", bytes.substr(0, cut));
    try {
      const Graph g = load_caffe(v1_deploy(), path);
      // Only a cut between two whole layers after the last weighted one leaves a usable file.
      expect_lenet_weights(g);
    } catch (const Error& e) {
      ++failures;
      EXPECT_TRUE(contains(e.what(), path)) << "cut " << cut << ": " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cut " << cut << ": not an espresso::Error: " << e.what();
    }
  }
  EXPECT_GE(cuts.size(), 200u);
  EXPECT_GE(failures, static_cast<int>(cuts.size()) - 5);
}

TEST_F(CaffeImport, FlippedBytesNeverCrash) {
  const TempDir dir;
  const std::string bytes = read_bytes(weights());
  std::mt19937 rng(11);
  std::uniform_int_distribution<std::size_t> position(0, bytes.size() - 1);
  std::uniform_int_distribution<int> value(0, 255), count(1, 8);
  // Flips in the first bytes hit the structure rather than float data: weight them more.
  std::uniform_int_distribution<std::size_t> header(0, 4096);
  for (int trial = 0; trial < 150; ++trial) {
    std::string mutated = bytes;
    for (int n = count(rng); n > 0; --n) {
      mutated[trial % 2 == 0 ? header(rng) : position(rng)] = static_cast<char>(value(rng));
    }
    const std::string path = dir.write("flipped.caffemodel", mutated);
    try {
      load_caffe(v2_deploy(), path);
    } catch (const Error&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << "trial " << trial << ": not an espresso::Error: " << e.what();
    }
  }
}

TEST_F(CaffeImport, SyntaxErrorsGiveLineAndColumn) {
  const TempDir dir;
  const std::string garbage =
      dir.write("garbage.prototxt", "name: \"x\"\nlayer {\n  name: \"a\"\n  type: = \"ReLU\"\n}\n");
  const std::string message = error_of<ParseError>([&] { load_caffe(garbage); });
  EXPECT_TRUE(contains(message, garbage + ":4:")) << message;

  const std::string unknown_field = dir.write("field.prototxt", "name: \"x\"\nlayer {\n  nmae: \"a\"\n}\n");
  EXPECT_TRUE(contains(error_of<ParseError>([&] { load_caffe(unknown_field); }), unknown_field + ":3:"));

  const std::string binary = dir.write("binary.prototxt", read_bytes(weights()).substr(0, 4000));
  EXPECT_TRUE(
      std::regex_search(error_of<ParseError>([&] { load_caffe(binary); }), std::regex(":[0-9]+:[0-9]+: ")));
}

TEST_F(CaffeImport, MutatedPrototxtsGiveParseErrors) {
  const TempDir dir;
  const std::string text = read_bytes(v2_deploy());
  // Positions outside string literals, where an inserted brace or '@' must break the syntax.
  std::vector<std::size_t> outside;
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '"') quoted = !quoted;
    if (!quoted && text[i] != '"') outside.push_back(i);
  }
  std::mt19937 rng(3);
  std::uniform_int_distribution<std::size_t> pick(0, outside.size() - 1);
  const char* inserts[] = {"}", "{", "@", "=", "\"open"};
  for (int trial = 0; trial < 100; ++trial) {
    const std::size_t at = outside[pick(rng)];
    std::string mutated = text;
    mutated.insert(at, inserts[trial % 5]);
    const std::string path = dir.write("mutated.prototxt", mutated);
    try {
      load_caffe(path);
      ADD_FAILURE() << "inserting '" << inserts[trial % 5] << "' at " << at << " was accepted";
    } catch (const ParseError& e) {
      EXPECT_TRUE(std::regex_search(e.what(), std::regex(":[0-9]+:[0-9]+: "))) << e.what();
      if (inserts[trial % 5][0] == '@') {
        const auto line =
            1 + std::count(mutated.begin(), mutated.begin() + static_cast<std::ptrdiff_t>(at), '\n');
        EXPECT_TRUE(contains(e.what(), path + ":" + std::to_string(line) + ":")) << e.what();
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a ParseError: " << e.what();
    }
  }
}

std::string replace(std::string text, const std::string& from, const std::string& to) {
  const std::size_t at = text.find(from);
  if (at == std::string::npos) throw std::runtime_error("no '" + from + "'");
  return text.replace(at, from.size(), to);
}

TEST_F(CaffeImport, NumOutputDisagreeingWithWeightsFailsWhenPlanning) {
  const TempDir dir;
  const std::string path =
      dir.write("wrong.prototxt", replace(read_bytes(v2_deploy()), "num_output: 500", "num_output: 400"));
  Graph g = load_caffe(path, weights());
  Net net(std::move(g));
  const std::string message = error_of<ModelError>([&] { net.summary(); });
  EXPECT_TRUE(contains(message, "'ip1'")) << message;
  EXPECT_TRUE(contains(message, "400x800")) << message;
  EXPECT_TRUE(contains(message, "500x800")) << message;
}

TEST_F(CaffeImport, ListsEveryUnsupportedLayerType) {
  const TempDir dir;
  const std::string path = dir.write("unsupported.prototxt", R"(
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "a" type: "Python" bottom: "data" top: "a" python_param { module: "m" layer: "L" } }
layer { name: "r" type: "ReLU" bottom: "a" top: "r" }
layer { name: "c" type: "Crop" bottom: "r" bottom: "data" top: "c" crop_param { axis: 2 } }
layer { name: "b" type: "Python" bottom: "c" top: "b" }
)");
  const std::string message = error_of<ModelError>([&] { load_caffe(path); });
  EXPECT_TRUE(contains(message, "'Python' (layers 'a', 'b')")) << message;
  EXPECT_TRUE(contains(message, "'Crop' (layer 'c')")) << message;
  EXPECT_FALSE(contains(message, "ReLU")) << message;
}

TEST_F(CaffeImport, MissingWeightsNameTheLayerAndFile) {
  const TempDir dir;
  const std::string path =
      dir.write("renamed.prototxt", replace(read_bytes(v2_deploy()), "name: \"conv2\"", "name: \"conv2b\""));
  const std::string message = error_of<ModelError>([&] { load_caffe(path, weights()); });
  EXPECT_TRUE(contains(message, "'conv2b'")) << message;
  EXPECT_TRUE(contains(message, weights())) << message;
}

// Protobuf wire format, to build small caffemodels by hand.
std::string varint(std::uint64_t v) {
  std::string out;
  do {
    out += static_cast<char>((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v != 0);
  return out;
}
std::string field(int number, const std::string& payload) {
  return varint(number << 3 | 2) + varint(payload.size()) + payload;
}
std::string floats(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}
std::string blob(const std::vector<std::int64_t>& dims, const std::vector<float>& values) {
  std::string packed;
  for (std::int64_t d : dims) packed += varint(static_cast<std::uint64_t>(d));
  return field(7, field(1, packed)) + field(5, floats(values));
}

TEST_F(CaffeImport, ReadsShapeFormBlobsAndChecksTheirCounts) {
  const TempDir dir;
  const std::string prototxt = dir.write("ip.prototxt", R"(
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 } }
)");
  const std::string layer_head = field(1, "ip") + field(2, "InnerProduct");
  const std::string good = dir.write(
      "good.caffemodel",
      field(100, layer_head + field(7, blob({2, 3}, {1, 2, 3, 4, 5, 6})) + field(7, blob({2}, {7, 8}))));
  const Graph g = load_caffe(prototxt, good);
  ASSERT_EQ(g.inputs.size(), 1u);
  EXPECT_EQ(g.inputs[0].shape, (Shape{2, 3}));
  const LayerSpec& ip = layer(g, "ip");
  ASSERT_EQ(ip.weights.size(), 2u);
  EXPECT_EQ(ip.weights[0].shape(), (Shape{2, 3}));
  EXPECT_EQ(ip.weights[0].to_vector(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(ip.weights[1].to_vector(), (std::vector<float>{7, 8}));

  const std::string short_blob =
      dir.write("short.caffemodel", field(100, layer_head + field(7, blob({2, 3}, {1, 2, 3, 4, 5}))));
  const std::string message = error_of<ParseError>([&] { load_caffe(prototxt, short_blob); });
  EXPECT_TRUE(contains(message, "'ip'")) << message;
  EXPECT_TRUE(contains(message, short_blob)) << message;

  const std::string huge = dir.write(
      "huge.caffemodel", field(100, layer_head + field(7, blob({1LL << 40, 1LL << 40, 1LL << 40}, {1}))));
  EXPECT_TRUE(contains(error_of<ParseError>([&] { load_caffe(prototxt, huge); }), "'ip'"));
}

TEST_F(CaffeImport, InPlaceChainsAliasTheNewestTensor) {
  const TempDir dir;
  const std::string path = dir.write("inplace.prototxt", R"(
input: "data"
input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4
layers { name: "relu" type: RELU bottom: "data" top: "data" relu_param { negative_slope: 0.1 } }
layers { name: "drop" type: DROPOUT bottom: "data" top: "data" dropout_param { dropout_ratio: 0.3 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "data" bottom: "data" top: "loss" loss_param { normalize: false } }
)");
  const Graph g = load_caffe(path);
  ASSERT_EQ(g.layers.size(), 3u);
  const std::string first = g.layers[0].outputs.at(0), second = g.layers[1].outputs.at(0);
  EXPECT_NE(first, "data");
  EXPECT_NE(second, first);
  EXPECT_EQ(g.layers[1].inputs, (std::vector<std::string>{first}));
  EXPECT_EQ(g.aliases.at("data"), second);
  EXPECT_DOUBLE_EQ(g.layers[0].attrs.get_float("negative_slope", 0), 0.1f);
  EXPECT_DOUBLE_EQ(g.layers[1].attrs.get_float("ratio", 0), 0.3f);
  EXPECT_EQ(g.layers[2].attrs.get_string("normalization", ""), "batch_size");
  EXPECT_EQ(g.outputs, (std::vector<std::string>{"loss"}));
}

TEST_F(CaffeImport, MapsLayerParameters) {
  const TempDir dir;
  const std::string path = dir.write("params.prototxt", R"(
layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 1 dim: 4 dim: 9 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv"
        convolution_param { num_output: 6 kernel_h: 3 kernel_w: 1 pad_h: 1 stride: 2 group: 2 bias_term: false } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: AVE global_pooling: true round_mode: FLOOR } }
layer { name: "lrn" type: "LRN" bottom: "y" top: "lrn"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.25 k: 2 norm_region: WITHIN_CHANNEL } }
layer { name: "bn" type: "BatchNorm" bottom: "lrn" top: "lrn" batch_norm_param { eps: 0.001 } }
layer { name: "scale" type: "Scale" bottom: "lrn" top: "lrn" scale_param { bias_term: true } }
layer { name: "sum" type: "Eltwise" bottom: "lrn" bottom: "y" top: "sum"
        eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
layer { name: "slice" type: "Slice" bottom: "sum" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 1 } }
layer { name: "cat" type: "Concat" bottom: "s1" bottom: "s2" top: "cat" concat_param { concat_dim: 1 } }
layer { name: "shape" type: "Reshape" bottom: "cat" top: "r" reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "r" bottom: "pool" top: "loss"
        loss_param { ignore_label: 255 normalization: FULL } }
)");
  const Graph g = load_caffe(path);
  EXPECT_EQ(g.inputs.size(), 2u);
  const Attributes& conv = layer(g, "conv").attrs;
  EXPECT_EQ(conv.get_ints("kernel", {}), (std::vector<std::int64_t>{3, 1}));
  EXPECT_EQ(conv.get_ints("pad", {}), (std::vector<std::int64_t>{1, 0}));
  EXPECT_EQ(conv.get_ints("stride", {}), (std::vector<std::int64_t>{2}));
  EXPECT_EQ(conv.get_int("group", 0), 2);
  EXPECT_EQ(conv.get_int("bias", 1), 0);
  const Attributes& pool = layer(g, "pool").attrs;
  EXPECT_EQ(pool.get_string("method", ""), "ave");
  EXPECT_EQ(pool.get_int("global", 0), 1);
  EXPECT_EQ(pool.get_string("round", ""), "floor");
  const Attributes& lrn = layer(g, "lrn").attrs;
  EXPECT_EQ(lrn.get_int("size", 0), 3);
  EXPECT_DOUBLE_EQ(lrn.get_float("k", 0), 2.0);
  EXPECT_EQ(lrn.get_string("region", ""), "within");
  EXPECT_NEAR(layer(g, "bn").attrs.get_float("eps", 0), 0.001, 1e-9);
  EXPECT_EQ(layer(g, "scale").attrs.get_int("bias", 0), 1);
  // The Eltwise is lrn + (−1)·y: a Constant, a Binary mul and the Binary add under the Eltwise's name.
  EXPECT_EQ(layer(g, "sum").type, "Binary");
  EXPECT_EQ(layer(g, "sum").attrs.get_string("operation", ""), "add");
  const LayerSpec& scaled = layer(g, layer(g, "sum").inputs.at(1));
  EXPECT_EQ(scaled.attrs.get_string("operation", ""), "mul");
  EXPECT_EQ(scaled.inputs.at(0), "y");
  EXPECT_EQ(layer(g, scaled.inputs.at(1)).weights.at(0).to_vector(), std::vector<float>{-1.0f});
  // "lrn" was rewritten twice in place; the Eltwise reads the newest.
  EXPECT_EQ(layer(g, "sum").inputs.at(0), layer(g, "scale").outputs.at(0));
  EXPECT_EQ(layer(g, "slice").attrs.get_ints("slice_points", {}), (std::vector<std::int64_t>{1}));
  EXPECT_EQ(layer(g, "cat").attrs.get_int("axis", 0), 1);
  EXPECT_EQ(layer(g, "shape").attrs.get_ints("shape", {}), (std::vector<std::int64_t>{0, -1}));
  EXPECT_EQ(layer(g, "loss").attrs.get_int("ignore_label", 0), 255);
  EXPECT_EQ(layer(g, "loss").attrs.get_string("normalization", ""), "full");
}

// Espresso layer types without a case of their own copy their `<type>_param` message by reflection.
TEST_F(CaffeImport, CopiesTheParamMessageOfOtherKnownTypes) {
  const TempDir dir;
  const std::string path = dir.write("generic.prototxt", R"(
input: "data"
input_shape { dim: 1 dim: 3 dim: 4 dim: 5 }
layer { name: "b" type: "PriorBox" bottom: "data" bottom: "data" top: "b" prior_box_param { min_size: 2 clip: true } }
layer { name: "p" type: "Transpose" bottom: "data" top: "p" }
)");
  const Graph g = load_caffe(path);
  EXPECT_EQ(layer(g, "b").attrs.get_floats("min_size", {}), std::vector<double>{2.0});
  EXPECT_EQ(layer(g, "b").attrs.get_int("clip", 0), 1);
  // An espresso type Caffe does not have is accepted under its own name.
  EXPECT_EQ(layer(g, "p").type, "Transpose");
  EXPECT_TRUE(is_known_layer_type("Transpose"));
}

// Caffe's AbsVal, Sigmoid, TanH and Power are Activation functions and Eltwise a chain of Binary layers;
// the net computes what Caffe's layers compute.
TEST_F(CaffeImport, ElementWiseTypesBecomePrimitives) {
  const TempDir dir;
  const std::string path = dir.write("primitives.prototxt", R"(
input: "x"
input_shape { dim: 2 dim: 3 }
layer { name: "abs" type: "AbsVal" bottom: "x" top: "abs" }
layer { name: "sig" type: "Sigmoid" bottom: "x" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "x" top: "tanh" }
layer { name: "pow" type: "Power" bottom: "x" top: "pow" power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "lin" type: "Power" bottom: "x" top: "lin" power_param { scale: -3 shift: 0.25 } }
layer { name: "sum" type: "Eltwise" bottom: "abs" bottom: "sig" bottom: "tanh" top: "sum"
        eltwise_param { coeff: 2 coeff: 1 coeff: -0.5 } }
layer { name: "prod" type: "Eltwise" bottom: "sum" bottom: "pow" bottom: "lin" top: "prod"
        eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "prod" bottom: "x" top: "prod" eltwise_param { operation: MAX } }
)");
  const Graph g = load_caffe(path);
  EXPECT_EQ(layer(g, "abs").attrs.get_string("function", ""), "abs");
  EXPECT_EQ(layer(g, "sig").attrs.get_string("function", ""), "sigmoid");
  EXPECT_EQ(layer(g, "tanh").attrs.get_string("function", ""), "tanh");
  const LayerSpec& pow = layer(g, "pow");
  EXPECT_EQ(pow.type, "Activation");
  EXPECT_EQ(pow.attrs.get_string("function", ""), "power");
  EXPECT_DOUBLE_EQ(pow.attrs.get_float("alpha", 0), 0.5);
  EXPECT_DOUBLE_EQ(pow.attrs.get_float("beta", 0), 1.0);
  EXPECT_DOUBLE_EQ(pow.attrs.get_float("gamma", 0), 2.0);
  for (const LayerSpec& spec : g.layers)
    EXPECT_TRUE(spec.type == "Activation" || spec.type == "Binary" || spec.type == "Constant") << spec.type;
  EXPECT_EQ(layer(g, "max").type, "Binary");
  EXPECT_EQ(g.outputs, std::vector<std::string>{"prod/max"});  // the in-place top's fresh name
  const std::vector<float> x{-1.5f, -0.25f, 0.0f, 0.5f, 1.0f, 2.0f};
  Net net(g);
  const std::vector<float> y = net.forward({{"x", Tensor::from(Shape{2, 3}, x)}}).at("prod/max").to_vector();
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double sum = 2 * std::abs(v) + 1 / (1 + std::exp(-v)) - 0.5 * std::tanh(v);
    const double prod = sum * (1 + 0.5 * v) * (1 + 0.5 * v) * (0.25 - 3 * v);
    EXPECT_NEAR(y[i], std::max(prod, v), 1e-5) << i;
  }
}

// The SSD fork's Permute becomes a Transpose; a short order continues with the remaining axes.
TEST_F(CaffeImport, PermuteBecomesTranspose) {
  const TempDir dir;
  const std::string path = dir.write("permute.prototxt", R"(
input: "data"
input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
layer { name: "p" type: "Permute" bottom: "data" top: "p" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "q" type: "Permute" bottom: "p" top: "q" permute_param { order: 0 order: 3 } }
layer { name: "same" type: "Permute" bottom: "q" top: "same" }
)");
  const Graph g = load_caffe(path);
  EXPECT_EQ(layer(g, "p").type, "Transpose");
  EXPECT_EQ(layer(g, "p").attrs.get_ints("perm", {}), (std::vector<std::int64_t>{0, 2, 3, 1}));
  Net net(g);
  std::vector<float> x(120);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  const auto out = net.forward({{"data", Tensor::from(Shape{2, 3, 4, 5}, x)}});
  // p: 2x4x5x3; q = p with order {0, 3, 1, 2}: 2x3x4x5, which is the input again.
  EXPECT_EQ(out.at("same").shape(), (Shape{2, 3, 4, 5}));
  EXPECT_EQ(out.at("same").to_vector(), x);
}

TEST_F(CaffeImport, KeepsDataLayersWithTheirSettings) {
  const TempDir dir;
  const std::string path = dir.write("data.prototxt", R"(
layer { name: "images" type: "ImageData" top: "img" top: "label"
        transform_param { mirror: true crop_size: 227 mean_value: 104 mean_value: 117 mean_value: 123 }
        image_data_param { source: "list.txt" batch_size: 8 new_height: 256 new_width: 256 } }
layer { name: "dummy" type: "DummyData" top: "a" top: "b"
        dummy_data_param { num: 2 channels: 3 channels: 1 height: 4 width: 5 } }
)");
  const Graph g = load_caffe(path);
  const Attributes& images = layer(g, "images").attrs;
  EXPECT_EQ(layer(g, "images").type, "ImageData");
  EXPECT_EQ(images.get_string("source", ""), "list.txt");
  EXPECT_EQ(images.get_int("batch_size", 0), 8);
  EXPECT_EQ(images.get_int("crop_size", 0), 227);
  EXPECT_EQ(images.get_int("mirror", 0), 1);
  EXPECT_EQ(images.get_int("new_height", 0), 256);
  EXPECT_EQ(images.get_floats("mean_value", {}), (std::vector<double>{104, 117, 123}));
  const Attributes& dummy = layer(g, "dummy").attrs;
  EXPECT_EQ(dummy.get_ints("shape", {}), (std::vector<std::int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(dummy.get_ints("shape1", {}), (std::vector<std::int64_t>{2, 1, 4, 5}));
  EXPECT_EQ(g.outputs, (std::vector<std::string>{"img", "label", "a", "b"}));
}

TEST_F(CaffeImport, LoadModelPicksTheImporter) {
  const Graph g = load_model(v1_deploy(), weights());
  expect_lenet_weights(g);
  const std::string missing = (data_dir() / "no_such.prototxt").string();
  EXPECT_TRUE(contains(error_of<FileError>([&] { load_model(missing); }), missing));
  const std::string missing_weights = (data_dir() / "no_such.caffemodel").string();
  EXPECT_TRUE(
      contains(error_of<FileError>([&] { load_model(v1_deploy(), missing_weights); }), missing_weights));
  error_of<UnsupportedError>([&] { load_model("model.xyz"); });
}

// The SSD fork's scale_filler is Normalize's weight_filler, not an attribute of its own.
TEST(CaffeImportSsd, NormalizeScaleFillerBecomesTheWeightFiller) {
  const TempDir dir;
  const std::string path = dir.write("normalize.prototxt", R"(
name: "ssd_norm"
input: "data"
input_shape { dim: 1 dim: 4 dim: 3 dim: 3 }
layer { name: "norm" type: "Normalize" bottom: "data" top: "norm"
        normalize_param { across_spatial: false channel_shared: false
                          scale_filler { type: "constant" value: 20 } } }
)");
  const Graph g = load_model(path);
  ASSERT_EQ(g.layers.size(), 1u);
  const Attributes& attrs = g.layers[0].attrs;
  EXPECT_EQ(attrs.require_string("weight_filler.type"), "constant");
  EXPECT_EQ(attrs.require_float("weight_filler.value"), 20.0);
  EXPECT_EQ(attrs.require_int("across_spatial"), 0);
  EXPECT_FALSE(attrs.has("scale_filler.type"));
}

}  // namespace
}  // namespace espresso
