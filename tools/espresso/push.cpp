// `espresso push FILE.esp REGISTRY/NAME:VERSION`: the package, its card and optional README/labels as
// one OCI artifact.
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "common.h"
#include "store_common.h"

namespace espresso::cli {
namespace {

struct PushOptions {
  std::string package;
  std::string reference;
  std::string readme;
  std::string labels;
  std::string sign;
  std::string release_key;
  long long release_ttl = 30LL * 24 * 3600;
  bool json = false;
};

int run_push(const PushOptions& o) {
  const store::Reference ref = parse_reference(o.reference);
  store::Client client(store_client_options(o.json));
  store::PushOptions options{o.readme, o.labels, o.sign, o.release_key, std::chrono::seconds(o.release_ttl)};
  const store::PushResult r = client.push(o.package, ref, options);
  if (o.json) {
    std::printf("%s\n", nlohmann::json({{"reference", ref.str()},
                                        {"digest", r.manifest_digest},
                                        {"bytes_uploaded", r.bytes_uploaded},
                                        {"blobs_uploaded", r.blobs_uploaded},
                                        {"blobs_present", r.blobs_present},
                                        {"signed_by", r.signed_by}})
                            .dump()
                            .c_str());
  } else {
    std::printf("pushed %s@%s (%s uploaded; %d blob(s) sent, %d already there)\n", ref.str().c_str(),
                r.manifest_digest.c_str(), human_bytes(r.bytes_uploaded).c_str(), r.blobs_uploaded, r.blobs_present);
    if (!r.signed_by.empty()) std::printf("signed with key %s\n", r.signed_by.c_str());
  }
  return 0;
}

}  // namespace

Verb add_push_verb(CLI::App& app) {
  auto o = std::make_shared<PushOptions>();
  CLI::App* command = app.add_subcommand("push", "Publish an .esp package to a model registry (OCI)");
  command->add_option("package", o->package, "The .esp package")->required();
  command->add_option("reference", o->reference, "REGISTRY/NAME:VERSION")->required();
  command->add_option("--readme", o->readme, "A README (Markdown) to publish with it");
  command->add_option("--labels", o->labels, "A labels file to publish with it");
  command->add_option("--sign", o->sign, "Sign the release with this secret key (espresso keygen)");
  command->add_option("--release-key", o->release_key,
                      "Add the release to the repository's signed targets metadata with this release key (espresso trust)");
  command->add_option("--release-ttl", o->release_ttl, "Seconds until that targets metadata expires")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command->add_flag("--json", o->json, "Print the result as JSON");
  return {command, [o] { return run_push(*o); }};
}

}  // namespace espresso::cli
