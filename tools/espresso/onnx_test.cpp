// `espresso onnx-test DIR...`: runs ONNX backend tests and prints one line per test and a total.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "espresso/espresso.h"

void add_onnx_test_command(CLI::App& app) {
  auto* command =
      app.add_subcommand("onnx-test", "Run ONNX backend tests (model.onnx + test_data_set_*) on a device");
  auto dirs = std::make_shared<std::vector<std::string>>();
  auto device = std::make_shared<std::string>("cpu");
  command->add_option("dirs", *dirs, "test folders, or folders of them")->required();
  command->add_option("--device", *device, "cpu or cuda[:N]");
  command->callback([dirs, device] {
    espresso::OnnxConformanceOptions options;
    options.device = espresso::Device::parse(*device);
    const espresso::OnnxConformanceReport report = espresso::run_onnx_conformance(*dirs, options);
    for (const espresso::OnnxTestResult& r : report.results) {
      const std::string name = std::filesystem::path(r.dir).filename().string();
      switch (r.status) {
        case espresso::OnnxTestStatus::pass:
          std::printf("PASS        %s\n", name.c_str());
          break;
        case espresso::OnnxTestStatus::fail:
          std::printf("FAIL        %s (max error %.3g) %s\n", name.c_str(), r.max_error, r.detail.c_str());
          break;
        case espresso::OnnxTestStatus::unsupported:
          std::printf("UNSUPPORTED %s: %s\n", name.c_str(), r.detail.c_str());
          break;
        case espresso::OnnxTestStatus::error:
          std::printf("ERROR       %s: %s\n", name.c_str(), r.detail.c_str());
          break;
      }
    }
    std::printf("total: %zu tests, %d PASS, %d FAIL, %d UNSUPPORTED, %d ERROR\n", report.results.size(),
                report.count(espresso::OnnxTestStatus::pass), report.count(espresso::OnnxTestStatus::fail),
                report.count(espresso::OnnxTestStatus::unsupported),
                report.count(espresso::OnnxTestStatus::error));
    if (report.count(espresso::OnnxTestStatus::fail) + report.count(espresso::OnnxTestStatus::error) > 0) {
      throw CLI::RuntimeError(1);
    }
  });
}
