// Knowledge distillation end to end on a tiny synthetic IDX dataset (no shared data): a teacher trained
// here, a student learning from its logits through DistillationLoss, and the bad-input cases.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>

#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/trainer.h"
#include "test_support.h"

namespace espresso::train {
namespace {

using testing::TempDir;

constexpr int kClasses = 3;
constexpr int kSide = 6;

std::string big_endian(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// `count` 6x6 images in MNIST's IDX layout: class k lights up row band k, with noise everywhere.
void write_idx(const TempDir& dir, const std::string& prefix, int count, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(0, 90);
  std::string images = big_endian(0x803) + big_endian(count) + big_endian(kSide) + big_endian(kSide);
  std::string labels = big_endian(0x801) + big_endian(count);
  for (int n = 0; n < count; ++n) {
    const int label = n % kClasses;
    labels += static_cast<char>(label);
    for (int y = 0; y < kSide; ++y) {
      for (int x = 0; x < kSide; ++x)
        images += static_cast<char>(noise(rng) + (y / (kSide / kClasses) == label ? 150 : 0));
    }
  }
  dir.write(prefix + "-images-idx3-ubyte", images);
  dir.write(prefix + "-labels-idx1-ubyte", labels);
}

std::string data_layer(const TempDir& data) {
  return R"(layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "idx:)" +
         data.path() + R"(" batch_size: 16 } }
)";
}

std::string ip(const std::string& name, const std::string& bottom, int outputs) {
  return "layer { name: \"" + name + "\" type: \"InnerProduct\" bottom: \"" + bottom + "\" top: \"" + name +
         "\" inner_product_param { num_output: " + std::to_string(outputs) +
         " weight_filler { type: \"xavier\" } bias_filler { type: \"constant\" } } }\n";
}

std::string solver(const TempDir& dir, const std::string& name, const std::string& net, int iterations) {
  const std::string net_path = dir.write(name + "_net.prototxt", net);
  return dir.write(
      name + "_solver.prototxt",
      "net: \"" + net_path +
          "\"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: \"fixed\"\nmax_iter: " + std::to_string(iterations) +
          "\nrandom_seed: 3\nsnapshot_after_train: true\n" + "snapshot_prefix: \"" + dir.file(name) + "\"\n");
}

double mean(const std::vector<float>& v, std::size_t begin, std::size_t end) {
  double sum = 0;
  for (std::size_t i = begin; i < end; ++i) sum += v[i];
  return sum / static_cast<double>(end - begin);
}

// The teacher: a small MLP trained here on the synthetic data; its deploy net ends in `tlogits` with
// `classes` outputs and takes `side`x`side` images.
struct Teacher {
  std::string deploy;
  std::string weights;
};

class Distillation : public ::testing::Test {
 protected:
  void SetUp() override {
    write_idx(data_, "train", 96, 1);
    write_idx(data_, "t10k", 30, 2);
    const std::string body =
        ip("thidden", "data", 12) +
        "layer { name: \"trelu\" type: \"ReLU\" bottom: \"thidden\" top: \"thidden\" }\n" +
        ip("tlogits", "thidden", kClasses);
    TrainerOptions options;
    options.log = &quiet_;
    options.write_curve = false;
    Trainer trainer(solver(dir_, "teacher",
                           data_layer(data_) + body +
                               "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"tlogits\" bottom: "
                               "\"label\" top: \"loss\" }\n",
                           60),
                    options);
    trainer.solve();
    teacher_.weights = dir_.file("teacher_iter_60.caffemodel");
    teacher_.deploy = deploy(kSide, body);
  }

  std::string deploy(int side, const std::string& body) const {
    return dir_.write("teacher_deploy_" + std::to_string(side) + ".prototxt",
                      "input: \"data\"\ninput_shape { dim: 1 dim: 1 dim: " + std::to_string(side) +
                          " dim: " + std::to_string(side) + " }\n" + body);
  }

  // The student: one InnerProduct to `classes` logits, learning from the teacher (and the labels).
  std::string student(
      int classes = kClasses,
      const std::string& loss_inputs = "\"logits\" bottom: \"teacher_logits\" bottom: \"label\"",
      bool teacher_input = true) const {
    std::string net = data_layer(data_);
    if (teacher_input) {
      net +=
          "layer { name: \"teacher\" type: \"Input\" top: \"teacher_logits\" include { phase: TRAIN } "
          "input_param { shape { dim: 16 dim: " +
          std::to_string(classes) + " } } }\n";
    }
    net += ip("logits", "data", classes);
    net += "layer { name: \"distill\" type: \"DistillationLoss\" bottom: " + loss_inputs +
           " top: \"loss\" distillation_loss_param { temperature: 2 alpha: 0.5 } }\n";
    return solver(dir_, "student", net, 40);
  }

  TrainerOptions with_teacher(const std::string& output = "tlogits") {
    TrainerOptions options;
    options.log = &quiet_;
    options.write_curve = false;
    options.teacher = {.model = teacher_.deploy, .weights = teacher_.weights, .output = output};
    return options;
  }

  TempDir data_;
  TempDir dir_;
  Teacher teacher_;
  std::ostringstream quiet_;
};

TEST_F(Distillation, StudentLearnsFromTheTeachersLogits) {
  Trainer trainer(student(), with_teacher());
  trainer.step(1);
  // What the train net received is what the teacher, run on its own, gives for the same batch.
  Net& net = trainer.train_net();
  const Tensor batch = net.tensor("data").to(Device::cpu());
  Net teacher(load_caffe(teacher_.deploy, teacher_.weights));
  const std::map<std::string, Tensor> expected = teacher.forward({{"data", batch}});
  const std::vector<float> want = expected.at("tlogits").to_vector();
  const std::vector<float> got = net.tensor("teacher_logits").to(Device::cpu()).to_vector();
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5f * (1 + std::abs(want[i])));
  // And the distillation loss falls as the student trains.
  trainer.step(39);
  const std::vector<float>& losses = trainer.losses();
  ASSERT_EQ(losses.size(), 40u);
  EXPECT_LT(mean(losses, 30, 40), 0.7 * mean(losses, 0, 5));
}

TEST_F(Distillation, MissingTeacherOutputNamesIt) {
  try {
    Trainer trainer(student(), with_teacher("tprob"));
    ADD_FAILURE() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("no blob 'tprob'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("tlogits"), std::string::npos) << e.what();
  }
}

TEST_F(Distillation, TrainNetWithoutTheTeacherInput) {
  try {
    Trainer trainer(student(kClasses, "\"logits\" bottom: \"logits\" bottom: \"label\"", false),
                    with_teacher());
    ADD_FAILURE() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("no input 'teacher_logits'"), std::string::npos) << e.what();
  }
}

TEST_F(Distillation, DistillationLossWithoutATeacher) {
  TrainerOptions options;
  options.log = &quiet_;
  try {
    Trainer trainer(student(), options);
    ADD_FAILURE() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'distill' (DistillationLoss) reads 'teacher_logits'"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(Distillation, TeacherWithOtherClassesNamesTheLossLayer) {
  // A student of 4 classes against the 3-class teacher.
  Trainer trainer(student(kClasses + 1), with_teacher());
  try {
    trainer.step(1);
    ADD_FAILURE() << "no error";
  } catch (const ShapeError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("'distill'"), std::string::npos) << message;
    EXPECT_NE(message.find("16x3"), std::string::npos) << message;
  }
}

TEST_F(Distillation, TeacherForOtherImagesIsRefused) {
  TrainerOptions options = with_teacher();
  options.teacher.model = deploy(5, ip("tlogits", "data", kClasses));
  options.teacher.weights.clear();
  try {
    Trainer trainer(student(), options);
    ADD_FAILURE() << "no error";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("1x1x5x5"), std::string::npos) << e.what();
  }
}

TEST_F(Distillation, CommandLine) {
  const std::string cli = testing::espresso_cli();
  const auto run = [&](const std::string& args) {
    FILE* pipe = popen((cli + " train " + args + " --threads 1 2>&1").c_str(), "r");
    std::string output;
    char buffer[4096];
    for (std::size_t n; pipe && (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;)
      output.append(buffer, n);
    const int status = pipe ? pclose(pipe) : -1;
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, output);
  };
  const std::string solver_path = student();
  const auto [ok, log] = run(solver_path + " --teacher " + teacher_.deploy + "," + teacher_.weights +
                             " --teacher-output tlogits");
  EXPECT_EQ(ok, 0) << log;
  EXPECT_NE(log.find("fills the train net's 'teacher_logits'"), std::string::npos) << log;
  const auto [missing, message] =
      run(solver_path + " --teacher " + teacher_.deploy + "," + teacher_.weights + " --teacher-output nope");
  EXPECT_NE(missing, 0);
  EXPECT_NE(message.find("no blob 'nope'"), std::string::npos) << message;
}

// The example's Caffe prototxt: distillation_loss_param reaches the layer, and the student's layers are
// those of the net trained alone.
TEST(DistillationExample, ImportsTemperatureAlphaAndTheSameStudent) {
  const std::string folder = std::string(ESPRESSO_SOURCE_DIR) + "/examples/distill/";
  const Graph distilled = load_caffe(folder + "student_distill_train_test.prototxt", "", Phase::train);
  const Graph alone = load_caffe(folder + "student_train_test.prototxt", "", Phase::train);
  const LayerSpec* loss = nullptr;
  for (const LayerSpec& spec : distilled.layers) {
    if (spec.name == "distill") loss = &spec;
  }
  ASSERT_NE(loss, nullptr);
  EXPECT_EQ(loss->type, "DistillationLoss");
  EXPECT_EQ(loss->inputs, (std::vector<std::string>{"logits", "teacher_logits", "label"}));
  EXPECT_DOUBLE_EQ(loss->attrs.get_float("temperature", 0), 2.0);
  EXPECT_DOUBLE_EQ(loss->attrs.get_float("alpha", 0), 0.5);
  const auto learned = [](const Graph& graph) {
    std::vector<std::string> names;
    for (const LayerSpec& spec : graph.layers) {
      if (spec.type == "Convolution" || spec.type == "InnerProduct")
        names.push_back(spec.name + ":" + spec.type);
    }
    return names;
  };
  EXPECT_EQ(learned(distilled), learned(alone));
  EXPECT_EQ(learned(alone).size(), 5u);
  // Without the parameter message, Caffe's defaults: soft targets only, T = 1.
  const Graph plain = load_caffe(
      std::string_view(
          "input: \"s\" input_shape { dim: 2 dim: 3 } input: \"t\" input_shape { dim: 2 dim: 3 }\n"
          "layer { name: \"d\" type: \"DistillationLoss\" bottom: \"s\" bottom: \"t\" top: \"l\" }"),
      {}, "<memory>", Phase::train);
  EXPECT_DOUBLE_EQ(plain.layers.back().attrs.get_float("temperature", 0), 1.0);
  EXPECT_DOUBLE_EQ(plain.layers.back().attrs.get_float("alpha", 0), 1.0);
}

}  // namespace
}  // namespace espresso::train
