// Training end to end on the shared MNIST: LMDBs made by convert-data, a short real run, determinism,
// snapshot/resume equivalence, fine-tuning, and the bad-input cases.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "data/datum.h"
#include "espresso/data.h"
#include "data/lmdb.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "import/caffe/caffe.pb.h"
#include "test_support.h"
#include "espresso/trainer.h"

namespace espresso::train {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

struct CliResult {
  int code = -1;
  std::string output;  // stdout and stderr together
};

CliResult run_cli(const std::string& args) {
  CliResult result;
  FILE* pipe = popen((quote(testing::espresso_cli()) + " " + args + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Caffe's LeNet with its Data layers reading TRAIN_SOURCE and TEST_SOURCE; IP2 names the last layer and
// OUTPUTS its width so that tests can rename or reshape it.
const char* const kLeNet = R"(name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "TRAIN_SOURCE" batch_size: 64 backend: LMDB } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 } data_param { source: "TEST_SOURCE" batch_size: 100 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: IP1_OUTPUTS weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "IP2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
)";

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

// MNIST LMDBs built once for all tests of the suite.
class TrainerRun : public testing::SharedDataTest {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(testing::shared_data_dir() / "MANIFEST.md")) return;
    lmdbs_ = std::make_unique<TempDir>();
    for (const char* split : {"train", "test"}) {
      data::LmdbConversion conversion;
      conversion.format = "idx";
      conversion.input = (testing::shared_data_dir() / "mnist").string();
      conversion.output = lmdbs_->file(std::string("mnist_") + split + "_lmdb");
      conversion.split = split;
      data::convert_to_lmdb(conversion);
    }
  }
  static void TearDownTestSuite() { lmdbs_.reset(); }

  std::string net(const std::string& ip2_name = "ip2", int ip1_outputs = 500,
                  const std::string& train_source = "") const {
    std::string text = replace_all(kLeNet, "TRAIN_SOURCE",
                                   train_source.empty() ? lmdbs_->file("mnist_train_lmdb") : train_source);
    text = replace_all(text, "TEST_SOURCE", lmdbs_->file("mnist_test_lmdb"));
    text = replace_all(text, "IP2", ip2_name);
    return replace_all(text, "IP1_OUTPUTS", std::to_string(ip1_outputs));
  }

  // A solver file in `dir` for the net text: Caffe's LeNet settings, with `extra` lines ("key: value")
  // added or replacing the same keys.
  std::string solver(const TempDir& dir, const std::string& net_text, const std::string& extra,
                     const std::string& name = "solver") const {
    const std::string net_path = dir.write(name + "_net.prototxt", net_text);
    std::string text = "net: \"" + net_path + "\"\nsnapshot_prefix: \"" + dir.file(name) + "\"\n";
    const std::string defaults =
        "base_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: \"inv\"\ngamma: 0.0001\npower: 0.75\n"
        "random_seed: 7\n";
    std::istringstream lines(defaults);
    for (std::string line; std::getline(lines, line);) {
      if (extra.find(line.substr(0, line.find(':') + 1)) == std::string::npos) text += line + "\n";
    }
    return dir.write(name + ".prototxt", text + extra);
  }

  std::unique_ptr<Trainer> trainer(const std::string& solver_path, std::ostream* log = nullptr,
                                   TrainerOptions options = {}) const {
    static std::ostringstream quiet;
    options.log = log ? log : &quiet;
    return std::make_unique<Trainer>(solver_path, options);
  }

  static std::unique_ptr<TempDir> lmdbs_;
};

std::unique_ptr<TempDir> TrainerRun::lmdbs_;

caffe::NetParameter read_model(const std::string& path) {
  caffe::NetParameter model;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(model.ParseFromIstream(&in)) << path;
  return model;
}

const caffe::BlobProto& blob_of(const caffe::NetParameter& model, const std::string& layer, int index) {
  for (const caffe::LayerParameter& l : model.layer()) {
    if (l.name() == layer) return l.blobs(index);
  }
  throw std::runtime_error("no layer " + layer);
}

TEST_F(TrainerRun, ConvertDataRoundTripsThroughLmdb) {
  TempDir dir;
  const std::string output = dir.file("t10k_lmdb");
  const CliResult result =
      run_cli("convert-data --format idx " + quote((testing::shared_data_dir() / "mnist").string()) + " " +
              quote(output) + " --split test");
  ASSERT_EQ(result.code, 0) << result.output;
  EXPECT_NE(result.output.find("wrote 10000 records (1x28x28)"), std::string::npos) << result.output;
  const data::LabeledImages images =
      data::load_mnist((testing::shared_data_dir() / "mnist").string(), data::Split::test);
  data::LmdbReader reader(output);
  ASSERT_EQ(reader.size(), 10000);
  data::Sample sample;
  for (std::int64_t i : {std::int64_t{0}, std::int64_t{1}, std::int64_t{9999}, std::int64_t{5}}) {
    data::decode_datum(reader.value_at(i), sample, "record");
    EXPECT_EQ(sample.label, images.labels[static_cast<std::size_t>(i)]);
    ASSERT_EQ(sample.values.size(), 784u);
    for (std::size_t p = 0; p < 784; ++p) ASSERT_EQ(sample.values[p], images.image(i)[p]) << "record " << i;
  }
  // A second conversion into the same folder is refused rather than mixed in.
  EXPECT_EQ(run_cli("convert-data --format idx " + quote((testing::shared_data_dir() / "mnist").string()) +
                    " " + quote(output) + " --split test")
                .code,
            1);
}

TEST_F(TrainerRun, ConvertDataFromAnImageFolder) {
  TempDir dir;
  // Two classes of 2x3 gray PGM images, which stb decodes; folder order gives the labels.
  for (const auto& [name, value] : {std::pair{"cats", 10}, std::pair{"dogs", 200}}) {
    fs::create_directories(dir.file(std::string("images/") + name));
    std::string pgm = "P5\n3 2\n255\n" + std::string(6, static_cast<char>(value));
    dir.write(std::string("images/") + name + "/a.pgm", pgm);
  }
  const CliResult result = run_cli("convert-data --format folder --gray " + quote(dir.file("images")) + " " +
                                   quote(dir.file("db")));
  ASSERT_EQ(result.code, 0) << result.output;
  EXPECT_EQ(testing::read_bytes(dir.file("db/labels.txt")), "cats\ndogs\n");
  data::LmdbReader reader(dir.file("db"));
  ASSERT_EQ(reader.size(), 2);
  data::Sample sample;
  data::decode_datum(reader.value_at(1), sample, "record");
  EXPECT_EQ(sample.label, 1);
  EXPECT_EQ(sample.height, 2);
  EXPECT_EQ(sample.width, 3);
  EXPECT_EQ(sample.values[0], 200.0f);
}

TEST_F(TrainerRun, LeNetLearnsMnistIn300Iterations) {
  TempDir dir;
  std::ostringstream log;
  auto t =
      trainer(solver(dir, net(), "max_iter: 300\ntest_iter: 10\ntest_interval: 300\ndisplay: 100\n"), &log);
  t->solve();
  ASSERT_FALSE(t->last_test().empty()) << log.str();
  double accuracy = 0;
  for (const TestOutput& output : t->last_test()[0]) {
    if (output.name == "accuracy") accuracy = output.value;
  }
  EXPECT_GE(accuracy, 0.95) << log.str();
  const std::string text = log.str();
  EXPECT_NE(text.find("Iteration 100, loss = "), std::string::npos) << text;
  EXPECT_NE(text.find("Iteration 100, lr = "), std::string::npos) << text;
  EXPECT_NE(text.find("Iteration 300, Testing net (#0)"), std::string::npos) << text;
  EXPECT_NE(text.find("Test net output #0: accuracy = "), std::string::npos) << text;
  EXPECT_TRUE(fs::exists(dir.file("solver_iter_300.caffemodel")));
  EXPECT_TRUE(fs::exists(dir.file("solver_iter_300.solverstate")));
  EXPECT_TRUE(fs::exists(dir.file("solver_curve.png")));
  EXPECT_NE(
      testing::read_bytes(dir.file("solver_log.csv")).find("iteration,loss,lr,test0/accuracy,test0/loss"),
      std::string::npos);
  // Our own importer reads the snapshot back, and it classifies as well as the trainer measured.
  const Graph graph =
      load_caffe(dir.file("solver_net.prototxt"), dir.file("solver_iter_300.caffemodel"), Phase::test);
  EXPECT_EQ(graph.find_layer("ip1")->weights.at(0).shape(), (Shape{500, 800}));
}

// docs/training-memory.md: the planned training memory against the naive, from the CLI, with the
// blobs of Caffe's LeNet counted independently (431,080 floats: 20·25+20, 50·500+50, 500·800+500,
// 10·500+10) and SGD's one history blob each.
TEST_F(TrainerRun, CliReportsTrainingMemoryPlannedVsNaive) {
  TempDir dir;
  const std::string path = solver(dir, net(), "max_iter: 2\ntest_iter: 1\ntest_interval: 100\n");
  for (const std::string& args :
       {"info " + quote(path) + " --training", "train " + quote(path) + " --report-memory --threads 1"}) {
    const CliResult result = run_cli(args);
    ASSERT_EQ(result.code, 0) << args << "\n" << result.output;
    const std::string& text = result.output;
    for (const char* row : {"  weights ", "  weight gradients ", "  solver history ", "  activations ",
                            "  activation gradients ", "  workspace ", "  test nets' activations ",
                            "  activations + gradients, one arena ", "  total "})
      EXPECT_NE(text.find(row), std::string::npos) << args << ": no row '" << row << "'\n" << text;
    for (const char* row : {"  weights ", "  weight gradients ", "  solver history "}) {
      const std::size_t at = text.find(row);
      ASSERT_NE(at, std::string::npos);
      EXPECT_NE(text.substr(at, text.find('\n', at) - at).find("1,724,320       1,724,320"),
                std::string::npos)
          << text;
    }
  }
}

TEST_F(TrainerRun, SameSeedGivesTheSameLossCurve) {
  TempDir dir;
  const std::string path = solver(dir, net(), "max_iter: 50\n");
  auto first = trainer(path);
  first->step(50);
  auto second = trainer(path);
  second->step(50);
  ASSERT_EQ(first->losses().size(), 50u);
  EXPECT_EQ(first->losses(), second->losses());
  EXPECT_LT(first->losses().back(), first->losses().front());
}

// fp16 training's loss scale is in the snapshot: a resumed run goes on with the scale it had and its
// count towards the next doubling, not from TrainerOptions::loss_scale again.
TEST_F(TrainerRun, ResumingFp16TrainingKeepsTheLossScale) {
  REQUIRE_GPU();
  TempDir dir;
  TrainerOptions options{.device = Device::cuda(0),
                         .precision = Precision::fp16,
                         .loss_scale = {.initial = 1024.0f, .growth_interval = 4}};
  const std::string path = solver(dir, net(), "max_iter: 10\nsnapshot: 10\n");
  auto first = trainer(path, nullptr, options);
  first->solve();
  const float scale = first->train_net().loss_scale();
  EXPECT_GE(scale, 1024.0f) << "LeNet's gradients do not overflow at these scales";
  auto resumed = trainer(path, nullptr, options);
  EXPECT_EQ(resumed->train_net().loss_scale(), 1024.0f);
  resumed->restore(dir.file("solver_iter_10.solverstate"));
  EXPECT_EQ(resumed->train_net().loss_scale(), scale);
  // Ten clean steps at interval 4: two doublings and two steps towards the third, which two more make.
  ASSERT_EQ(scale, 4096.0f);
  resumed->step(1);
  EXPECT_EQ(resumed->train_net().loss_scale(), 4096.0f);
  resumed->step(1);
  EXPECT_EQ(resumed->train_net().loss_scale(), 8192.0f);
}

TEST_F(TrainerRun, ResumingFromASnapshotMatchesAnUninterruptedRun) {
  TempDir dir;
  const std::string whole = solver(dir, net(), "max_iter: 40\nsnapshot: 20\n", "whole");
  trainer(whole)->solve();
  const std::string resumed = solver(dir, net(), "max_iter: 40\nsnapshot: 20\n", "resumed");
  auto t = trainer(resumed);
  t->restore(dir.file("whole_iter_20.solverstate"));
  EXPECT_EQ(t->iteration(), 20);
  t->solve();
  const caffe::NetParameter a = read_model(dir.file("whole_iter_40.caffemodel"));
  const caffe::NetParameter b = read_model(dir.file("resumed_iter_40.caffemodel"));
  for (const char* layer : {"conv1", "conv2", "ip1", "ip2"}) {
    for (int blob = 0; blob < 2; ++blob) {
      const caffe::BlobProto& x = blob_of(a, layer, blob);
      const caffe::BlobProto& y = blob_of(b, layer, blob);
      ASSERT_EQ(x.data_size(), y.data_size());
      for (int i = 0; i < x.data_size(); ++i)
        ASSERT_EQ(x.data(i), y.data(i)) << layer << " blob " << blob << " @" << i;
    }
  }
}

TEST_F(TrainerRun, FineTuningCopiesLayersByNameAndSkipsRenamedOnes) {
  TempDir dir;
  trainer(solver(dir, net(), "max_iter: 10\n", "base"))->solve();
  const std::string weights = dir.file("base_iter_10.caffemodel");
  const caffe::NetParameter base = read_model(weights);

  auto tuned = trainer(solver(dir, net("ip2_new"), "max_iter: 10\n", "tuned"));
  tuned->copy_weights(weights);
  for (const Parameter& p : tuned->train_net().parameters()) {
    const std::vector<float> values = p.value.to_vector();
    if (p.layer == "conv1" && p.index == 0) {
      const caffe::BlobProto& stored = blob_of(base, "conv1", 0);
      for (int i = 0; i < stored.data_size(); ++i)
        ASSERT_EQ(values[static_cast<std::size_t>(i)], stored.data(i));
    }
    if (p.layer == "ip2_new" && p.index == 0) {
      EXPECT_NE(values[0], blob_of(base, "ip2", 0).data(0));
    }
  }
  tuned->step(5);

  auto reshaped = trainer(solver(dir, net("ip2", 300), "max_iter: 10\n", "reshaped"));
  try {
    reshaped->copy_weights(weights);
    FAIL() << "a same-named layer of another shape was copied";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'ip1'"), std::string::npos) << e.what();
  }
}

TEST_F(TrainerRun, AStateFromAnotherNetIsRefused) {
  TempDir dir;
  trainer(solver(dir, net(), "max_iter: 2\n", "small"))->solve();
  auto other = trainer(solver(dir, net("ip2", 300), "max_iter: 4\n", "other"));
  try {
    other->restore(dir.file("small_iter_2.solverstate"));
    FAIL() << "restored a state of another net";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("'ip1'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(other->iteration(), 0);
  // Through the CLI: one error line, exit 1.
  const CliResult cli = run_cli("train " + quote(dir.file("other.prototxt")) + " --resume " +
                                quote(dir.file("small_iter_2.solverstate")));
  EXPECT_EQ(cli.code, 1) << cli.output;
  EXPECT_NE(cli.output.find("error: "), std::string::npos) << cli.output;
}

TEST_F(TrainerRun, NanLossStopsNamingTheIterationAndLayerAndKeepsSnapshots) {
  TempDir dir;
  auto t = trainer(solver(dir, net(), "max_iter: 50\nsnapshot: 1\nbase_lr: 1e12\nmomentum: 0\n", "diverge"));
  try {
    t->solve();
    FAIL() << "training went on with a non-finite loss";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("Iteration "), std::string::npos) << message;
    EXPECT_NE(message.find("layer '"), std::string::npos) << message;
  }
  ASSERT_GE(t->iteration(), 1);
  // The snapshot before the failure is whole: our importer reads it.
  const std::string last = dir.file("diverge_iter_" + std::to_string(t->iteration()) + ".caffemodel");
  EXPECT_NO_THROW(load_caffe(dir.file("diverge_net.prototxt"), last, Phase::test));
  for (const fs::directory_entry& entry : fs::directory_iterator(dir.path()))
    EXPECT_NE(entry.path().extension(), ".tmp") << entry.path();
}

TEST_F(TrainerRun, MissingAndCorruptSourcesAreClearErrors) {
  TempDir dir;
  const std::string missing = dir.file("no_such_lmdb");
  EXPECT_THROW(trainer(solver(dir, net("ip2", 500, missing), "max_iter: 5\n", "missing")), FileError);
  const CliResult cli = run_cli("train " + quote(dir.file("missing.prototxt")));
  EXPECT_EQ(cli.code, 1);
  EXPECT_NE(cli.output.find("no_such_lmdb"), std::string::npos) << cli.output;

  fs::create_directories(dir.file("corrupt_lmdb"));
  dir.write("corrupt_lmdb/data.mdb", std::string(20000, 'x'));
  try {
    trainer(solver(dir, net("ip2", 500, dir.file("corrupt_lmdb")), "max_iter: 5\n", "corrupt"));
    FAIL() << "a corrupt LMDB was accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt_lmdb"), std::string::npos) << e.what();
  }
}

TEST_F(TrainerRun, NetPathsFallBackToTheSolversFolder) {
  TempDir dir;
  dir.write("lenet.prototxt", net());
  const std::string path = dir.write("solver.prototxt",
                                     "net: \"lenet.prototxt\"\nbase_lr: 0.01\nmax_iter: 1\n"
                                     "random_seed: 1\nsnapshot_prefix: \"" +
                                         dir.file("s") + "\"\n");
  std::ostringstream log;
  auto t = trainer(path, &log);
  EXPECT_NE(log.str().find("relative to the solver's folder"), std::string::npos) << log.str();
}

}  // namespace
}  // namespace espresso::train
