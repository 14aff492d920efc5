// Reading Caffe files into the schema of caffe.proto, and bringing V1 layers to the current form so
// that the importer maps one layer format only.
#pragma once

#include <string>

#include "import/caffe/caffe.pb.h"

namespace espresso::caffe_format {

// A text-format net; syntax errors throw ParseError as "FILE:LINE:COLUMN: message". The parse_ forms
// take the contents, with a name for messages.
caffe::NetParameter read_prototxt(const std::string& path);
caffe::NetParameter parse_prototxt(const std::string& text, const std::string& name);
// A text-format SolverParameter, with the same errors.
caffe::SolverParameter read_solver(const std::string& path);
caffe::SolverParameter parse_solver(const std::string& text, const std::string& name);
// A binary net with weights; a file that does not parse (cut short, corrupt) throws ParseError.
caffe::NetParameter read_caffemodel(const std::string& path);
caffe::NetParameter parse_caffemodel(const std::string& bytes, const std::string& name);
// Moves V1 `layers` into `layer` (types become their current names, blobs_lr/weight_decay become
// ParamSpecs). Throws ModelError naming `path` for a V1 layer without a type.
void upgrade_v1_layers(caffe::NetParameter& net, const std::string& path);

}  // namespace espresso::caffe_format
