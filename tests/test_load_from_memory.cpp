// Models from memory (an app's bundled resources, a download): the same graphs as from files, and bad
// buffers are errors naming the buffer.
#include <gtest/gtest.h>

#include <random>
#include <span>

#include "espresso/import.h"
#include "espresso/net.h"
#include "espresso/package.h"
#include "test_support.h"

namespace espresso::testing {
namespace {

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

class LoadFromMemory : public SharedDataTest {
 protected:
  std::string lenet(const std::string& file) const {
    return (shared_data_dir() / "caffe" / "lenet" / file).string();
  }
};

// The outputs of two graphs on the same random input, which must agree to the bit.
void expect_same_outputs(Graph a, Graph b, const Shape& input) {
  std::mt19937 engine(5);
  std::uniform_real_distribution<float> value(0.0f, 1.0f);
  std::vector<float> values(static_cast<std::size_t>(input.numel()));
  for (float& v : values) v = value(engine);
  const std::string name = a.inputs.at(0).name;
  Net first(std::move(a)), second(std::move(b));
  const auto x = first.forward({{name, Tensor::from(input, values)}});
  const auto y = second.forward({{name, Tensor::from(input, values)}});
  ASSERT_EQ(x.size(), y.size());
  for (const auto& [output, tensor] : x) EXPECT_EQ(tensor.to_vector(), y.at(output).to_vector()) << output;
}

TEST_F(LoadFromMemory, CaffeOnnxAndEspGiveTheGraphsTheirFilesGive) {
  const std::string prototxt = read_bytes(lenet("v2_format/lenet.prototxt"));
  const std::string caffemodel = read_bytes(lenet("lenet_iter_10000.caffemodel"));
  const Graph from_file = load_model(lenet("v2_format/lenet.prototxt"), lenet("lenet_iter_10000.caffemodel"));
  expect_same_outputs(from_file, load_model(bytes_of(prototxt), ModelFormat::caffe, bytes_of(caffemodel)),
                      Shape{2, 1, 28, 28});

  const std::string onnx_path = (shared_data_dir() / "onnx" / "mnist-1" / "model.onnx").string();
  expect_same_outputs(load_model(onnx_path), load_model(bytes_of(read_bytes(onnx_path)), ModelFormat::onnx),
                      Shape{1, 1, 28, 28});

  TempDir dir;
  save_package(from_file, dir.file("lenet.esp"));
  std::string package = read_bytes(dir.file("lenet.esp"));
  Graph from_memory = load_model(bytes_of(package), ModelFormat::esp);
  package.assign(package.size(), '\0');  // the graph keeps its own copy
  expect_same_outputs(load_model(dir.file("lenet.esp")), std::move(from_memory), Shape{2, 1, 28, 28});
}

TEST_F(LoadFromMemory, BadBuffersAreNamedErrors) {
  const std::string caffemodel = read_bytes(lenet("lenet_iter_10000.caffemodel"));
  const std::string prototxt = read_bytes(lenet("v2_format/lenet.prototxt"));
  const std::string cut = caffemodel.substr(0, caffemodel.size() / 2);
  try {
    load_model(bytes_of(prototxt), ModelFormat::caffe, bytes_of(cut), "app/lenet");
    FAIL() << "a truncated caffemodel must be refused";
  } catch (const ParseError& e) {
    EXPECT_NE(std::string(e.what()).find("app/lenet (weights)"), std::string::npos) << e.what();
  }

  TempDir dir;
  save_package(load_model(lenet("v2_format/lenet.prototxt"), lenet("lenet_iter_10000.caffemodel")),
               dir.file("lenet.esp"));
  std::string package = read_bytes(dir.file("lenet.esp"));
  const std::size_t inside_ip1 = package.size() / 2;  // ip1 holds most of the bytes
  package[inside_ip1] = static_cast<char>(package[inside_ip1] ^ 0x40);
  try {
    load_model(bytes_of(package), ModelFormat::esp, {}, "bundle.esp");
    FAIL() << "a corrupt package must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bundle.esp"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_model(bytes_of(package.substr(0, 40)), ModelFormat::esp), Error);
  EXPECT_THROW(load_model(bytes_of(std::string("not a model")), ModelFormat::onnx), ParseError);
  EXPECT_THROW(load_model(bytes_of(prototxt), ModelFormat::onnx, bytes_of(caffemodel)), UnsupportedError);
}

}  // namespace
}  // namespace espresso::testing
