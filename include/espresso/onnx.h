// ONNX: loading models into a Graph, writing a Graph as ONNX, and running ONNX's backend tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "espresso/graph.h"
#include "espresso/tensor.h"

namespace espresso {

struct OnnxImportOptions {
  // Values of symbolic dimensions (dim_param) by name; unnamed or unlisted ones get default_dim.
  std::map<std::string, std::int64_t> dims;
  std::int64_t default_dim = 1;
  // Shapes that replace the model's declared input shapes (for example those of test data).
  std::map<std::string, Shape> input_shapes;
  // Values for graph inputs that an operator needs at load time (a Reshape's shape, Slice's
  // starts, Resize's scales...). ONNX's backend tests feed such parameters as inputs; real
  // models give them as initializers or Constant nodes.
  std::map<std::string, Tensor> input_values;
};

// Loads an ONNX model (opsets 1 to 18 of the default domain). Constants, initializers and shape
// computations are folded at load time, so the Graph has fixed input shapes. Throws FileError
// (unreadable file, bad external data), ParseError (corrupt protobuf), UnsupportedError (listing
// every unsupported node at once) or ModelError, each naming the file and the node.
Graph load_onnx(const std::string& path, const OnnxImportOptions& options = {});
// The same from a serialized ModelProto in memory; `name` stands for the file in messages. Tensors with
// external data are refused (they need the model's folder).
Graph load_onnx(std::span<const std::byte> bytes, const std::string& name = "<memory>",
                const OnnxImportOptions& options = {});

// The operators load_onnx understands, sorted.
std::vector<std::string> onnx_supported_ops();

// Reads a serialized TensorProto (a backend test's input_N.pb / output_N.pb) as an f32 tensor;
// integer and double data are converted. `name` receives the tensor's name when given.
Tensor read_onnx_tensor(const std::string& path, std::string* name = nullptr);

// Writes `graph` (weights included) as an ONNX model, IR version 7, opset 13; If, Loop and Scan with
// their subgraphs as graph attributes (docs/control_flow.md). Throws UnsupportedError naming the layer
// (and the layers and subgraph roles above it) when a layer has no ONNX equivalent, FileError when the
// file cannot be written.
void export_onnx(const Graph& graph, const std::string& path);

struct OnnxConformanceOptions {
  Device device = Device::cpu();
  // A value passes when |got − expected| ≤ atol + rtol·|expected| (numpy.allclose).
  double rtol = 1e-3;
  double atol = 1e-5;
};

enum class OnnxTestStatus { pass, fail, unsupported, error };

struct OnnxTestResult {
  std::string dir;
  OnnxTestStatus status = OnnxTestStatus::error;
  double max_error = 0;               // largest |got − expected| over all outputs and data sets
  double max_relative_error = 0;      // per output: max |got − expected| / max |expected|; the largest
  std::string detail;                 // why it failed or was unsupported
  std::vector<std::string> op_types;  // the model's operators
};

struct OnnxConformanceReport {
  std::vector<OnnxTestResult> results;
  int count(OnnxTestStatus status) const;
};

// Runs every ONNX backend test under `dirs`: each is a test folder (model.onnx plus
// test_data_set_*/) or a folder of them.
OnnxConformanceReport run_onnx_conformance(const std::vector<std::string>& dirs,
                                           const OnnxConformanceOptions& options = {});

}  // namespace espresso
