// Runs ONNX backend tests (model.onnx + test_data_set_*/{input,output}_*.pb) through load_onnx and Net.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "espresso/errors.h"
#include "espresso/net.h"
#include "espresso/onnx.h"
#include "import/onnx/onnx_tensor.h"

namespace espresso {
namespace {

namespace fs = std::filesystem;

onnx::ModelProto read_model(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw FileError(path + ": cannot open the ONNX model");
  onnx::ModelProto model;
  if (!model.ParseFromIstream(&file))
    throw ParseError(path + ": not a valid ONNX model (truncated or corrupt protobuf)");
  return model;
}

std::vector<fs::path> sorted_files(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind(prefix, 0) == 0) files.push_back(entry.path());
  }
  // input_10 comes after input_9.
  std::sort(files.begin(), files.end(), [&](const fs::path& a, const fs::path& b) {
    const std::string sa = a.filename().string(), sb = b.filename().string();
    return sa.size() != sb.size() ? sa.size() < sb.size() : sa < sb;
  });
  return files;
}

void run_test(const fs::path& dir, const OnnxConformanceOptions& options, OnnxTestResult& result) {
  const std::string model_path = (dir / "model.onnx").string();
  const onnx::ModelProto model = read_model(model_path);
  // The operators of the graph and of every subgraph (If, Loop, Scan bodies) in it.
  const auto collect = [&result](const onnx::GraphProto& graph, const auto& self) -> void {
    for (const auto& node : graph.node()) {
      if (std::find(result.op_types.begin(), result.op_types.end(), node.op_type()) == result.op_types.end()) {
        result.op_types.push_back(node.op_type());
      }
      for (const auto& attribute : node.attribute()) {
        if (attribute.has_g()) self(attribute.g(), self);
        for (const auto& g : attribute.graphs()) self(g, self);
      }
    }
  };
  collect(model.graph(), collect);
  std::set<std::string> initializers;
  for (const auto& init : model.graph().initializer()) initializers.insert(init.name());
  // Sequence, optional and map values: their test data files are no TensorProtos, so say so before
  // reading them as such.
  const auto require_tensor = [&](const onnx::ValueInfoProto& value, const char* role) {
    if (value.type().has_tensor_type() || initializers.count(value.name())) return;
    throw UnsupportedError(model_path + ": graph " + role + " '" + value.name() + "' is " +
                           (value.type().has_sequence_type() ? "a sequence" : "not a tensor (an optional or a map)") +
                           "; espresso runs tensors only");
  };
  for (const auto& input : model.graph().input()) require_tensor(input, "input");
  for (const auto& output : model.graph().output()) require_tensor(output, "output");
  std::vector<std::string> input_names, output_names;
  for (const auto& input : model.graph().input()) {
    if (!initializers.count(input.name())) input_names.push_back(input.name());
  }
  for (const auto& output : model.graph().output()) output_names.push_back(output.name());

  const std::vector<fs::path> sets = sorted_files(dir, "test_data_set_");
  if (sets.empty()) throw FileError(dir.string() + ": no test_data_set_* folders");
  for (const fs::path& set : sets) {
    const std::vector<fs::path> inputs = sorted_files(set, "input_"), outputs = sorted_files(set, "output_");
    if (inputs.size() != input_names.size() || outputs.size() != output_names.size()) {
      throw UnsupportedError(set.string() +
                             ": data for optional or sequence inputs/outputs is not supported");
    }
    std::map<std::string, Tensor> feed;
    OnnxImportOptions import;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      Tensor t = read_onnx_tensor(inputs[i].string());
      import.input_shapes[input_names[i]] = t.shape();
      import.input_values[input_names[i]] = t;
      feed[input_names[i]] = std::move(t);
    }
    NetOptions net_options;
    net_options.device = options.device;
    Net net(load_onnx(model_path, import), net_options);
    net.forward(feed);
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      const Tensor expected = read_onnx_tensor(outputs[i].string());
      const Tensor got = net.tensor(output_names[i]).to(Device::cpu());
      if (got.shape() != expected.shape()) {
        result.status = OnnxTestStatus::fail;
        result.detail = "output '" + output_names[i] + "' has shape " + got.shape().str() + ", expected " +
                        expected.shape().str();
        return;
      }
      const std::vector<float> g = got.to_vector(), e = expected.to_vector();
      bool close = true;
      double output_error = 0, output_scale = 0;
      for (std::size_t k = 0; k < g.size(); ++k) {
        const double diff = std::abs(static_cast<double>(g[k]) - e[k]);
        const bool both_nan = std::isnan(g[k]) && std::isnan(e[k]);
        const bool same_infinity = std::isinf(g[k]) && g[k] == e[k];
        if (both_nan || same_infinity) continue;
        if (!(diff <= options.atol + options.rtol * std::abs(static_cast<double>(e[k])))) close = false;
        result.max_error = std::max(result.max_error, std::isnan(diff) ? INFINITY : diff);
        output_error = std::max(output_error, std::isnan(diff) ? INFINITY : diff);
        output_scale = std::max(output_scale, std::abs(static_cast<double>(e[k])));
      }
      if (output_scale > 0)
        result.max_relative_error = std::max(result.max_relative_error, output_error / output_scale);
      if (!close) {
        result.status = OnnxTestStatus::fail;
        result.detail = "output '" + output_names[i] + "' differs";
        return;
      }
    }
  }
  result.status = OnnxTestStatus::pass;
}

}  // namespace

Tensor read_onnx_tensor(const std::string& path, std::string* name) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw FileError(path + ": cannot open the tensor file");
  onnx::TensorProto proto;
  if (!proto.ParseFromIstream(&file)) throw ParseError(path + ": not a valid TensorProto");
  if (name) *name = proto.name();
  const std::string dir = fs::path(path).parent_path().string();
  return onnx_detail::decode_tensor(proto, dir.empty() ? "." : dir, path).to_tensor();
}

int OnnxConformanceReport::count(OnnxTestStatus status) const {
  return static_cast<int>(std::count_if(results.begin(), results.end(),
                                        [&](const OnnxTestResult& r) { return r.status == status; }));
}

OnnxConformanceReport run_onnx_conformance(const std::vector<std::string>& dirs,
                                           const OnnxConformanceOptions& options) {
  std::vector<fs::path> tests;
  for (const std::string& dir : dirs) {
    if (fs::exists(fs::path(dir) / "model.onnx")) {
      tests.emplace_back(dir);
      continue;
    }
    if (!fs::is_directory(dir)) throw FileError(dir + ": not a folder of ONNX tests");
    std::vector<fs::path> found;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (fs::exists(entry.path() / "model.onnx")) found.push_back(entry.path());
    }
    std::sort(found.begin(), found.end());
    tests.insert(tests.end(), found.begin(), found.end());
  }
  OnnxConformanceReport report;
  for (const fs::path& dir : tests) {
    OnnxTestResult result;
    result.dir = dir.string();
    try {
      run_test(dir, options, result);
    } catch (const UnsupportedError& e) {
      result.status = OnnxTestStatus::unsupported;
      result.detail = e.what();
    } catch (const Error& e) {
      result.status = OnnxTestStatus::error;
      result.detail = e.what();
    }
    report.results.push_back(std::move(result));
  }
  return report;
}

}  // namespace espresso
