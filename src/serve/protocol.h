// The Open Inference Protocol's (KServe v2) inference request and response bodies: JSON tensors and
// the binary tensor data extension (a JSON header of Inference-Header-Content-Length bytes followed by
// the tensors' raw little-endian bytes, announced per tensor by the "binary_data_size" parameter).
// Tensors are converted to and from the framework's f32.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "espresso/tensor.h"

namespace espresso::serve {

struct RequestedInput {
  std::string name;
  Shape shape;
  Tensor tensor;  // f32, CPU, the request's shape; undefined while `binary` holds the values undecoded
  // With ParseOptions::defer_binary: the tensor's raw bytes within the body (which must outlive this)
  // and their datatype's index, for decode_input() to write straight to where the batch wants them.
  std::string_view binary;
  int datatype = 0;
};

// Writes the input's shape.numel() f32 values to `out`: converts its binary bytes (as the eager parse
// does, to the same bits) or copies its decoded tensor.
void decode_input(const RequestedInput& input, float* out);

struct RequestedOutput {
  std::string name;
  bool binary = false;
};

struct InferRequest {
  std::string id;
  std::vector<RequestedInput> inputs;
  std::vector<RequestedOutput> outputs;  // empty: every output
  bool binary_outputs = false;           // request parameter "binary_data_output"
};

// Parses a request body. `header_length` is the Inference-Header-Content-Length value when given (the
// binary extension); without it the whole body is JSON. Throws RequestError naming the field.
// With `defer_binary`, binary-extension tensors stay in the body (RequestedInput::binary) until
// decode_input(); every check on them is still made here.
InferRequest parse_infer_request(std::string_view body, std::optional<std::size_t> header_length,
                                 bool defer_binary = false);

struct InferResponse {
  std::string body;
  std::optional<std::size_t> header_length;  // set when binary data follows the JSON
};

// The response for `outputs` (in the order given), FP32, binary where the request asked for it.
InferResponse encode_infer_response(const std::string& model, const std::string& version,
                                    const InferRequest& request,
                                    const std::vector<std::pair<std::string, Tensor>>& outputs);

// "FP32", "INT64", ... for the datatypes the server reads; false for BYTES, BOOL, FP16 and unknown names.
bool readable_datatype(std::string_view datatype);

}  // namespace espresso::serve
