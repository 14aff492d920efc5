// classify_image against `espresso classify` (a separate process with its own decode and preprocessing
// path) on real images: MNIST test digits through the Caffe LeNet (Softmax output) and the ONNX
// mnist-1 (logits), and photos through the ImageNet SqueezeNet (logits, BGR, mean); softmax of the
// CLI's printed scores computed here; and the refusals.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "espresso/data.h"
#include "espresso/errors.h"
#include "espresso/image_classifier.h"
#include "espresso/import.h"
#include "test_support.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

namespace espresso {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

class ImageClassifier : public testing::SharedDataTest {
 protected:
  static fs::path data() { return testing::shared_data_dir(); }
  static std::string lenet() { return (data() / "caffe/lenet/lenet.prototxt").string(); }
  static std::string lenet_weights() { return (data() / "caffe/lenet/lenet_iter_10000.caffemodel").string(); }
};

std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

struct CliClass {
  std::int64_t index;
  double value;
};

// Runs `espresso classify ARGS` and parses its "  N. class I  prob|score V" lines.
std::vector<CliClass> cli_classify(const std::string& args) {
  const std::string command = testing::espresso_cli() + " classify " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed");
  std::string out;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
  const int status = pclose(pipe);
  if (status != 0) throw std::runtime_error("espresso classify failed: " + out);
  std::vector<CliClass> classes;
  const std::regex line(R"(^  \d+\. class (\d+)  (?:prob|score) (-?[0-9.]+))");
  std::istringstream lines(out);
  for (std::string text; std::getline(lines, text);) {
    std::smatch match;
    if (std::regex_search(text, match, line)) classes.push_back({std::stoll(match[1]), std::stod(match[2])});
  }
  return classes;
}

std::vector<std::uint8_t> bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<double> softmax(const std::vector<CliClass>& all) {
  double top = -1e300;
  for (const CliClass& c : all) top = std::max(top, c.value);
  std::vector<double> p(all.size());
  double sum = 0;
  for (std::size_t i = 0; i < all.size(); ++i) sum += p[i] = std::exp(all[i].value - top);
  std::map<std::int64_t, double> by_index;
  std::vector<double> result(all.size());
  for (std::size_t i = 0; i < all.size(); ++i) result[static_cast<std::size_t>(all[i].index)] = p[i] / sum;
  return result;
}

TEST_F(ImageClassifier, LenetMatchesTheCliOnMnistDigits) {
  const data::LabeledImages digits = data::load_mnist((data() / "mnist").string(), data::Split::test);
  Graph graph = load_model(lenet(), lenet_weights());
  graph.metadata.name = "lenet";
  graph.metadata.task = "classification";
  graph.metadata.preprocessing.scale = 0.00390625;
  for (int i = 0; i < 10; ++i) graph.metadata.labels.push_back("digit " + std::to_string(i));
  Session session(std::make_shared<Model>(std::move(graph)));
  TempDir dir;
  int correct = 0;
  constexpr int kDigits = 12;
  for (int i = 0; i < kDigits; ++i) {
    const std::string path = dir.file("digit" + std::to_string(i) + ".png");
    ASSERT_NE(stbi_write_png(path.c_str(), 28, 28, 1, digits.image(i), 28), 0);
    const ImageClassification mine = classify_image(session, bytes_of(path), {.top = 3});
    const std::vector<CliClass> cli =
        cli_classify(quote(lenet()) + " -w " + quote(lenet_weights()) + " " + quote(path) + " --scale 0.00390625 --top 3");
    ASSERT_EQ(cli.size(), 3u);
    ASSERT_EQ(mine.top.size(), 3u);
    EXPECT_FALSE(mine.softmax_applied);  // LeNet ends in a Softmax
    for (std::size_t r = 0; r < 3; ++r) {
      EXPECT_EQ(mine.top[r].index, cli[r].index) << "digit " << i << " rank " << r;
      EXPECT_NEAR(mine.top[r].probability, cli[r].value, 2e-6) << "digit " << i << " rank " << r;
      EXPECT_EQ(mine.top[r].label, "digit " + std::to_string(mine.top[r].index));
    }
    correct += mine.top[0].index == digits.labels[static_cast<std::size_t>(i)];
    EXPECT_GT(mine.milliseconds, 0.0);
    EXPECT_GE(mine.milliseconds, mine.forward_ms);
  }
  EXPECT_GE(correct, kDigits - 1);  // LeNet is 99 % accurate
}

// mnist-1 ends in logits: the probabilities are the softmax of all ten scores the CLI prints.
TEST_F(ImageClassifier, OnnxLogitsGetASoftmax) {
  const std::string model = (data() / "onnx/mnist-1/model.onnx").string();
  const data::LabeledImages digits = data::load_mnist((data() / "mnist").string(), data::Split::test);
  Graph graph = load_model(model);
  graph.metadata.preprocessing.scale = 1.0 / 255.0;
  Session session(std::make_shared<Model>(std::move(graph)));
  TempDir dir;
  for (int i = 0; i < 4; ++i) {
    const std::string path = dir.file("d" + std::to_string(i) + ".png");
    ASSERT_NE(stbi_write_png(path.c_str(), 28, 28, 1, digits.image(i), 28), 0);
    const ImageClassification mine = classify_image(session, bytes_of(path), {.top = 5});
    EXPECT_TRUE(mine.softmax_applied);
    const std::vector<CliClass> cli = cli_classify(quote(model) + " " + quote(path) + " --scale " +
                                                   std::to_string(1.0 / 255.0) + " --top 10");
    ASSERT_EQ(cli.size(), 10u);
    const std::vector<double> expected = softmax(cli);
    ASSERT_EQ(mine.top.size(), 5u);
    for (std::size_t r = 0; r < 5; ++r) {
      EXPECT_EQ(mine.top[r].index, cli[r].index) << "rank " << r;
      EXPECT_NEAR(mine.top[r].probability, expected[static_cast<std::size_t>(mine.top[r].index)], 1e-5);
      EXPECT_EQ(mine.top[r].label, "");
    }
    EXPECT_EQ(mine.top[0].index, digits.labels[static_cast<std::size_t>(i)]);
  }
}

// SqueezeNet (ImageNet, BGR, mean 104/117/123, logits) on Caffe's cat photo and a darknet photo. Both resize
// straight to 227x227 (no centre crop), so the cat comes out a kit fox: the point is agreement.
TEST_F(ImageClassifier, SqueezeNetMatchesTheCliOnPhotos) {
  const fs::path dir = data() / "caffe/squeezenet_v1.0_deep_compression";
  const std::string deploy = (dir / "SqueezeNet_deploy.prototxt").string();
  const std::string weights = (dir / "compressed_SqueezeNet.net").string();
  const std::string synsets = (data() / "imagenet/synset_words.txt").string();
  Graph graph = load_model(deploy, weights);
  graph.metadata.preprocessing.mean = {104, 117, 123};
  std::ifstream in(synsets);
  for (std::string line; std::getline(in, line);) graph.metadata.labels.push_back(line);
  Session session(std::make_shared<Model>(std::move(graph)));
  for (const char* image : {"cat.jpg", "dog.jpg"}) {
    const std::string path = (data() / "images" / image).string();
    const ImageClassification mine = classify_image(session, bytes_of(path), {.top = 5});
    EXPECT_TRUE(mine.softmax_applied);
    const std::vector<CliClass> cli = cli_classify(quote(deploy) + " -w " + quote(weights) + " " + quote(path) +
                                                   " --mean 104,117,123 --top 1000");
    ASSERT_EQ(cli.size(), 1000u);
    const std::vector<double> expected = softmax(cli);
    for (std::size_t r = 0; r < 5; ++r) {
      EXPECT_EQ(mine.top[r].index, cli[r].index) << image << " rank " << r;
      EXPECT_NEAR(mine.top[r].probability, expected[static_cast<std::size_t>(mine.top[r].index)], 1e-4);
    }
    std::printf("%s: %s (%.3f) in %.1f ms\n", image, mine.top[0].label.c_str(), mine.top[0].probability,
                mine.milliseconds);
  }
}

template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception";
  return "";
}

TEST_F(ImageClassifier, RefusesWhatItCannotClassify) {
  Graph graph = load_model(lenet(), lenet_weights());
  graph.metadata.name = "lenet";
  Graph detector = graph;
  detector.metadata.task = "detection";
  Session not_classifier(std::make_shared<Model>(std::move(detector)));
  const std::vector<std::uint8_t> png = bytes_of((data() / "images/cat.jpg").string());
  EXPECT_NE(message_of<UnsupportedError>([&] { classify_image(not_classifier, png); }).find("task 'detection'"),
            std::string::npos);

  Graph wrong_labels = graph;
  wrong_labels.metadata.labels = {"a", "b"};
  Session labelled(std::make_shared<Model>(std::move(wrong_labels)));
  EXPECT_NE(message_of<UnsupportedError>([&] { classify_image(labelled, png); }).find("2 labels"), std::string::npos);

  Session session(std::make_shared<Model>(graph));
  const std::string text = "not an image";
  const std::vector<std::uint8_t> junk(text.begin(), text.end());
  EXPECT_NE(message_of<DataError>([&] { classify_image(session, junk, {.what = "field 'image'"}); })
                .find("field 'image'"),
            std::string::npos);
  // A PNG header that declares 60000 x 60000 pixels: refused before decoding.
  std::vector<std::uint8_t> bomb = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                    0,    0,   0xea, 0x60, 0, 0,    0xea, 0x60, 8, 0, 0, 0, 0, 0, 0, 0, 0};
  message_of<LimitError>([&] { classify_image(session, bomb); });
  EXPECT_THROW(classify_image(session, png, {.top = 0}), std::invalid_argument);
  Preprocessing bad_mean;
  bad_mean.mean = {1, 2, 3};
  EXPECT_NE(message_of<DataError>([&] { classify_image(session, png, {.preprocessing = bad_mean}); }).find("3 values"),
            std::string::npos);
  // Two outputs: not one ranking.
  Graph two = graph;
  two.outputs.push_back(two.layers.front().outputs.front());
  EXPECT_THROW(check_image_classifier(Model(std::move(two))), UnsupportedError);
}

}  // namespace
}  // namespace espresso

namespace espresso {
namespace {

// `espresso convert` stores the preprocessing and metrics that classify_image and the store's card read.
TEST_F(ImageClassifier, ConvertStoresPreprocessingAndMetrics) {
  TempDir dir;
  const std::string out = dir.file("m.esp");
  const std::string command = testing::espresso_cli() + " convert " + quote(lenet()) + " -w " +
                              quote(lenet_weights()) + " -o " + quote(out) +
                              " --rgb --mean 33 --scale 0.5 --size 30x31 --metric mnist_top1=0.9905 --metric loss=0.25" +
                              " > /dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const Graph graph = load_model(out);
  const Preprocessing& p = graph.metadata.preprocessing;
  EXPECT_EQ(p.channel_order, "rgb");
  ASSERT_EQ(p.mean.size(), 1u);
  EXPECT_EQ(p.mean[0], 33.0);
  EXPECT_EQ(p.scale, 0.5);
  EXPECT_EQ(p.size, (std::vector<std::int64_t>{30, 31}));
  EXPECT_EQ(graph.metadata.metrics.at("mnist_top1"), 0.9905);
  EXPECT_EQ(graph.metadata.metrics.at("loss"), 0.25);
  const std::string bad = testing::espresso_cli() + " convert " + quote(lenet()) + " -w " +
                          quote(lenet_weights()) + " -o " + quote(dir.file("n.esp")) + " --metric top1 > /dev/null 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
}

}  // namespace
}  // namespace espresso
