// Data-parallel training with real processes on the CPU (TCP communicator): equality with one process
// of the same global batch, resuming with another rank count, a killed rank, mismatched ranks, the
// ring all-reduce against a double-precision sum, the environment variables of launchers.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "espresso/data.h"
#include "espresso/devices.h"
#include "espresso/distributed.h"
#include "espresso/errors.h"
#include "import/caffe/caffe.pb.h"
#include "test_support.h"
#include "train/communicator.h"

namespace espresso::train {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using Clock = std::chrono::steady_clock;

std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

struct CliResult {
  int code = -1;
  std::string output;
};

CliResult run_cli(const std::string& args, const std::string& env = "") {
  CliResult result;
  FILE* pipe = popen((env + " " + quote(testing::espresso_cli()) + " train " + args + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// One rank started the way mpirun or a cluster script would: environment variables, output to a file.
struct RankProcess {
  pid_t pid = -1;
  std::string log;
};

RankProcess start_rank(const std::string& solver, int rank, int world, int port, const std::string& log,
                       int timeout = 20) {
  RankProcess process{fork(), log};
  if (process.pid == 0) {
    setenv("ESPRESSO_RANK", std::to_string(rank).c_str(), 1);
    setenv("ESPRESSO_WORLD_SIZE", std::to_string(world).c_str(), 1);
    setenv("ESPRESSO_MASTER_ADDR", "127.0.0.1", 1);
    setenv("ESPRESSO_MASTER_PORT", std::to_string(port).c_str(), 1);
    setenv("ESPRESSO_DIST_TIMEOUT", std::to_string(timeout).c_str(), 1);
    std::freopen(log.c_str(), "w", stdout);
    dup2(fileno(stdout), STDERR_FILENO);
    execl(testing::espresso_cli().c_str(), "espresso", "train", solver.c_str(), "--threads", "1",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  return process;
}

// Waits up to `limit` for the process; its exit code, or -1 when it had to be killed.
int wait_for(const RankProcess& process, std::chrono::seconds limit) {
  const Clock::time_point deadline = Clock::now() + limit;
  int status = 0;
  while (Clock::now() < deadline) {
    if (waitpid(process.pid, &status, WNOHANG) == process.pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(process.pid, SIGKILL);
  waitpid(process.pid, &status, 0);
  return -1;
}

int test_port() {
  // Distinct per test process so that parallel ctest runs do not meet each other's ranks, and below
  // Linux's ephemeral range (32768 and up), where the servers and clients of other tests take ports.
  return 20000 + static_cast<int>(getpid() % 1500) * 8;  // and up to 7 more
}

std::map<std::string, std::vector<float>> read_weights(const std::string& path) {
  caffe::NetParameter model;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in && model.ParseFromIstream(&in)) << path;
  std::map<std::string, std::vector<float>> weights;
  for (const caffe::LayerParameter& layer : model.layer()) {
    for (int i = 0; i < layer.blobs_size(); ++i)
      weights[layer.name() + "/" + std::to_string(i)].assign(layer.blobs(i).data().begin(),
                                                             layer.blobs(i).data().end());
  }
  return weights;
}

// The largest |a - b| / max(1, |a|) over all weights.
double weight_difference(const std::string& a, const std::string& b) {
  const auto wa = read_weights(a);
  const auto wb = read_weights(b);
  EXPECT_EQ(wa.size(), wb.size());
  EXPECT_FALSE(wa.empty());
  double worst = 0;
  for (const auto& [name, values] : wa) {
    auto it = wb.find(name);
    if (it == wb.end() || it->second.size() != values.size()) {
      ADD_FAILURE() << name << " differs in shape";
      return 1e30;
    }
    for (std::size_t i = 0; i < values.size(); ++i) {
      const double d = std::abs(static_cast<double>(values[i]) - it->second[i]) /
                       std::max(1.0, std::abs(static_cast<double>(values[i])));
      worst = std::max(worst, d);
    }
  }
  return worst;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

const char* const kLeNet = R"(name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "TRAIN_SOURCE" batch_size: BATCH backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: IP1 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
)";

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

class Distributed : public testing::SharedDataTest {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(testing::shared_data_dir() / "MANIFEST.md")) return;
    lmdbs_ = std::make_unique<TempDir>();
    data::LmdbConversion conversion;
    conversion.format = "idx";
    conversion.input = (testing::shared_data_dir() / "mnist").string();
    conversion.output = lmdbs_->file("mnist_train_lmdb");
    conversion.split = "train";
    data::convert_to_lmdb(conversion);
  }
  static void TearDownTestSuite() { lmdbs_.reset(); }

  // Caffe's LeNet and its solver (lr policy inv, momentum, weight decay) with `batch` per rank; the
  // solver's `extra` lines are added. Returns the solver's path.
  std::string solver(const std::string& name, int batch, const std::string& extra, int ip1 = 500) const {
    std::string net = replace_all(kLeNet, "TRAIN_SOURCE", lmdbs_->file("mnist_train_lmdb"));
    net = replace_all(net, "BATCH", std::to_string(batch));
    net = replace_all(net, "IP1", std::to_string(ip1));
    const std::string net_path = dir_.write(name + "_net.prototxt", net);
    std::string text = "net: \"" + net_path + "\"\nsnapshot_prefix: \"" + dir_.file(name) + "\"\n" +
                       "lr_policy: \"inv\"\ngamma: 0.0001\npower: 0.75\nmomentum: 0.9\nweight_decay: 0.0005\n"
                       "random_seed: 7\ndisplay: 50\n" +
                       extra;
    if (extra.find("base_lr") == std::string::npos) text += "base_lr: 0.01\n";
    return dir_.write(name + ".prototxt", text);
  }
  std::string snapshot(const std::string& name, int iter, const char* kind = ".caffemodel") const {
    return dir_.file(name) + "_iter_" + std::to_string(iter) + kind;
  }

  TempDir dir_;
  static std::unique_ptr<TempDir> lmdbs_;
};

std::unique_ptr<TempDir> Distributed::lmdbs_;

TEST_F(Distributed, TwoCpuRanksMatchOneProcessWithTheSameGlobalBatch) {
  // The global batch is 64 images per step in all three runs: two ranks of 32, one process summing two
  // batches of 32 (iter_size 2: the same arithmetic as the average of two ranks, so the weights must
  // agree to the last bit), and one process with batch 64 (other rounding: close, not equal).
  const CliResult one = run_cli(quote(solver("one", 32, "max_iter: 200\niter_size: 2\n")) + " --threads 1");
  ASSERT_EQ(one.code, 0) << one.output;
  const CliResult two =
      run_cli(quote(solver("two", 32, "max_iter: 200\n")) + " --cpu-ranks 2 --threads 1 --bucket-kb 64");
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_NE(two.output.find("Data-parallel training: 2 ranks over tcp, global batch 64 (32 per rank)"),
            std::string::npos)
      << two.output;
  // Only rank 0 logs.
  EXPECT_EQ(two.output.find("Optimization Done."), two.output.rfind("Optimization Done.")) << two.output;
  const double exact = weight_difference(snapshot("one", 200), snapshot("two", 200));
  EXPECT_LE(exact, 1e-6) << "2 ranks vs 1 process with iter_size 2";
  const CliResult wide = run_cli(quote(solver("wide", 64, "max_iter: 200\n")) + " --threads 1");
  ASSERT_EQ(wide.code, 0) << wide.output;
  const double rounding = weight_difference(snapshot("wide", 200), snapshot("two", 200));
  std::printf(
      "[          ] weights after 200 iterations, largest |a-b|/max(1,|a|): 2 ranks x 32 vs 1 x 32 x "
      "iter_size 2: %.3g; vs 1 x 64: %.3g\n",
      exact, rounding);
  EXPECT_LE(rounding, 1e-2) << "2 ranks vs 1 process with batch 64";
}

TEST_F(Distributed, ResumesWithAnotherRankCount) {
  // Snapshots move between 1 and 2 ranks with the same global batch and continue exactly.
  const std::string single = solver("single", 32, "max_iter: 20\nsnapshot: 10\niter_size: 2\n");
  ASSERT_EQ(run_cli(quote(single) + " --threads 1").code, 0);
  const std::string pair = solver("pair", 32, "max_iter: 20\n");
  const CliResult resumed = run_cli(quote(pair) + " --cpu-ranks 2 --threads 1 --resume " +
                                    quote(snapshot("single", 10, ".solverstate")));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("at iteration 10"), std::string::npos) << resumed.output;
  EXPECT_LE(weight_difference(snapshot("single", 20), snapshot("pair", 20)), 1e-6) << "1 rank -> 2 ranks";

  const std::string first = solver("first", 32, "max_iter: 10\n");
  ASSERT_EQ(run_cli(quote(first) + " --cpu-ranks 2 --threads 1").code, 0);
  const std::string back = solver("back", 32, "max_iter: 20\niter_size: 2\n");
  const CliResult alone =
      run_cli(quote(back) + " --threads 1 --resume " + quote(snapshot("first", 10, ".solverstate")));
  ASSERT_EQ(alone.code, 0) << alone.output;
  EXPECT_LE(weight_difference(snapshot("single", 20), snapshot("back", 20)), 1e-6) << "2 ranks -> 1 rank";
}

// Starts 3 ranks through the environment, waits until they train, sends rank 1 `signal`, and checks that
// ranks 0 and 2 exit 1 naming rank 1 with `expected`; returns how long they took.
double stop_rank_one(const std::string& path, int signal, int timeout, const std::string& expected,
                     const std::function<std::string(const std::string&)>& file) {
  const int port = test_port() + (signal == SIGKILL ? 4 : 5);
  std::vector<RankProcess> ranks;
  for (int r = 0; r < 3; ++r)
    ranks.push_back(start_rank(path, r, 3, port, file("rank" + std::to_string(r) + ".log"), timeout));
  // Wait until training runs (rank 0 logs iteration 0), then stop rank 1 mid-flight.
  const Clock::time_point started = Clock::now();
  while (read_file(ranks[0].log).find("Iteration 0") == std::string::npos &&
         Clock::now() - started < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(ranks[1].pid, signal);
  const Clock::time_point stopped = Clock::now();
  for (int r : {0, 2}) {
    const int code = wait_for(ranks[static_cast<std::size_t>(r)], std::chrono::seconds(timeout + 30));
    const std::string log = read_file(ranks[static_cast<std::size_t>(r)].log);
    EXPECT_EQ(code, 1) << "rank " << r << ":\n" << log;
    EXPECT_NE(log.find(expected), std::string::npos) << "rank " << r << ":\n" << log;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - stopped).count();
  kill(ranks[1].pid, SIGKILL);
  wait_for(ranks[1], std::chrono::seconds(5));
  return seconds;
}

TEST_F(Distributed, AKilledRankStopsTheOthersNamingIt) {
  const double seconds = stop_rank_one(solver("killed", 32, "max_iter: 1000000\n"), SIGKILL, 20,
                                       "rank 1 exited or closed its connection",
                                       [this](const std::string& name) { return dir_.file(name); });
  std::printf("[          ] the other ranks stopped %.2f s after rank 1 was killed\n", seconds);
  EXPECT_LT(seconds, 20.0);
}

TEST_F(Distributed, AHungRankIsNamedAfterTheTimeout) {
  // SIGSTOP: the process lives and holds its connections but never answers.
  const double seconds =
      stop_rank_one(solver("hung", 32, "max_iter: 1000000\n"), SIGSTOP, 3, "rank 1 did not answer within 3 s",
                    [this](const std::string& name) { return dir_.file(name); });
  std::printf("[          ] the other ranks stopped %.2f s after rank 1 hung (timeout 3 s)\n", seconds);
  EXPECT_LT(seconds, 15.0);
}

TEST_F(Distributed, RanksWithDifferentModelsOrSolversAreRefused) {
  struct Case {
    std::string other;
    std::string expected;
  };
  const std::string base = solver("base", 32, "max_iter: 5\n");
  for (const Case& c : {Case{solver("wider", 32, "max_iter: 5\n", 300), "num_output=300"},
                        Case{solver("faster", 32, "max_iter: 5\nbase_lr: 0.02\n"), "another solver"},
                        Case{solver("bigger", 48, "max_iter: 5\n"), "input data 48x1x28x28"}}) {
    const int port = test_port() + 1;
    RankProcess zero = start_rank(base, 0, 2, port, dir_.file("zero.log"));
    RankProcess one = start_rank(c.other, 1, 2, port, dir_.file("one.log"));
    EXPECT_EQ(wait_for(zero, std::chrono::seconds(60)), 1);
    EXPECT_EQ(wait_for(one, std::chrono::seconds(60)), 1);
    for (const std::string& log : {read_file(zero.log), read_file(one.log)}) {
      EXPECT_NE(log.find("refusing to train: rank 1 was started with another"), std::string::npos) << log;
      EXPECT_NE(log.find(c.expected), std::string::npos) << log;
    }
  }
}

TEST(DistributedCli, ABadGpuIndexIsRefusedBeforeAnythingStarts) {
  TempDir dir;
  const CliResult result = run_cli(quote(dir.write("s.prototxt", "net: \"none.prototxt\"\n")) + " --gpus 97");
  EXPECT_EQ(result.code, 1) << result.output;
  EXPECT_NE(result.output.find("there is no GPU 97"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("Starting"), std::string::npos) << result.output;
  const CliResult twice = run_cli(quote(dir.file("s.prototxt")) + " --gpus 0,0");
  EXPECT_NE(twice.output.find("listed twice"), std::string::npos) << twice.output;
  // Ranks that fail: the launcher waits for all of them and names the first.
  const CliResult failed = run_cli(quote(dir.file("s.prototxt")) + " --cpu-ranks 2 --dist-timeout 5");
  EXPECT_EQ(failed.code, 1) << failed.output;
  EXPECT_NE(failed.output.find("Starting 2 ranks"), std::string::npos) << failed.output;
  // Each rank's error says whose it is (a rank may also see the other leave first, whichever is faster).
  EXPECT_NE(failed.output.find(": solver: max_iter must be positive"), std::string::npos) << failed.output;
  EXPECT_NE(failed.output.find("error: rank "), std::string::npos) << failed.output;
  EXPECT_NE(failed.output.find("data-parallel training failed: rank "), std::string::npos) << failed.output;
  EXPECT_NE(failed.output.find("exited with status 1"), std::string::npos) << failed.output;
}

// Runs `body(rank)` in `world` forked processes with a TCP communicator each; true when all exit 0.
bool in_processes(int world, const std::function<bool(Communicator&)>& body) {
  const int port = test_port() + 2;
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      bool ok = false;
      try {
        DistributedOptions options;
        options.rank = r;
        options.world_size = world;
        options.master_port = port;
        options.timeout_seconds = 20;
        auto comm = connect_tcp(options);
        ok = body(*comm);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
      }
      _exit(ok ? 0 : 1);
    }
    pids.push_back(pid);
  }
  bool all = true;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    all &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  return all;
}

// Rank r's value i: known to every rank, so each can check the sum itself.
float value_of(int rank, std::size_t i) {
  std::uint64_t x = static_cast<std::uint64_t>(rank) * 0x9E3779B97F4A7C15ULL + i;
  x = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 29;
  return static_cast<float>(x % 20001) / 10000.0f - 1.0f;  // in [-1, 1]
}

TEST(DistributedComm, RingAllReduceMatchesADoubleSumForOddSizes) {
  for (int world : {2, 3}) {
    EXPECT_TRUE(in_processes(
        world,
        [world](Communicator& comm) {
          bool ok = true;
          for (std::size_t count : {std::size_t{1}, std::size_t{2}, std::size_t{7}, std::size_t{100003}}) {
            std::vector<float> data(count);
            for (std::size_t i = 0; i < count; ++i) data[i] = value_of(comm.rank(), i);
            comm.all_reduce(data.data(), count, true);
            for (std::size_t i = 0; i < count; ++i) {
              double sum = 0;
              for (int r = 0; r < world; ++r) sum += value_of(r, i);
              ok &= std::abs(data[i] - sum / world) <= 1e-6;
            }
            // Asynchronous buckets of tensors: the average, and identical bytes on every rank.
            Tensor a = Tensor::from(Shape{static_cast<std::int64_t>(count)}, data);
            Tensor b = Tensor::from(Shape{3}, {static_cast<float>(comm.rank()), 1.0f, -2.0f});
            comm.start_average({a, b});
            comm.finish();
            ok &= std::abs(b.data<float>()[0] - (world - 1) / 2.0f) < 1e-6f && b.data<float>()[1] == 1.0f;
            std::vector<float> mine = a.to_vector();
            std::vector<float> zeros(count);
            comm.broadcast(comm.rank() == 0 ? mine.data() : zeros.data(), count * sizeof(float), 0);
            ok &= comm.rank() == 0 || zeros == mine;
          }
          const std::vector<std::string> texts = comm.gather_text("rank " + std::to_string(comm.rank()));
          if (comm.rank() == 0)
            ok &= texts.size() == static_cast<std::size_t>(world) &&
                  texts.back() == "rank " + std::to_string(world - 1);
          ok &= comm.broadcast_text(comm.rank() == 0 ? "from zero" : "") == "from zero";
          comm.barrier();
          return ok;
        }))
        << world << " ranks";
  }
}

TEST(DistributedComm, RanksThatNeverArriveTimeOutNamingThem) {
  DistributedOptions options;
  options.rank = 0;
  options.world_size = 3;
  options.master_port = test_port() + 3;
  options.timeout_seconds = 1;
  try {
    connect_tcp(options);
    FAIL() << "no error";
  } catch (const DistributedError& e) {
    EXPECT_NE(std::string(e.what()).find("ranks 1, 2 did not connect"), std::string::npos) << e.what();
  }
}

class ScopedEnvironment {
 public:
  explicit ScopedEnvironment(std::map<std::string, std::string> values) {
    for (const char* name : {"ESPRESSO_RANK", "ESPRESSO_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                             "OMPI_COMM_WORLD_SIZE", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                             "ESPRESSO_MASTER_ADDR", "ESPRESSO_MASTER_PORT", "ESPRESSO_DIST_BACKEND"}) {
      if (const char* old = std::getenv(name)) saved_[name] = old;
      unsetenv(name);
    }
    for (const auto& [name, value] : values) setenv(name.c_str(), value.c_str(), 1);
    set_ = std::move(values);
  }
  ~ScopedEnvironment() {
    for (const auto& [name, value] : set_) unsetenv(name.c_str());
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }

 private:
  std::map<std::string, std::string> saved_, set_;
};

TEST(DistributedEnvironment, ReadsEspressoOpenMpiAndTorchrunVariables) {
  {
    ScopedEnvironment env(std::map<std::string, std::string>{});
    EXPECT_FALSE(distributed_from_environment().has_value());
  }
  {
    ScopedEnvironment env({{"OMPI_COMM_WORLD_RANK", "3"},
                           {"OMPI_COMM_WORLD_SIZE", "4"},
                           {"ESPRESSO_MASTER_ADDR", "node7"},
                           {"ESPRESSO_MASTER_PORT", "1234"}});
    const auto options = distributed_from_environment();
    ASSERT_TRUE(options.has_value());
    EXPECT_EQ(options->rank, 3);
    EXPECT_EQ(options->world_size, 4);
    EXPECT_EQ(options->master_addr, "node7");
    EXPECT_EQ(options->master_port, 1234);
  }
  {
    ScopedEnvironment env({{"RANK", "1"},
                           {"WORLD_SIZE", "2"},
                           {"MASTER_ADDR", "10.0.0.1"},
                           {"MASTER_PORT", "29400"},
                           {"ESPRESSO_DIST_BACKEND", "nccl"}});
    const auto options = distributed_from_environment();
    ASSERT_TRUE(options.has_value());
    EXPECT_EQ(options->rank, 1);
    EXPECT_EQ(options->master_addr, "10.0.0.1");
    EXPECT_EQ(options->backend, CommBackend::nccl);
  }
  {
    ScopedEnvironment env({{"ESPRESSO_RANK", "2"}, {"ESPRESSO_WORLD_SIZE", "2"}});
    EXPECT_THROW(distributed_from_environment(), UnsupportedError);
  }
  {
    ScopedEnvironment env(std::map<std::string, std::string>{{"ESPRESSO_RANK", "0"}});
    EXPECT_THROW(distributed_from_environment(), UnsupportedError);
  }
  {
    ScopedEnvironment env({{"ESPRESSO_RANK", "0"}, {"ESPRESSO_WORLD_SIZE", "two"}});
    EXPECT_THROW(distributed_from_environment(), UnsupportedError);
  }
}

TEST_F(Distributed, OneGpuThroughNcclMatchesPlainGpuTraining) {
  std::string why;
  if (!testing::have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!nccl_available(&why)) GTEST_SKIP() << "NCCL not available: " << why;
  // GPU kernels may sum in another order from run to run (atomics): two plain runs set the noise floor.
  const std::string extra = "max_iter: 10\n";
  const CliResult plain = run_cli(quote(solver("plain", 64, extra)) + " --device cuda:0");
  ASSERT_EQ(plain.code, 0) << plain.output;
  ASSERT_EQ(run_cli(quote(solver("again", 64, extra)) + " --device cuda:0").code, 0);
  const CliResult nccl = run_cli(quote(solver("nccl", 64, extra)) + " --gpus 0");
  ASSERT_EQ(nccl.code, 0) << nccl.output;
  EXPECT_NE(nccl.output.find("1 ranks over nccl"), std::string::npos) << nccl.output;
  const double noise = weight_difference(snapshot("plain", 10), snapshot("again", 10));
  const double difference = weight_difference(snapshot("plain", 10), snapshot("nccl", 10));
  std::printf("[          ] plain vs plain %.3g, plain vs NCCL with one rank %.3g\n", noise, difference);
  EXPECT_LE(difference, std::max(1e-6, 4 * noise));
}

TEST_F(Distributed, TwoGpusMatchOneGpuWithTheSameGlobalBatch) {
  int gpus = 0;
  for (const DeviceInfo& info : list_devices()) gpus += info.device.type == DeviceType::cuda ? 1 : 0;
  if (gpus < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << gpus;
  std::string why;
  if (!nccl_available(&why)) GTEST_SKIP() << "NCCL not available: " << why;
  const std::string extra = "max_iter: 50\niter_size: 2\n";
  ASSERT_EQ(run_cli(quote(solver("one", 32, extra)) + " --device cuda:0").code, 0);
  ASSERT_EQ(run_cli(quote(solver("again", 32, extra)) + " --device cuda:0").code, 0);
  const CliResult two = run_cli(quote(solver("two", 32, "max_iter: 50\n")) + " --gpus 0,1 --bucket-kb 256");
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_NE(two.output.find("2 ranks over nccl"), std::string::npos) << two.output;
  const double noise = weight_difference(snapshot("one", 50), snapshot("again", 50));
  const double difference = weight_difference(snapshot("one", 50), snapshot("two", 50));
  std::printf("[          ] 1 GPU vs 1 GPU %.3g, 1 GPU x iter_size 2 vs 2 GPUs %.3g\n", noise, difference);
  EXPECT_LE(difference, std::max(1e-6, 4 * noise));
}

}  // namespace
}  // namespace espresso::train
