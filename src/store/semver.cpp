// Semantic Versioning 2.0 precedence and npm-style ranges over tags (store/semver.h).
#include "store/semver.h"

#include "espresso/store.h"

namespace espresso::store::detail {

namespace {

bool digit(char c) { return c >= '0' && c <= '9'; }

// A version with some of its numbers left out ("1", "1.2", "1.x", "*"): `parts` says how many were given.
struct Partial {
  Version version;
  int parts = 0;
};

// Reads up to three dot-separated numbers (a wildcard x, X or * ends them) and an optional prerelease.
std::optional<Partial> parse_partial(std::string_view text, bool wildcards) {
  Partial p;
  if (!text.empty() && (text.front() == 'v' || text.front() == 'V')) text.remove_prefix(1);
  std::uint64_t* fields[3] = {&p.version.major, &p.version.minor, &p.version.patch};
  std::size_t i = 0;
  bool wild = false;
  while (p.parts < 3 && i < text.size()) {
    if (wildcards && (text[i] == 'x' || text[i] == 'X' || text[i] == '*')) {
      wild = true;
      ++i;
    } else {
      if (wild || !digit(text[i])) return std::nullopt;
      std::uint64_t value = 0;
      const std::size_t start = i;
      while (i < text.size() && digit(text[i])) {
        if (i - start >= 18) return std::nullopt;
        value = value * 10 + static_cast<std::uint64_t>(text[i] - '0');
        ++i;
      }
      *fields[p.parts] = value;
      ++p.parts;
    }
    if (i == text.size() || text[i] != '.') break;
    ++i;
    if (i == text.size()) return std::nullopt;  // "1."
  }
  if (p.parts == 0 && !wild) return std::nullopt;
  if (i < text.size()) {
    if (text[i] != '-' || p.parts < 3 || wild) return std::nullopt;
    std::string_view rest = text.substr(i + 1);
    if (rest.empty()) return std::nullopt;
    for (;;) {
      const std::size_t dot = rest.find('.');
      const std::string_view id = rest.substr(0, dot);
      if (id.empty()) return std::nullopt;
      for (char c : id) {
        if (!(digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-')) return std::nullopt;
      }
      p.version.prerelease.emplace_back(id);
      if (dot == std::string_view::npos) break;
      rest = rest.substr(dot + 1);
    }
  }
  return p;
}

bool numeric(const std::string& id) {
  for (char c : id) {
    if (!digit(c)) return false;
  }
  return !id.empty();
}

Version bump(const Version& v, int part) {
  Version next;
  next.major = v.major + (part == 0 ? 1 : 0);
  next.minor = part == 0 ? 0 : v.minor + (part == 1 ? 1 : 0);
  next.patch = part <= 1 ? 0 : v.patch + 1;
  return next;
}

bool same_numbers(const Version& a, const Version& b) {
  return a.major == b.major && a.minor == b.minor && a.patch == b.patch;
}

}  // namespace

std::optional<Version> parse_version(std::string_view tag) {
  const auto p = parse_partial(tag, false);
  if (!p) return std::nullopt;
  return p->version;
}

int compare(const Version& a, const Version& b) {
  if (a.major != b.major) return a.major < b.major ? -1 : 1;
  if (a.minor != b.minor) return a.minor < b.minor ? -1 : 1;
  if (a.patch != b.patch) return a.patch < b.patch ? -1 : 1;
  // A version without a prerelease ranks above any prerelease of it.
  if (a.prerelease.empty() || b.prerelease.empty())
    return a.prerelease.empty() == b.prerelease.empty() ? 0 : (a.prerelease.empty() ? 1 : -1);
  for (std::size_t i = 0; i < a.prerelease.size() && i < b.prerelease.size(); ++i) {
    const std::string& x = a.prerelease[i];
    const std::string& y = b.prerelease[i];
    if (x == y) continue;
    const bool nx = numeric(x);
    const bool ny = numeric(y);
    if (nx && ny) {
      if (x.size() != y.size()) return x.size() < y.size() ? -1 : 1;  // no leading zeros assumed: longer is larger
      return x < y ? -1 : 1;
    }
    if (nx != ny) return nx ? -1 : 1;  // numeric identifiers rank below alphanumeric ones
    return x < y ? -1 : 1;
  }
  if (a.prerelease.size() == b.prerelease.size()) return 0;
  return a.prerelease.size() < b.prerelease.size() ? -1 : 1;
}

bool VersionRange::looks_like(std::string_view text) {
  return text.find_first_of("^~<>=*,| ") != std::string_view::npos;
}

VersionRange::VersionRange(std::string_view text) {
  const auto fail = [&](std::string_view part, const std::string& why) {
    return StoreError("version range '" + std::string(text) + "': '" + std::string(part) + "' " + why);
  };
  if (text.empty() || text.size() > 256) throw StoreError("version range '" + std::string(text) + "': empty or too long");
  std::string_view rest = text;
  for (;;) {
    const std::size_t bar = rest.find("||");
    const std::string_view set_text = rest.substr(0, bar);
    std::vector<Comparator> set;
    std::size_t i = 0;
    while (i < set_text.size()) {
      if (set_text[i] == ' ' || set_text[i] == ',') {
        ++i;
        continue;
      }
      std::size_t end = i;
      while (end < set_text.size() && set_text[end] != ' ' && set_text[end] != ',') ++end;
      std::string_view token = set_text.substr(i, end - i);
      const std::string_view whole = token;
      i = end;
      std::string op;
      while (!token.empty() && std::string_view("^~<>=").find(token.front()) != std::string_view::npos) {
        op += token.front();
        token.remove_prefix(1);
      }
      if (token.empty() && !op.empty() && i < set_text.size() && set_text[i] == ' ') {
        // ">= 1.2": the operator and its version apart.
        while (i < set_text.size() && set_text[i] == ' ') ++i;
        end = i;
        while (end < set_text.size() && set_text[end] != ' ' && set_text[end] != ',') ++end;
        token = set_text.substr(i, end - i);
        i = end;
      }
      if (op != "" && op != "^" && op != "~" && op != "<" && op != "<=" && op != ">" && op != ">=" && op != "=")
        throw fail(whole, "has an unknown operator '" + op + "' (use ^ ~ < <= > >= =)");
      const auto partial = parse_partial(token, true);
      if (!partial) throw fail(whole, "is not a version (MAJOR[.MINOR[.PATCH]][-PRERELEASE], x or * for any)");
      const Version& v = partial->version;
      const int parts = partial->parts;
      const auto add = [&](Comparator::Op o, const Version& version) { set.push_back({o, version}); };
      if (parts == 0) {
        // "*", "x": any version; "<*" or ">*" match nothing.
        if (op == "<" || op == ">") add(Comparator::less, Version{});
        continue;
      }
      if (op == "^") {
        add(Comparator::greater_equal, v);
        // The first non-zero number given may not change; "^0.0" and "^0" keep what they give.
        const int fixed = v.major > 0 || parts == 1 ? 0 : (v.minor > 0 || parts == 2 ? 1 : 2);
        add(Comparator::less, bump(v, fixed));
      } else if (op == "~") {
        add(Comparator::greater_equal, v);
        add(Comparator::less, bump(v, parts == 1 ? 0 : 1));
      } else if (op == ">=") {
        add(Comparator::greater_equal, v);
      } else if (op == ">") {
        if (parts == 3) add(Comparator::greater, v);
        else add(Comparator::greater_equal, bump(v, parts - 1));  // >1.2 is >=1.3.0
      } else if (op == "<") {
        add(Comparator::less, v);  // <1.2 is <1.2.0
      } else if (op == "<=") {
        if (parts == 3) add(Comparator::less_equal, v);
        else add(Comparator::less, bump(v, parts - 1));  // <=1.2 is <1.3.0
      } else if (parts == 3) {
        add(Comparator::equal, v);
      } else {
        add(Comparator::greater_equal, v);  // 1.2 is any 1.2.x
        add(Comparator::less, bump(v, parts - 1));
      }
    }
    if (set.empty()) set.push_back({Comparator::greater_equal, Version{}});  // "" or "*": anything
    sets_.push_back(std::move(set));
    if (bar == std::string_view::npos) break;
    rest = rest.substr(bar + 2);
  }
}

bool VersionRange::matches(const Version& version) const {
  for (const auto& set : sets_) {
    bool all = true;
    bool prerelease_named = version.prerelease.empty();
    for (const Comparator& c : set) {
      const int order = compare(version, c.version);
      switch (c.op) {
        case Comparator::less: all = all && order < 0; break;
        case Comparator::less_equal: all = all && order <= 0; break;
        case Comparator::greater: all = all && order > 0; break;
        case Comparator::greater_equal: all = all && order >= 0; break;
        case Comparator::equal: all = all && order == 0; break;
      }
      if (!c.version.prerelease.empty() && same_numbers(c.version, version)) prerelease_named = true;
    }
    if (all && prerelease_named) return true;
  }
  return false;
}

std::optional<std::string> VersionRange::best(const std::vector<std::string>& tags) const {
  std::optional<std::string> chosen;
  Version highest;
  for (const std::string& tag : tags) {
    const auto v = parse_version(tag);
    if (!v || !matches(*v)) continue;
    const int order = chosen ? compare(*v, highest) : 1;
    if (order > 0 || (order == 0 && tag.size() > chosen->size())) {
      chosen = tag;
      highest = *v;
    }
  }
  return chosen;
}

}  // namespace espresso::store::detail
