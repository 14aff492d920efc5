#include "store_common.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

namespace espresso::cli {

std::string default_registry() {
  const char* registry = std::getenv("ESPRESSO_REGISTRY");
  return registry != nullptr ? registry : "";
}

store::Reference parse_reference(const std::string& text) { return store::Reference::parse(text, default_registry()); }

std::string human_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1000.0 && unit < 4) {
    value /= 1000.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

store::ClientOptions store_client_options(bool quiet) {
  store::ClientOptions options = store::client_options_from_env();
  if (quiet || ::isatty(STDERR_FILENO) == 0) return options;
  struct State {
    std::string what;
    std::chrono::steady_clock::time_point start;
    std::uint64_t first = 0;
  };
  auto state = std::make_shared<State>();
  options.progress = [state](const store::Progress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (p.what != state->what) {
      state->what = p.what;
      state->start = now;
      state->first = p.done;
    }
    const double seconds = std::chrono::duration<double>(now - state->start).count();
    const double rate = seconds > 0 ? static_cast<double>(p.done - state->first) / seconds : 0.0;
    const double eta = rate > 0 ? static_cast<double>(p.total - p.done) / rate : 0.0;
    const int percent = p.total > 0 ? static_cast<int>(100.0 * static_cast<double>(p.done) / static_cast<double>(p.total)) : 100;
    std::fprintf(stderr, "\r%-28s %3d%% %10s/s  ETA %4.0fs", p.what.c_str(), percent,
                 human_bytes(static_cast<std::uint64_t>(rate)).c_str(), eta);
    if (p.done >= p.total) std::fputc('\n', stderr);
    std::fflush(stderr);
  };
  return options;
}

}  // namespace espresso::cli
