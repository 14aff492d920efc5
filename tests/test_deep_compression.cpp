// Deep Compression's released `.net` weights: a hand-built file checked against weights worked out by
// hand, the published compressed SqueezeNet against an independent Python decoder (through the Caffe
// importer) and on the shared photos, and cut, flipped and forged files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "espresso/espresso.h"
#include "test_support.h"

namespace espresso {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// ---- a hand-built file ------------------------------------------------------------------------

struct Entry {
  unsigned gap;
  unsigned code;
};

struct PackedLayer {
  int bits;
  std::vector<float> codebook;
  std::vector<float> bias;
  std::vector<Entry> entries;
  std::int64_t count = -1;  // the stored nonzero count; -1: entries.size()
};

void put_floats(std::string& out, const std::vector<float>& values) {
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

void put_nibbles(std::string& out, const std::vector<unsigned>& values) {
  for (std::size_t k = 0; k < values.size(); k += 2) {
    const unsigned high = k + 1 < values.size() ? values[k + 1] : 0;
    out.push_back(static_cast<char>((values[k] & 15) | (high << 4)));
  }
}

// The file as the format describes it (docs/compression.md), written independently of the reader.
std::string pack(const std::vector<PackedLayer>& layers) {
  std::string out;
  for (const PackedLayer& layer : layers) {
    const std::uint32_t count =
        static_cast<std::uint32_t>(layer.count >= 0 ? layer.count : static_cast<std::int64_t>(layer.entries.size()));
    out.append(reinterpret_cast<const char*>(&count), 4);
  }
  for (const PackedLayer& layer : layers) {
    put_floats(out, layer.codebook);
    put_floats(out, layer.bias);
    std::vector<unsigned> codes, gaps;
    for (const Entry& e : layer.entries) {
      codes.push_back(e.code);
      gaps.push_back(e.gap);
    }
    if (layer.bits == 8) {
      for (unsigned c : codes) out.push_back(static_cast<char>(c));
    } else {
      put_nibbles(out, codes);
    }
    put_nibbles(out, gaps);
  }
  return out;
}

// conv: 2 outputs from 2 channels, 2x2 kernels (16 weights, 8-bit codes); ip: 3 outputs from the 2x2x2
// result (24 weights, 4-bit codes).
const char* kTinyNet = R"(
name: "tiny"
input: "data"
input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 2 BIAS } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 3 } }
)";

std::string tiny_net(const std::string& conv_extra = "") {
  std::string text = kTinyNet;
  text.replace(text.find("BIAS"), 4, conv_extra);
  return text;
}

std::vector<float> ramp(std::size_t n, float start) {
  std::vector<float> values(n);
  for (std::size_t i = 0; i < n; ++i) values[i] = start + static_cast<float>(i);
  return values;
}

PackedLayer tiny_conv() {
  std::vector<float> codebook = ramp(256, 0.25f);
  codebook[0] = 0.0f;
  codebook[1] = 0.5f;
  codebook[2] = -1.0f;
  codebook[3] = 2.0f;
  // Places 0, 6 and 15 (the last of 16).
  return {8, codebook, {0.5f, -0.5f}, {{0, 1}, {5, 2}, {8, 3}}};
}

PackedLayer tiny_ip() {
  // codebook[k] = 0.125 + k; a filler entry (gap 15, code 0) bridges to place 15, then places 16, 20, 23.
  return {4, ramp(16, 0.125f), {1.0f, 2.0f, 3.0f}, {{15, 0}, {0, 1}, {3, 2}, {2, 15}}};
}

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

Graph load_tiny(const std::string& bytes, const std::string& net = tiny_net()) {
  return load_caffe_compressed(net, bytes_of(bytes), "tiny.net");
}

std::vector<float> values(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

template <class F>
std::string model_error_of(F&& load) {
  try {
    load();
  } catch (const ModelError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ModelError";
  return "";
}

TEST(DeepCompression, HandBuiltFileDecodesToTheWeightsWorkedOutByHand) {
  const Graph graph = load_tiny(pack({tiny_conv(), tiny_ip()}));
  const LayerSpec* conv = graph.find_layer("conv");
  const LayerSpec* ip = graph.find_layer("ip");
  ASSERT_NE(conv, nullptr);
  ASSERT_NE(ip, nullptr);
  ASSERT_EQ(conv->weights.size(), 2u);
  EXPECT_EQ(conv->weights[0].shape(), (Shape{2, 2, 2, 2}));
  std::vector<float> expected(16, 0.0f);
  expected[0] = 0.5f;
  expected[6] = -1.0f;
  expected[15] = 2.0f;
  EXPECT_EQ(values(conv->weights[0]), expected);
  EXPECT_EQ(values(conv->weights[1]), (std::vector<float>{0.5f, -0.5f}));

  ASSERT_EQ(ip->weights.size(), 2u);
  EXPECT_EQ(ip->weights[0].shape(), (Shape{3, 8}));
  // Places no entry names hold codebook[0], the filler's place included.
  std::vector<float> dense(24, 0.125f);
  dense[16] = 1.125f;
  dense[20] = 2.125f;
  dense[23] = 15.125f;
  EXPECT_EQ(values(ip->weights[0]), dense);
  EXPECT_EQ(values(ip->weights[1]), (std::vector<float>{1.0f, 2.0f, 3.0f}));
}

TEST(DeepCompression, AnIndexPastTheEndIsAModelErrorNamingTheLayer) {
  PackedLayer conv = tiny_conv();
  conv.entries[2].gap = 15;  // place 6 + 1 + 15 = 22 of 16
  const std::string message = model_error_of([&] { load_tiny(pack({conv, tiny_ip()})); });
  EXPECT_NE(message.find("layer 'conv'"), std::string::npos) << message;
  EXPECT_NE(message.find("past the end"), std::string::npos) << message;

  PackedLayer ip = tiny_ip();
  ip.entries.push_back({0, 1});  // place 24 of 24
  const std::string second = model_error_of([&] { load_tiny(pack({tiny_conv(), ip})); });
  EXPECT_NE(second.find("layer 'ip'"), std::string::npos) << second;
}

TEST(DeepCompression, MoreEntriesThanWeightsAreAModelError) {
  PackedLayer ip = tiny_ip();
  ip.count = 25;
  const std::string message = model_error_of([&] { load_tiny(pack({tiny_conv(), ip})); });
  EXPECT_NE(message.find("layer 'ip'"), std::string::npos) << message;
  ip.count = 0xffffffff;
  model_error_of([&] { load_tiny(pack({tiny_conv(), ip})); });
}

TEST(DeepCompression, EveryCutAndAnyTrailingByteAreModelErrors) {
  const std::string whole = pack({tiny_conv(), tiny_ip()});
  for (std::size_t size = 0; size < whole.size(); ++size) {
    const std::string message = model_error_of([&] { load_tiny(whole.substr(0, size)); });
    if (size >= 8) {
      EXPECT_NE(message.find("layer '"), std::string::npos) << size << ": " << message;
    }
  }
  const std::string message = model_error_of([&] { load_tiny(whole + '\0'); });
  EXPECT_NE(message.find("1 bytes follow"), std::string::npos) << message;
}

TEST(DeepCompression, NonFiniteCodebookEntriesAndMissingBiasesAreModelErrors) {
  PackedLayer conv = tiny_conv();
  conv.codebook[7] = std::numeric_limits<float>::quiet_NaN();
  const std::string message = model_error_of([&] { load_tiny(pack({conv, tiny_ip()})); });
  EXPECT_NE(message.find("codebook entry 7"), std::string::npos) << message;

  PackedLayer no_bias = tiny_conv();
  no_bias.bias.clear();
  const std::string second = model_error_of(
      [&] { load_tiny(pack({no_bias, tiny_ip()}), tiny_net("bias_term: false")); });
  EXPECT_NE(second.find("layer 'conv'"), std::string::npos) << second;

  const std::string none = model_error_of([] {
    load_caffe_compressed("input: \"x\" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2\n"
                          "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"y\" }",
                          {}, "none.net");
  });
  EXPECT_NE(none.find("no layer"), std::string::npos) << none;
}

TEST(DeepCompression, LoadModelPicksTheFormatByTheWeightsExtension) {
  TempDir dir;
  const std::string prototxt = dir.write("tiny.prototxt", tiny_net());
  const std::string weights = dir.write("tiny.net", pack({tiny_conv(), tiny_ip()}));
  const Graph graph = load_model(prototxt, weights);
  ASSERT_NE(graph.find_layer("ip"), nullptr);
  EXPECT_EQ(graph.find_layer("ip")->weights.size(), 2u);
  const std::string cut = dir.write("cut.net", pack({tiny_conv(), tiny_ip()}).substr(0, 30));
  const std::string message = model_error_of([&] { load_model(prototxt, cut); });
  EXPECT_NE(message.find("cut.net"), std::string::npos) << message;
}

// ---- the published compressed SqueezeNet ------------------------------------------------------

class CompressedSqueezeNet : public testing::SharedDataTest {
 protected:
  static fs::path dir() { return testing::shared_data_dir() / "caffe" / "squeezenet_v1.0_deep_compression"; }
  static std::string deploy() { return (dir() / "SqueezeNet_deploy.prototxt").string(); }
  static std::string weights() { return (dir() / "compressed_SqueezeNet.net").string(); }
};

std::string quote(const std::string& s) { return "'" + s + "'"; }

std::string run_capture(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
  pclose(pipe);
  return out;
}

Tensor forward(Graph graph, const Tensor& input) {
  Net net(std::move(graph));
  std::map<std::string, Tensor> outputs = net.forward({{"data", input}});
  return outputs.begin()->second;
}

TEST_F(CompressedSqueezeNet, MatchesTheDenseWeightsOfAnIndependentDecoderExactly) {
  if (std::system("python3 -c 'import struct' >/dev/null 2>&1") != 0) GTEST_SKIP() << "python3 is not installed";
  TempDir temp;
  const std::string dense = temp.file("dense.caffemodel");
  const std::string script = std::string(ESPRESSO_SOURCE_DIR) + "/tests/deep_compression_reference.py";
  ASSERT_EQ(std::system(("python3 " + quote(script) + " " + quote(deploy()) + " " + quote(weights()) + " " +
                         quote(dense))
                            .c_str()),
            0);
  const Graph compressed = load_model(deploy(), weights());
  const Graph reference = load_model(deploy(), dense);
  std::int64_t params = 0, zeros = 0;
  int layers = 0;
  for (const LayerSpec& layer : reference.layers) {
    if (layer.weights.empty()) continue;
    ++layers;
    const LayerSpec* ours = compressed.find_layer(layer.name);
    ASSERT_NE(ours, nullptr);
    ASSERT_EQ(ours->weights.size(), layer.weights.size()) << layer.name;
    for (std::size_t i = 0; i < layer.weights.size(); ++i) {
      ASSERT_EQ(ours->weights[i].shape(), layer.weights[i].shape()) << layer.name;
      EXPECT_EQ(std::memcmp(ours->weights[i].raw(), layer.weights[i].raw(), layer.weights[i].bytes()), 0)
          << layer.name << " blob " << i;
    }
    params += layer.weights[0].numel() + layer.weights[1].numel();
    for (float w : values(layer.weights[0])) zeros += w == 0.0f;
  }
  EXPECT_EQ(layers, 26);
  EXPECT_EQ(params, 1248424);  // the MANIFEST's count
  // Pruned: most weights are zero.
  EXPECT_GT(zeros, params / 2);

  Tensor input = Tensor::empty(Shape{1, 3, 227, 227});
  std::mt19937 engine(7);
  std::uniform_real_distribution<float> pixel(-120.0f, 130.0f);
  float* p = input.data<float>();
  for (std::int64_t i = 0; i < input.numel(); ++i) p[i] = pixel(engine);
  const Tensor a = forward(compressed, input);
  const Tensor b = forward(reference, input);
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.bytes()), 0);
}

TEST_F(CompressedSqueezeNet, ClassifiesTheSharedPhotosSensibly) {
  const std::string labels = (testing::shared_data_dir() / "imagenet" / "synset_words.txt").string();
  const fs::path images = testing::shared_data_dir() / "images";
  // The photos' true classes (MANIFEST: Caffe's tabby-cat photo, darknet's eagle).
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"cat.jpg", {"tabby", "tiger cat", "Egyptian cat"}}, {"eagle.jpg", {"bald eagle"}}};
  for (const auto& [image, classes] : cases) {
    const std::string out =
        run_capture(quote(testing::espresso_cli()) + " classify " + quote(deploy()) + " -w " + quote(weights()) + " " +
                    quote((images / image).string()) + " --labels " + quote(labels) + " --mean 104,117,123 --top 5");
    bool found = false;
    for (const std::string& c : classes) found = found || out.find(c) != std::string::npos;
    EXPECT_TRUE(found) << image << ":\n" << out;
  }
}

TEST_F(CompressedSqueezeNet, CutAndFlippedFilesLoadOrThrowModelErrors) {
  const std::string bytes = testing::read_bytes(weights());
  const std::string net = testing::read_bytes(deploy());
  ASSERT_EQ(bytes.size(), 675763u);
  std::mt19937 engine(13);
  std::vector<std::size_t> cuts = {0, 1, 103, 104, 105, 1127, bytes.size() - 1};
  for (int i = 0; i < 24; ++i) cuts.push_back(std::uniform_int_distribution<std::size_t>(0, bytes.size() - 1)(engine));
  for (std::size_t size : cuts) {
    const std::string message =
        model_error_of([&] { load_caffe_compressed(net, bytes_of(bytes.substr(0, size)), "squeeze.net"); });
    if (size >= 104) {
      EXPECT_NE(message.find("layer '"), std::string::npos) << size << ": " << message;
    }
  }
  int failed = 0;
  for (int i = 0; i < 48; ++i) {
    std::string flipped = bytes;
    // The count table and the first layer's streams, where a flip most often breaks the file.
    const std::size_t at = std::uniform_int_distribution<std::size_t>(0, i % 2 ? 103 : bytes.size() - 1)(engine);
    flipped[at] = static_cast<char>(flipped[at] ^ (1 << (i % 8)));
    try {
      load_caffe_compressed(net, bytes_of(flipped), "squeeze.net");
    } catch (const ModelError&) {
      ++failed;
    }
  }
  // Flips in the count table change every later offset.
  EXPECT_GT(failed, 0);
}

}  // namespace
}  // namespace espresso
