// A bounds-checked reader for FlatBuffers tables, enough for the TensorFlow Lite schema
// (docs/tflite.md). Every offset, vtable, vector length and field is checked against the buffer
// before it is read, so a cut or corrupt file gives a ParseError naming what was being read, never
// an out-of-bounds read. The reader follows the schema rather than the data: table references are
// unsigned forward offsets, so a corrupt file cannot send it round a cycle.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace espresso::tflite_detail {

class FlatTable;

// A vector in the buffer: `count` elements of `element_size` bytes starting at `position`.
struct FlatVector {
  const std::byte* base = nullptr;
  std::size_t position = 0;
  std::uint32_t count = 0;
  std::size_t element_size = 0;
};

class FlatBuffer {
 public:
  // `what` names the buffer (the file) in messages.
  FlatBuffer(std::span<const std::byte> bytes, std::string what) : bytes_(bytes), what_(std::move(what)) {}

  // The root table; throws ParseError when the buffer is too small or the offset points outside.
  FlatTable root() const;
  // The four-byte file identifier after the root offset ("TFL3" for TensorFlow Lite), or "".
  std::string identifier() const;
  std::size_t size() const { return bytes_.size(); }
  const std::byte* data() const { return bytes_.data(); }
  const std::string& what() const { return what_; }

  // Checked little-endian reads; `context` names the field for the message.
  template <class T>
  T read(std::size_t position, const std::string& context) const {
    require(position, sizeof(T), context);
    T value;
    std::memcpy(&value, bytes_.data() + position, sizeof(T));
    return value;
  }
  void require(std::size_t position, std::size_t length, const std::string& context) const;
  [[noreturn]] void fail(const std::string& context, const std::string& problem) const;

  FlatTable table_at(std::size_t position, const std::string& context) const;

 private:
  std::span<const std::byte> bytes_;
  std::string what_;
};

// A table: fields by index (their order in the schema), absent fields give their default.
class FlatTable {
 public:
  FlatTable() = default;
  FlatTable(const FlatBuffer* buffer, std::size_t position, std::size_t vtable, std::uint16_t vtable_size,
            std::uint16_t table_size, std::string context)
      : buffer_(buffer),
        position_(position),
        vtable_(vtable),
        vtable_size_(vtable_size),
        table_size_(table_size),
        context_(std::move(context)) {}

  bool valid() const { return buffer_ != nullptr; }
  bool has(int field) const { return field_offset(field, 0) != 0; }
  const std::string& context() const { return context_; }

  template <class T>
  T scalar(int field, T fallback) const {
    const std::uint16_t offset = field_offset(field, sizeof(T));
    if (offset == 0) return fallback;
    return buffer_->template read<T>(position_ + offset, field_name(field));
  }
  // A sub-table; an invalid FlatTable when absent.
  FlatTable table(int field, const std::string& name) const;
  // A vector of scalars of `element_size` bytes; count 0 when absent.
  FlatVector vector(int field, std::size_t element_size) const;
  std::string string(int field) const;
  std::vector<FlatTable> tables(int field, const std::string& name) const;
  std::vector<std::int32_t> ints(int field) const;
  std::vector<std::int64_t> longs(int field) const;
  std::vector<float> floats(int field) const;

 private:
  // The field's offset inside the table (0: absent), checked to hold `size` bytes.
  std::uint16_t field_offset(int field, std::size_t size) const;
  std::string field_name(int field) const { return context_ + " field " + std::to_string(field); }
  // Follows the uoffset stored in `field` to the position it points at.
  std::size_t follow(int field) const;

  const FlatBuffer* buffer_ = nullptr;
  std::size_t position_ = 0;
  std::size_t vtable_ = 0;
  std::uint16_t vtable_size_ = 0;
  std::uint16_t table_size_ = 0;
  std::string context_;
};

}  // namespace espresso::tflite_detail
