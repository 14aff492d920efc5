#include "backends/cpu/conv_tactics.h"

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>

#include "backends/cpu/gemm.h"
#include "espresso/errors.h"
#include "espresso/net.h"

namespace espresso::cpu {
namespace {

std::atomic<std::uint64_t> weight_packs{0};

ConvTactic parse_tactic(const std::string& name, const std::string& where) {
  if (name == "gemm") return ConvTactic::gemm;
  if (name == "winograd") return ConvTactic::winograd;
  throw UnsupportedError(where + ": unknown CPU convolution tactic '" + name + "' (expected gemm or winograd)");
}

std::string processor_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const std::size_t colon = line.find(':');
    if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
  }
  return "unknown processor";
}

// The process's choices. The file (if ESPRESSO_CPU_TACTIC_CACHE names one) is read when a key is not
// known here yet, so choices another process wrote meanwhile are taken too.
struct Cache {
  std::mutex mutex;
  std::map<std::string, ConvTactic> choices;
};

Cache& cache() {
  static Cache instance;
  return instance;
}

std::string cache_path() {
  const char* file = std::getenv("ESPRESSO_CPU_TACTIC_CACHE");
  return file ? file : "";
}

// Lines "key tactic"; a line the program did not write (hand-edited, cut short) is skipped, and its
// shape measured again. Later lines win.
void read_cache_file(const std::string& path, std::map<std::string, ConvTactic>& choices) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const std::size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    const std::string name = line.substr(space + 1);
    if (name == "gemm" || name == "winograd") choices[line.substr(0, space)] = parse_tactic(name, path);
  }
}

}  // namespace

const char* conv_tactic_name(ConvTactic tactic) { return tactic == ConvTactic::winograd ? "winograd" : "gemm"; }

std::optional<ConvTactic> forced_conv_tactic() {
  const char* forced = std::getenv("ESPRESSO_CONV_TACTIC");
  if (forced == nullptr || *forced == '\0') return std::nullopt;
  const std::string name = forced;
  if (name == "cudnn" || name == "im2col" || name == "implicit") return std::nullopt;  // the GPU's
  return parse_tactic(name, "ESPRESSO_CONV_TACTIC");
}

std::string tactic_context() {
  static const std::string processor = processor_name();
  return processor + "|" + fast_gemm_isa() + "|threads=" + std::to_string(num_threads());
}

std::optional<ConvTactic> cached_conv_tactic(const std::string& key) {
  Cache& c = cache();
  const std::lock_guard lock(c.mutex);
  auto found = c.choices.find(key);
  if (found == c.choices.end()) {
    const std::string path = cache_path();
    if (path.empty()) return std::nullopt;
    read_cache_file(path, c.choices);
    found = c.choices.find(key);
    if (found == c.choices.end()) return std::nullopt;
  }
  return found->second;
}

void remember_conv_tactic(const std::string& key, ConvTactic tactic) {
  Cache& c = cache();
  const std::lock_guard lock(c.mutex);
  c.choices[key] = tactic;
  const std::string path = cache_path();
  if (path.empty()) return;
  // Appended; a file that cannot be written only costs the next process a measurement.
  std::ofstream out(path, std::ios::app);
  out << key << ' ' << conv_tactic_name(tactic) << '\n';
}

std::uint64_t convolution_weight_packs() { return weight_packs.load(std::memory_order_relaxed); }
void count_convolution_weight_pack() { weight_packs.fetch_add(1, std::memory_order_relaxed); }

}  // namespace espresso::cpu
