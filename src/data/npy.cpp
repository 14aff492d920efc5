#include "data/npy.h"

#include <cstring>
#include <fstream>

#include "espresso/errors.h"
#include "espresso/limits.h"

namespace espresso::data {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicBytes = 6;

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

class HeaderReader {
 public:
  HeaderReader(std::string text, std::string name) : text_(std::move(text)), name_(std::move(name)) {}

  // The text after `'key':`, with leading spaces skipped.
  std::size_t value_of(const std::string& key) const {
    std::size_t at = text_.find("'" + key + "'");
    if (at == std::string::npos) at = text_.find("\"" + key + "\"");
    if (at == std::string::npos) fail("has no '" + key + "' entry");
    at += key.size() + 2;
    at = skip_spaces(at);
    if (at >= text_.size() || text_[at] != ':') fail("is malformed after '" + key + "'");
    return skip_spaces(at + 1);
  }

  std::string quoted(const std::string& key) const {
    const std::size_t at = value_of(key);
    const char quote = at < text_.size() ? text_[at] : '\0';
    if (quote != '\'' && quote != '"') fail("'" + key + "' is not a string");
    const std::size_t end = text_.find(quote, at + 1);
    if (end == std::string::npos) fail("'" + key + "' has no closing quote");
    return text_.substr(at + 1, end - at - 1);
  }

  bool boolean(const std::string& key) const {
    const std::size_t at = value_of(key);
    if (text_.compare(at, 4, "True") == 0) return true;
    if (text_.compare(at, 5, "False") == 0) return false;
    fail("'" + key + "' is not True or False");
  }

  std::vector<std::int64_t> tuple(const std::string& key) const {
    std::size_t at = value_of(key);
    if (at >= text_.size() || text_[at] != '(') fail("'" + key + "' is not a tuple");
    const std::size_t end = text_.find(')', at);
    if (end == std::string::npos) fail("'" + key + "' has no closing parenthesis");
    std::vector<std::int64_t> values;
    ++at;
    while (true) {
      at = skip_spaces(at);
      if (at == end) break;
      std::size_t digits = at;
      while (digits < end && text_[digits] >= '0' && text_[digits] <= '9') ++digits;
      if (digits == at || digits - at > 15) fail("'" + key + "' holds a value that is not a dimension");
      values.push_back(std::stoll(text_.substr(at, digits - at)));
      at = skip_spaces(digits);
      if (at == end) break;
      if (text_[at] != ',') fail("'" + key + "' is malformed");
      ++at;
    }
    return values;
  }

  [[noreturn]] void fail(const std::string& what) const { throw DataError(name_ + ": .npy header " + what); }

 private:
  std::size_t skip_spaces(std::size_t at) const {
    while (at < text_.size() && is_space(text_[at])) ++at;
    return at;
  }

  std::string text_;
  std::string name_;
};

std::uint32_t little_endian(const std::string& bytes, std::size_t offset, std::size_t width) {
  std::uint32_t value = 0;
  for (std::size_t i = width; i-- > 0;) value = (value << 8) | static_cast<std::uint8_t>(bytes[offset + i]);
  return value;
}

}  // namespace

NpyArray parse_npy(const std::string& bytes, const std::string& name) {
  if (bytes.size() < kMagicBytes + 4 || bytes.compare(0, kMagicBytes, kMagic) != 0) {
    throw DataError(name + ": not a .npy file (bad magic)");
  }
  const int major = static_cast<std::uint8_t>(bytes[kMagicBytes]);
  if (major < 1 || major > 3)
    throw DataError(name + ": unsupported .npy format version " + std::to_string(major));
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  const std::size_t prefix = kMagicBytes + 2 + length_bytes;
  if (bytes.size() < prefix) throw DataError(name + ": .npy header is truncated");
  const std::size_t header_length = little_endian(bytes, kMagicBytes + 2, length_bytes);
  if (bytes.size() < prefix + header_length) throw DataError(name + ": .npy header is truncated");
  std::string header = bytes.substr(prefix, header_length);
  while (!header.empty() && is_space(header.back())) header.pop_back();
  const HeaderReader reader(header, name);
  if (header.empty() || header.front() != '{' || header.back() != '}') reader.fail("is not a dictionary");

  const std::string descr = reader.quoted("descr");
  std::size_t item_bytes = 0;
  if (descr == "<f4") {
    item_bytes = 4;
  } else if (descr == "<f8") {
    item_bytes = 8;
  } else {
    reader.fail("has dtype '" + descr +
                "'; only little-endian float32 (<f4) and float64 (<f8) are supported");
  }
  if (reader.boolean("fortran_order")) reader.fail("says fortran_order: True; only C order is supported");

  NpyArray array;
  array.shape = reader.tuple("shape");
  const auto count = static_cast<std::size_t>(checked_numel(array.shape, sizeof(double), name + ": .npy shape"));
  const std::size_t data_bytes = bytes.size() - prefix - header_length;
  if (data_bytes != count * item_bytes) {
    throw DataError(name + ": .npy data holds " + std::to_string(data_bytes) +
                    " bytes but the header's shape and dtype need " + std::to_string(count * item_bytes));
  }
  const char* data = bytes.data() + prefix + header_length;
  array.values.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (item_bytes == 4) {
      float value;
      std::memcpy(&value, data + i * 4, 4);
      array.values[i] = value;
    } else {
      std::memcpy(&array.values[i], data + i * 8, 8);
    }
  }
  return array;
}

NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path + ": cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw FileError(path + ": read error");
  return parse_npy(bytes, path);
}

}  // namespace espresso::data
