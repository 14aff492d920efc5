// The espresso command line: one subcommand per verb. Exit codes: 0 success, 1 for errors while
// running (one `error:` line), 2 for usage errors.
#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>
#include <vector>

#include "common.h"
#include "espresso/errors.h"

int main(int argc, char** argv) {
  CLI::App app{"espresso: train and run convolutional networks on CPU and GPU"};
  app.set_version_flag("--version", std::string("espresso ") + ESPRESSO_VERSION);
  app.require_subcommand(1);
  using namespace espresso::cli;
  const std::vector<Verb> verbs = {add_info_verb(app),    add_classify_verb(app),  add_eval_verb(app),
                                   add_bench_verb(app),   add_convert_verb(app),   add_onnx_test_verb(app),
                                   add_devices_verb(app),
                                   add_convert_data_verb(app), add_train_verb(app), add_demo_verb(app),
                                   add_push_verb(app), add_pull_verb(app), add_search_verb(app),
                                   add_show_verb(app), add_cache_verb(app), add_store_verb(app),
                                   add_keygen_verb(app), add_classify_text_verb(app),
                                   add_compress_verb(app), add_serve_verb(app),
                                   add_quantize_verb(app), add_login_verb(app), add_logout_verb(app),
                                   add_trust_verb(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive here too, with exit code 0.
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    for (const Verb& verb : verbs) {
      if (verb.command->parsed()) return verb.run();
    }
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
