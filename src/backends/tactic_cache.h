// Choices a backend makes by timing (a cuDNN algorithm for one layer shape on one device) kept on disk,
// so that the next process skips the timing: one "key value" line each, appended as choices are made.
// A cache is an optimisation: a missing, unreadable or unwritable file only means timing again, and a
// line that does not parse is ignored (callers still check that a value they read makes sense).
#pragma once

#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace espresso {

// The folder for the backends' caches: $<override_variable> when set, else $XDG_CACHE_HOME/espresso,
// else ~/.cache/espresso; empty when none of these is known.
std::filesystem::path backend_cache_directory(const char* override_variable);

// The file `name` in backend_cache_directory("ESPRESSO_TACTIC_CACHE"); empty when there is no such folder.
std::filesystem::path tactic_cache_file(const std::string& name);

// ESPRESSO_CONV_TACTIC, which forces a convolution tactic for tests and comparisons: "" when unset, else
// one of every backend's names — cudnn, im2col, implicit (CUDA); gemm, winograd (CPU, Vulkan); direct (CPU) —
// each backend acting on those it knows. Any other value is an UnsupportedError listing them.
std::string forced_conv_tactic_name();

class TacticCache;
// The process's cache of tactic_cache_file(name), one per path: the folder is looked up at each call,
// so a process that changes ESPRESSO_TACTIC_CACHE gets the new folder's choices.
TacticCache& tactic_cache(const std::string& name);

class TacticCache {
 public:
  // Read at the first lookup; an empty path keeps the choices in memory only.
  explicit TacticCache(std::filesystem::path file);

  // A key not known yet is looked for in the file again: another process may have added it meanwhile.
  std::optional<std::string> find(const std::string& key);
  // Keys and values must not contain white space; others are not stored.
  void store(const std::string& key, const std::string& value);
  const std::filesystem::path& file() const { return file_; }

 private:
  void read_file();

  std::filesystem::path file_;
  std::mutex mutex_;
  std::map<std::string, std::string> entries_;
};

}  // namespace espresso
