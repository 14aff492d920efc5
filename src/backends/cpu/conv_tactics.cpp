#include "backends/cpu/conv_tactics.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <fstream>

#include "backends/cpu/gemm.h"
#include "backends/tactic_cache.h"
#include "espresso/errors.h"
#include "espresso/net.h"

namespace espresso::cpu {
namespace {

std::atomic<std::uint64_t> weight_packs{0};

ConvTactic parse_tactic(const std::string& name, const std::string& where) {
  if (name == "gemm") return ConvTactic::gemm;
  if (name == "winograd") return ConvTactic::winograd;
  if (name == "direct") return ConvTactic::direct;
  throw UnsupportedError(where + ": unknown CPU convolution tactic '" + name +
                         "' (expected gemm, winograd or direct)");
}

// The processor's name with its blanks as '_' (keys of the tactic cache hold no white space).
std::string processor_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, name = "unknown processor";
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const std::size_t colon = line.find(':');
    const std::size_t first = colon == std::string::npos ? colon : line.find_first_not_of(' ', colon + 1);
    if (first != std::string::npos) name = line.substr(first);
    break;
  }
  std::replace_if(
      name.begin(), name.end(), [](unsigned char c) { return std::isspace(c); }, '_');
  return name;
}

TacticCache& cache() { return tactic_cache("cpu-convolution-tactics.txt"); }

}  // namespace

const char* conv_tactic_name(ConvTactic tactic) {
  switch (tactic) {
    case ConvTactic::winograd:
      return "winograd";
    case ConvTactic::direct:
      return "direct";
    case ConvTactic::gemm:
      break;
  }
  return "gemm";
}

std::optional<ConvTactic> forced_conv_tactic() {
  const std::string name = forced_conv_tactic_name();
  if (name == "gemm" || name == "winograd" || name == "direct")
    return parse_tactic(name, "ESPRESSO_CONV_TACTIC");
  return std::nullopt;  // unset, or the GPU's
}

std::string tactic_context() {
  static const std::string processor = processor_name();
  // "tactics=3": choices remembered before the direct convolution existed are measured again.
  return processor + "|" + fast_gemm_isa() + "|threads=" + std::to_string(num_threads()) + "|tactics=3";
}

std::optional<ConvTactic> cached_conv_tactic(const std::string& key) {
  const std::optional<std::string> name = cache().find(key);
  // A value the program did not write (hand-edited, cut short): the shape is measured again.
  if (!name || (*name != "gemm" && *name != "winograd" && *name != "direct")) return std::nullopt;
  return parse_tactic(*name, key);
}

void remember_conv_tactic(const std::string& key, ConvTactic tactic) {
  cache().store(key, conv_tactic_name(tactic));
}

std::uint64_t convolution_weight_packs() { return weight_packs.load(std::memory_order_relaxed); }
void count_convolution_weight_pack() { weight_packs.fetch_add(1, std::memory_order_relaxed); }

}  // namespace espresso::cpu
