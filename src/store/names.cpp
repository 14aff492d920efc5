// Names, tags, digests and references, validated before they touch a path or a query.
#include <string>

#include "espresso/store.h"
#include "store/semver.h"

namespace espresso::store {
namespace {

bool lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
bool valid_component(std::string_view c) {
  if (c.empty() || !lower_alnum(c.front()) || !lower_alnum(c.back())) return false;
  for (std::size_t i = 0; i < c.size();) {
    if (lower_alnum(c[i])) {
      ++i;
      continue;
    }
    // A separator run: ".", "_", "__" or "-"+, followed by an alphanumeric (the back is one).
    std::size_t j = i;
    while (j < c.size() && !lower_alnum(c[j])) ++j;
    const std::string_view sep = c.substr(i, j - i);
    const bool ok = sep == "." || sep == "_" || sep == "__" || sep.find_first_not_of('-') == std::string_view::npos;
    if (!ok) return false;
    i = j;
  }
  return true;
}

bool valid_registry(std::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  for (char c : host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '-' || c == ':' || c == '[' || c == ']';
    if (!ok) return false;
  }
  return host.find("..") == std::string_view::npos;
}

bool is_registry_component(std::string_view first) {
  return first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos ||
         first == "localhost";
}

}  // namespace

bool valid_repository(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = name.find('/', start);
    const std::string_view component = name.substr(start, slash == std::string_view::npos ? name.npos : slash - start);
    if (!valid_component(component)) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  for (std::size_t i = 0; i < tag.size(); ++i) {
    const char c = tag[i];
    const bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!(word || (i > 0 && (c == '.' || c == '-')))) return false;
  }
  return true;
}

bool valid_digest(std::string_view digest) {
  if (digest.size() != 71 || digest.substr(0, 7) != "sha256:") return false;
  for (char c : digest.substr(7)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Reference Reference::parse(std::string_view text, std::string_view default_registry) {
  const auto fail = [&](const std::string& why) {
    return StoreError("reference '" + std::string(text) + "': " + why);
  };
  if (text.find('\0') != std::string_view::npos) throw fail("contains a NUL byte");
  Reference ref;
  std::string_view rest = text;
  if (const std::size_t at = rest.find('@'); at != std::string_view::npos) {
    ref.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    if (!valid_digest(ref.digest)) throw fail("'" + ref.digest + "' is not a sha256 digest (sha256: and 64 hex digits)");
  }
  if (const std::size_t slash = rest.find('/'); slash != std::string_view::npos &&
                                                 is_registry_component(rest.substr(0, slash))) {
    ref.registry = std::string(rest.substr(0, slash));
    rest = rest.substr(slash + 1);
    if (!valid_registry(ref.registry)) throw fail("'" + ref.registry + "' is not a registry host[:port]");
  } else {
    ref.registry = std::string(default_registry);
  }
  const std::size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos) {
    ref.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (!valid_tag(ref.tag) && detail::VersionRange::looks_like(ref.tag)) {
      static_cast<void>(detail::VersionRange(ref.tag));  // throws, naming what it cannot read
      if (!ref.digest.empty()) throw fail("a version range and a digest cannot be given together");
      ref.range = std::move(ref.tag);
      ref.tag.clear();
    } else if (!valid_tag(ref.tag)) {
      throw fail("'" + ref.tag + "' is not a valid version tag ([A-Za-z0-9_][A-Za-z0-9._-]*) or range (^1.2, ~1.2.3, >=1.0,<2)");
    }
  }
  ref.name = std::string(rest);
  if (!valid_repository(ref.name))
    throw fail("'" + ref.name +
               "' is not a valid model name (lower-case letters, digits and single '.', '_', '-' between them, "
               "components joined by '/')");
  if (ref.registry.empty()) throw fail("no registry: write REGISTRY/NAME:VERSION or set ESPRESSO_REGISTRY");
  if (ref.tag.empty() && ref.digest.empty() && ref.range.empty()) ref.tag = "latest";
  return ref;
}

bool Reference::looks_like(std::string_view text) {
  try {
    const Reference ref = parse(text, "default.invalid");
    const bool explicit_version = text.find('@') != std::string_view::npos ||
                                  text.substr(text.rfind('/') == std::string_view::npos ? 0 : text.rfind('/'))
                                          .find(':') != std::string_view::npos;
    return explicit_version || ref.registry != "default.invalid";
  } catch (const StoreError&) {
    return false;
  }
}

std::string Reference::str() const {
  std::string text = registry + "/" + name;
  if (!tag.empty()) text += ":" + tag;
  if (!range.empty()) text += ":" + range;
  if (!digest.empty()) text += "@" + digest;
  return text;
}

}  // namespace espresso::store
