// The model card: what a registry indexes and a user sees before pulling, derived from the package.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "espresso/net.h"
#include "espresso/package.h"
#include "espresso/store.h"

namespace espresso::store {

std::string model_card(const std::filesystem::path& package) {
  return model_card(load_package(package.string()), std::filesystem::file_size(package));
}

std::string model_card(Graph graph, std::uint64_t size_bytes) {
  const ModelMetadata& m = graph.metadata;
  nlohmann::json card = {{"schema", 1},
                         {"name", m.name.empty() ? graph.name : m.name},
                         {"version", m.version},
                         {"description", m.description},
                         {"task", m.task},
                         {"license", m.license},
                         {"author", m.author},
                         {"labels", m.labels},
                         {"metrics", m.metrics},
                         {"source_format", m.source_format},
                         {"created", m.created},
                         {"size_bytes", size_bytes},
                         {"layers", graph.layers.size()}};
  nlohmann::json inputs = nlohmann::json::array();
  for (const InputSpec& input : graph.inputs) {
    nlohmann::json dims = nlohmann::json::array();
    for (std::int64_t i = 0; i < input.shape.rank(); ++i) dims.push_back(input.shape[i]);
    inputs.push_back({{"name", input.name}, {"shape", dims}});
  }
  card["inputs"] = inputs;
  // How an image is turned into the input: resize to size (H, W; empty: the input's own), subtract the
  // per-channel mean, multiply by scale, channels in channel_order.
  card["preprocessing"] = {{"size", m.preprocessing.size},
                           {"mean", m.preprocessing.mean},
                           {"scale", m.preprocessing.scale},
                           {"channel_order", m.preprocessing.channel_order}};
  card["outputs"] = graph.outputs;
  std::int64_t params = 0;
  for (const LayerSpec& layer : graph.layers) {
    for (const Tensor& weight : layer.weights) params += weight.numel();
  }
  card["params"] = params;
  // FLOPs per image come from the planned net; a model this build cannot plan still gets a card.
  try {
    Net net(std::move(graph));
    net.set_batch(1);
    std::int64_t flops = 0;
    for (const LayerSummary& layer : net.summary()) flops += layer.flops;
    card["flops"] = flops;
  } catch (const Error&) {
    card["flops"] = nullptr;
  }
  return card.dump(2);
}

}  // namespace espresso::store
