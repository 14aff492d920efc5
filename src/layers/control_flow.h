// Control flow: layers that own nested graphs (If, Loop, Scan; docs/control_flow.md). A subgraph reads
// outer values only through its own inputs, which the layer feeds from its inputs, so each subgraph is
// an ordinary Graph and the executor, planner and backends need nothing new for them. The subgraphs are
// the layer spec's own (LayerSpec::subgraphs), by role.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "layers/layer.h"

namespace espresso {

// A subgraph made runnable: CPU f32 tensors in the subgraph's input order in, its outputs in order out.
// Tensors returned stay valid until the next run().
class Subnet {
 public:
  virtual ~Subnet() = default;
  virtual std::vector<Tensor> run(const std::vector<Tensor>& inputs) = 0;
};

// Makes the runnable form of a subgraph. The reference (make_reference_subnet) runs its layers'
// reference kernels one by one; Net binds one that plans each subgraph as a Net of its own.
using SubnetFactory = std::function<std::unique_ptr<Subnet>(const Graph& graph)>;
std::unique_ptr<Subnet> make_reference_subnet(const Graph& graph);

// The output shapes of `graph` for these input shapes (its layers' shape inference, subgraphs
// included). Throws what the layers throw.
std::vector<Shape> infer_graph_shapes(const Graph& graph, const std::vector<Shape>& inputs);

// Thrown from forward() by a control-flow layer whose outputs came out in other shapes than the plan
// gave them (an If whose branches disagree, a Loop's scan outputs, which grow with the iteration
// count). The layer has remembered the shapes it made, and its output_shapes() gives them from now on:
// the executor plans again and runs the forward pass once more. Never leaves the executor.
class OutputShapesChanged : public std::exception {
 public:
  explicit OutputShapesChanged(std::string layer) : message_("layer '" + std::move(layer) + "' changed its output shapes") {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// A layer some of whose output shapes follow from input values, not from input shapes alone (control
// flow, DynamicSlice). output_shapes() gives the shapes the last run made (remembered(), a guess before any
// run); a run that makes others calls replan(), which remembers them and throws OutputShapesChanged.
class ValueShapedLayer : public Layer {
 public:
  using Layer::Layer;

 protected:
  // Output k's shape when it depends on values: the shape the last forward() made, else `guess`.
  Shape remembered(std::size_t k, const Shape& guess) const;
  // Remembers `shapes` as the outputs' and throws OutputShapesChanged.
  [[noreturn]] void replan(std::vector<Shape> shapes) const;
  // Copies `results` into `outputs`; replan() when a shape differs from the planned one.
  void deliver(const std::vector<Tensor>& results, std::vector<Tensor>& outputs) const;

 private:
  mutable std::vector<Shape> seen_;  // output shapes of the last forward()
};

class ControlFlowLayer : public ValueShapedLayer {
 public:
  // Checks the spec's subgraphs of these roles, which subgraph(0), subgraph(1), ... then give.
  ControlFlowLayer(const LayerSpec& spec, const std::vector<std::string>& roles);
  // Runs the subgraphs through `factory` from now on (the executor's faster subnets).
  void bind(SubnetFactory factory);

 protected:
  const Graph& subgraph(std::size_t k) const { return spec().subgraphs[index_[k]].graph; }
  Subnet& subnet(std::size_t k) const;
  // "subgraph 'body'" (and the graph's own name where it has another), for messages.
  std::string subgraph_label(std::size_t k) const;
  // Shapes of subgraph k's outputs for these input shapes; ShapeError naming this layer and the subgraph.
  std::vector<Shape> subgraph_shapes(std::size_t k, const std::vector<Shape>& inputs) const;
  // ModelError naming this layer unless subgraph k declares `count` inputs (outputs).
  void expect_subgraph_inputs(std::size_t k, std::size_t count) const;
  void expect_subgraph_outputs(std::size_t k, std::size_t count) const;

 private:
  // Where subgraph k lies in spec().subgraphs, and its role.
  std::vector<std::size_t> index_;
  std::vector<std::string> roles_;
  SubnetFactory factory_;
  mutable std::vector<std::unique_ptr<Subnet>> subnets_;
};

}  // namespace espresso
