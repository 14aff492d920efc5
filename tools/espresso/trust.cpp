// `espresso trust init REF --root-key KEY --release-key PUB` and `espresso trust rotate REF --root-key
// OLD --new-root-key NEW --release-key PUB`: a repository's root trust metadata (docs/store.md, "Trust
// metadata"). Releases enter the signed targets with `push --release-key`.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "espresso/store.h"
#include "store_common.h"

namespace espresso::cli {

namespace {

struct TrustOptions {
  std::string repository;
  std::string root_key;
  std::string new_root_key;
  std::vector<std::string> release_keys;
  int days = 365;
};

std::vector<std::filesystem::path> paths(const std::vector<std::string>& files) { return {files.begin(), files.end()}; }

}  // namespace

Verb add_trust_verb(CLI::App& app) {
  auto o = std::make_shared<TrustOptions>();
  CLI::App* command = app.add_subcommand("trust", "Root trust metadata of a repository (release keys, key rotation)");
  command->require_subcommand(1);
  CLI::App* init = command->add_subcommand("init", "Publish root metadata version 1");
  CLI::App* rotate = command->add_subcommand("rotate", "Publish the next root version with a new root key");
  for (CLI::App* sub : {init, rotate}) {
    sub->add_option("repository", o->repository, "REGISTRY/NAME")->required();
    sub->add_option("--root-key", o->root_key, "The current root key (secret; espresso keygen)")->required();
    sub->add_option("--release-key", o->release_keys, "A public key allowed to sign releases (repeatable)")->required();
    sub->add_option("--days", o->days, "Days until this root metadata expires")->capture_default_str()
        ->check(CLI::PositiveNumber);
  }
  rotate->add_option("--new-root-key", o->new_root_key, "The root key that replaces it (secret)")->required();
  return {command, [o, init] {
            store::Client client(store_client_options(true));
            const store::Reference ref = parse_reference(o->repository + ":latest");
            const auto lifetime = std::chrono::hours(24) * o->days;
            if (init->parsed()) {
              client.trust_init(ref, o->root_key, paths(o->release_keys), lifetime);
              std::printf("published root metadata v1 for %s/%s\n", ref.registry.c_str(), ref.name.c_str());
            } else {
              const auto version = client.trust_rotate(ref, o->root_key, o->new_root_key, paths(o->release_keys), lifetime);
              std::printf("published root metadata v%lld for %s/%s\n", static_cast<long long>(version), ref.registry.c_str(),
                          ref.name.c_str());
            }
            return 0;
          }};
}

}  // namespace espresso::cli
