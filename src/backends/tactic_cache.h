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

class TacticCache {
 public:
  // Read at the first lookup; an empty path keeps the choices in memory only.
  explicit TacticCache(std::filesystem::path file);

  std::optional<std::string> find(const std::string& key);
  // Keys and values must not contain white space; others are not stored.
  void store(const std::string& key, const std::string& value);
  const std::filesystem::path& file() const { return file_; }

 private:
  void load();

  std::filesystem::path file_;
  std::mutex mutex_;
  bool loaded_ = false;
  std::map<std::string, std::string> entries_;
};

}  // namespace espresso
