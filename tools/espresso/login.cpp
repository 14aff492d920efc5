// `espresso login REGISTRY --key-id ID` (the secret on stdin) and `espresso logout REGISTRY`: access
// keys for registries that want bearer tokens (docs/store.md, "Authentication").
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "common.h"
#include "espresso/store.h"
#include "store_common.h"

namespace espresso::cli {

namespace {

struct LoginOptions {
  std::string registry;
  std::string key_id;
};

std::string read_secret() {
  if (::isatty(STDIN_FILENO) != 0) std::fprintf(stderr, "secret: ");
  std::string secret;
  std::getline(std::cin, secret);
  while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
  if (secret.empty()) throw StoreError("login: no secret on standard input");
  return secret;
}

}  // namespace

Verb add_login_verb(CLI::App& app) {
  auto o = std::make_shared<LoginOptions>();
  CLI::App* command = app.add_subcommand("login", "Store an access key for a registry (the secret is read from stdin)");
  command->add_option("registry", o->registry, "HOST:PORT of the registry")->required();
  command->add_option("--key-id", o->key_id, "The access key's id (espresso store token create prints it)")->required();
  return {command, [o] {
            store::Client client(store_client_options(true));
            client.login(o->registry, o->key_id, read_secret());
            std::printf("logged in to %s as %s (stored in %s)\n", o->registry.c_str(), o->key_id.c_str(),
                        store::default_credentials_file().c_str());
            return 0;
          }};
}

Verb add_logout_verb(CLI::App& app) {
  auto registry = std::make_shared<std::string>();
  CLI::App* command = app.add_subcommand("logout", "Forget the access key stored for a registry");
  command->add_option("registry", *registry, "HOST:PORT of the registry")->required();
  return {command, [registry] {
            store::Client client(store_client_options(true));
            if (!client.logout(*registry)) {
              std::fprintf(stderr, "error: no access key stored for %s\n", registry->c_str());
              return 1;
            }
            std::printf("forgot the access key for %s\n", registry->c_str());
            return 0;
          }};
}

}  // namespace espresso::cli
