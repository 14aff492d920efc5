// `espresso compress SOLVER -w W.caffemodel --deploy D.prototxt --layers ... -o OUT.esp`: Deep Compression
// (prune with retraining under masks, share weights by k-means with centroid retraining, Huffman-code)
// driven by a Caffe solver file; prints the per-layer table and writes a compressed .esp.
#include <cstdio>
#include <memory>
#include <iostream>
#include <sstream>

#include "common.h"
#include "espresso/compress.h"
#include "espresso/errors.h"

namespace espresso::cli {
namespace {

struct CompressVerbOptions {
  compress::CompressOptions options;
  std::string layers;
  std::string device = "cpu";
  int threads = 0;
  bool verbose = false;
};

// "conv1=0.66:8,ip1=0.08:5": layer=density[:bits].
std::vector<compress::LayerPlan> parse_layers(const std::string& text) {
  std::vector<compress::LayerPlan> plans;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) {
    if (item.empty()) continue;
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw ModelError("--layers: '" + item + "' should be LAYER=DENSITY[:BITS], e.g. ip1=0.08:5");
    }
    compress::LayerPlan plan;
    plan.layer = item.substr(0, eq);
    const std::string rest = item.substr(eq + 1);
    const auto colon = rest.find(':');
    try {
      std::size_t used = 0;
      const std::string density = rest.substr(0, colon);
      plan.density = std::stod(density, &used);
      if (used != density.size()) throw std::invalid_argument(density);
      if (colon != std::string::npos) {
        const std::string bits = rest.substr(colon + 1);
        plan.bits = std::stoi(bits, &used);
        if (used != bits.size()) throw std::invalid_argument(bits);
      }
    } catch (const std::logic_error&) {
      throw ModelError("--layers: '" + item + "' should be LAYER=DENSITY[:BITS], e.g. ip1=0.08:5");
    }
    plans.push_back(plan);
  }
  if (plans.empty()) throw ModelError("--layers: no layer to compress");
  return plans;
}

int run_compress(CompressVerbOptions& o) {
  apply_threads(o.threads);
  o.options.layers = parse_layers(o.layers);
  o.options.device = Device::parse(o.device);
  if (o.verbose) o.options.log = &std::cout;
  const compress::CompressReport report = compress::compress_model(o.options);
  std::fputs(compress::format_report(report).c_str(), stdout);
  std::printf("wrote %s\n", o.options.output.c_str());
  return 0;
}

}  // namespace

Verb add_compress_verb(CLI::App& app) {
  auto o = std::make_shared<CompressVerbOptions>();
  CLI::App* command = app.add_subcommand(
      "compress", "Deep Compression: prune, retrain, share weights, Huffman-code into a compressed .esp");
  command->add_option("solver", o->options.solver, "Solver prototxt for retraining (its test net measures accuracy)")
      ->required();
  command->add_option("-w,--weights", o->options.weights, "The trained caffemodel to compress")->required();
  command->add_option("--deploy", o->options.deploy, "Deploy prototxt for the written package")->required();
  command->add_option("-o,--output", o->options.output, "The compressed .esp to write")->required();
  command->add_option("--layers", o->layers,
                      "Per layer: LAYER=DENSITY[:BITS], comma-separated, e.g. conv1=0.66:8,ip1=0.08:5 "
                      "(DENSITY: fraction kept; BITS: shared-weight index bits, 0 for none)")
      ->required();
  command->add_option("--stages", o->options.prune_stages, "Pruning steps to the target densities")
      ->capture_default_str();
  command->add_option("--prune-iters", o->options.prune_iterations, "Retraining iterations after each pruning step")
      ->capture_default_str();
  command->add_option("--share-iters", o->options.share_iterations, "Retraining iterations of the shared centroids")
      ->capture_default_str();
  command->add_option("--kmeans-iters", o->options.kmeans_iterations, "k-means iterations per layer")
      ->capture_default_str();
  command->add_option("--device", o->device, "cpu, cuda or cuda:N");
  command->add_flag("-v,--verbose", o->verbose, "Show the trainer's log");
  add_threads_option(*command, o->threads);
  return {command, [o] { return run_compress(*o); }};
}

}  // namespace espresso::cli
