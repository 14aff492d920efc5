// `espresso pull REF`: a model into the local cache, verified; resumes an interrupted download.
#include <cstdio>
#include <memory>
#include <vector>
#include <nlohmann/json.hpp>

#include "common.h"
#include "store_common.h"

namespace espresso::cli {
namespace {

struct PullOptions {
  std::string reference;
  std::vector<std::string> trust;
  std::vector<std::string> trust_roots;
  bool json = false;
};

int run_pull(const PullOptions& o) {
  const store::Reference ref = parse_reference(o.reference);
  store::ClientOptions options = store_client_options(o.json);
  for (const std::string& key : o.trust) options.trusted_keys.emplace_back(key);
  for (const std::string& key : o.trust_roots) options.trust_roots.emplace_back(key);
  store::Client client(options);
  const store::PullResult r = client.pull(ref);
  if (o.json) {
    std::printf("%s\n", nlohmann::json({{"reference", ref.str()},
                                        {"tag", r.tag},
                                        {"digest", r.manifest_digest},
                                        {"package", r.package.string()},
                                        {"bytes_downloaded", r.bytes_downloaded},
                                        {"from_cache", r.from_cache},
                                        {"signed_by", r.signed_by},
                                        {"trust_version", r.trust_version}})
                            .dump()
                            .c_str());
  } else {
    if (!ref.range.empty()) std::printf("%s resolves to tag %s\n", ref.str().c_str(), r.tag.c_str());
    std::printf("%s %s@%s -> %s (%s)\n", r.from_cache ? "cached" : "pulled", ref.str().c_str(),
                r.manifest_digest.c_str(), r.package.c_str(),
                r.from_cache ? "nothing downloaded" : (human_bytes(r.bytes_downloaded) + " downloaded").c_str());
    if (!r.signed_by.empty()) std::printf("signature verified: key %s\n", r.signed_by.c_str());
    if (r.trust_version > 0) std::printf("vouched for by signed targets metadata version %lld\n", static_cast<long long>(r.trust_version));
  }
  return 0;
}

}  // namespace

Verb add_pull_verb(CLI::App& app) {
  auto o = std::make_shared<PullOptions>();
  CLI::App* command = app.add_subcommand("pull", "Download a model from a registry into the local cache");
  command->add_option("reference", o->reference, "REGISTRY/NAME[:VERSION|:RANGE|@sha256:...] (RANGE: ^1.2, ~1.2.3, >=1.0,<2)")->required();
  command->add_option("--trust", o->trust, "Require a signature by this public key (repeatable; also ESPRESSO_TRUSTED_KEYS)");
  command->add_option("--trust-root", o->trust_roots,
                      "Check the repository's trust metadata, rooted in this public key (repeatable; ESPRESSO_TRUST_ROOTS)");
  command->add_flag("--json", o->json, "Print the result as JSON");
  return {command, [o] { return run_pull(*o); }};
}

}  // namespace espresso::cli
