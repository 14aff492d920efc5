// `espresso cache list|verify|prune`: the local model cache ($ESPRESSO_CACHE).
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "common.h"
#include "store_common.h"

namespace espresso::cli {
namespace {

struct CacheOptions {
  bool fix = false;
  bool json = false;
};

int run_list(const CacheOptions& o) {
  store::Client client(store_client_options(true));
  const auto entries = client.cache_list();
  if (o.json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& e : entries) list.push_back({{"reference", e.reference}, {"digest", e.manifest_digest}, {"bytes", e.bytes}});
    std::printf("%s\n", list.dump().c_str());
    return 0;
  }
  for (const auto& e : entries)
    std::printf("%-48s %s %10s\n", e.reference.c_str(), e.manifest_digest.c_str(), human_bytes(e.bytes).c_str());
  std::printf("%zu model(s) in %s\n", entries.size(), store::client_options_from_env().cache.c_str());
  return 0;
}

int run_verify(const CacheOptions& o) {
  store::Client client(store_client_options(true));
  const store::CacheReport report = client.cache_verify(o.fix);
  if (o.json) {
    std::printf("%s\n", nlohmann::json({{"checked", report.checked}, {"bytes", report.bytes}, {"bad", report.bad}}).dump().c_str());
  } else {
    for (const std::string& bad : report.bad)
      std::printf("BAD %s (does not match its digest%s)\n", bad.c_str(), o.fix ? "; removed" : "");
    std::printf("%zu blob(s), %s checked: %zu bad\n", report.checked, human_bytes(report.bytes).c_str(), report.bad.size());
  }
  if (!report.bad.empty() && !o.fix) throw IntegrityError(std::to_string(report.bad.size()) + " cached blob(s) do not match their digest (run espresso cache verify --fix)");
  return 0;
}

int run_prune() {
  store::Client client(store_client_options(true));
  std::printf("freed %s\n", human_bytes(client.cache_prune()).c_str());
  return 0;
}

}  // namespace

Verb add_cache_verb(CLI::App& app) {
  auto o = std::make_shared<CacheOptions>();
  CLI::App* command = app.add_subcommand("cache", "The local model cache: list, verify, prune");
  command->require_subcommand(1);
  CLI::App* list = command->add_subcommand("list", "Cached models");
  list->add_flag("--json", o->json, "JSON output");
  CLI::App* verify = command->add_subcommand("verify", "Hash every cached blob");
  verify->add_flag("--fix", o->fix, "Remove blobs that do not match their digest");
  verify->add_flag("--json", o->json, "JSON output");
  CLI::App* prune = command->add_subcommand("prune", "Remove partial downloads and blobs no cached model uses");
  return {command, [o, list, verify, prune] {
            if (list->parsed()) return run_list(*o);
            if (verify->parsed()) return run_verify(*o);
            (void)prune;
            return run_prune();
          }};
}

}  // namespace espresso::cli
