#include "espresso/limits.h"

#include <mutex>

namespace espresso {
namespace {

std::mutex& limits_mutex() {
  static std::mutex mutex;
  return mutex;
}

Limits& current() {
  static Limits value;
  return value;
}

std::string with_unit(std::int64_t bytes) {
  const std::int64_t gib = std::int64_t{1} << 30;
  if (bytes >= gib && bytes % gib == 0) return std::to_string(bytes / gib) + " GiB";
  return std::to_string(bytes) + " bytes";
}

}  // namespace

Limits limits() {
  std::lock_guard lock(limits_mutex());
  return current();
}

void set_limits(const Limits& limits) {
  std::lock_guard lock(limits_mutex());
  current() = limits;
}

std::int64_t checked_integer(double value, const std::string& what) {
  // 2^63 is exactly representable; every double below it (and at or above -2^63) converts.
  constexpr double bound = 9223372036854775808.0;
  if (!(value >= -bound && value < bound))
    throw LimitError(what + ": " + std::to_string(value) + " is no 64-bit integer");
  return static_cast<std::int64_t>(value);
}

std::int64_t checked_numel(std::span<const std::int64_t> dims, std::size_t element_bytes, const std::string& what) {
  const Limits caps = limits();
  if (static_cast<std::int64_t>(dims.size()) > caps.max_rank) {
    throw LimitError(what + ": " + std::to_string(dims.size()) + " dimensions exceed the limit of " +
                     std::to_string(caps.max_rank) + " (Limits::max_rank)");
  }
  std::int64_t count = 1;
  bool overflow = false;
  for (std::int64_t d : dims) {
    if (d < 0) throw LimitError(what + ": negative dimension " + std::to_string(d));
    if (__builtin_mul_overflow(count, d, &count)) overflow = true;
  }
  // A zero dimension makes the product 0 even after an intermediate overflow.
  for (std::int64_t d : dims) {
    if (d == 0) return 0;
  }
  std::string shape;
  for (std::int64_t d : dims) {
    if (!shape.empty()) shape.push_back('x');
    shape.append(std::to_string(d));
  }
  if (overflow || count > caps.max_tensor_elements) {
    throw LimitError(what + ": shape " + shape + (overflow ? " overflows a 64-bit element count" : " has " +
                     std::to_string(count) + " elements") + ", above the limit of " +
                     std::to_string(caps.max_tensor_elements) + " (Limits::max_tensor_elements)");
  }
  std::int64_t bytes = 0;
  if (__builtin_mul_overflow(count, static_cast<std::int64_t>(element_bytes), &bytes) ||
      bytes > caps.max_tensor_bytes) {
    throw LimitError(what + ": shape " + shape + " needs " + std::to_string(count) + " x " +
                     std::to_string(element_bytes) + " bytes, above the limit of " +
                     with_unit(caps.max_tensor_bytes) + " (Limits::max_tensor_bytes)");
  }
  return count;
}

std::int64_t checked_product(std::int64_t a, std::int64_t b, std::int64_t cap, const std::string& what) {
  std::int64_t product = 0;
  if (a < 0 || b < 0) throw LimitError(what + ": negative size " + std::to_string(a < 0 ? a : b));
  if (__builtin_mul_overflow(a, b, &product) || product > cap) {
    throw LimitError(what + ": " + std::to_string(a) + " x " + std::to_string(b) + " exceeds the limit of " +
                     std::to_string(cap));
  }
  return product;
}

void check_name_length(std::size_t bytes, const std::string& what) {
  const std::int64_t cap = limits().max_name_bytes;
  if (static_cast<std::int64_t>(bytes) > cap) {
    throw LimitError(what + ": a name of " + std::to_string(bytes) + " bytes exceeds the limit of " +
                     std::to_string(cap) + " (Limits::max_name_bytes)");
  }
}

}  // namespace espresso
