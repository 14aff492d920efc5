// Caffe's LSTM and RNN layers (recurrent_param, the cont input) imported onto espresso's recurrent layers,
// checked against Caffe's equations written out here in double precision, and the text data path
// (character vocabularies, convert-data --format text).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>

#include <sys/wait.h>

#include "espresso/data.h"
#include "espresso/espresso.h"
#include "import/caffe/caffe.pb.h"
#include "test_support.h"

namespace espresso {
namespace {

constexpr int T = 5, N = 3, I = 4, H = 3;

std::vector<float> random_values(std::size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-0.8f, 0.8f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

void add_blob(caffe::LayerParameter& layer, const std::vector<int>& dims, const std::vector<float>& values) {
  caffe::BlobProto& blob = *layer.add_blobs();
  for (int d : dims) blob.mutable_shape()->add_dim(d);
  for (float v : values) blob.add_data(v);
}

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

std::string prototxt(const std::string& type) {
  return "name: 'seq'\n"
         "input: 'x' input_shape { dim: 5 dim: 3 dim: 4 }\n"
         "input: 'cont' input_shape { dim: 5 dim: 3 }\n"
         "layer { name: 'rec' type: '" +
         type +
         "' bottom: 'x' bottom: 'cont' top: 'h'\n"
         "        recurrent_param { num_output: 3 } }\n";
}

// Runs the imported net on x and cont and returns h.
std::vector<float> run(const std::string& type, const caffe::NetParameter& weights,
                       const std::vector<float>& x, const std::vector<float>& cont) {
  const std::string bytes = weights.SerializeAsString();
  Graph graph =
      load_caffe(prototxt(type), std::span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
  Net net(graph);
  auto out = net.forward({{"x", Tensor::from(Shape{T, N, I}, x)}, {"cont", Tensor::from(Shape{T, N}, cont)}});
  EXPECT_EQ(out.at("h").shape(), (Shape{T, N, H}));
  return out.at("h").to_vector();
}

TEST(CaffeRecurrent, LstmFollowsCaffesEquations) {
  std::mt19937 rng(3);
  const std::vector<float> w_x = random_values(4 * H * I, rng), b = random_values(4 * H, rng),
                           w_h = random_values(4 * H * H, rng), x = random_values(T * N * I, rng);
  const std::vector<float> cont = {0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1};
  caffe::NetParameter weights;
  caffe::LayerParameter& layer = *weights.add_layer();
  layer.set_name("rec");
  layer.set_type("LSTM");
  add_blob(layer, {4 * H, I}, w_x);
  add_blob(layer, {4 * H}, b);
  add_blob(layer, {4 * H, H}, w_h);
  const std::vector<float> got = run("LSTM", weights, x, cont);
  for (int n = 0; n < N; ++n) {
    std::vector<double> h(H, 0.0), c(H, 0.0);
    for (int t = 0; t < T; ++t) {
      const double keep = cont[static_cast<std::size_t>(t * N + n)];
      std::vector<double> gate(4 * H);
      for (int row = 0; row < 4 * H; ++row) {
        double sum = b[static_cast<std::size_t>(row)];
        for (int i = 0; i < I; ++i)
          sum +=
              w_x[static_cast<std::size_t>(row * I + i)] * x[static_cast<std::size_t>((t * N + n) * I + i)];
        for (int j = 0; j < H; ++j)
          sum += w_h[static_cast<std::size_t>(row * H + j)] * keep * h[static_cast<std::size_t>(j)];
        gate[static_cast<std::size_t>(row)] = sum;
      }
      for (int j = 0; j < H; ++j) {
        const auto u = static_cast<std::size_t>(j), hh = static_cast<std::size_t>(H);
        // Caffe's gate order: i, f, o, g.
        c[u] = sigmoid(gate[hh + u]) * keep * c[u] + sigmoid(gate[u]) * std::tanh(gate[3 * hh + u]);
      }
      for (int j = 0; j < H; ++j) {
        const auto u = static_cast<std::size_t>(j);
        h[u] = sigmoid(gate[2 * static_cast<std::size_t>(H) + u]) * std::tanh(c[u]);
        EXPECT_NEAR(got[static_cast<std::size_t>((t * N + n) * H + j)], h[u], 1e-5)
            << "t " << t << " n " << n;
      }
    }
  }
}

TEST(CaffeRecurrent, RnnFollowsCaffesEquations) {
  std::mt19937 rng(4);
  const std::vector<float> w_x = random_values(H * I, rng), b_h = random_values(H, rng),
                           w_h = random_values(H * H, rng), w_o = random_values(H * H, rng),
                           b_o = random_values(H, rng), x = random_values(T * N * I, rng);
  const std::vector<float> cont = {0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1};
  caffe::NetParameter weights;
  caffe::LayerParameter& layer = *weights.add_layer();
  layer.set_name("rec");
  layer.set_type("RNN");
  add_blob(layer, {H, I}, w_x);
  add_blob(layer, {H}, b_h);
  add_blob(layer, {H, H}, w_h);
  add_blob(layer, {H, H}, w_o);
  add_blob(layer, {H}, b_o);
  const std::vector<float> got = run("RNN", weights, x, cont);
  for (int n = 0; n < N; ++n) {
    std::vector<double> h(H, 0.0);
    for (int t = 0; t < T; ++t) {
      const double keep = cont[static_cast<std::size_t>(t * N + n)];
      std::vector<double> next(H);
      for (int row = 0; row < H; ++row) {
        double sum = b_h[static_cast<std::size_t>(row)];
        for (int i = 0; i < I; ++i)
          sum +=
              w_x[static_cast<std::size_t>(row * I + i)] * x[static_cast<std::size_t>((t * N + n) * I + i)];
        for (int j = 0; j < H; ++j)
          sum += w_h[static_cast<std::size_t>(row * H + j)] * keep * h[static_cast<std::size_t>(j)];
        next[static_cast<std::size_t>(row)] = std::tanh(sum);
      }
      h = next;
      for (int row = 0; row < H; ++row) {
        double o = b_o[static_cast<std::size_t>(row)];
        for (int j = 0; j < H; ++j)
          o += w_o[static_cast<std::size_t>(row * H + j)] * h[static_cast<std::size_t>(j)];
        EXPECT_NEAR(got[static_cast<std::size_t>((t * N + n) * H + row)], std::tanh(o), 1e-5)
            << "t " << t << " n " << n;
      }
    }
  }
}

// Snapshots espresso writes hold its own blob layouts (W [1, H, I], R, B [1, 2H]) and the RNN's output
// layer as "<name>/output"; they load back to the same net.
TEST(CaffeRecurrent, EspressoSnapshotsOfCaffeLayersLoadBack) {
  std::mt19937 rng(5);
  const std::vector<float> w_x = random_values(H * I, rng), b_h = random_values(H, rng), w_h = random_values(H * H, rng),
                           w_o = random_values(H * H, rng), b_o = random_values(H, rng), x = random_values(T * N * I, rng);
  const std::vector<float> cont = {0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1};
  caffe::NetParameter caffe_layout;
  caffe::LayerParameter& layer = *caffe_layout.add_layer();
  layer.set_name("rec");
  layer.set_type("RNN");
  add_blob(layer, {H, I}, w_x);
  add_blob(layer, {H}, b_h);
  add_blob(layer, {H, H}, w_h);
  add_blob(layer, {H, H}, w_o);
  add_blob(layer, {H}, b_o);
  caffe::NetParameter espresso_layout;
  caffe::LayerParameter& rnn = *espresso_layout.add_layer();
  rnn.set_name("rec");
  rnn.set_type("RNN");
  std::vector<float> bias(b_h);
  bias.resize(2 * H, 0.0f);
  add_blob(rnn, {1, H, I}, w_x);
  add_blob(rnn, {1, H, H}, w_h);
  add_blob(rnn, {1, 2 * H}, bias);
  caffe::LayerParameter& output = *espresso_layout.add_layer();
  output.set_name("rec/output");
  output.set_type("InnerProduct");
  add_blob(output, {H, H}, w_o);
  add_blob(output, {H}, b_o);
  const std::vector<float> expected = run("RNN", caffe_layout, x, cont), got = run("RNN", espresso_layout, x, cont);
  ASSERT_EQ(expected.size(), got.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_FLOAT_EQ(expected[i], got[i]) << i;
}

TEST(CaffeRecurrent, BadParametersNameTheLayer) {
  try {
    load_caffe(std::string_view("input: 'x' input_shape { dim: 5 dim: 3 dim: 4 }\n"
                                "layer { name: 'rec' type: 'LSTM' bottom: 'x' top: 'h' }\n"),
               {});
    ADD_FAILURE() << "no ModelError";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'rec' (LSTM): recurrent_param.num_output"), std::string::npos)
        << e.what();
  }
}

TEST(TextData, VocabularyAndLmdbOfTexts) {
  testing::TempDir dir;
  {
    std::ofstream tsv(dir.file("train.tsv"));
    tsv << "de\tGrüße aus Köln\nen\thello hello\nde\tÄpfel\n";
  }
  data::LmdbConversion conversion;
  conversion.format = "text";
  conversion.input = dir.file("train.tsv");
  conversion.output = dir.file("train_lmdb");
  conversion.length = 8;
  const data::LmdbSummary summary = data::convert_to_lmdb(conversion);
  EXPECT_EQ(summary.records, 3);
  EXPECT_EQ(summary.width, 8);
  EXPECT_EQ(summary.class_names, (std::vector<std::string>{"de", "en"}));
  const data::CharVocabulary vocabulary = data::CharVocabulary::load(dir.file("train_lmdb/vocab.txt"));
  // 'l' and 'e' are the most frequent characters (5 and 4 times); 'ü' (U+00FC) occurs once.
  const std::vector<float> hello = vocabulary.encode("hel\xC3\xBCX", 7);
  EXPECT_EQ(hello[1], 3.0f);  // 'e' is second most frequent
  EXPECT_EQ(hello[2], 2.0f);  // 'l' is first
  EXPECT_GE(hello[3], 4.0f);  // ü is known
  EXPECT_EQ(hello[4], 1.0f);  // 'X' is not
  EXPECT_EQ(hello[5], 0.0f);  // padding
  EXPECT_THROW(vocabulary.encode("bad \xC3", 8), DataError);

  // The held-out split reuses the vocabulary and labels; an unknown label is an error naming it.
  {
    std::ofstream tsv(dir.file("test.tsv"));
    tsv << "fr\tbonjour\n";
  }
  conversion.input = dir.file("test.tsv");
  conversion.output = dir.file("test_lmdb");
  conversion.like = dir.file("train_lmdb");
  try {
    data::convert_to_lmdb(conversion);
    ADD_FAILURE() << "no DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("label 'fr'"), std::string::npos) << e.what();
  }
}

struct CliRun {
  int code = -1;
  std::string out;
};

CliRun run_cli(const std::string& args) {
  const std::string command = testing::espresso_cli() + " " + args + " 2>&1";
  CliRun result;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Class folders of text files through convert-data, then classify-text on a small Embed net.
TEST(TextData, ConvertDataAndClassifyTextFromTheCommandLine) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.file("texts/de"));
  std::filesystem::create_directories(dir.file("texts/en"));
  std::ofstream(dir.file("texts/de/a.txt")) << "Guten Tag";
  std::ofstream(dir.file("texts/de/b.txt")) << "Schöne Grüße";
  std::ofstream(dir.file("texts/en/a.txt")) << "Good day";
  CliRun convert = run_cli("convert-data --format text " + dir.file("texts") + " " + dir.file("lmdb") + " --length 8");
  ASSERT_EQ(convert.code, 0) << convert.out;
  EXPECT_NE(convert.out.find("wrote 3 records (1x1x8)"), std::string::npos) << convert.out;
  {
    std::ofstream net(dir.file("net.prototxt"));
    net << "layer { name: 'chars' type: 'Input' top: 'chars' input_param { shape { dim: 1 dim: 8 } } }\n"
           "layer { name: 'embed' type: 'Embed' bottom: 'chars' top: 'e' embed_param { num_output: 2 input_dim: 20 } }\n"
           "layer { name: 'score' type: 'InnerProduct' bottom: 'e' top: 'score' inner_product_param { num_output: 2 } }\n";
    std::ofstream tsv(dir.file("test.tsv"));
    tsv << "de\tHallo\nen\tHello\n";
  }
  CliRun classify = run_cli("classify-text " + dir.file("net.prototxt") + " --vocab " + dir.file("lmdb") + " 'Guten Morgen'");
  EXPECT_EQ(classify.code, 0) << classify.out;
  EXPECT_NE(classify.out.find("Guten Morgen"), std::string::npos) << classify.out;
  CliRun scored = run_cli("classify-text " + dir.file("net.prototxt") + " --vocab " + dir.file("lmdb") + " --test " +
                          dir.file("test.tsv"));
  EXPECT_EQ(scored.code, 0) << scored.out;
  EXPECT_NE(scored.out.find("accuracy: "), std::string::npos) << scored.out;
  EXPECT_NE(scored.out.find("(rows: true, columns: predicted)"), std::string::npos) << scored.out;
  EXPECT_EQ(run_cli("classify-text " + dir.file("net.prototxt") + " --vocab " + dir.file("lmdb")).code, 2);
  EXPECT_EQ(run_cli("convert-data --format text " + dir.file("absent") + " " + dir.file("out")).code, 1);
}

}  // namespace
}  // namespace espresso
