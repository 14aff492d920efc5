#include "data/proto_parse.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <climits>

#include "espresso/errors.h"
#include "espresso/limits.h"

namespace espresso::data {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::io::CodedInputStream;
using google::protobuf::internal::WireFormatLite;

// 1: deeper than the limit; 0: within it; -1: the bytes are not a well-formed message.
int scan(CodedInputStream& in, const Descriptor& descriptor, int depth, int limit) {
  while (true) {
    const std::uint32_t tag = in.ReadTag();
    if (tag == 0) return 0;
    const auto wire_type = WireFormatLite::GetTagWireType(tag);
    const FieldDescriptor* field = descriptor.FindFieldByNumber(static_cast<int>(WireFormatLite::GetTagFieldNumber(tag)));
    if (wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED && field != nullptr &&
        field->type() == FieldDescriptor::TYPE_MESSAGE) {
      if (depth + 1 > limit) return 1;
      std::uint32_t length = 0;
      if (!in.ReadVarint32(&length)) return -1;
      const auto old_limit = in.PushLimit(static_cast<int>(length));
      const int inner = scan(in, *field->message_type(), depth + 1, limit);
      if (inner != 0) return inner;
      if (!in.ConsumedEntireMessage()) return -1;
      in.PopLimit(old_limit);
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return -1;
    }
  }
}

}  // namespace

bool nests_deeper_than(std::string_view bytes, const Descriptor& descriptor, int limit) {
  if (bytes.size() > static_cast<std::size_t>(INT_MAX)) return false;
  CodedInputStream in(reinterpret_cast<const std::uint8_t*>(bytes.data()), static_cast<int>(bytes.size()));
  return scan(in, descriptor, 1, limit) == 1;
}

void parse_binary_proto(std::string_view bytes, google::protobuf::Message& message, const std::string& what,
                        const std::string& kind) {
  if (bytes.size() > static_cast<std::size_t>(INT_MAX)) {
    throw LimitError(what + ": " + std::to_string(bytes.size()) + " bytes; a " + kind +
                     " (one protobuf message) can hold at most 2 GiB");
  }
  const int depth = limits().max_nesting_depth;
  CodedInputStream in(reinterpret_cast<const std::uint8_t*>(bytes.data()), static_cast<int>(bytes.size()));
  // The default total limit (64 MiB in older protobuf releases) is below the size of many real models.
  in.SetTotalBytesLimit(INT_MAX);
  in.SetRecursionLimit(depth);
  if (message.ParseFromCodedStream(&in) && in.ConsumedEntireMessage()) return;
  if (nests_deeper_than(bytes, *message.GetDescriptor(), depth)) {
    throw LimitError(what + ": messages nested deeper than " + std::to_string(depth) +
                     " levels (Limits::max_nesting_depth)");
  }
  throw ParseError(what + ": not a valid " + kind + " (truncated or corrupt protobuf)");
}

}  // namespace espresso::data
