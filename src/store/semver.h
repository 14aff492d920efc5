// Version ranges in references (`NAME:^1.2`, `NAME:~1.2.3`, `NAME:>=1.0,<2`), resolved against a
// repository's tags by Semantic Versioning 2.0 precedence with npm's range rules (docs/store.md,
// "Version ranges").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace espresso::store::detail {

struct Version {
  std::uint64_t major = 0;
  std::uint64_t minor = 0;
  std::uint64_t patch = 0;
  std::vector<std::string> prerelease;  // dot-separated identifiers after '-'
};

// A tag read as a version: optional 'v', one to three numbers ("1.2" is 1.2.0), an optional
// "-PRERELEASE". Anything else is not a version (nullopt).
std::optional<Version> parse_version(std::string_view tag);

// Semantic Versioning 2.0 precedence: <0, 0, >0.
int compare(const Version& a, const Version& b);

class VersionRange {
 public:
  // Whether a reference's version part is meant as a range rather than a tag: it holds a character no
  // tag may hold (one of ^ ~ < > = * , | or a space).
  static bool looks_like(std::string_view text);

  // Sets joined by "||", each a list of comparators separated by ',' or spaces, all of which must hold:
  // ^V, ~V, >=V, >V, <=V, <V, =V, V (exactly V; a partial V such as 1.2 means any 1.2.x) and *.
  // Throws StoreError naming the text and the part it cannot read.
  explicit VersionRange(std::string_view text);

  // A prerelease matches only when a comparator of the same set names a prerelease of the same
  // MAJOR.MINOR.PATCH (npm's rule: ^1.2 never picks 2.0.0-beta or 1.3.0-rc.1).
  bool matches(const Version& version) const;

  // The tag with the highest matching version; nullopt when none matches. Tags that are not versions
  // are ignored; of tags naming the same version ("1.2" and "1.2.0") the longer one is picked.
  std::optional<std::string> best(const std::vector<std::string>& tags) const;

 private:
  struct Comparator {
    enum Op { less, less_equal, greater, greater_equal, equal } op;
    Version version;
  };
  std::vector<std::vector<Comparator>> sets_;
};

}  // namespace espresso::store::detail
