// If, Loop and Scan, and the reference way to run a subgraph (docs/control_flow.md).
#include "layers/control_flow.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <variant>

#include "espresso/limits.h"
#include "layers/if.h"
#include "layers/loop.h"
#include "layers/registry.h"
#include "layers/scan.h"

namespace espresso {
namespace {

// Runs `body`, giving errors from inside a subgraph the layer's name in front, with their type kept.
template <typename Body>
auto within(const std::string& where, Body&& body) {
  try {
    return body();
  } catch (const OutputShapesChanged&) {
    throw;
  } catch (const LimitError& e) {
    throw LimitError(where + ": " + e.what());
  } catch (const ShapeError& e) {
    throw ShapeError(where + ": " + e.what());
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(where + ": " + e.what());
  } catch (const DeviceError& e) {
    throw DeviceError(where + ": " + e.what());
  } catch (const DataError& e) {
    throw DataError(where + ": " + e.what());
  } catch (const ModelError& e) {
    throw ModelError(where + ": " + e.what());
  }
}

class ReferenceSubnet final : public Subnet {
 public:
  explicit ReferenceSubnet(const Graph& graph) : graph_(graph) {
    for (const LayerSpec& spec : graph_.layers) layers_.push_back(create_layer(spec));
  }

  std::vector<Tensor> run(const std::vector<Tensor>& inputs) override {
    if (inputs.size() != graph_.inputs.size()) {
      throw ShapeError("the graph takes " + std::to_string(graph_.inputs.size()) + " inputs, got " +
                       std::to_string(inputs.size()));
    }
    values_.clear();
    for (std::size_t i = 0; i < inputs.size(); ++i) values_[graph_.inputs[i].name] = inputs[i];
    for (const auto& layer : layers_) {
      std::vector<Tensor> in;
      std::vector<Shape> shapes;
      for (const std::string& name : layer->spec().inputs) {
        in.push_back(values_.at(name));
        shapes.push_back(in.back().shape());
      }
      std::vector<Tensor> out;
      // A nested control-flow layer whose outputs came out in other shapes gives them the second time.
      for (int attempt = 0;; ++attempt) {
        out.clear();
        for (const Shape& shape : layer->output_shapes(shapes)) out.push_back(Tensor::zeros(shape));
        try {
          layer->forward(in, out);
          break;
        } catch (const OutputShapesChanged&) {
          if (attempt > 0) throw;
        }
      }
      for (std::size_t k = 0; k < out.size() && k < layer->spec().outputs.size(); ++k)
        values_[layer->spec().outputs[k]] = out[k];
    }
    std::vector<Tensor> results;
    for (const std::string& name : graph_.outputs) results.push_back(values_.at(name));
    return results;
  }

 private:
  Graph graph_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::map<std::string, Tensor> values_;
};

// x viewed as outer x length x inner around `axis`.
struct AxisView {
  std::int64_t outer = 1, length = 1, inner = 1;
  AxisView(const Shape& shape, int axis) {
    for (int a = 0; a < axis; ++a) outer *= shape[a];
    length = shape[axis];
    for (int a = axis + 1; a < shape.rank(); ++a) inner *= shape[a];
  }
};

Shape without_axis(const Shape& shape, int axis) {
  std::vector<std::int64_t> dims = shape.dims();
  dims.erase(dims.begin() + axis);
  return Shape(std::move(dims));
}

Shape with_axis(const Shape& shape, int axis, std::int64_t length) {
  std::vector<std::int64_t> dims = shape.dims();
  dims.insert(dims.begin() + axis, length);
  return Shape(std::move(dims));
}

// slice = x[..., index, ...] along `axis`.
void take_slice(const Tensor& x, int axis, std::int64_t index, Tensor& slice) {
  const AxisView v(x.shape(), axis);
  const float* src = x.data<float>();
  float* dst = slice.data<float>();
  for (std::int64_t o = 0; o < v.outer; ++o)
    std::copy_n(src + (o * v.length + index) * v.inner, v.inner, dst + o * v.inner);
}

// y[..., index, ...] = slice along `axis`.
void put_slice(const Tensor& slice, int axis, std::int64_t index, Tensor& y) {
  const AxisView v(y.shape(), axis);
  const float* src = slice.data<float>();
  float* dst = y.data<float>();
  for (std::int64_t o = 0; o < v.outer; ++o)
    std::copy_n(src + o * v.inner, v.inner, dst + (o * v.length + index) * v.inner);
}

bool truth(const Tensor& t) { return t.data<float>()[0] != 0.0f; }

}  // namespace

std::unique_ptr<Subnet> make_reference_subnet(const Graph& graph) { return std::make_unique<ReferenceSubnet>(graph); }

std::vector<Shape> infer_graph_shapes(const Graph& graph, const std::vector<Shape>& inputs) {
  if (inputs.size() != graph.inputs.size()) {
    throw ShapeError("the graph takes " + std::to_string(graph.inputs.size()) + " inputs, got " +
                     std::to_string(inputs.size()));
  }
  std::map<std::string, Shape> shapes;
  for (std::size_t i = 0; i < inputs.size(); ++i) shapes[graph.inputs[i].name] = inputs[i];
  for (const LayerSpec& spec : graph.layers) {
    std::vector<Shape> in;
    for (const std::string& name : spec.inputs) in.push_back(shapes.at(name));
    const std::vector<Shape> out = create_layer(spec)->output_shapes(in);
    for (std::size_t k = 0; k < out.size() && k < spec.outputs.size(); ++k) {
      checked_numel(out[k].dims(), sizeof(float), "layer '" + spec.name + "' output " + std::to_string(k));
      shapes[spec.outputs[k]] = out[k];
    }
  }
  std::vector<Shape> results;
  for (const std::string& name : graph.outputs) results.push_back(shapes.at(name));
  return results;
}

// ---- the shared part ----------------------------------------------------------------------------

Shape ValueShapedLayer::remembered(std::size_t k, const Shape& guess) const {
  return k < seen_.size() ? seen_[k] : guess;
}

void ValueShapedLayer::replan(std::vector<Shape> shapes) const {
  seen_ = std::move(shapes);
  throw OutputShapesChanged(name());
}

void ValueShapedLayer::deliver(const std::vector<Tensor>& results, std::vector<Tensor>& outputs) const {
  bool changed = false;
  for (std::size_t k = 0; k < outputs.size(); ++k) changed = changed || results[k].shape() != outputs[k].shape();
  if (changed) {
    std::vector<Shape> shapes;
    for (const Tensor& t : results) shapes.push_back(t.shape());
    replan(std::move(shapes));
  }
  for (std::size_t k = 0; k < outputs.size(); ++k) outputs[k].copy_from(results[k]);
}

ControlFlowLayer::ControlFlowLayer(const LayerSpec& spec, const std::vector<std::string>& roles)
    : ValueShapedLayer(spec), roles_(roles), subnets_(roles.size()) {
  for (const std::string& role : roles) {
    const Subgraph* found = this->spec().find_subgraph(role);
    if (found == nullptr) fail_model("subgraph '" + role + "' is missing");
    index_.push_back(static_cast<std::size_t>(found - this->spec().subgraphs.data()));
    within(describe("subgraph '" + role + "'"), [&] {
      found->graph.validate();
      return 0;
    });
  }
}

std::string ControlFlowLayer::subgraph_label(std::size_t k) const {
  const std::string& name = subgraph(k).name;
  return "subgraph '" + roles_[k] + "'" + (name.empty() || name == roles_[k] ? "" : " ('" + name + "')");
}

void ControlFlowLayer::bind(SubnetFactory factory) {
  factory_ = std::move(factory);
  for (auto& subnet : subnets_) subnet.reset();
}

Subnet& ControlFlowLayer::subnet(std::size_t k) const {
  if (!subnets_[k]) {
    subnets_[k] = within(describe(subgraph_label(k)), [&] {
      return factory_ ? factory_(subgraph(k)) : make_reference_subnet(subgraph(k));
    });
  }
  return *subnets_[k];
}

std::vector<Shape> ControlFlowLayer::subgraph_shapes(std::size_t k, const std::vector<Shape>& inputs) const {
  return within(describe(subgraph_label(k)), [&] { return infer_graph_shapes(subgraph(k), inputs); });
}


void ControlFlowLayer::expect_subgraph_inputs(std::size_t k, std::size_t count) const {
  if (subgraph(k).inputs.size() != count) {
    fail_model(subgraph_label(k) + " takes " + std::to_string(subgraph(k).inputs.size()) +
               " inputs, should take " + std::to_string(count));
  }
}

void ControlFlowLayer::expect_subgraph_outputs(std::size_t k, std::size_t count) const {
  if (subgraph(k).outputs.size() != count) {
    fail_model(subgraph_label(k) + " gives " + std::to_string(subgraph(k).outputs.size()) +
               " outputs, should give " + std::to_string(count));
  }
}

// ---- If -----------------------------------------------------------------------------------------

const LayerSchema& IfLayer::schema() {
  static const LayerSchema schema{
      .attributes = {},
      .weights = "–",
      .notes = "then_branch and else_branch each take the inputs after the condition; inputs: condition (one "
               "value, true when not 0), captured values; inference only",
      .subgraphs = {"then_branch", "else_branch"},
  };
  return schema;
}

IfLayer::IfLayer(const LayerSpec& spec) : ControlFlowLayer(spec, {"then_branch", "else_branch"}) {
  if (spec.inputs.empty()) fail_model("needs the condition as its first input");
  captured_ = spec.inputs.size() - 1;
  for (std::size_t k = 0; k < 2; ++k) {
    expect_subgraph_inputs(k, captured_);
    expect_subgraph_outputs(k, spec.outputs.size());
  }
}

std::vector<Shape> IfLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, captured_ + 1, captured_ + 1);
  if (inputs[0].numel() != 1) fail_shape("the condition should hold one value, has shape " + inputs[0].str());
  const std::vector<Shape> rest(inputs.begin() + 1, inputs.end());
  // A branch that cannot take these shapes is only an error if it is chosen at run time. Where the
  // branches disagree, or a nested layer made other shapes than inferred, the last run's shapes hold
  // (the executor plans again when a run makes others).
  std::vector<Shape> shapes;
  try {
    shapes = subgraph_shapes(0, rest);
  } catch (const ShapeError&) {
    shapes = subgraph_shapes(1, rest);
  }
  std::vector<Shape> out;
  for (std::size_t k = 0; k < shapes.size(); ++k) out.push_back(remembered(k, shapes[k]));
  return out;
}

void IfLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const std::size_t branch = truth(inputs[0]) ? 0 : 1;
  const std::vector<Tensor> rest(inputs.begin() + 1, inputs.end());
  const std::vector<Tensor> results =
      within(describe(subgraph_label(branch)), [&] { return subnet(branch).run(rest); });
  deliver(results, outputs);
}

// ---- Loop ---------------------------------------------------------------------------------------

const LayerSchema& LoopLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              flag("has_trip_count", true),
              flag("has_condition", true),
              {.name = "carried", .type = AttrType::integer, .fallback = std::int64_t{0}, .min = 0},
          },
      .weights = "–",
      .notes = "body: (iteration, condition, carried..., captured... → condition, carried..., "
               "scans...); inputs: [trip count] [condition] carried... captured...; outputs: final "
               "carried..., stacked scans...; at most Limits::max_loop_iterations; inference only",
      .subgraphs = {"body"},
  };
  return schema;
}

LoopLayer::LoopLayer(const LayerSpec& spec) : ControlFlowLayer(spec, {"body"}) {
  has_trip_count_ = spec.attrs.require_int("has_trip_count") != 0;
  has_condition_ = spec.attrs.require_int("has_condition") != 0;
  carried_ = static_cast<std::size_t>(spec.attrs.require_int("carried"));
  if (!has_trip_count_ && !has_condition_)
    fail_model("has neither a trip count nor a condition input: it would never end");
  const std::size_t prefix = (has_trip_count_ ? 1 : 0) + (has_condition_ ? 1 : 0);
  if (spec.inputs.size() < prefix + carried_) {
    fail_model("takes " + std::to_string(prefix + carried_) + " inputs at least (trip count, condition, " +
               std::to_string(carried_) + " carried), has " + std::to_string(spec.inputs.size()));
  }
  captured_ = spec.inputs.size() - prefix - carried_;
  if (spec.outputs.size() < carried_)
    fail_model("gives " + std::to_string(spec.outputs.size()) + " outputs, fewer than its carried values");
  scans_ = spec.outputs.size() - carried_;
  expect_subgraph_inputs(0, 2 + carried_ + captured_);
  expect_subgraph_outputs(0, 1 + carried_ + scans_);
  for (std::size_t i = 0; i < 2; ++i) {
    if (subgraph(0).inputs[i].shape.numel() != 1) {
      fail_model("the body's " + std::string(i == 0 ? "iteration" : "condition") + " input should hold one value");
    }
  }
}

std::vector<Shape> LoopLayer::output_shapes(const std::vector<Shape>& inputs) const {
  const std::size_t prefix = (has_trip_count_ ? 1 : 0) + (has_condition_ ? 1 : 0);
  expect_inputs(inputs, prefix + carried_ + captured_, prefix + carried_ + captured_);
  for (std::size_t i = 0; i < prefix; ++i) {
    if (inputs[i].numel() != 1) fail_shape("input " + std::to_string(i) + " should hold one value, has shape " + inputs[i].str());
  }
  std::vector<Shape> body_in{subgraph(0).inputs[0].shape, subgraph(0).inputs[1].shape};
  body_in.insert(body_in.end(), inputs.begin() + static_cast<std::ptrdiff_t>(prefix), inputs.end());
  const std::vector<Shape> body_out = subgraph_shapes(0, body_in);
  std::vector<Shape> out;
  // A carried value whose shape changes from one iteration to the next ends in a shape only a run tells.
  for (std::size_t k = 0; k < carried_; ++k) {
    const Shape& initial = inputs[prefix + k];
    out.push_back(remembered(k, body_out[1 + k] == initial ? initial : body_out[1 + k]));
  }
  // The iteration count is a value: the last run's, else one.
  for (std::size_t j = 0; j < scans_; ++j)
    out.push_back(remembered(carried_ + j, with_axis(body_out[1 + carried_ + j], 0, 1)));
  return out;
}

void LoopLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const std::size_t prefix = (has_trip_count_ ? 1 : 0) + (has_condition_ ? 1 : 0);
  const double trip_count = has_trip_count_ ? static_cast<double>(inputs[0].data<float>()[0]) : 0.0;
  bool condition = has_condition_ ? truth(inputs[has_trip_count_ ? 1 : 0]) : true;
  const std::int64_t limit = limits().max_loop_iterations;
  const Shape iteration_shape = subgraph(0).inputs[0].shape, condition_shape = subgraph(0).inputs[1].shape;

  std::vector<Tensor> carried(inputs.begin() + static_cast<std::ptrdiff_t>(prefix),
                              inputs.begin() + static_cast<std::ptrdiff_t>(prefix + carried_));
  const std::vector<Tensor> captured(inputs.begin() + static_cast<std::ptrdiff_t>(prefix + carried_), inputs.end());
  std::vector<std::vector<float>> scan_values(scans_);
  std::vector<Shape> scan_shapes(scans_);
  std::int64_t iteration = 0;
  const std::string where = describe(subgraph_label(0));
  while ((!has_trip_count_ || static_cast<double>(iteration) < trip_count) && condition) {
    if (iteration >= limit) {
      throw LimitError(describe("ran " + std::to_string(limit) +
                                " iterations and would go on; the limit is Limits::max_loop_iterations"));
    }
    std::vector<Tensor> body_in{Tensor::from(iteration_shape, {static_cast<float>(iteration)}),
                                Tensor::from(condition_shape, {condition ? 1.0f : 0.0f})};
    body_in.insert(body_in.end(), carried.begin(), carried.end());
    body_in.insert(body_in.end(), captured.begin(), captured.end());
    const std::vector<Tensor> results = within(where, [&] { return subnet(0).run(body_in); });
    if (results[0].numel() != 1)
      fail_shape("the body's condition output should hold one value, has shape " + results[0].shape().str());
    if (has_condition_) condition = truth(results[0]);
    // The subnet's outputs live until its next run, which reads them: keep copies.
    for (std::size_t k = 0; k < carried_; ++k) carried[k] = results[1 + k].clone();
    for (std::size_t j = 0; j < scans_; ++j) {
      const Tensor& value = results[1 + carried_ + j];
      if (iteration == 0) {
        scan_shapes[j] = value.shape();
      } else if (value.shape() != scan_shapes[j]) {
        fail_shape("scan output " + std::to_string(j) + " has shape " + value.shape().str() + " in iteration " +
                   std::to_string(iteration) + " but " + scan_shapes[j].str() + " before");
      }
      const std::vector<float> values = value.to_vector();
      scan_values[j].insert(scan_values[j].end(), values.begin(), values.end());
    }
    ++iteration;
  }
  std::vector<Tensor> results = carried;
  for (std::size_t j = 0; j < scans_; ++j) {
    // No iteration ran: the body's shape inference gives the shape of a slice.
    Shape slice = iteration > 0 ? scan_shapes[j] : without_axis(outputs[carried_ + j].shape(), 0);
    results.push_back(Tensor::from(with_axis(slice, 0, iteration), scan_values[j]));
  }
  deliver(results, outputs);
}

// ---- Scan ---------------------------------------------------------------------------------------

const LayerSchema& ScanLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "states", .type = AttrType::integer, .fallback = std::int64_t{0}, .min = 0},
              flag("batched", false),
              {.name = "num_scan_inputs", .type = AttrType::integer, .required = true, .min = 1},
              {.name = "scan_input_axes", .type = AttrType::integers, .default_text = "all 0"},
              {.name = "scan_input_directions", .type = AttrType::integers, .min = 0, .max = 1, .default_text = "all 0"},
              {.name = "scan_output_axes", .type = AttrType::integers, .default_text = "all 0"},
              {.name = "scan_output_directions", .type = AttrType::integers, .min = 0, .max = 1, .default_text = "all 0"},
          },
      .weights = "–",
      .notes = "body: (states..., slices..., captured... → states..., scan slices...); inputs: "
               "states..., scan inputs..., captured...; directions 1 run from the end; batched (ONNX Scan-8): "
               "states and scan inputs have a batch axis 0, scanned one item at a time; inference only",
      .subgraphs = {"body"},
  };
  return schema;
}

ScanLayer::ScanLayer(const LayerSpec& spec) : ControlFlowLayer(spec, {"body"}) {
  states_ = static_cast<std::size_t>(spec.attrs.require_int("states"));
  batched_ = spec.attrs.require_int("batched") != 0;
  scan_inputs_ = static_cast<std::size_t>(spec.attrs.require_int("num_scan_inputs"));
  if (spec.inputs.size() < states_ + scan_inputs_) {
    fail_model("takes " + std::to_string(states_ + scan_inputs_) + " inputs at least (" + std::to_string(states_) +
               " states, " + std::to_string(scan_inputs_) + " scan inputs), has " + std::to_string(spec.inputs.size()));
  }
  captured_ = spec.inputs.size() - states_ - scan_inputs_;
  if (spec.outputs.size() < states_) fail_model("gives fewer outputs than its states");
  scan_outputs_ = spec.outputs.size() - states_;
  expect_subgraph_inputs(0, states_ + scan_inputs_ + captured_);
  expect_subgraph_outputs(0, states_ + scan_outputs_);
  auto read = [&](const char* name, std::size_t count) {
    std::vector<std::int64_t> values = spec.attrs.get_ints(name, std::vector<std::int64_t>(count, 0));
    if (values.size() != count) {
      fail_model(std::string("attribute '") + name + "' has " + std::to_string(values.size()) + " values for " +
                 std::to_string(count));
    }
    return values;
  };
  for (std::int64_t a : read("scan_input_axes", scan_inputs_)) input_axes_.push_back(static_cast<int>(a));
  for (std::int64_t a : read("scan_output_axes", scan_outputs_)) output_axes_.push_back(static_cast<int>(a));
  for (std::int64_t d : read("scan_input_directions", scan_inputs_)) input_reversed_.push_back(d != 0);
  for (std::int64_t d : read("scan_output_directions", scan_outputs_)) output_reversed_.push_back(d != 0);
}

std::int64_t ScanLayer::sequence_length(const std::vector<Shape>& inputs) const {
  std::int64_t length = -1;
  for (std::size_t j = 0; j < scan_inputs_; ++j) {
    const Shape& shape = inputs[states_ + j];
    const int axis = input_axes_[j] < 0 ? input_axes_[j] + shape.rank() : input_axes_[j];
    if (axis < 0 || axis >= shape.rank())
      fail_shape("scan axis " + std::to_string(input_axes_[j]) + " is outside scan input " + std::to_string(j) +
                 " of shape " + shape.str());
    if (length >= 0 && shape[axis] != length)
      fail_shape("scan inputs have different lengths (" + std::to_string(length) + " and " +
                 std::to_string(shape[axis]) + ")");
    length = shape[axis];
  }
  return length;
}

std::vector<Shape> ScanLayer::body_inputs(const std::vector<Shape>& inputs) const {
  std::vector<Shape> body(inputs.begin(), inputs.begin() + static_cast<std::ptrdiff_t>(states_));
  for (std::size_t j = 0; j < scan_inputs_; ++j) {
    const Shape& shape = inputs[states_ + j];
    body.push_back(without_axis(shape, input_axes_[j] < 0 ? input_axes_[j] + shape.rank() : input_axes_[j]));
  }
  body.insert(body.end(), inputs.begin() + static_cast<std::ptrdiff_t>(states_ + scan_inputs_), inputs.end());
  return body;
}

std::vector<Shape> ScanLayer::output_shapes(const std::vector<Shape>& inputs) const {
  const std::size_t count = states_ + scan_inputs_ + captured_;
  expect_inputs(inputs, count, count);
  if (!batched_) return item_shapes(inputs);
  const std::int64_t batch = batch_size(inputs);
  std::vector<Shape> items = inputs;
  for (std::size_t i = 0; i < states_ + scan_inputs_; ++i) items[i] = without_axis(inputs[i], 0);
  std::vector<Shape> out;
  for (const Shape& shape : item_shapes(items)) out.push_back(with_axis(shape, 0, batch));
  return out;
}

std::int64_t ScanLayer::batch_size(const std::vector<Shape>& inputs) const {
  std::int64_t batch = -1;
  for (std::size_t i = 0; i < states_ + scan_inputs_; ++i) {
    if (inputs[i].rank() == 0) fail_shape("input " + std::to_string(i) + " has no batch axis");
    if (batch >= 0 && inputs[i][0] != batch)
      fail_shape("inputs have different batch sizes (" + std::to_string(batch) + " and " +
                 std::to_string(inputs[i][0]) + ")");
    batch = inputs[i][0];
  }
  return batch;
}

std::vector<Shape> ScanLayer::item_shapes(const std::vector<Shape>& inputs) const {
  const std::int64_t length = sequence_length(inputs);
  const std::vector<Shape> body_out = subgraph_shapes(0, body_inputs(inputs));
  std::vector<Shape> out;
  for (std::size_t k = 0; k < states_; ++k) {
    if (body_out[k] != inputs[k])
      fail_shape("the body turns state " + std::to_string(k) + " of shape " + inputs[k].str() + " into " +
                 body_out[k].str());
    out.push_back(inputs[k]);
  }
  for (std::size_t j = 0; j < scan_outputs_; ++j) {
    const Shape& slice = body_out[states_ + j];
    const int axis = output_axes_[j] < 0 ? output_axes_[j] + slice.rank() + 1 : output_axes_[j];
    if (axis < 0 || axis > slice.rank())
      fail_shape("scan output axis " + std::to_string(output_axes_[j]) + " is outside rank " +
                 std::to_string(slice.rank() + 1));
    out.push_back(with_axis(slice, axis, length));
  }
  return out;
}

void ScanLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  if (!batched_) {
    scan_item(inputs, outputs);
    return;
  }
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  const std::int64_t batch = batch_size(shapes);
  std::vector<Tensor> items = inputs;
  std::vector<Tensor> results;
  for (const Tensor& y : outputs) results.push_back(Tensor::zeros(without_axis(y.shape(), 0)));
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::size_t i = 0; i < states_ + scan_inputs_; ++i) {
      items[i] = Tensor::zeros(without_axis(inputs[i].shape(), 0));
      take_slice(inputs[i], 0, b, items[i]);
    }
    scan_item(items, results);
    for (std::size_t k = 0; k < outputs.size(); ++k) put_slice(results[k], 0, b, outputs[k]);
  }
}

void ScanLayer::scan_item(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs) shapes.push_back(t.shape());
  const std::int64_t length = sequence_length(shapes);
  const std::vector<Shape> body_shapes = body_inputs(shapes);
  std::vector<Tensor> body_in(inputs.begin(), inputs.begin() + static_cast<std::ptrdiff_t>(states_));
  for (std::size_t j = 0; j < scan_inputs_; ++j) body_in.push_back(Tensor::zeros(body_shapes[states_ + j]));
  body_in.insert(body_in.end(), inputs.begin() + static_cast<std::ptrdiff_t>(states_ + scan_inputs_), inputs.end());
  const std::string where = describe(subgraph_label(0));
  for (std::int64_t t = 0; t < length; ++t) {
    for (std::size_t j = 0; j < scan_inputs_; ++j) {
      const Tensor& x = inputs[states_ + j];
      const int axis = input_axes_[j] < 0 ? input_axes_[j] + x.shape().rank() : input_axes_[j];
      take_slice(x, axis, input_reversed_[j] ? length - 1 - t : t, body_in[states_ + j]);
    }
    const std::vector<Tensor> results = within(where, [&] { return subnet(0).run(body_in); });
    for (std::size_t k = 0; k < states_; ++k) {
      if (results[k].shape() != inputs[k].shape())
        fail_shape("the body turned state " + std::to_string(k) + " into shape " + results[k].shape().str());
      body_in[k] = results[k].clone();
    }
    for (std::size_t j = 0; j < scan_outputs_; ++j) {
      Tensor& y = outputs[states_ + j];
      const int axis = output_axes_[j] < 0 ? output_axes_[j] + y.shape().rank() : output_axes_[j];
      if (results[states_ + j].shape() != without_axis(y.shape(), axis))
        fail_shape("scan output " + std::to_string(j) + " came out in shape " + results[states_ + j].shape().str());
      put_slice(results[states_ + j], axis, output_reversed_[j] ? length - 1 - t : t, y);
    }
  }
  for (std::size_t k = 0; k < states_; ++k) outputs[k].copy_from(body_in[k]);
}

}  // namespace espresso
