#include "backends/tactic_cache.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "espresso/errors.h"

namespace espresso {
namespace {

bool storable(const std::string& text) {
  return !text.empty() &&
         std::none_of(text.begin(), text.end(), [](unsigned char c) { return std::isspace(c); });
}

}  // namespace

std::string forced_conv_tactic_name() {
  const char* forced = std::getenv("ESPRESSO_CONV_TACTIC");
  const std::string name = forced != nullptr ? forced : "";
  for (const char* known :
       {"", "cudnn", "im2col", "implicit", "gemm", "winograd", "direct", "channel-gemm"}) {
    if (name == known) return name;
  }
  throw UnsupportedError(
      "ESPRESSO_CONV_TACTIC must be cudnn, im2col, implicit (CUDA), gemm, winograd (CPU, Vulkan), " +
      std::string("direct or channel-gemm (CPU), got '") + name + "'");
}

std::filesystem::path backend_cache_directory(const char* override_variable) {
  if (const char* dir = std::getenv(override_variable); dir != nullptr && *dir != '\0') return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0')
    return std::filesystem::path(xdg) / "espresso";
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0')
    return std::filesystem::path(home) / ".cache" / "espresso";
  return {};
}

std::filesystem::path tactic_cache_file(const std::string& name) {
  const std::filesystem::path dir = backend_cache_directory("ESPRESSO_TACTIC_CACHE");
  return dir.empty() ? dir : dir / name;
}

TacticCache& tactic_cache(const std::string& name) {
  // Never destroyed: kernels may still look up choices while statics are torn down at exit.
  struct Caches {
    std::mutex mutex;
    std::map<std::filesystem::path, std::unique_ptr<TacticCache>> by_file;
  };
  static auto* caches = new Caches;
  // Without a cache folder the CPU's and cuDNN's choices stay apart in memory.
  std::filesystem::path file = tactic_cache_file(name);
  const std::filesystem::path key = file.empty() ? std::filesystem::path("memory:" + name) : file;
  const std::lock_guard lock(caches->mutex);
  std::unique_ptr<TacticCache>& cache = caches->by_file[key];
  if (!cache) cache = std::make_unique<TacticCache>(std::move(file));
  return *cache;
}

TacticCache::TacticCache(std::filesystem::path file) : file_(std::move(file)) {}

void TacticCache::read_file() {
  if (file_.empty()) return;
  std::ifstream in(file_);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key, value, extra;
    if (fields >> key >> value && !(fields >> extra)) entries_[key] = value;  // later lines win
  }
}

std::optional<std::string> TacticCache::find(const std::string& key) {
  const std::lock_guard lock(mutex_);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    read_file();
    it = entries_.find(key);
    if (it == entries_.end()) return std::nullopt;
  }
  return it->second;
}

void TacticCache::store(const std::string& key, const std::string& value) {
  if (!storable(key) || !storable(value)) return;
  const std::lock_guard lock(mutex_);
  entries_[key] = value;
  if (file_.empty()) return;
  std::error_code error;
  std::filesystem::create_directories(file_.parent_path(), error);
  // One short line per append: processes sharing the file interleave whole lines.
  std::ofstream out(file_, std::ios::app);
  out << key << ' ' << value << '\n';
}

}  // namespace espresso
