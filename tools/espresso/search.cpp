// `espresso search [TEXT]` and `espresso show REF`: our registry's catalog API.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "common.h"
#include "store_common.h"

namespace espresso::cli {
namespace {

struct SearchOptions {
  std::string registry;
  store::SearchQuery query;
  bool json = false;
};

std::string text_of(const nlohmann::json& object, const char* key) {
  return object.contains(key) && object[key].is_string() ? object[key].get<std::string>() : std::string();
}

int run_search(SearchOptions o) {
  if (o.registry.empty()) o.registry = default_registry();
  if (o.registry.empty()) throw StoreError("search: no registry: give --registry or set ESPRESSO_REGISTRY");
  store::Client client(store_client_options(true));
  const std::string answer = client.search(o.registry, o.query);
  if (o.json) {
    std::printf("%s\n", answer.c_str());
    return 0;
  }
  const nlohmann::json result = nlohmann::json::parse(answer, nullptr, false);
  if (!result.is_object() || !result.contains("models")) throw StoreError("search: the registry's answer is not a model list");
  std::printf("%-32s %-10s %-16s %10s  %s\n", "NAME", "VERSION", "TASK", "SIZE", "DESCRIPTION");
  for (const auto& m : result["models"]) {
    std::printf("%-32s %-10s %-16s %10s  %s\n", text_of(m, "name").c_str(), text_of(m, "version").c_str(),
                text_of(m, "task").c_str(), human_bytes(m.value("size_bytes", std::uint64_t{0})).c_str(),
                text_of(m, "description").c_str());
  }
  if (result.contains("next_cursor") && result["next_cursor"].is_string())
    std::printf("more: --cursor %s\n", result["next_cursor"].get<std::string>().c_str());
  return 0;
}

struct ShowOptions {
  std::string reference;
  bool json = false;
};

int run_show(const ShowOptions& o) {
  const store::Reference ref = parse_reference(o.reference);
  store::Client client(store_client_options(true));
  const std::string answer = client.show(ref);
  if (o.json) {
    std::printf("%s\n", answer.c_str());
    return 0;
  }
  const nlohmann::json model = nlohmann::json::parse(answer, nullptr, false);
  if (!model.is_object() || !model.contains("card")) throw StoreError("show: the registry's answer is not a model");
  const nlohmann::json& card = model["card"];
  std::printf("name:        %s\n", text_of(model, "name").c_str());
  std::printf("latest:      %s (%s)\n", text_of(model, "latest").c_str(), text_of(model, "digest").c_str());
  for (const char* key : {"description", "task", "license", "author", "created"}) {
    if (!text_of(card, key).empty()) std::printf("%-12s %s\n", (std::string(key) + ":").c_str(), text_of(card, key).c_str());
  }
  if (card.contains("size_bytes")) std::printf("size:        %s\n", human_bytes(card["size_bytes"].get<std::uint64_t>()).c_str());
  if (card.contains("params")) std::printf("parameters:  %s\n", with_commas(card["params"].get<std::int64_t>()).c_str());
  if (card.contains("flops") && card["flops"].is_number())
    std::printf("FLOPs/image: %s\n", si(card["flops"].get<double>(), "FLOP").c_str());
  if (card.contains("preprocessing") && card["preprocessing"].is_object()) {
    const nlohmann::json& pre = card["preprocessing"];
    std::string line = "scale " + pre.value("scale", nlohmann::json(1.0)).dump();
    if (pre.contains("mean") && !pre["mean"].empty()) line += ", mean " + pre["mean"].dump();
    if (pre.contains("size") && pre["size"].size() == 2)
      line += ", size " + pre["size"][0].dump() + "x" + pre["size"][1].dump();
    line += ", " + pre.value("channel_order", std::string("bgr"));
    std::printf("preprocessing: %s\n", line.c_str());
  }
  if (card.contains("metrics"))
    for (const auto& [key, value] : card["metrics"].items()) std::printf("metric:      %s = %s\n", key.c_str(), value.dump().c_str());
  std::printf("versions:\n");
  for (const auto& v : model["versions"]) std::printf("  %-12s %s\n", text_of(v, "version").c_str(), text_of(v, "digest").c_str());
  return 0;
}

}  // namespace

Verb add_search_verb(CLI::App& app) {
  auto o = std::make_shared<SearchOptions>();
  CLI::App* command = app.add_subcommand("search", "Search a registry's model catalog (our server's API)");
  command->add_option("text", o->query.text, "Words to match in names, descriptions, tasks and labels");
  command->add_option("--registry", o->registry, "host[:port] (default: ESPRESSO_REGISTRY)");
  command->add_option("--task", o->query.task, "Only models for this task");
  command->add_option("--license", o->query.license, "Only models under this licence");
  command->add_option("--max-bytes", o->query.max_bytes, "Only packages up to this size");
  command->add_option("--min-accuracy", o->query.min_accuracy, "Only models whose best accuracy metric reaches this");
  command->add_option("--sort", o->query.sort, "relevance, name, updated or size")
      ->check(CLI::IsMember({"relevance", "name", "updated", "size"}));
  command->add_option("--limit", o->query.limit, "Results per page (1-100)")->check(CLI::Range(1, 100));
  command->add_option("--cursor", o->query.cursor, "Continue after a previous page");
  command->add_flag("--json", o->json, "Print the registry's JSON answer");
  return {command, [o] { return run_search(*o); }};
}

Verb add_show_verb(CLI::App& app) {
  auto o = std::make_shared<ShowOptions>();
  CLI::App* command = app.add_subcommand("show", "Show a model's card and versions from a registry");
  command->add_option("reference", o->reference, "REGISTRY/NAME")->required();
  command->add_flag("--json", o->json, "Print the registry's JSON answer");
  return {command, [o] { return run_show(*o); }};
}

}  // namespace espresso::cli
