// `espresso store serve --root DIR [--listen ADDR] [--tls-cert F --tls-key F] [--upstream URL]` and `espresso store fsck --root DIR`: the registry
// server (OCI Distribution API plus our catalog API) and its consistency check.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>
#include <thread>

#include "common.h"
#include "espresso/store.h"

namespace espresso::cli {
namespace {

struct StoreOptions {
  std::string root;
  std::string listen = "127.0.0.1:5000";
  std::size_t max_manifest_bytes = 4 << 20;
  int upload_ttl = 24 * 3600;
  int threads = 8;
  std::size_t max_image_bytes = 16 << 20;
  std::size_t classify_budget_bytes = std::size_t{1} << 30;
  bool auth = false;
  bool no_anonymous_pull = false;
  int token_ttl = 900;
  std::vector<std::string> grants;
  int days = 0;
  std::string key_id;
  std::string upstream;
  std::string upstream_credentials;
  int upstream_recheck = 60;
  int upstream_timeout = 60;
  std::string tls_cert;
  std::string tls_key;
};

int run_serve(const StoreOptions& o) {
  store::ServerOptions options;
  options.root = o.root;
  parse_listen(o.listen, options.host, options.port);
  options.max_manifest_bytes = o.max_manifest_bytes;
  options.upload_ttl = std::chrono::seconds(o.upload_ttl);
  options.threads = o.threads;
  options.max_image_bytes = o.max_image_bytes;
  options.classify_budget_bytes = o.classify_budget_bytes;
  options.auth = o.auth || o.no_anonymous_pull;
  options.anonymous_pull = !o.no_anonymous_pull;
  options.token_ttl = std::chrono::seconds(o.token_ttl);
  options.upstream = o.upstream;
  options.upstream_credentials = o.upstream_credentials;
  options.upstream_recheck = std::chrono::seconds(o.upstream_recheck);
  options.upstream_timeout = std::chrono::seconds(o.upstream_timeout);
  options.tls_cert = o.tls_cert;
  options.tls_key = o.tls_key;
  // SIGINT and SIGTERM stop the server cleanly: a thread waits for them (the handler-free way).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  store::Server server(options);
  const int port = server.bind();
  std::thread([&server, signals] {
    int received = 0;
    sigwait(&signals, &received);
    server.stop();
  }).detach();
  std::printf("listening on %s:%d (%sroot %s%s%s)\n", options.host.c_str(), port, o.tls_cert.empty() ? "" : "HTTPS, ", o.root.c_str(),
              o.upstream.empty() ? "" : ", pull-through cache of ", o.upstream.c_str());
  std::fflush(stdout);
  server.run();
  return 0;
}

int run_fsck(const StoreOptions& o) {
  store::ServerOptions options;
  options.root = o.root;
  store::Server server(options);
  const store::FsckReport report = server.fsck();
  for (const std::string& bad : report.bad) std::printf("BAD %s\n", bad.c_str());
  for (const std::string& missing : report.missing) std::printf("MISSING %s\n", missing.c_str());
  std::printf("%zu blob(s) checked: %zu bad, %zu missing\n", report.blobs, report.bad.size(), report.missing.size());
  return report.bad.empty() && report.missing.empty() ? 0 : 1;
}

int run_token_create(const StoreOptions& o) {
  const store::AccessKey key = store::create_access_key(o.root, o.grants, std::chrono::hours(24) * o.days);
  std::printf("key id: %s\nsecret: %s\n(the secret is shown once; give it to `espresso login REGISTRY --key-id %s`)\n",
              key.id.c_str(), key.secret.c_str(), key.id.c_str());
  return 0;
}

int run_token_revoke(const StoreOptions& o) {
  if (!store::revoke_access_key(o.root, o.key_id)) {
    std::fprintf(stderr, "error: no access key '%s' in %s\n", o.key_id.c_str(), o.root.c_str());
    return 1;
  }
  std::printf("revoked %s (its tokens stop working now)\n", o.key_id.c_str());
  return 0;
}

int run_token_list(const StoreOptions& o) {
  for (const store::AccessKeyInfo& k : store::list_access_keys(o.root)) {
    std::string grants;
    for (const std::string& g : k.grants) grants += (grants.empty() ? "" : " ") + g;
    std::printf("%-16s %-8s expires %-12s %s\n", k.id.c_str(), k.revoked ? "revoked" : "active",
                k.expires == 0 ? "never" : std::to_string(k.expires).c_str(), grants.c_str());
  }
  return 0;
}

}  // namespace

Verb add_store_verb(CLI::App& app) {
  auto o = std::make_shared<StoreOptions>();
  CLI::App* command = app.add_subcommand("store", "Run a model registry (OCI Distribution API + search)");
  command->require_subcommand(1);
  CLI::App* serve = command->add_subcommand("serve", "Serve a registry from a folder");
  serve->add_option("--root", o->root, "Folder for blobs and the catalog")->required();
  serve->add_option("--listen", o->listen, "HOST:PORT (port 0: any free port, printed)")->capture_default_str();
  serve->add_option("--max-manifest-bytes", o->max_manifest_bytes, "Larger manifests get 413")->capture_default_str();
  serve->add_option("--upload-ttl", o->upload_ttl, "Seconds an idle upload session lives")->capture_default_str()
      ->check(CLI::PositiveNumber);
  serve->add_option("--max-image-bytes", o->max_image_bytes, "Try-it (POST .../classify): larger images get 413")
      ->capture_default_str();
  serve->add_option("--classify-budget-bytes", o->classify_budget_bytes,
                    "Try-it: bytes of weights its model pool keeps loaded")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  serve->add_option("--threads", o->threads, "Request threads")->capture_default_str()->check(CLI::Range(1, 256));
  serve->add_flag("--auth", o->auth, "Require bearer tokens for push and delete (GET /token, access keys)");
  serve->add_flag("--no-anonymous-pull", o->no_anonymous_pull, "Require a token for pulls too (implies --auth)");
  serve->add_option("--token-ttl", o->token_ttl, "Seconds a bearer token lives")->capture_default_str()
      ->check(CLI::Range(1, 86400));
  serve->add_option("--tls-cert", o->tls_cert, "HTTPS: PEM certificate (chain) of this server")->needs(
      serve->add_option("--tls-key", o->tls_key, "HTTPS: PEM private key of --tls-cert"));
  serve->add_option("--upstream", o->upstream,
                    "Be a read-only pull-through cache of this registry (http://HOST:PORT, https://HOST)");
  serve->add_option("--upstream-recheck", o->upstream_recheck,
                    "Seconds a tag confirmed by the upstream is served without asking it again")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  serve->add_option("--upstream-timeout", o->upstream_timeout,
                    "Seconds the upstream may stay silent before a request fails with 504")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  serve->add_option("--upstream-credentials", o->upstream_credentials,
                    "An `espresso login` credentials file with an access key for the upstream");
  CLI::App* fsck = command->add_subcommand("fsck", "Hash every blob and check what the catalog references");
  fsck->add_option("--root", o->root, "The registry's folder")->required();
  CLI::App* token = command->add_subcommand("token", "Manage access keys (create, revoke, list)");
  token->require_subcommand(1);
  CLI::App* create = token->add_subcommand("create", "Make an access key; prints its id and secret once");
  create->add_option("--root", o->root, "The registry's folder")->required();
  create->add_option("--grant", o->grants, "PATTERN:ACTIONS, e.g. 'team/*:pull,push' (repeatable)")->required();
  create->add_option("--days", o->days, "Days until the key expires (0: never)")->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  CLI::App* revoke = token->add_subcommand("revoke", "Revoke an access key and every token it obtained");
  revoke->add_option("--root", o->root, "The registry's folder")->required();
  revoke->add_option("id", o->key_id, "The key id")->required();
  CLI::App* list = token->add_subcommand("list", "List access keys (never their secrets)");
  list->add_option("--root", o->root, "The registry's folder")->required();
  return {command, [o, serve, fsck, create, revoke] {
            if (serve->parsed()) return run_serve(*o);
            if (fsck->parsed()) return run_fsck(*o);
            if (create->parsed()) return run_token_create(*o);
            if (revoke->parsed()) return run_token_revoke(*o);
            return run_token_list(*o);
          }};
}

}  // namespace espresso::cli
