#include "import/tflite/flatbuffer.h"

#include "espresso/errors.h"

namespace espresso::tflite_detail {

void FlatBuffer::fail(const std::string& context, const std::string& problem) const {
  throw ParseError(what_ + ": corrupt FlatBuffer: " + context + ": " + problem);
}

void FlatBuffer::require(std::size_t position, std::size_t length, const std::string& context) const {
  if (position > bytes_.size() || length > bytes_.size() - position) {
    fail(context, std::to_string(length) + " bytes at offset " + std::to_string(position) +
                      " lie outside the " + std::to_string(bytes_.size()) + "-byte buffer");
  }
}

FlatTable FlatBuffer::root() const {
  if (bytes_.size() < 8) fail("header", "the buffer holds only " + std::to_string(bytes_.size()) + " bytes");
  return table_at(read<std::uint32_t>(0, "root offset"), "root table");
}

std::string FlatBuffer::identifier() const {
  if (bytes_.size() < 8) return "";
  return std::string(reinterpret_cast<const char*>(bytes_.data()) + 4, 4);
}

FlatTable FlatBuffer::table_at(std::size_t position, const std::string& context) const {
  const std::int32_t back = read<std::int32_t>(position, context + " (vtable offset)");
  // The vtable lies at position - back; computed in signed 64 bits so neither direction wraps.
  const std::int64_t vtable = static_cast<std::int64_t>(position) - back;
  if (vtable < 0 || static_cast<std::uint64_t>(vtable) >= bytes_.size()) {
    fail(context, "vtable offset " + std::to_string(back) + " points outside the buffer");
  }
  const auto vt = static_cast<std::size_t>(vtable);
  const auto vtable_size = read<std::uint16_t>(vt, context + " (vtable size)");
  const auto table_size = read<std::uint16_t>(vt + 2, context + " (table size)");
  if (vtable_size < 4 || vtable_size % 2 != 0) fail(context, "vtable size " + std::to_string(vtable_size));
  if (table_size < 4) fail(context, "table size " + std::to_string(table_size));
  require(vt, vtable_size, context + " (vtable)");
  require(position, table_size, context + " (table)");
  return FlatTable(this, position, vt, vtable_size, table_size, context);
}

std::uint16_t FlatTable::field_offset(int field, std::size_t size) const {
  if (!valid() || field < 0) return 0;
  const std::size_t slot = 4 + 2 * static_cast<std::size_t>(field);
  if (slot + 2 > vtable_size_) return 0;
  const auto offset = buffer_->read<std::uint16_t>(vtable_ + slot, field_name(field));
  if (offset == 0) return 0;
  if (offset < 4 || offset + size > table_size_) {
    buffer_->fail(field_name(field), "offset " + std::to_string(offset) + " lies outside the " +
                                         std::to_string(table_size_) + "-byte table");
  }
  return offset;
}

std::size_t FlatTable::follow(int field) const {
  const std::size_t at = position_ + field_offset(field, 4);
  const auto target = static_cast<std::uint64_t>(at) + buffer_->read<std::uint32_t>(at, field_name(field));
  if (target >= buffer_->size()) buffer_->fail(field_name(field), "reference points outside the buffer");
  return static_cast<std::size_t>(target);
}

FlatTable FlatTable::table(int field, const std::string& name) const {
  if (!has(field)) return {};
  return buffer_->table_at(follow(field), context_ + "." + name);
}

FlatVector FlatTable::vector(int field, std::size_t element_size) const {
  if (!has(field)) return {};
  const std::size_t at = follow(field);
  const auto count = buffer_->read<std::uint32_t>(at, field_name(field) + " (length)");
  buffer_->require(at + 4, static_cast<std::size_t>(count) * element_size, field_name(field) + " (elements)");
  return FlatVector{buffer_->data(), at + 4, count, element_size};
}

std::string FlatTable::string(int field) const {
  const FlatVector v = vector(field, 1);
  return std::string(reinterpret_cast<const char*>(v.base) + v.position, v.count);
}

std::vector<FlatTable> FlatTable::tables(int field, const std::string& name) const {
  const FlatVector v = vector(field, 4);
  std::vector<FlatTable> out;
  out.reserve(v.count);
  for (std::uint32_t i = 0; i < v.count; ++i) {
    const std::size_t at = v.position + 4 * static_cast<std::size_t>(i);
    const std::string context = context_ + "." + name + "[" + std::to_string(i) + "]";
    const auto target = static_cast<std::uint64_t>(at) + buffer_->read<std::uint32_t>(at, context);
    if (target >= buffer_->size()) buffer_->fail(context, "reference points outside the buffer");
    out.push_back(buffer_->table_at(static_cast<std::size_t>(target), context));
  }
  return out;
}

namespace {
template <class T>
std::vector<T> elements(const FlatVector& v) {
  std::vector<T> out(v.count);
  if (v.count != 0) std::memcpy(out.data(), v.base + v.position, v.count * sizeof(T));
  return out;
}
}  // namespace

std::vector<std::int32_t> FlatTable::ints(int field) const {
  return elements<std::int32_t>(vector(field, 4));
}
std::vector<std::int64_t> FlatTable::longs(int field) const {
  return elements<std::int64_t>(vector(field, 8));
}
std::vector<float> FlatTable::floats(int field) const { return elements<float>(vector(field, 4)); }

}  // namespace espresso::tflite_detail
