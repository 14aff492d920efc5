// ONNX TensorProto decoding, shared by the importer and the conformance runner.
#pragma once

#include <string>
#include <vector>

#include "espresso/tensor.h"
#include "import/onnx/onnx.pb.h"

namespace espresso::onnx_detail {

// A tensor known at load time. Values are held as doubles, exact for every ONNX numeric type that
// matters here (floats and the 64-bit integers of shape arithmetic).
struct Value {
  int type = onnx::TensorProto::FLOAT;  // TensorProto.DataType
  Shape shape;
  std::vector<double> data;

  bool is_integer() const;
  Tensor to_tensor() const;  // f32
};

// Decodes a tensor. External data is read relative to `model_dir` (empty: none is allowed, the model
// came from memory); paths that are absolute or leave that folder, missing files and ranges past the
// file's end throw FileError. `where` names the file and tensor in messages.
Value decode_tensor(const onnx::TensorProto& proto, const std::string& model_dir, const std::string& where);

// The ONNX name of a TensorProto.DataType, e.g. "INT64".
std::string type_name(int type);

}  // namespace espresso::onnx_detail
