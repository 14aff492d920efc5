// Control flow (docs/control_flow.md): If, Loop and Scan from ONNX, against ONNX's node tests and against
// plain loops written here; value-dependent output shapes replanned; bad models as typed errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "espresso/errors.h"
#include "espresso/limits.h"
#include "espresso/net.h"
#include "espresso/onnx.h"
#include "import/onnx/onnx.pb.h"
#include "layers/control_flow.h"

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

TEST(ControlFlow, CorruptEncodedSubgraphIsAModelError) {
  const Graph graph = load(accumulate_loop(true, true));
  std::string body;
  for (const LayerSpec& layer : graph.layers)
    if (layer.type == "Loop") body = layer.attrs.require_string("body");
  ASSERT_FALSE(body.empty());
  const Graph decoded = decode_subgraph(body, "test");
  EXPECT_EQ(encode_subgraph(decoded), body);
  for (std::size_t cut : {std::size_t{0}, std::size_t{3}, body.size() / 2, body.size() - 1})
    EXPECT_THROW(decode_subgraph(body.substr(0, cut), "test"), ModelError) << cut;
}

}  // namespace
}  // namespace espresso
