// Control flow (docs/control_flow.md): If, Loop and Scan from ONNX, against ONNX's node tests and against
// plain loops written here; value-dependent output shapes replanned; bad models as typed errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "espresso/errors.h"
#include "espresso/limits.h"
#include "espresso/net.h"
#include "espresso/onnx.h"
#include "espresso/package.h"
#include "import/onnx/onnx.pb.h"
#include "layers/control_flow.h"
#include "test_support.h"

namespace espresso {
namespace {

namespace fs = std::filesystem;

std::string onnx_test_data() {
  const char* env = std::getenv("ESPRESSO_ONNX_TESTDATA");
  return env != nullptr ? env : "/usr/share/libonnx-testdata/data";
}

// ONNX's own If, Loop and Scan node tests, on the CPU.
TEST(ControlFlow, OnnxNodeTests) {
  const std::string node = onnx_test_data() + "/node";
  if (!fs::exists(node)) GTEST_SKIP() << "libonnx-testdata is not installed (" << node << ")";
  // test_loop11's body slices a constant at the iteration number (DynamicSlice); test_scan_sum is Scan-8
  // (batched). The *_seq and *_opt tests use sequence and optional types, which espresso does not have.
  for (const char* name : {"test_if", "test_loop11", "test_scan9_sum", "test_scan_sum"}) {
    SCOPED_TRACE(name);
    const OnnxConformanceReport report = run_onnx_conformance({node + "/" + name});
    ASSERT_EQ(report.results.size(), 1u);
    const OnnxTestResult& r = report.results[0];
    std::printf("%s: %s, max error %.3g %s\n", name, r.status == OnnxTestStatus::pass ? "PASS" : "not passed",
                r.max_error, r.detail.c_str());
    EXPECT_EQ(r.status, OnnxTestStatus::pass) << r.detail;
  }
}

// ---- hand-made ONNX models ------------------------------------------------------------------------

void set_shape(onnx::ValueInfoProto* v, const std::vector<std::int64_t>& dims, int type = onnx::TensorProto::FLOAT) {
  v->mutable_type()->mutable_tensor_type()->set_elem_type(type);
  auto* shape = v->mutable_type()->mutable_tensor_type()->mutable_shape();
  for (std::int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

onnx::NodeProto* node(onnx::GraphProto* g, const std::string& op, const std::vector<std::string>& in,
                      const std::vector<std::string>& out, const std::string& name = "") {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(name.empty() ? out.at(0) : name);
  for (const auto& i : in) n->add_input(i);
  for (const auto& o : out) n->add_output(o);
  return n;
}

void add_input(onnx::GraphProto* g, const std::string& name, const std::vector<std::int64_t>& dims,
               int type = onnx::TensorProto::FLOAT) {
  auto* v = g->add_input();
  v->set_name(name);
  set_shape(v, dims, type);
}

onnx::ModelProto model_with(onnx::GraphProto graph) {
  onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(13);
  *model.mutable_graph() = std::move(graph);
  return model;
}

Graph load(const onnx::ModelProto& model) {
  const std::string bytes = model.SerializeAsString();
  return load_onnx(std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()), "made.onnx");
}

// Loop(M, cond, y) with body y' = y + x (x from the outer graph), cond' = cond, scan = y'·2.
onnx::ModelProto accumulate_loop(bool with_trip_count, bool with_condition) {
  onnx::GraphProto g;
  add_input(&g, "M", {}, onnx::TensorProto::INT64);
  add_input(&g, "cond", {}, onnx::TensorProto::BOOL);
  add_input(&g, "y0", {2, 3});
  add_input(&g, "x", {2, 3});
  onnx::GraphProto body;
  body.set_name("accumulate");
  add_input(&body, "i", {}, onnx::TensorProto::INT64);
  add_input(&body, "c", {}, onnx::TensorProto::BOOL);
  add_input(&body, "y", {2, 3});
  node(&body, "Add", {"y", "x"}, {"y_next"});
  node(&body, "Identity", {"c"}, {"c_next"});
  node(&body, "Add", {"y_next", "y_next"}, {"twice"});
  body.add_output()->set_name("c_next");
  body.add_output()->set_name("y_next");
  body.add_output()->set_name("twice");
  auto* loop = node(&g, "Loop", {with_trip_count ? "M" : "", with_condition ? "cond" : "", "y0"}, {"y_final", "stack"}, "loop");
  auto* a = loop->add_attribute();
  a->set_name("body");
  a->set_type(onnx::AttributeProto::GRAPH);
  *a->mutable_g() = body;
  g.add_output()->set_name("y_final");
  g.add_output()->set_name("stack");
  return model_with(g);
}

Tensor filled(const Shape& shape, float start, float step) {
  std::vector<float> v(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = start + step * static_cast<float>(i);
  return Tensor::from(shape, v);
}

void expect_loop_result(const std::map<std::string, Tensor>& out, const Tensor& y0, const Tensor& x, int trips) {
  const Tensor& y = out.at("y_final");
  const Tensor& stack = out.at("stack");
  ASSERT_EQ(y.shape(), y0.shape());
  ASSERT_EQ(stack.shape(), (Shape{trips, 2, 3}));
  const auto y0v = y0.to_vector(), xv = x.to_vector(), yv = y.to_vector(), sv = stack.to_vector();
  for (std::size_t k = 0; k < y0v.size(); ++k) {
    double value = y0v[k];
    for (int t = 0; t < trips; ++t) {
      value += xv[k];
      EXPECT_NEAR(sv[static_cast<std::size_t>(t) * 6 + k], 2 * value, 1e-5) << "iteration " << t;
    }
    EXPECT_NEAR(yv[k], value, 1e-5);
  }
}

TEST(ControlFlow, LoopWithTripCountCarriesValuesAndStacksScanOutputs) {
  Net net(load(accumulate_loop(true, true)));
  const Tensor y0 = filled({2, 3}, -1.0f, 0.25f), x = filled({2, 3}, 0.5f, -0.125f);
  // The scan output's length is a value: the first run plans one iteration, finds three, plans again.
  for (int trips : {3, 5, 0, 5}) {
    SCOPED_TRACE(trips);
    const auto out = net.forward({{"M", Tensor::from(Shape{}, {static_cast<float>(trips)})},
                                  {"cond", Tensor::from(Shape{}, {1.0f})}, {"y0", y0}, {"x", x}});
    expect_loop_result(out, y0, x, trips);
  }
}

TEST(ControlFlow, LoopReferenceKernelsAgree) {
  NetOptions options;
  options.reference_kernels = true;
  Net net(load(accumulate_loop(true, false)), options);
  const Tensor y0 = filled({2, 3}, 2.0f, -0.5f), x = filled({2, 3}, 0.25f, 0.25f);
  const auto out = net.forward({{"M", Tensor::from(Shape{}, {4.0f})}, {"cond", Tensor::from(Shape{}, {0.0f})},
                                {"y0", y0}, {"x", x}});
  // Without a condition input the loop runs M times whatever `cond` holds.
  expect_loop_result(out, y0, x, 4);
}

TEST(ControlFlow, ConditionFalseRunsNoIteration) {
  Net net(load(accumulate_loop(true, true)));
  const Tensor y0 = filled({2, 3}, 1.0f, 1.0f), x = filled({2, 3}, 1.0f, 0.0f);
  const auto out = net.forward({{"M", Tensor::from(Shape{}, {7.0f})}, {"cond", Tensor::from(Shape{}, {0.0f})},
                                {"y0", y0}, {"x", x}});
  expect_loop_result(out, y0, x, 0);
}

TEST(ControlFlow, UnboundedLoopStopsAtTheIterationLimit) {
  Net net(load(accumulate_loop(false, true)));
  const Limits saved = limits();
  Limits small = saved;
  small.max_loop_iterations = 50;
  set_limits(small);
  try {
    net.forward({{"M", Tensor::from(Shape{}, {0.0f})}, {"cond", Tensor::from(Shape{}, {1.0f})},
                 {"y0", filled({2, 3}, 0, 1)}, {"x", filled({2, 3}, 0, 1)}});
    ADD_FAILURE() << "the loop ended";
  } catch (const LimitError& e) {
    EXPECT_NE(std::string(e.what()).find("'loop' (Loop)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("max_loop_iterations"), std::string::npos) << e.what();
  }
  set_limits(saved);
}

TEST(ControlFlow, LoopWithoutTripCountOrConditionIsRefused) {
  try {
    load(accumulate_loop(false, false));
    ADD_FAILURE() << "loaded";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("node 'loop' (Loop)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("never end"), std::string::npos) << e.what();
  }
}

// If whose branches give different shapes: then x·x (2x3), else the outer constant row k (1x3) + 1,
// through a nested If in the else branch that reads the outermost input x too.
onnx::ModelProto shape_changing_if() {
  onnx::GraphProto g;
  add_input(&g, "cond", {}, onnx::TensorProto::BOOL);
  add_input(&g, "inner", {}, onnx::TensorProto::BOOL);
  add_input(&g, "x", {2, 3});
  auto* k = g.add_initializer();
  k->set_name("k");
  k->set_data_type(onnx::TensorProto::FLOAT);
  k->add_dims(1);
  k->add_dims(3);
  for (float v : {1.5f, -2.0f, 4.0f}) k->add_float_data(v);
  onnx::GraphProto then_branch, else_branch, nested_then, nested_else;
  node(&then_branch, "Mul", {"x", "x"}, {"then_out"});
  then_branch.add_output()->set_name("then_out");
  node(&nested_then, "Sub", {"k", "x"}, {"nested_then_out"});  // 2x3: reads the outermost x
  nested_then.add_output()->set_name("nested_then_out");
  node(&nested_else, "Neg", {"k"}, {"nested_else_out"});  // 1x3
  nested_else.add_output()->set_name("nested_else_out");
  auto* inner = node(&else_branch, "If", {"inner"}, {"else_out"}, "nested");
  auto* a = inner->add_attribute();
  a->set_name("then_branch");
  a->set_type(onnx::AttributeProto::GRAPH);
  *a->mutable_g() = nested_then;
  a = inner->add_attribute();
  a->set_name("else_branch");
  a->set_type(onnx::AttributeProto::GRAPH);
  *a->mutable_g() = nested_else;
  else_branch.add_output()->set_name("else_out");
  auto* outer = node(&g, "If", {"cond"}, {"y"}, "choose");
  a = outer->add_attribute();
  a->set_name("then_branch");
  a->set_type(onnx::AttributeProto::GRAPH);
  *a->mutable_g() = then_branch;
  a = outer->add_attribute();
  a->set_name("else_branch");
  a->set_type(onnx::AttributeProto::GRAPH);
  *a->mutable_g() = else_branch;
  node(&g, "Relu", {"y"}, {"z"});
  g.add_output()->set_name("z");
  return model_with(g);
}

TEST(ControlFlow, IfBranchesOfDifferentShapesReplan) {
  Net net(load(shape_changing_if()));
  const Tensor x = filled({2, 3}, -1.5f, 0.5f);
  const auto xv = x.to_vector();
  const std::vector<float> k = {1.5f, -2.0f, 4.0f};
  for (int round = 0; round < 2; ++round) {
    for (int choice = 0; choice < 3; ++choice) {
      SCOPED_TRACE(choice);
      const float cond = choice == 0 ? 1.0f : 0.0f, inner = choice == 1 ? 1.0f : 0.0f;
      const auto out = net.forward(
          {{"cond", Tensor::from(Shape{}, {cond})}, {"inner", Tensor::from(Shape{}, {inner})}, {"x", x}});
      const Tensor& z = out.at("z");
      const auto zv = z.to_vector();
      if (choice == 0) {
        ASSERT_EQ(z.shape(), (Shape{2, 3}));
        for (std::size_t i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(zv[i], std::max(0.0f, xv[i] * xv[i]));
      } else if (choice == 1) {
        ASSERT_EQ(z.shape(), (Shape{2, 3}));
        for (std::size_t i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(zv[i], std::max(0.0f, k[i % 3] - xv[i]));
      } else {
        ASSERT_EQ(z.shape(), (Shape{1, 3}));
        for (std::size_t i = 0; i < 3; ++i) EXPECT_FLOAT_EQ(zv[i], std::max(0.0f, -k[i]));
      }
    }
  }
}

TEST(ControlFlow, ShapeOfAValueDependentTensorIsRefused) {
  onnx::ModelProto model = shape_changing_if();
  node(model.mutable_graph(), "Shape", {"y"}, {"y_shape"});
  model.mutable_graph()->add_output()->set_name("y_shape");
  try {
    load(model);
    ADD_FAILURE() << "loaded";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("depends on values"), std::string::npos) << e.what();
  }
}

TEST(ControlFlow, UnknownOuterNameNamesTheNode) {
  onnx::ModelProto model = shape_changing_if();
  auto* then_branch = model.mutable_graph()->mutable_node(0)->mutable_attribute(0)->mutable_g();
  then_branch->mutable_node(0)->set_input(1, "nowhere");
  try {
    load(model);
    ADD_FAILURE() << "loaded";
  } catch (const ModelError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("node 'choose' (If) subgraph"), std::string::npos) << message;
    EXPECT_NE(message.find("'nowhere'"), std::string::npos) << message;
  }
}

// Scan over axis 1 in reverse with a state: running sums of the columns, from the last one; the
// body also reads an outer value.
TEST(ControlFlow, ScanReverseOverAxisOneWithOuterValue) {
  onnx::GraphProto g;
  add_input(&g, "s0", {2});
  add_input(&g, "x", {2, 4});
  add_input(&g, "w", {2});
  onnx::GraphProto body;
  add_input(&body, "s", {2});
  add_input(&body, "col", {2});
  node(&body, "Mul", {"col", "w"}, {"weighted"});
  node(&body, "Add", {"s", "weighted"}, {"s_next"});
  node(&body, "Identity", {"s_next"}, {"out"});
  body.add_output()->set_name("s_next");
  body.add_output()->set_name("out");
  auto* scan = node(&g, "Scan", {"s0", "x"}, {"s_final", "sums"}, "scan");
  auto* a = scan->add_attribute();
  a->set_name("body");
  a->set_type(onnx::AttributeProto::GRAPH);
  *a->mutable_g() = body;
  a = scan->add_attribute();
  a->set_name("num_scan_inputs");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(1);
  for (const char* name : {"scan_input_axes", "scan_input_directions", "scan_output_axes"}) {
    a = scan->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    a->add_ints(std::string(name) == "scan_input_directions" ? 1 : (std::string(name) == "scan_input_axes" ? 1 : -1));
  }
  g.add_output()->set_name("s_final");
  g.add_output()->set_name("sums");
  Net net(load(model_with(g)));
  const Tensor s0 = Tensor::from(Shape{2}, {0.5f, -1.0f}), x = filled({2, 4}, -2.0f, 0.75f),
               w = Tensor::from(Shape{2}, {2.0f, -0.5f});
  const auto out = net.forward({{"s0", s0}, {"x", x}, {"w", w}});
  ASSERT_EQ(out.at("sums").shape(), (Shape{2, 4}));  // output axis -1: the iterations go last
  const auto xv = x.to_vector(), sums = out.at("sums").to_vector(), final_state = out.at("s_final").to_vector();
  for (int r = 0; r < 2; ++r) {
    double s = s0.to_vector()[static_cast<std::size_t>(r)];
    for (int t = 0; t < 4; ++t) {
      s += xv[static_cast<std::size_t>(r * 4 + (3 - t))] * w.to_vector()[static_cast<std::size_t>(r)];
      EXPECT_NEAR(sums[static_cast<std::size_t>(r * 4 + t)], s, 1e-5);
    }
    EXPECT_NEAR(final_state[static_cast<std::size_t>(r)], s, 1e-5);
  }
}

// Slice with starts and ends given at run time: its output shape follows from them, so the net replans.
TEST(ControlFlow, SliceAtRunTimeReplans) {
  onnx::GraphProto g;
  add_input(&g, "x", {2, 6});
  add_input(&g, "starts", {1}, onnx::TensorProto::INT64);
  add_input(&g, "ends", {1}, onnx::TensorProto::INT64);
  auto* axes = g.add_initializer();
  axes->set_name("axes");
  axes->set_data_type(onnx::TensorProto::INT64);
  axes->add_dims(1);
  axes->add_int64_data(1);
  node(&g, "Slice", {"x", "starts", "ends", "axes"}, {"part"});
  node(&g, "Neg", {"part"}, {"y"});
  g.add_output()->set_name("y");
  Net net(load(model_with(g)));
  const Tensor x = filled({2, 6}, -3.0f, 0.5f);
  const auto xv = x.to_vector();
  for (const auto& [start, end] : std::vector<std::pair<int, int>>{{1, 4}, {0, 6}, {-2, 100}, {3, 3}, {1, 4}}) {
    SCOPED_TRACE(std::to_string(start) + ":" + std::to_string(end));
    const auto out = net.forward({{"x", x},
                                  {"starts", Tensor::from(Shape{1}, {static_cast<float>(start)})},
                                  {"ends", Tensor::from(Shape{1}, {static_cast<float>(end)})}});
    const int from = start < 0 ? start + 6 : start, to = std::min(end, 6);
    const int width = std::max(0, to - from);
    ASSERT_EQ(out.at("y").shape(), (Shape{2, width}));
    const auto yv = out.at("y").to_vector();
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < width; ++c)
        EXPECT_FLOAT_EQ(yv[static_cast<std::size_t>(r * width + c)], -xv[static_cast<std::size_t>(r * 6 + from + c)]);
  }
}

// ---- subgraphs in the graph description and in .esp packages --------------------------------------

// Runs `original` and the graph `package` loads on the same inputs: outputs must be bit for bit equal.
void expect_identical_runs(const Graph& original, const std::string& package,
                           const std::vector<std::map<std::string, Tensor>>& feeds) {
  Net before(original);
  Net after(load_package(package));
  for (std::size_t f = 0; f < feeds.size(); ++f) {
    SCOPED_TRACE("feed " + std::to_string(f));
    const auto expected = before.forward(feeds[f]);
    const auto got = after.forward(feeds[f]);
    ASSERT_EQ(expected.size(), got.size());
    for (const auto& [name, tensor] : expected) {
      ASSERT_EQ(got.count(name), 1u) << name;
      EXPECT_EQ(got.at(name).shape(), tensor.shape()) << name;
      EXPECT_EQ(got.at(name).to_vector(), tensor.to_vector()) << name;
    }
  }
}

// Every layer's subgraphs and theirs, as "outer/role/inner" paths.
void collect_paths(const Graph& graph, const std::string& around, std::vector<std::string>& paths) {
  for (const LayerSpec& layer : graph.layers)
    for (const Subgraph& subgraph : layer.subgraphs) {
      paths.push_back(around + layer.name + "/" + subgraph.role);
      collect_paths(subgraph.graph, around + layer.name + "/" + subgraph.role + "/", paths);
    }
}

TEST(ControlFlow, ImportersGiveSubgraphsAsPartsOfTheLayer) {
  const Graph graph = load(shape_changing_if());
  std::vector<std::string> paths;
  collect_paths(graph, "", paths);
  EXPECT_EQ(paths, (std::vector<std::string>{"choose/then_branch", "choose/else_branch", "choose/else_branch/nested/then_branch",
                                             "choose/else_branch/nested/else_branch"}));
  for (const LayerSpec& layer : graph.layers) EXPECT_TRUE(layer.attrs.all().empty() || layer.type != "If") << layer.name;
}

// The nested If (an outer constant copied into the inner branches as a weight) written to .esp and read
// back: the same nesting, the weights in the tensor table, the same outputs for every branch.
TEST(ControlFlow, NestedIfRoundTripsThroughEsp) {
  testing::TempDir dir;
  const Graph graph = load(shape_changing_if());
  const std::string path = dir.file("nested_if.esp");
  save_package(graph, path);
  const PackageInfo info = read_package_info(path);
  EXPECT_EQ(info.format_version, 4u);  // subgraphs need version 4, so older readers refuse it by version
  bool nested_weight = false;
  for (const PackageTensorInfo& t : info.tensors) nested_weight = nested_weight || t.name.rfind("choose/else_branch/nested/", 0) == 0;
  EXPECT_TRUE(nested_weight) << "no weight of the nested If's branches in the tensor table";
  const Graph loaded = load_package(path);
  std::vector<std::string> before, after;
  collect_paths(graph, "", before);
  collect_paths(loaded, "", after);
  EXPECT_EQ(before, after);
  std::vector<std::map<std::string, Tensor>> feeds;
  const Tensor x = filled({2, 3}, -1.5f, 0.5f);
  for (int choice = 0; choice < 3; ++choice)
    feeds.push_back({{"cond", Tensor::from(Shape{}, {choice == 0 ? 1.0f : 0.0f})},
                     {"inner", Tensor::from(Shape{}, {choice == 1 ? 1.0f : 0.0f})},
                     {"x", x}});
  expect_identical_runs(graph, path, feeds);
  // And against the values worked out here: the else-else branch gives relu(-k).
  Net net(loaded);
  const auto out = net.forward(feeds[2]);
  ASSERT_EQ(out.at("z").shape(), (Shape{1, 3}));
  EXPECT_EQ(out.at("z").to_vector(), (std::vector<float>{0.0f, 2.0f, 0.0f}));
  // A graph without control flow keeps format version 1.
  Graph plain;
  plain.inputs = {{"x", Shape{2, 3}}};
  LayerSpec relu;
  relu.name = "relu";
  relu.type = "ReLU";
  relu.inputs = {"x"};
  relu.outputs = {"y"};
  plain.layers = {relu};
  plain.outputs = {"y"};
  save_package(plain, dir.file("plain.esp"));
  EXPECT_EQ(read_package_info(dir.file("plain.esp")).format_version, 1u);
}

TEST(ControlFlow, LoopRoundTripsThroughEspAndCompressedEsp) {
  testing::TempDir dir;
  const Graph graph = load(accumulate_loop(true, true));
  const Tensor y0 = filled({2, 3}, 0.5f, -0.25f), x = filled({2, 3}, -1.0f, 0.375f);
  std::vector<std::map<std::string, Tensor>> feeds;
  for (int trips : {3, 0, 5})
    feeds.push_back({{"M", Tensor::from(Shape{}, {static_cast<float>(trips)})},
                     {"cond", Tensor::from(Shape{}, {1.0f})},
                     {"y0", y0},
                     {"x", x}});
  for (const bool compress : {false, true}) {
    SCOPED_TRACE(compress ? "compressed" : "plain");
    const std::string path = dir.file(compress ? "loop_z.esp" : "loop.esp");
    save_package(graph, path, {.compress = compress});
    EXPECT_EQ(read_package_info(path).format_version, 4u);
    expect_identical_runs(graph, path, feeds);
    Net net(load_package(path));
    expect_loop_result(net.forward(feeds[2]), y0, x, 5);
  }
}

// ONNX's If, Loop and Scan node tests: imported, written to .esp, read back; the package gives the
// ONNX import's outputs exactly, and both match ONNX's expected outputs.
TEST(ControlFlow, OnnxNodeTestsRoundTripThroughEsp) {
  const std::string node = onnx_test_data() + "/node";
  if (!fs::exists(node)) GTEST_SKIP() << "libonnx-testdata is not installed (" << node << ")";
  testing::TempDir dir;
  for (const char* name : {"test_if", "test_loop11", "test_scan9_sum", "test_scan_sum"}) {
    SCOPED_TRACE(name);
    const fs::path folder = fs::path(node) / name;
    onnx::ModelProto proto;
    {
      std::ifstream file(folder / "model.onnx", std::ios::binary);
      ASSERT_TRUE(proto.ParseFromIstream(&file));
    }
    std::vector<std::string> inputs, outputs;
    for (const auto& input : proto.graph().input()) inputs.push_back(input.name());
    for (const auto& output : proto.graph().output()) outputs.push_back(output.name());
    OnnxImportOptions options;
    std::map<std::string, Tensor> feed;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const Tensor t = read_onnx_tensor((folder / "test_data_set_0" / ("input_" + std::to_string(i) + ".pb")).string());
      options.input_shapes[inputs[i]] = t.shape();
      options.input_values[inputs[i]] = t;
      feed[inputs[i]] = t;
    }
    const Graph graph = load_onnx((folder / "model.onnx").string(), options);
    std::vector<std::string> paths;
    collect_paths(graph, "", paths);
    EXPECT_FALSE(paths.empty());
    const std::string path = dir.file(std::string(name) + ".esp");
    save_package(graph, path);
    expect_identical_runs(graph, path, {feed});
    Net net(load_package(path));
    const auto got = net.forward(feed);
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      const Tensor expected = read_onnx_tensor((folder / "test_data_set_0" / ("output_" + std::to_string(k) + ".pb")).string());
      ASSERT_EQ(got.at(outputs[k]).shape(), expected.shape()) << outputs[k];
      const auto g = got.at(outputs[k]).to_vector(), e = expected.to_vector();
      for (std::size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], e[i], 1e-5 + 1e-5 * std::abs(e[i])) << outputs[k] << "[" << i << "]";
    }
  }
}

LayerSpec relu_layer(const std::string& name, const std::string& in, const std::string& out) {
  LayerSpec spec;
  spec.name = name;
  spec.type = "ReLU";
  spec.inputs = {in};
  spec.outputs = {out};
  return spec;
}

// An If on `c` taking c and x into its branches: the then branch is `then_branch`, the else branch
// passes x through ReLU.
LayerSpec if_layer(const std::string& name, Graph then_branch) {
  LayerSpec spec;
  spec.name = name;
  spec.type = "If";
  spec.inputs = {"c", "c", "x"};
  spec.outputs = {name + "_out"};
  Graph else_branch;
  else_branch.inputs = {{"c", Shape{}}, {"x", Shape{3}}};
  else_branch.layers = {relu_layer("r", "x", "y")};
  else_branch.outputs = {"y"};
  spec.subgraphs = {{"then_branch", std::move(then_branch)}, {"else_branch", std::move(else_branch)}};
  return spec;
}

// Ifs nested `depth` deep, each then branch holding the next (inputs c and x, as the outermost).
Graph nested_ifs(int depth) {
  Graph inner;
  inner.inputs = {{"c", Shape{}}, {"x", Shape{3}}};
  inner.layers = {relu_layer("r", "x", "y")};
  inner.outputs = {"y"};
  for (int d = 0; d < depth; ++d) {
    Graph outer;
    outer.inputs = {{"c", Shape{}}, {"x", Shape{3}}};
    LayerSpec layer = if_layer("if" + std::to_string(d), std::move(inner));
    outer.outputs = {layer.outputs[0]};
    outer.layers = {std::move(layer)};
    inner = std::move(outer);
  }
  return inner;
}

TEST(ControlFlow, SubgraphsAreValidated) {
  // Nested up to the limit: valid, runs, and takes the branches it should.
  const int limit = limits().max_subgraph_depth;
  Graph deep = nested_ifs(limit);
  deep.validate();
  {
    Net net(deep);
    const auto out = net.forward({{"c", Tensor::from(Shape{}, {1.0f})}, {"x", Tensor::from(Shape{3}, {-1.0f, 2.0f, -3.0f})}});
    EXPECT_EQ(out.begin()->second.to_vector(), (std::vector<float>{0.0f, 2.0f, 0.0f}));
  }
  testing::TempDir dir;
  save_package(deep, dir.file("deep.esp"));
  EXPECT_NO_THROW(load_package(dir.file("deep.esp")));
  // One deeper: a LimitError naming the outer layers and the limit, and save_package will not write it.
  const Graph too_deep = nested_ifs(limit + 1);
  try {
    too_deep.validate();
    ADD_FAILURE() << "validated";
  } catch (const LimitError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("layer 'if" + std::to_string(limit) + "' (If) subgraph 'then_branch'"), std::string::npos) << message;
    EXPECT_NE(message.find("max_subgraph_depth"), std::string::npos) << message;
  }
  EXPECT_THROW(save_package(too_deep, dir.file("too_deep.esp")), LimitError);

  Graph then_branch;
  then_branch.inputs = {{"c", Shape{}}, {"x", Shape{3}}};
  then_branch.layers = {relu_layer("r", "nowhere", "y")};
  then_branch.outputs = {"y"};
  Graph graph;
  graph.inputs = {{"c", Shape{}}, {"x", Shape{3}}};
  graph.layers = {if_layer("choose", then_branch)};
  graph.outputs = {"choose_out"};
  auto expect_model_error = [](const Graph& g, const std::string& needle) {
    try {
      g.validate();
      Net net(g);
      ADD_FAILURE() << "accepted; expected " << needle;
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_model_error(graph, "layer 'choose' (If) subgraph 'then_branch': layer 'r' (ReLU): input 'nowhere'");
  graph.layers[0].subgraphs[0].graph.layers[0].inputs = {"x"};
  EXPECT_NO_THROW(Net{graph});
  Graph twice = graph;
  twice.layers[0].subgraphs[1].role = "then_branch";
  expect_model_error(twice, "subgraph 'then_branch' is given twice");
  Graph unknown = graph;
  unknown.layers[0].subgraphs[1].role = "otherwise";
  expect_model_error(unknown, "unknown subgraph 'otherwise' (If takes then_branch, else_branch)");
  Graph missing = graph;
  missing.layers[0].subgraphs.pop_back();
  expect_model_error(missing, "subgraph 'else_branch' is required");
  Graph stray = graph;
  stray.layers.push_back(relu_layer("relu", "x", "relu_out"));
  stray.layers.back().subgraphs = {{"body", graph.layers[0].subgraphs[0].graph}};
  expect_model_error(stray, "unknown subgraph 'body' (ReLU takes no subgraphs)");
}

}  // namespace
}  // namespace espresso
