// `espresso info`: per-layer output shapes, parameters and FLOPs for one image, and the planned
// activation memory.
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common.h"
#include "espresso/package.h"
#include "espresso/trainer.h"
#include "memory_report.h"

namespace espresso::cli {

namespace {

struct InfoOptions {
  ModelOptions model;
  bool training = false;
};

std::string shapes_text(const std::vector<Shape>& shapes) {
  std::string text;
  for (const Shape& shape : shapes) {
    if (!text.empty()) text += ", ";
    text += shape.str();
  }
  return text;
}

// Inputs copied from another device before the layer runs, e.g. " (copies in: conv5)".
std::string copied_text(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& name : names) text += (text.empty() ? " (copies in: " : ", ") + name;
  return text.empty() ? text : text + ")";
}

void print_table(const std::vector<std::vector<std::string>>& rows, const std::vector<bool>& right_align) {
  std::vector<std::size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      const std::string pad(widths[c] - row[c].size(), ' ');
      line += c == 0 ? "" : "  ";
      line += right_align[c] ? pad + row[c] : row[c] + pad;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::cout << line << '\n';
  }
}

// `info SOLVER --training`: the train and test nets as `espresso train` builds them (their data
// sources opened), and what training them holds in memory.
int run_training_info(const InfoOptions& options) {
  train::TrainerOptions trainer_options;
  trainer_options.device = Device::parse(options.model.device);
  trainer_options.write_curve = false;
  std::ostringstream log;  // the trainer's start-up lines
  trainer_options.log = &log;
  train::Trainer trainer(options.model.model, trainer_options);
  for (const std::string& name : trainer.train_net().input_names())
    std::cout << "input " << name << ": " << trainer.train_net().input_shape(name).str() << '\n';
  print_training_memory(trainer.memory(), std::cout);
  return 0;
}

std::string ratio_text(std::uint64_t dense, std::uint64_t stored) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1fx", stored == 0 ? 0.0 : static_cast<double>(dense) / static_cast<double>(stored));
  return text;
}

// "codebook 31 (5-bit), sparse 4-bit gaps, Huffman" or "raw f32".
std::string encoding_text(const PackageTensorInfo& t) {
  if (!t.compressed) return "raw " + t.dtype;
  return "codebook " + std::to_string(t.codebook_size) + " (" + std::to_string(t.index_bits) + "-bit), " +
         (t.gap_bits == 0 ? std::string("dense") : "sparse " + std::to_string(t.gap_bits) + "-bit gaps") + ", " +
         (t.huffman ? "Huffman" : "packed");
}

// How an .esp package stores each tensor: its encoding, stored bytes and ratio to f32.
void print_storage(const std::string& path) {
  const PackageInfo info = read_package_info(path);
  std::vector<std::vector<std::string>> rows = {{"tensor", "shape", "encoding", "entries", "bytes", "f32 bytes", "ratio"}};
  std::uint64_t stored = 0, dense = 0;
  for (const PackageTensorInfo& t : info.tensors) {
    rows.push_back({t.name, Shape(t.shape).str(), encoding_text(t), t.compressed ? with_commas(static_cast<std::int64_t>(t.entries)) : "",
                    with_commas(static_cast<std::int64_t>(t.stored_bytes)), with_commas(static_cast<std::int64_t>(t.decoded_bytes)),
                    ratio_text(t.decoded_bytes, t.stored_bytes)});
    stored += t.stored_bytes;
    dense += t.decoded_bytes;
  }
  std::cout << "\nstorage (format version " << info.format_version << "):\n";
  print_table(rows, {false, false, false, true, true, true, true});
  std::cout << "tensors: " << with_commas(static_cast<std::int64_t>(stored)) << " bytes stored for "
            << with_commas(static_cast<std::int64_t>(dense)) << " bytes of f32 (" << ratio_text(dense, stored)
            << "); file: " << with_commas(static_cast<std::int64_t>(info.file_bytes)) << " bytes ("
            << ratio_text(dense, info.file_bytes) << "), manifest " << with_commas(static_cast<std::int64_t>(info.manifest_bytes))
            << " bytes" << (info.deflated_manifest ? " deflated" : "") << '\n';
}

std::int64_t weight_count(const LayerSpec& layer) {
  std::int64_t count = 0;
  for (const Tensor& w : layer.weights) count += w.numel();
  return count;
}

// The subgraphs of `graph`'s control-flow layers, each under its layer, indented by nesting: role, name,
// inputs with their shapes, outputs, and a table of its layers (their own subgraphs below them).
void print_subgraphs(const Graph& graph, const std::string& indent) {
  for (const LayerSpec& layer : graph.layers) {
    if (layer.subgraphs.empty()) continue;
    std::cout << indent << layer.name << " (" << layer.type << "):\n";
    for (const Subgraph& subgraph : layer.subgraphs) {
      const Graph& g = subgraph.graph;
      std::string inputs;
      for (const InputSpec& input : g.inputs) inputs += (inputs.empty() ? "" : ", ") + input.name + " " + input.shape.str();
      std::string outputs;
      for (const std::string& output : g.outputs) outputs += (outputs.empty() ? "" : ", ") + output;
      std::int64_t params = 0;
      for (const LayerSpec& inner : g.layers) params += weight_count(inner);
      std::cout << indent << "  " << subgraph.role << (g.name.empty() || g.name == subgraph.role ? "" : " '" + g.name + "'")
                << ": " << g.layers.size() << " layers, " << with_commas(params) << " params; inputs "
                << (inputs.empty() ? "none" : inputs) << "; outputs " << (outputs.empty() ? "none" : outputs) << '\n';
      if (g.layers.empty()) continue;
      std::vector<std::vector<std::string>> rows = {{indent + "    layer", "type", "inputs", "outputs", "params"}};
      for (const LayerSpec& inner : g.layers) {
        std::string in, out;
        for (const std::string& name : inner.inputs) in += (in.empty() ? "" : ", ") + name;
        for (const std::string& name : inner.outputs) out += (out.empty() ? "" : ", ") + name;
        rows.push_back({indent + "    " + inner.name, inner.type, in, out, with_commas(weight_count(inner))});
      }
      print_table(rows, {false, false, false, false, true});
      print_subgraphs(g, indent + "    ");
    }
  }
}

int run_info(const InfoOptions& options) {
  if (options.training) return run_training_info(options);
  Net net = open_net(options.model);
  const bool mixed = options.model.precision != "fp32";
  // Figures are per image.
  net.set_batch(1);
  for (const std::string& name : net.input_names()) {
    std::cout << "input " << name << ": " << net.input_shape(name).str() << '\n';
  }
  const std::vector<LayerSummary> layers = net.summary();
  std::vector<std::vector<std::string>> rows = {
      {"layer", "type", "output shape", "params", "FLOPs", "device", "kernel"}};
  if (mixed) rows[0].push_back("precision");
  std::int64_t params = 0, flops = 0;
  int fallbacks = 0;
  for (const LayerSummary& layer : layers) {
    rows.push_back({layer.name, layer.type, shapes_text(layer.output_shapes), with_commas(layer.params),
                    with_commas(layer.flops), layer.device.str(), layer.kernel + copied_text(layer.copied_in)});
    if (mixed) {
      // Why a layer is not in the asked precision: it stays fp32 by design, or has no kernel in it here.
      const std::string why = layer.precision_note == "kept" ? " (kept fp32)"
                              : layer.precision_note == "fallback"
                                  ? " (fallback: no " + options.model.precision + " kernel)"
                                  : "";
      rows.back().push_back(layer.precision + why);
      fallbacks += layer.precision_note == "fallback" ? 1 : 0;
    }
    params += layer.params;
    flops += layer.flops;
  }
  std::cout << '\n';
  print_table(rows, {false, false, false, true, true, false, false, false});
  bool nested = false;
  for (const LayerSpec& layer : net.graph().layers) nested = nested || !layer.subgraphs.empty();
  if (nested) {
    std::cout << "\nsubgraphs (under the layer that runs them; their params are not in the total below):\n";
    print_subgraphs(net.graph(), "  ");
  }
  if (mixed) {
    std::cout << "\nprecision " << options.model.precision << " on " << options.model.device << ": "
              << fallbacks << " layer(s) fell back to fp32\n";
  }

  const MemoryReport memory = net.memory();
  std::cout << "\ntotal: " << with_commas(params) << " params, " << si(static_cast<double>(flops), "FLOP")
            << " (" << si(static_cast<double>(flops) / 2.0, " multiply-adds") << ") per image\n";
  std::cout << "activation memory (batch 1): " << with_commas(static_cast<std::int64_t>(memory.planned_bytes))
            << " bytes planned (" << binary_bytes(memory.planned_bytes) << ") vs "
            << with_commas(static_cast<std::int64_t>(memory.naive_bytes)) << " bytes naive ("
            << binary_bytes(memory.naive_bytes) << ")\n";
  const std::string path = resolve_model(options.model.model);
  if (path.size() > 4 && path.ends_with(".esp")) print_storage(path);
  return 0;
}

}  // namespace

Verb add_info_verb(CLI::App& app) {
  auto options = std::make_shared<InfoOptions>();
  CLI::App* command = app.add_subcommand("info", "Show a model's layers, shapes, parameters and FLOPs");
  add_model_options(*command, options->model);
  add_device_option(*command, options->model);
  add_precision_option(*command, options->model);
  command->add_flag("--training", options->training,
                    "MODEL is a solver prototxt: show what training it holds in memory, planned vs naive "
                    "(docs/training-memory.md)");
  return {command, [options] { return run_info(*options); }};
}

}  // namespace espresso::cli
