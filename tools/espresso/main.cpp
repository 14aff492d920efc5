#include <iostream>

#include <CLI/CLI.hpp>

#include "espresso/espresso.h"

int main(int argc, char** argv) {
  CLI::App app{"espresso: train and run convolutional networks on CPU and GPU"};
  app.set_version_flag("--version", std::string("espresso ") + ESPRESSO_VERSION);
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
