// ONNX import of real models, import errors, and export round trips.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>

#include "backends/cpu/gemm.h"
#include "espresso/espresso.h"
#include "import/onnx/onnx.pb.h"
#include "test_support.h"

namespace espresso {
namespace {

namespace fs = std::filesystem;

std::string data_dir() { return testing::shared_data_dir().string(); }

double relative_error(const Tensor& got, const Tensor& expected) {
  const std::vector<float> g = got.to_vector(), e = expected.to_vector();
  double diff = 0, scale = 1e-12;
  for (std::size_t i = 0; i < e.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(g[i] - e[i])));
    scale = std::max(scale, static_cast<double>(std::abs(e[i])));
  }
  return diff / scale;
}

class OnnxModels : public testing::SharedDataTest, public ::testing::WithParamInterface<const char*> {};
class OnnxMnist1 : public testing::SharedDataTest {};

TEST_P(OnnxModels, MatchesReferenceOutput) {
  const std::string dir = data_dir() + "/onnx/" + GetParam();
  const Graph graph = load_onnx(dir + "/model.onnx");
  const Tensor input = read_onnx_tensor(dir + "/test_data_set_0/input_0.pb");
  const Tensor expected = read_onnx_tensor(dir + "/test_data_set_0/output_0.pb");
  Net net(graph);
  const auto outputs = net.forward({{net.input_names().at(0), input}});
  const Tensor& got = outputs.begin()->second;
  ASSERT_EQ(got.shape(), expected.shape());
  const double error = relative_error(got, expected);
  std::printf("%s: relative error %.3g\n", GetParam(), error);
  EXPECT_LE(error, 1e-4);
}

// Each CPU convolution tactic forced in turn (Winograd takes the 3×3 stride-1 convolutions of
// ResNet-18, SqueezeNet and NIN, and NIN's 5×5 ones; the direct convolution the first layers and the
// short-depth ones), against the outputs the models ship with.
TEST_P(OnnxModels, MatchesReferenceOutputWithEachCpuTactic) {
  const std::string dir = data_dir() + "/onnx/" + GetParam();
  const Graph graph = load_onnx(dir + "/model.onnx");
  const Tensor input = read_onnx_tensor(dir + "/test_data_set_0/input_0.pb");
  const Tensor expected = read_onnx_tensor(dir + "/test_data_set_0/output_0.pb");
  for (const char* tactic : {"gemm", "winograd", "direct"}) {
    setenv("ESPRESSO_CONV_TACTIC", tactic, 1);
    Net net(graph);
    const auto outputs = net.forward({{net.input_names().at(0), input}});
    unsetenv("ESPRESSO_CONV_TACTIC");
    const double error = relative_error(outputs.begin()->second, expected);
    std::printf("%s with ESPRESSO_CONV_TACTIC=%s: relative error %.3g\n", GetParam(), tactic, error);
    EXPECT_LE(error, 1e-4) << tactic;
    if (tactic == std::string("direct") && cpu::fast_gemm_available()) {
      // Every model's first layer (3 channels) takes it.
      int direct_layers = 0;
      for (const auto& [layer, kernel] : testing::kernels_by_layer(net.summary()))
        direct_layers += kernel.rfind(testing::cpu_conv_kernel_prefix(tactic), 0) == 0 ? 1 : 0;
      EXPECT_GE(direct_layers, 1);
    }
  }
}

TEST_P(OnnxModels, MatchesReferenceOutputOnCuda) {
  if (!testing::have_gpu()) {
    GTEST_SKIP() << testing::no_gpu_reason() << ": GPU run not checked";
  }
  const std::string dir = data_dir() + "/onnx/" + GetParam();
  const Graph graph = load_onnx(dir + "/model.onnx");
  const Tensor input = read_onnx_tensor(dir + "/test_data_set_0/input_0.pb");
  const Tensor expected = read_onnx_tensor(dir + "/test_data_set_0/output_0.pb");
  NetOptions options;
  options.device = Device::cuda(0);
  Net net(graph, options);
  // Twice: the first forward records the CUDA graph, the second replays it.
  for (int run = 0; run < 2; ++run) {
    const auto outputs = net.forward({{net.input_names().at(0), input}});
    const Tensor got = outputs.begin()->second.to(Device::cpu());
    ASSERT_EQ(got.shape(), expected.shape());
    const double error = relative_error(got, expected);
    std::printf("%s on cuda, run %d: relative error %.3g\n", GetParam(), run, error);
    EXPECT_LE(error, 1e-4);
  }
}

// The models declare a symbolic batch and are loaded at batch 1: a batch size folded into the graph at
// load time would break (or silently mix images) at batch 16, which the CPU benchmark runs.
TEST_P(OnnxModels, Batch16MatchesSingleImages) {
  constexpr std::int64_t kBatch = 16;
  const std::string dir = data_dir() + "/onnx/" + GetParam();
  Net net(load_onnx(dir + "/model.onnx"));
  const std::string input_name = net.input_names().at(0);
  const std::vector<float> image = read_onnx_tensor(dir + "/test_data_set_0/input_0.pb").to_vector();
  const std::int64_t image_size = static_cast<std::int64_t>(image.size());
  // Sixteen different images: the test image with its pixels rotated by a different offset each.
  std::vector<float> batch_values(static_cast<std::size_t>(kBatch * image_size));
  for (std::int64_t i = 0; i < kBatch; ++i) {
    for (std::int64_t k = 0; k < image_size; ++k) {
      batch_values[static_cast<std::size_t>(i * image_size + k)] =
          image[static_cast<std::size_t>((k + i * 7919) % image_size)];
    }
  }
  Shape shape = net.input_shape(input_name);
  shape[0] = kBatch;
  const Tensor batched = net.forward({{input_name, Tensor::from(shape, batch_values)}}).begin()->second;
  ASSERT_EQ(batched.shape()[0], kBatch);
  const std::int64_t row_size = batched.numel() / kBatch;
  const std::vector<float> batched_values = batched.to_vector();
  shape[0] = 1;
  for (std::int64_t i = 0; i < kBatch; ++i) {
    const auto first = batch_values.begin() + i * image_size;
    const Tensor single =
        net.forward({{input_name, Tensor::from(shape, std::vector<float>(first, first + image_size))}})
            .begin()
            ->second;
    ASSERT_EQ(single.numel(), row_size);
    const auto row = batched_values.begin() + i * row_size;
    EXPECT_LE(relative_error(Tensor::from(single.shape(), std::vector<float>(row, row + row_size)), single),
              1e-4)
        << GetParam() << " image " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Real, OnnxModels,
                         ::testing::Values("nin_cifar10", "squeezenet1_1", "mobilenet_v2", "resnet18"));

// One array of a .npz (a zip of .npy files, stored or deflated), as float32.
std::vector<float> read_npz_array(const std::string& path, const std::string& array) {
  std::ifstream file(path, std::ios::binary);
  const std::string zip((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  auto u16 = [&](std::size_t at) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(zip[at]) |
                                      static_cast<unsigned char>(zip[at + 1]) << 8);
  };
  auto u32 = [&](std::size_t at) { return u16(at) | u16(at + 2) << 16; };
  std::size_t at = 0;
  while (at + 30 <= zip.size() && u32(at) == 0x04034b50) {
    const std::uint32_t method = u16(at + 8), packed = u32(at + 18), size = u32(at + 22);
    const std::uint32_t name_length = u16(at + 26), extra = u16(at + 28);
    const std::string name = zip.substr(at + 30, name_length);
    const std::size_t data = at + 30 + name_length + extra;
    if (name == array + ".npy") {
      std::string npy(size, '\0');
      if (method == 0) {
        npy = zip.substr(data, size);
      } else {
        z_stream z{};
        inflateInit2(&z, -MAX_WBITS);
        z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zip.data() + data));
        z.avail_in = packed;
        z.next_out = reinterpret_cast<Bytef*>(npy.data());
        z.avail_out = size;
        inflate(&z, Z_FINISH);
        inflateEnd(&z);
      }
      const std::size_t header =
          10 + (static_cast<unsigned char>(npy[8]) | static_cast<unsigned char>(npy[9]) << 8);
      EXPECT_NE(npy.find("'<f4'"), std::string::npos) << "expected float32 in " << path;
      std::vector<float> values((npy.size() - header) / 4);
      std::memcpy(values.data(), npy.data() + header, values.size() * 4);
      return values;
    }
    at = data + packed;
  }
  ADD_FAILURE() << path << " has no array '" << array << "'";
  return {};
}

TEST_F(OnnxMnist1, ReproducesReferenceLogits) {
  const std::string dir = data_dir() + "/onnx/mnist-1";
  const Graph graph = load_onnx(dir + "/model.onnx");
  Net net(graph);
  for (int i = 0; i < 3; ++i) {
    const std::string npz = dir + "/test_data_" + std::to_string(i) + ".npz";
    const auto outputs =
        net.forward({{"Input3", Tensor::from(Shape{1, 1, 28, 28}, read_npz_array(npz, "inputs"))}});
    const Tensor expected = Tensor::from(Shape{1, 10}, read_npz_array(npz, "outputs"));
    EXPECT_LE(relative_error(outputs.begin()->second, expected), 1e-4) << npz;
  }
}

std::string gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return {};
  std::string out;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(f, buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<std::size_t>(n));
  gzclose(f);
  return out;
}

TEST_F(OnnxMnist1, AccuracyOnT10k) {
  const Graph graph = load_onnx(data_dir() + "/onnx/mnist-1/model.onnx");
  const std::string images = gunzip(data_dir() + "/mnist/t10k-images-idx3-ubyte.gz");
  const std::string labels = gunzip(data_dir() + "/mnist/t10k-labels-idx1-ubyte.gz");
  ASSERT_EQ(images.size(), 16u + 10000u * 784u);
  ASSERT_EQ(labels.size(), 8u + 10000u);
  Net net(graph);
  int correct = 0;
  for (int i = 0; i < 10000; ++i) {
    Tensor& input = net.input("Input3");
    float* x = input.data<float>();
    for (int p = 0; p < 784; ++p)
      x[p] = static_cast<unsigned char>(
                 images[16 + static_cast<std::size_t>(i) * 784 + static_cast<std::size_t>(p)]) /
             255.0f;
    net.forward();
    const std::vector<float> logits = net.tensor(net.output_names().at(0)).to_vector();
    const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
    correct += best == static_cast<unsigned char>(labels[8 + static_cast<std::size_t>(i)]);
  }
  std::printf("mnist-1 t10k top-1: %.2f %%\n", correct / 100.0);
  EXPECT_GE(correct, 9880);
}

// ---- errors ----------------------------------------------------------------------------------

class OnnxErrors : public testing::SharedDataTest {
 protected:
  void SetUp() override {
    testing::SharedDataTest::SetUp();
    if (IsSkipped()) return;
    dir_ = fs::temp_directory_path() / ("espresso_onnx_" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "model");
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // x (1x4) → Relu → y, with an initializer `w` added to it by an Add node.
  onnx::ModelProto small_model() {
    onnx::ModelProto model;
    model.set_ir_version(7);
    model.add_opset_import()->set_version(13);
    auto* g = model.mutable_graph();
    auto* in = g->add_input();
    in->set_name("x");
    in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    in->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_param("batch");
    in->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(4);
    auto* w = g->add_initializer();
    w->set_name("w");
    w->set_data_type(onnx::TensorProto::FLOAT);
    w->add_dims(4);
    for (float v : {1.f, 2.f, 3.f, 4.f}) w->add_float_data(v);
    auto* add = g->add_node();
    add->set_op_type("Add");
    add->set_name("add");
    add->add_input("x");
    add->add_input("w");
    add->add_output("sum");
    auto* relu = g->add_node();
    relu->set_op_type("Relu");
    relu->set_name("relu");
    relu->add_input("sum");
    relu->add_output("y");
    g->add_output()->set_name("y");
    return model;
  }
  std::string write(const onnx::ModelProto& model) {
    const std::string path = (dir_ / "model" / "model.onnx").string();
    std::ofstream out(path, std::ios::binary);
    model.SerializeToOstream(&out);
    return path;
  }
  template <class E>
  std::string expect_error(const std::string& path) {
    try {
      load_onnx(path);
    } catch (const E& e) {
      return e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "wrong exception type: " << e.what();
      return {};
    }
    ADD_FAILURE() << "no exception for " << path;
    return {};
  }
  // Moves w's data to an external file and points it at `location`, `offset`, `length`.
  onnx::ModelProto external(const std::string& location, const std::string& offset,
                            const std::string& length) {
    onnx::ModelProto model = small_model();
    auto* w = model.mutable_graph()->mutable_initializer(0);
    w->clear_float_data();
    w->set_data_location(onnx::TensorProto::EXTERNAL);
    for (auto [k, v] : {std::pair{"location", location}, {"offset", offset}, {"length", length}}) {
      auto* e = w->add_external_data();
      e->set_key(k);
      e->set_value(v);
    }
    const float values[4] = {1, 2, 3, 4};
    std::ofstream(dir_ / "model" / "weights.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(values), 16);
    return model;
  }

  fs::path dir_;
};

TEST_F(OnnxErrors, LoadsAndRunsTheSmallModel) {
  Graph graph = load_onnx(write(small_model()));
  EXPECT_EQ(graph.inputs.at(0).shape, (Shape{1, 4}));
  Net net(graph);
  const auto out = net.forward({{"x", Tensor::from(Shape{1, 4}, {-2, -2, -2, -2})}});
  EXPECT_EQ(out.at("y").to_vector(), (std::vector<float>{0, 0, 1, 2}));
}

TEST_F(OnnxErrors, FromMemoryRunsAndRefusesExternalData) {
  const std::string bytes = small_model().SerializeAsString();
  Net net(load_onnx(std::as_bytes(std::span(bytes.data(), bytes.size())), "bundled.onnx"));
  EXPECT_EQ(net.forward({{"x", Tensor::from(Shape{1, 4}, {-2, -2, -2, -2})}}).at("y").to_vector(),
            (std::vector<float>{0, 0, 1, 2}));
  const std::string with_external = external("weights.bin", "0", "16").SerializeAsString();
  try {
    load_onnx(std::as_bytes(std::span(with_external.data(), with_external.size())), "bundled.onnx");
    FAIL() << "external data from memory must be refused";
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find("bundled.onnx"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("needs the model's folder"), std::string::npos) << e.what();
  }
}

TEST_F(OnnxErrors, ExternalDataIsReadAndChecked) {
  Graph graph = load_onnx(write(external("weights.bin", "0", "16")));
  EXPECT_EQ(graph.layers.size(), 3u);
  EXPECT_NE(
      expect_error<FileError>(write(external("../escape.bin", "0", "16"))).find("contains '..'"),
      std::string::npos);
  EXPECT_NE(expect_error<FileError>(write(external("/etc/passwd", "0", "16"))).find("absolute"),
            std::string::npos);
  EXPECT_NE(expect_error<FileError>(write(external("missing.bin", "0", "16"))).find("missing"),
            std::string::npos);
  EXPECT_NE(expect_error<FileError>(write(external("weights.bin", "8", "16"))).find("past the end"),
            std::string::npos);
  EXPECT_NE(expect_error<FileError>(write(external("weights.bin", "100", "4"))).find("past the end"),
            std::string::npos);
}

TEST_F(OnnxErrors, MissingTruncatedAndCorruptFiles) {
  expect_error<FileError>((dir_ / "nope.onnx").string());
  const std::string path = write(small_model());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  for (std::size_t cut : {bytes.size() / 2, bytes.size() - 3}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(bytes.data(), static_cast<std::streamsize>(cut));
    EXPECT_NE(expect_error<ParseError>(path).find(path), std::string::npos);
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << "\xff\xff\xff\xff garbage";
  expect_error<ParseError>(path);
}

TEST_F(OnnxErrors, UnsupportedOperatorsAreListedTogether) {
  onnx::ModelProto model = small_model();
  model.mutable_graph()->mutable_node(0)->set_op_type("NonMaxSuppression");
  model.mutable_graph()->mutable_node(1)->set_op_type("Custom");
  model.mutable_graph()->mutable_node(1)->set_domain("com.example");
  const std::string message = expect_error<UnsupportedError>(write(model));
  EXPECT_NE(message.find("node 'add' NonMaxSuppression"), std::string::npos) << message;
  EXPECT_NE(message.find("node 'relu' Custom (domain 'com.example', opset 13)"), std::string::npos)
      << message;
}

TEST_F(OnnxErrors, DanglingNamesAndShapeContradictions) {
  onnx::ModelProto model = small_model();
  model.mutable_graph()->mutable_node(1)->set_input(0, "nowhere");
  EXPECT_NE(expect_error<ModelError>(write(model)).find("node 'relu' (Relu): input 'nowhere'"),
            std::string::npos);
  model = small_model();
  model.mutable_graph()->mutable_initializer(0)->set_dims(0, 3);
  model.mutable_graph()->mutable_initializer(0)->mutable_float_data()->RemoveLast();
  EXPECT_NE(expect_error<ModelError>(write(model)).find("node 'add' (Add)"), std::string::npos);
  model = small_model();
  model.mutable_graph()->mutable_initializer(0)->add_float_data(5);
  EXPECT_NE(expect_error<ParseError>(write(model)).find("initializer 'w'"), std::string::npos);
}

// ---- export ----------------------------------------------------------------------------------


void expect_round_trip(const Graph& graph, const std::map<std::string, Tensor>& feed,
                       const std::string& path) {
  export_onnx(graph, path);
  testing::expect_onnx_checker_accepts(path);
  Net original(graph);
  Net reloaded(load_onnx(path));
  const auto a = original.forward(feed);
  const auto b = reloaded.forward(feed);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, tensor] : a) {
    const Tensor& other = reloaded.tensor(name);
    ASSERT_EQ(tensor.shape(), other.shape()) << name;
    EXPECT_LE(relative_error(other, tensor), 1e-6) << name;
  }
}

TEST_F(OnnxErrors, ExportRoundTripOfOnnxOnlyLayers) {
  Graph g;
  g.inputs = {{"x", Shape{2, 3, 5, 4}}};
  auto layer = [&](const std::string& name, const std::string& type, std::vector<std::string> in,
                   Attributes attrs = {}) {
    LayerSpec l;
    l.name = name;
    l.type = type;
    l.inputs = std::move(in);
    l.outputs = {name};
    l.attrs = std::move(attrs);
    g.layers.push_back(std::move(l));
  };
  Attributes pad, clip, transpose, reduce, resize, slice, binary;
  pad.set("pads", std::vector<std::int64_t>{0, 0, 1, 2, 0, 0, 2, 1});
  pad.set("mode", std::string("reflect"));
  clip.set("function", std::string("clip"));
  clip.set("min", -0.5);
  clip.set("max", 0.5);
  transpose.set("perm", std::vector<std::int64_t>{0, 2, 3, 1});
  reduce.set("operation", std::string("mean"));
  reduce.set("axes", std::vector<std::int64_t>{3});
  resize.set("mode", std::string("linear"));
  resize.set("scales", std::vector<double>{1, 1, 2, 1.5});
  slice.set("starts", std::vector<std::int64_t>{-1, 0});
  slice.set("ends", std::vector<std::int64_t>{0, 100});
  slice.set("axes", std::vector<std::int64_t>{1, 2});
  slice.set("steps", std::vector<std::int64_t>{-1, 2});
  binary.set("operation", std::string("mul"));
  layer("pad", "Pad", {"x"}, pad);
  layer("clip", "Activation", {"pad"}, clip);
  layer("resize", "Resize", {"clip"}, resize);
  layer("slice", "StridedSlice", {"resize"}, slice);
  layer("transpose", "Transpose", {"slice"}, transpose);
  layer("mean", "Reduce", {"transpose"}, reduce);
  Attributes swap;
  swap.set("perm", std::vector<std::int64_t>{0, 1, 3, 2});
  layer("swapped", "Transpose", {"transpose"}, swap);
  layer("matmul", "MatMul", {"transpose", "swapped"}, {});
  layer("product", "Binary", {"matmul", "mean"}, binary);
  Attributes cubic, half, crop;
  cubic.set("mode", std::string("cubic"));
  cubic.set("coordinate_transformation_mode", std::string("align_corners"));
  cubic.set("cubic_coeff_a", -0.5);
  cubic.set("exclude_outside", std::int64_t{1});
  cubic.set("sizes", std::vector<std::int64_t>{2, 3, 7, 9});
  half.set("function", std::string("float16"));
  crop.set("mode", std::string("linear"));
  crop.set("coordinate_transformation_mode", std::string("tf_crop_and_resize"));
  crop.set("roi", std::vector<double>{0, 0, -0.25, 0.1, 1, 1, 0.9, 1.2});
  crop.set("extrapolation_value", 1.5);
  crop.set("sizes", std::vector<std::int64_t>{2, 3, 4, 5});
  layer("cubic", "Resize", {"pad"}, cubic);
  layer("half", "Activation", {"cubic"}, half);
  layer("crop", "Resize", {"half"}, crop);
  g.outputs = {"product", "crop"};
  std::vector<float> x(120);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i));
  expect_round_trip(g, {{"x", Tensor::from(Shape{2, 3, 5, 4}, x)}}, (dir_ / "layers.onnx").string());
}

// A Pad of zeros on every side (PyTorch writes one before NIN's average pooling) imports as no layer at all:
// its reader reads the Pad's input, with the same results.
TEST_F(OnnxErrors, PadOfNothingImportsAsNoLayer) {
  Graph g;
  g.inputs = {{"x", Shape{1, 2, 3, 3}}};
  LayerSpec pad = testing::layer("pad", "Pad", {"x"}, {"pad"});
  pad.attrs.set("pads", std::vector<std::int64_t>(8, 0));
  LayerSpec pool = testing::layer("pool", "Pooling", {"pad"}, {"pool"});
  pool.attrs.set("method", std::string("ave"));
  pool.attrs.set("kernel", std::int64_t{2});
  g.layers = {pad, pool};
  g.outputs = {"pool"};
  const std::string path = (dir_ / "zero_pad.onnx").string();
  export_onnx(g, path);
  const Graph reloaded = load_onnx(path);
  for (const LayerSpec& layer : reloaded.layers) EXPECT_NE(layer.type, "Pad") << layer.name;
  std::vector<float> x(18);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::cos(static_cast<float>(i));
  const Tensor input = Tensor::from(Shape{1, 2, 3, 3}, x);
  Net original(g), imported(reloaded);
  EXPECT_LE(relative_error(imported.forward({{"x", input}}).at("pool"),
                           original.forward({{"x", input}}).at("pool")),
            1e-7);
}

TEST_F(OnnxErrors, ExportRoundTripOfCaffeLeNet) {
  const std::string dir = data_dir() + "/caffe/lenet/";
  Graph graph = load_caffe(dir + "v2_format/lenet.prototxt", dir + "lenet_iter_10000.caffemodel");
  const Shape shape = graph.inputs.at(0).shape;
  std::vector<float> x(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 256) / 255.0f;
  expect_round_trip(graph, {{graph.inputs[0].name, Tensor::from(shape, x)}}, (dir_ / "lenet.onnx").string());
}

TEST_F(OnnxErrors, ExportRoundTripOfRealModels) {
  for (const char* name : {"nin_cifar10", "mobilenet_v2"}) {
    const std::string dir = data_dir() + "/onnx/" + name;
    const Graph graph = load_onnx(dir + "/model.onnx");
    expect_round_trip(graph, {{graph.inputs[0].name, read_onnx_tensor(dir + "/test_data_set_0/input_0.pb")}},
                      (dir_ / (std::string(name) + ".onnx")).string());
  }
}

}  // namespace
}  // namespace espresso
