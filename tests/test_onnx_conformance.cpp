// ONNX's own backend tests (Debian's libonnx-testdata) through load_onnx, on the CPU and on a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "test_support.h"
#include "espresso/onnx.h"

namespace espresso {
namespace {

// ESPRESSO_ONNX_TESTDATA points elsewhere, e.g. at a copy on a GPU machine without the package.
std::string test_data() {
  const char* env = std::getenv("ESPRESSO_ONNX_TESTDATA");
  return env != nullptr ? env : "/usr/share/libonnx-testdata/data";
}

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
  const std::string data = test_data();
  if (!std::filesystem::exists(data + "/node")) {
    GTEST_SKIP() << "libonnx-testdata is not installed (" << data << ")";
  }
  const std::vector<std::string> ops = onnx_supported_ops();
  const std::set<std::string> supported(ops.begin(), ops.end());
  for (const char* suite : {"node", "pytorch-converted", "simple"}) {
    const OnnxConformanceReport report = run_onnx_conformance({data + "/" + suite});
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

// Tests whose inputs or outputs are sequences (their data files are SequenceProtos) are unsupported and
// say why, rather than failing to read the files as tensors with nonsense shapes.
TEST(OnnxConformance, SequenceValuedTestsAreUnsupportedWithTheReason) {
  const std::string data = test_data();
  for (const char* name : {"test_loop13_seq", "test_if_seq"}) {
    const std::string dir = data + "/node/" + name;
    if (!std::filesystem::exists(dir)) GTEST_SKIP() << "libonnx-testdata is not installed (" << dir << ")";
    const OnnxConformanceReport report = run_onnx_conformance({dir});
    ASSERT_EQ(report.results.size(), 1u);
    EXPECT_EQ(status_name(report.results[0].status), std::string("UNSUPPORTED")) << report.results[0].detail;
    EXPECT_NE(report.results[0].detail.find("is a sequence"), std::string::npos) << report.results[0].detail;
  }
}

// Every node test that passes on the CPU passes on the GPU too: the CUDA kernels of every
// supported operator against ONNX's expected outputs.
TEST(OnnxConformance, BackendTestsOnCuda) {
  const std::string data = test_data();
  if (!std::filesystem::exists(data + "/node")) {
    GTEST_SKIP() << "libonnx-testdata is not installed (" << data << ")";
  }
  if (!testing::have_gpu()) {
    GTEST_SKIP() << testing::no_gpu_reason() << ": GPU run not checked";
  }
  const OnnxConformanceReport cpu = run_onnx_conformance({data + "/node"});
  OnnxConformanceOptions options;
  options.device = Device::cuda(0);
  const OnnxConformanceReport gpu = run_onnx_conformance({data + "/node"}, options);
  ASSERT_EQ(cpu.results.size(), gpu.results.size());
  for (std::size_t i = 0; i < cpu.results.size(); ++i) {
    if (cpu.results[i].status != OnnxTestStatus::pass) continue;
    EXPECT_EQ(status_name(gpu.results[i].status), std::string("PASS"))
        << std::filesystem::path(gpu.results[i].dir).filename() << " (max error " << gpu.results[i].max_error
        << ") " << gpu.results[i].detail;
  }
  std::printf("node on cuda: %d PASS (cpu %d)\n", gpu.count(OnnxTestStatus::pass),
              cpu.count(OnnxTestStatus::pass));
}

}  // namespace
}  // namespace espresso
