// Replays stored inputs through the fuzz targets without libFuzzer, so any build (gcc, sanitizers)
// can check them:
//
//   espresso_fuzz_replay TARGET FILE|DIR...   every file through one target
//   espresso_fuzz_replay --all ROOT...        ROOT/<target>/* through each target, for every ROOT
//
// Prints one line per target with the number of inputs; a crash or a sanitizer report ends the run,
// an exception other than espresso's typed errors is reported with its input and exits 1.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_table.h"

namespace {

namespace fs = std::filesystem;
using espresso::fuzz::kTargets;
using espresso::fuzz::TargetRow;

std::vector<fs::path> files_under(const fs::path& path) {
  std::vector<fs::path> files;
  std::error_code error;
  if (fs::is_regular_file(path, error)) return {path};
  if (!fs::is_directory(path, error)) return files;
  for (const auto& entry : fs::recursive_directory_iterator(path, error)) {
    if (entry.is_regular_file(error)) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// 0: all passed; 1: an input threw something other than espresso's errors.
int replay(const TargetRow& target, const std::vector<fs::path>& files) {
  const auto start = std::chrono::steady_clock::now();
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
      target.run(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%.*s: %s: unexpected exception: %s\n", static_cast<int>(target.name.size()),
                   target.name.data(), file.c_str(), e.what());
      return 1;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%-16.*s %5zu inputs  %.2f s\n", static_cast<int>(target.name.size()), target.name.data(),
              files.size(), seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 2) {
    std::fprintf(stderr, "usage: espresso_fuzz_replay TARGET FILE|DIR... | --all ROOT...\ntargets:");
    for (const TargetRow& t : kTargets) std::fprintf(stderr, " %.*s", static_cast<int>(t.name.size()), t.name.data());
    std::fprintf(stderr, "\n");
    return 2;
  }
  if (args[0] == "--all") {
    for (const TargetRow& target : kTargets) {
      std::vector<fs::path> files;
      for (std::size_t i = 1; i < args.size(); ++i) {
        const auto more = files_under(fs::path(args[i]) / std::string(target.name));
        files.insert(files.end(), more.begin(), more.end());
      }
      if (replay(target, files) != 0) return 1;
    }
    return 0;
  }
  for (const TargetRow& target : kTargets) {
    if (target.name != args[0]) continue;
    std::vector<fs::path> files;
    for (std::size_t i = 1; i < args.size(); ++i) {
      const auto more = files_under(args[i]);
      files.insert(files.end(), more.begin(), more.end());
    }
    return replay(target, files);
  }
  std::fprintf(stderr, "unknown fuzz target '%s'\n", args[0].c_str());
  return 2;
}
