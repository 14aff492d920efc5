// `espresso onnx-test DIR...`: runs ONNX backend tests and prints one line per test and a total.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "common.h"
#include "espresso/onnx.h"

namespace espresso::cli {
namespace {

struct OnnxTestOptions {
  std::vector<std::string> dirs;
  std::string device = "cpu";
  double rtol = 1e-3, atol = 1e-5;
};

int run_onnx_test(const OnnxTestOptions& options) {
  OnnxConformanceOptions conformance;
  conformance.device = Device::parse(options.device);
  conformance.rtol = options.rtol;
  conformance.atol = options.atol;
  const OnnxConformanceReport report = run_onnx_conformance(options.dirs, conformance);
  for (const OnnxTestResult& r : report.results) {
    const std::string name = std::filesystem::path(r.dir).filename().string();
    switch (r.status) {
      case OnnxTestStatus::pass:
        std::printf("PASS        %s (max error %.3g, %.3g relative to the largest expected value)\n", name.c_str(),
                    r.max_error, r.max_relative_error);
        break;
      case OnnxTestStatus::fail:
        std::printf("FAIL        %s (max error %.3g) %s\n", name.c_str(), r.max_error, r.detail.c_str());
        break;
      case OnnxTestStatus::unsupported:
        std::printf("UNSUPPORTED %s: %s\n", name.c_str(), r.detail.c_str());
        break;
      case OnnxTestStatus::error:
        std::printf("ERROR       %s: %s\n", name.c_str(), r.detail.c_str());
        break;
    }
  }
  std::printf("total: %zu tests, %d PASS, %d FAIL, %d UNSUPPORTED, %d ERROR\n", report.results.size(),
              report.count(OnnxTestStatus::pass), report.count(OnnxTestStatus::fail),
              report.count(OnnxTestStatus::unsupported), report.count(OnnxTestStatus::error));
  return report.count(OnnxTestStatus::fail) + report.count(OnnxTestStatus::error) > 0 ? 1 : 0;
}

}  // namespace

Verb add_onnx_test_verb(CLI::App& app) {
  auto options = std::make_shared<OnnxTestOptions>();
  CLI::App* command =
      app.add_subcommand("onnx-test", "Run ONNX backend tests (model.onnx + test_data_set_*) and report each");
  command->add_option("dirs", options->dirs, "Test folders, or folders of them")->required();
  command->add_option("--device", options->device, "cpu, cuda or cuda:N")->capture_default_str();
  command->add_option("--relative-tolerance", options->rtol, "A value passes when |got - expected| <= atol + rtol·|expected|")
      ->capture_default_str();
  command->add_option("--absolute-tolerance", options->atol, "See --relative-tolerance")->capture_default_str();
  return {command, [options] { return run_onnx_test(*options); }};
}

}  // namespace espresso::cli
