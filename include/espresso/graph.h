// Graph: the one in-memory model. Importers produce it, Net runs it, exporters write it.
// It knows nothing about the file format a model came from.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "espresso/tensor.h"

namespace espresso {

using AttrValue =
    std::variant<std::int64_t, double, std::string, std::vector<std::int64_t>, std::vector<double>>;

// Layer parameters by name. Getters convert ints to floats where asked, and throw ModelError
// naming the attribute when a value has the wrong kind. Names are listed in docs/layers.md.
class Attributes {
 public:
  void set(const std::string& name, AttrValue value) { values_[name] = std::move(value); }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  const std::map<std::string, AttrValue>& all() const { return values_; }

  std::int64_t get_int(const std::string& name, std::int64_t fallback) const;
  double get_float(const std::string& name, double fallback) const;
  std::string get_string(const std::string& name, const std::string& fallback) const;
  // A single int is accepted as a one-element list.
  std::vector<std::int64_t> get_ints(const std::string& name,
                                     const std::vector<std::int64_t>& fallback) const;
  std::vector<double> get_floats(const std::string& name, const std::vector<double>& fallback) const;
  // The same for attributes that must be present: required ones, and those a layer's schema gives a
  // default (the registry fills them in). Throws ModelError naming the attribute when absent.
  std::int64_t require_int(const std::string& name) const;
  double require_float(const std::string& name) const;
  std::string require_string(const std::string& name) const;
  std::vector<std::int64_t> require_ints(const std::string& name) const;
  std::vector<double> require_floats(const std::string& name) const;

 private:
  void require(const std::string& name) const;
  std::map<std::string, AttrValue> values_;
};

// Per-parameter training settings (Caffe's ParamSpec); unused at inference.
struct ParamSpec {
  std::string name;
  float lr_mult = 1.0f;
  float decay_mult = 1.0f;
};

struct Subgraph;  // below: a graph a layer owns (control flow)

struct LayerSpec {
  std::string name;
  std::string type;  // espresso's type name, e.g. "Convolution" (see docs/layers.md)
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  Attributes attrs;
  std::vector<Tensor> weights;  // learned blobs in the layer's documented order
  std::vector<ParamSpec> params;
  // Nested graphs the layer runs (If's then_branch and else_branch, Loop's and Scan's body), each named
  // by its role; the layer type's schema lists the names it takes (docs/control_flow.md). A subgraph
  // reads nothing of the graph around it: what it needs from outside comes in through its inputs.
  std::vector<Subgraph> subgraphs;

  // The subgraph called `role`, or nullptr.
  const Subgraph* find_subgraph(const std::string& role) const;
};

struct InputSpec {
  std::string name;
  Shape shape;  // dimension 0 is the batch
};

// How inputs are prepared, for the tools that feed images: resize to `size` (H, W), subtract `mean`
// per channel, multiply by `scale`, in `channel_order` ("bgr" as Caffe, or "rgb").
struct Preprocessing {
  std::vector<std::int64_t> size;
  double scale = 1.0;
  std::vector<double> mean;
  std::string channel_order = "bgr";
};

// What a model package says about the model; all optional.
struct ModelMetadata {
  std::string name;
  std::string version;
  std::string description;
  std::string task;  // e.g. "classification"
  std::vector<std::string> labels;
  Preprocessing preprocessing;
  std::string license;
  std::string author;
  std::map<std::string, double> metrics;  // e.g. {"mnist_top1": 0.9905}
  std::string source_format;              // "caffe", "onnx", ...
  std::string producer;                   // what wrote the file, where it says (ONNX, .esp); not saved
  std::string created;                    // ISO 8601 UTC
};

struct Graph {
  std::string name;
  std::vector<InputSpec> inputs;
  std::vector<LayerSpec> layers;  // in a valid execution order
  std::vector<std::string> outputs;
  // Source-format names of tensors that were renamed to keep names unique (Caffe's in-place
  // layers write "ip1" again): maps the original name to the latest tensor that carries it.
  std::map<std::string, std::string> aliases;
  ModelMetadata metadata;

  const LayerSpec* find_layer(const std::string& name) const;
  // Checks that every input is produced before use, names are unique and outputs exist, in this graph
  // and in every subgraph of its layers (each its own scope); throws ModelError naming the layers and
  // subgraphs down to the problem. Subgraphs nested deeper than Limits::max_subgraph_depth, and more
  // than Limits::max_layers layers in all the graphs together, are a LimitError.
  void validate() const;
};

// A layer's nested graph and the role it plays for the layer ("then_branch", "body").
struct Subgraph {
  std::string role;
  Graph graph;
};

}  // namespace espresso
