// `espresso keygen KEY`: an ed25519 key pair for signing releases (KEY, mode 0600, and KEY.pub).
#include <cstdio>
#include <memory>

#include "common.h"
#include "espresso/store.h"

namespace espresso::cli {

Verb add_keygen_verb(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* command = app.add_subcommand("keygen", "Make an ed25519 key pair for signing releases (push --sign)");
  command->add_option("key", *path, "The secret key file to write (the public key goes to KEY.pub)")->required();
  return {command, [path] {
            const std::string id = store::generate_key(*path);
            std::printf("wrote %s (secret, keep it private) and %s.pub (public); key id %s\n", path->c_str(),
                        path->c_str(), id.c_str());
            return 0;
          }};
}

}  // namespace espresso::cli
