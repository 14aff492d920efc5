// Helpers of the hostile-input tests (test_hostile*.cpp): each case runs in a forked child with at most
// 100 MB more address space than the test process has (RLIMIT_AS; not under AddressSanitizer, which
// reserves terabytes of shadow), and must answer within 1 s; the parent reads the child's peak RSS and
// the time of the call.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "espresso/errors.h"
#include "import/onnx/onnx.pb.h"

namespace espresso::hostile {

namespace fs = std::filesystem;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

constexpr long kExtraBytes = 100L << 20;
constexpr double kSeconds = 1.0;

struct Outcome {
  std::string kind;  // "expected", "none", "bad_alloc" or "other"
  std::string message;
  double seconds = 0;        // measured in the child around the call
  long peak_rss_growth_kb = 0;  // child's peak RSS above the parent's RSS at the fork
};

inline long resident_kb() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

inline long virtual_bytes() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0;
  statm >> pages;
  return pages * sysconf(_SC_PAGESIZE);
}

// Runs `body` in a child process under the memory cap; E is the error it must throw.
template <class E>
Outcome run_bounded(const std::function<void()>& body) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  const long parent_rss = resident_kb();
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    alarm(20);  // a hang fails the test instead of stalling the suite
    if (!kAsan) {
      const rlimit cap{static_cast<rlim_t>(virtual_bytes() + kExtraBytes),
                       static_cast<rlim_t>(virtual_bytes() + kExtraBytes)};
      setrlimit(RLIMIT_AS, &cap);
    }
    std::string kind, message;
    const auto start = std::chrono::steady_clock::now();
    try {
      body();
      kind = "none";
    } catch (const E& e) {
      kind = "expected";
      message = e.what();
    } catch (const std::bad_alloc&) {
      kind = "bad_alloc";
    } catch (const std::exception& e) {
      kind = "other";
      message = e.what();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string report = kind + "\n" + std::to_string(seconds) + "\n" + message;
    [[maybe_unused]] const auto written = write(fds[1], report.data(), report.size());
    close(fds[1]);
    _exit(0);
  }
  close(fds[1]);
  std::string report;
  char buffer[4096];
  for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) > 0;) report.append(buffer, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  Outcome outcome;
  const auto first = report.find('\n'), second = report.find('\n', first + 1);
  if (first == std::string::npos || second == std::string::npos) {
    outcome.kind = "crashed (status " + std::to_string(status) + ")";
    return outcome;
  }
  outcome.kind = report.substr(0, first);
  outcome.seconds = std::stod(report.substr(first + 1, second - first - 1));
  outcome.message = report.substr(second + 1);
  outcome.peak_rss_growth_kb = std::max(0L, usage.ru_maxrss - parent_rss);
  return outcome;
}

// The checks every hostile case shares; `needle` must appear in the message.
template <class E>
void expect_refused(const std::string& what, const std::function<void()>& body, const std::string& needle) {
  const Outcome outcome = run_bounded<E>(body);
  EXPECT_EQ(outcome.kind, "expected") << what << ": " << outcome.message;
  EXPECT_NE(outcome.message.find(needle), std::string::npos) << what << ": " << outcome.message;
  EXPECT_LT(outcome.seconds, kSeconds) << what;
  EXPECT_LT(outcome.peak_rss_growth_kb, kExtraBytes / 1024) << what;
  std::printf("[ hostile  ] %-44s %.3f s, peak RSS +%ld KiB: %s\n", what.c_str(), outcome.seconds,
              outcome.peak_rss_growth_kb, outcome.message.c_str());
}

inline onnx::ModelProto relu_model(const std::vector<std::int64_t>& input_dims) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(13);
  auto* graph = model.mutable_graph();
  graph->set_name("hostile");
  auto* input = graph->add_input();
  input->set_name("x");
  input->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  for (std::int64_t d : input_dims)
    input->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(d);
  auto* node = graph->add_node();
  node->set_op_type("Relu");
  node->add_input("x");
  node->add_output("y");
  graph->add_output()->set_name("y");
  return model;
}

// A model whose Add reads an initializer stored in `location`.
inline onnx::ModelProto external_model(const std::string& location) {
  onnx::ModelProto model = relu_model({1, 4});
  auto* graph = model.mutable_graph();
  graph->mutable_node(0)->set_op_type("Add");
  graph->mutable_node(0)->add_input("w");
  auto* w = graph->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* entry = w->add_external_data();
  entry->set_key("location");
  entry->set_value(location);
  return model;
}

// A fresh directory, removed with everything in it at the end.
class Scratch {
 public:
  Scratch() {
    std::string pattern = (fs::temp_directory_path() / "espresso_hostile_XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~Scratch() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::binary) << bytes;
    return file;
  }

 private:
  std::string path_;
};

inline std::string save(const Scratch& dir, const std::string& name, const onnx::ModelProto& model) {
  return dir.write(name, model.SerializeAsString());
}

}  // namespace espresso::hostile
