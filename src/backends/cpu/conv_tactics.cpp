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

// The tactic of that name (conv_tactic_name), or nullopt.
std::optional<ConvTactic> tactic_named(const std::string& name) {
  for (ConvTactic t :
       {ConvTactic::gemm, ConvTactic::winograd, ConvTactic::direct, ConvTactic::channel_gemm}) {
    if (name == conv_tactic_name(t)) return t;
  }
  return std::nullopt;
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
    case ConvTactic::channel_gemm:
      return "channel-gemm";
    case ConvTactic::gemm:
      break;
  }
  return "gemm";
}

std::optional<ConvTactic> forced_conv_tactic() {
  return tactic_named(forced_conv_tactic_name());  // nullopt: unset, or the GPU's
}

std::string tactic_context() {
  static const std::string processor = processor_name();
  // "tactics=4": choices remembered before the channel GEMM existed are measured again.
  return processor + "|" + fast_gemm_isa() + "|threads=" + std::to_string(num_threads()) + "|tactics=4";
}

std::optional<ConvTactic> cached_conv_tactic(const std::string& key) {
  const std::optional<std::string> name = cache().find(key);
  // A value the program did not write (hand-edited, cut short): the shape is measured again.
  return name ? tactic_named(*name) : std::nullopt;
}

void remember_conv_tactic(const std::string& key, ConvTactic tactic) {
  cache().store(key, conv_tactic_name(tactic));
}

std::uint64_t convolution_weight_packs() { return weight_packs.load(std::memory_order_relaxed); }
void count_convolution_weight_pack() { weight_packs.fetch_add(1, std::memory_order_relaxed); }

}  // namespace espresso::cpu
