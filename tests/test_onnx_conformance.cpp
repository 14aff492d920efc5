// ONNX's own backend tests (Debian's libonnx-testdata) through load_onnx and the CPU backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "espresso/onnx.h"

namespace espresso {
namespace {

const char* const kTestData = "/usr/share/libonnx-testdata/data";

const char* status_name(OnnxTestStatus s) {
  switch (s) {
    case OnnxTestStatus::pass:
      return "PASS";
    case OnnxTestStatus::fail:
      return "FAIL";
    case OnnxTestStatus::unsupported:
      return "UNSUPPORTED";
    case OnnxTestStatus::error:
      return "ERROR";
  }
  return "?";
}

TEST(OnnxConformance, BackendTests) {
  if (!std::filesystem::exists(std::string(kTestData) + "/node")) {
    GTEST_SKIP() << "libonnx-testdata is not installed (" << kTestData << ")";
  }
  const std::vector<std::string> ops = onnx_supported_ops();
  const std::set<std::string> supported(ops.begin(), ops.end());
  for (const char* suite : {"node", "pytorch-converted", "simple"}) {
    const OnnxConformanceReport report = run_onnx_conformance({std::string(kTestData) + "/" + suite});
    int in_scope = 0, in_scope_passed = 0;
    for (const OnnxTestResult& r : report.results) {
      const bool ours =
          !r.op_types.empty() && std::all_of(r.op_types.begin(), r.op_types.end(),
                                             [&](const std::string& op) { return supported.count(op) != 0; });
      if (ours) {
        ++in_scope;
        if (r.status == OnnxTestStatus::pass) {
          ++in_scope_passed;
        } else {
          std::printf("  %-11s %s (max error %.3g) %s\n", status_name(r.status),
                      std::filesystem::path(r.dir).filename().c_str(), r.max_error, r.detail.c_str());
        }
      }
    }
    std::printf(
        "%s: %zu tests, %d PASS, %d FAIL, %d UNSUPPORTED, %d ERROR; supported ops: %d/%d PASS (%.1f%%)\n",
        suite, report.results.size(), report.count(OnnxTestStatus::pass), report.count(OnnxTestStatus::fail),
        report.count(OnnxTestStatus::unsupported), report.count(OnnxTestStatus::error), in_scope_passed,
        in_scope, in_scope ? 100.0 * in_scope_passed / in_scope : 0.0);
    if (std::string(suite) == "node") {
      // docs/onnx.md lists the in-scope tests that do not pass and why.
      EXPECT_GE(in_scope_passed, 0.95 * in_scope) << "node tests of supported operators regressed";
    }
  }
}

}  // namespace
}  // namespace espresso
