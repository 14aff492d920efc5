// Parsing protobuf messages from untrusted bytes (ONNX models, caffemodels, Datum records) with the
// nesting limit of espresso/limits.h, and an error that says why a message was refused.
#pragma once

#include <google/protobuf/message.h>

#include <string>
#include <string_view>

namespace espresso::data {

// Parses the whole of `bytes` into `message`. Throws LimitError "WHAT: messages nested deeper than N
// levels" when nesting exceeds Limits::max_nesting_depth, LimitError for more than 2 GiB, and
// ParseError "WHAT: not a valid KIND (truncated or corrupt protobuf)" for anything else.
void parse_binary_proto(std::string_view bytes, google::protobuf::Message& message, const std::string& what,
                        const std::string& kind);

// Whether `bytes`, read as `descriptor`'s message, nests message fields deeper than `limit`. Reads the
// wire format without building messages; stops at the first level past the limit.
bool nests_deeper_than(std::string_view bytes, const google::protobuf::Descriptor& descriptor, int limit);

}  // namespace espresso::data
