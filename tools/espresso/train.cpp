// `espresso train`: Caffe's `caffe train` loop on a solver prototxt; with --gpus or --cpu-ranks one
// process per rank (data-parallel, docs/distributed.md), started and watched by this one.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "common.h"
#include "memory_report.h"
#include "espresso/devices.h"
#include "espresso/distributed.h"
#include "espresso/errors.h"
#include "espresso/trainer.h"

namespace espresso::cli {
namespace {

struct TrainVerbOptions {
  std::string solver;
  std::string weights;
  std::string resume;
  std::string device = "cpu";
  std::string precision = "fp32";
  int threads = 0;
  std::string gpus;
  int cpu_ranks = 0;
  int master_port = 0;
  int timeout = 0;
  int bucket_kb = 0;
  bool report_memory = false;
  std::string teacher;  // MODEL[,WEIGHTS]
  std::string teacher_output;
  std::string teacher_input = "teacher_logits";
};

std::vector<int> parse_gpus(const std::string& list) {
  std::vector<int> gpus;
  std::stringstream items(list);
  for (std::string item; std::getline(items, item, ',');) {
    char* end = nullptr;
    const long index = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || index < 0 || index > 1023)
      throw UnsupportedError("--gpus " + list + ": '" + item + "' is not a GPU index (e.g. --gpus 0,1)");
    if (std::find(gpus.begin(), gpus.end(), static_cast<int>(index)) != gpus.end())
      throw UnsupportedError("--gpus " + list + ": GPU " + item + " is listed twice");
    gpus.push_back(static_cast<int>(index));
  }
  if (gpus.empty()) throw UnsupportedError("--gpus: give GPU indices, e.g. --gpus 0,1");
  int count = 0;
  for (const DeviceInfo& info : list_devices()) count += info.device.type == DeviceType::cuda ? 1 : 0;
  for (int g : gpus) {
    if (!device_available(Device::cuda(g))) {
      throw UnsupportedError("--gpus " + list + ": there is no GPU " + std::to_string(g) +
                             " (this machine has " +
                             (count == 0 ? std::string("none usable; `espresso devices` lists them")
                                         : std::to_string(count) + ": 0 to " + std::to_string(count - 1)) +
                             ")");
    }
  }
  return gpus;
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  int port = 29500;
  if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
    port = ntohs(address.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status))
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) +
           ")";
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

// Starts one process per rank, each this program's `train` with its rank in the environment, and
// waits for all of them. When one fails, the others get the communicator's timeout to stop on their own
// (they report the failed rank), then are killed.
int launch(const TrainVerbOptions& o, const std::vector<std::string>& devices, train::CommBackend backend) {
  const int world = static_cast<int>(devices.size());
  const int port = o.master_port > 0 ? o.master_port : free_port();
  const int threads = o.threads > 0
                          ? o.threads
                          : (backend == train::CommBackend::tcp
                                 ? std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / world)
                                 : 0);
  const int timeout = o.timeout > 0 ? o.timeout : 300;
  std::printf("Starting %d ranks (%s, rendezvous on 127.0.0.1:%d); rank 0 logs\n", world,
              train::comm_backend_name(backend), port);
  std::fflush(stdout);
  std::vector<pid_t> pids;
  for (int rank = 0; rank < world; ++rank) {
    std::vector<std::string> args = {"espresso", "train", o.solver, "--device",
                                     devices[static_cast<std::size_t>(rank)]};
    if (!o.weights.empty()) args.insert(args.end(), {"--weights", o.weights});
    if (!o.resume.empty()) args.insert(args.end(), {"--resume", o.resume});
    if (threads > 0) args.insert(args.end(), {"--threads", std::to_string(threads)});
    if (o.precision != "fp32") args.insert(args.end(), {"--precision", o.precision});
    if (o.report_memory) args.push_back("--report-memory");
    if (!o.teacher.empty()) {
      args.insert(args.end(), {"--teacher", o.teacher, "--teacher-input", o.teacher_input});
      if (!o.teacher_output.empty()) args.insert(args.end(), {"--teacher-output", o.teacher_output});
    }
    const pid_t pid = fork();
    if (pid < 0) throw Error(std::string("cannot start a rank: ") + std::strerror(errno));
    if (pid == 0) {
      setenv("ESPRESSO_RANK", std::to_string(rank).c_str(), 1);
      setenv("ESPRESSO_WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("ESPRESSO_LOCAL_RANK", std::to_string(rank).c_str(), 1);
      setenv("ESPRESSO_MASTER_ADDR", "127.0.0.1", 1);
      setenv("ESPRESSO_MASTER_PORT", std::to_string(port).c_str(), 1);
      setenv("ESPRESSO_DIST_BACKEND", train::comm_backend_name(backend), 1);
      setenv("ESPRESSO_DIST_TIMEOUT", std::to_string(timeout).c_str(), 1);
      if (o.bucket_kb > 0) setenv("ESPRESSO_BUCKET_KB", std::to_string(o.bucket_kb).c_str(), 1);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "error: rank %d: cannot start /proc/self/exe: %s\n", rank, std::strerror(errno));
      _exit(127);
    }
    pids.push_back(pid);
  }
  std::string first_failure;
  std::set<pid_t> running(pids.begin(), pids.end());
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (!running.empty()) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0 && running.erase(pid)) {
      const int rank = static_cast<int>(std::find(pids.begin(), pids.end(), pid) - pids.begin());
      const bool failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
      if (failed && first_failure.empty()) {
        first_failure =
            "rank " + std::to_string(rank) + " (pid " + std::to_string(pid) + ") " + describe_exit(status);
        deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout + 10);
      }
      continue;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      for (pid_t p : running) kill(p, SIGKILL);
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!first_failure.empty()) throw DistributedError("data-parallel training failed: " + first_failure);
  return 0;
}

void train(const TrainVerbOptions& o, const train::TrainerOptions& options) {
  train::Trainer trainer(o.solver, options);
  // Like Caffe: several caffemodels, comma-separated, applied in order.
  std::stringstream list(o.weights);
  for (std::string weights; std::getline(list, weights, ',');) {
    if (!weights.empty()) trainer.copy_weights(weights);
  }
  if (!o.resume.empty()) trainer.restore(o.resume);
  trainer.solve();
  if (o.report_memory && trainer.rank() == 0) print_training_memory(trainer.memory(), std::cout);
  if (trainer.rank() == 0) {
    std::printf("Training curve: %s_log.csv, %s_curve.png\n", trainer.snapshot_prefix().c_str(),
                trainer.snapshot_prefix().c_str());
  }
}

int run_train(const TrainVerbOptions& o) {
  if (!o.weights.empty() && !o.resume.empty())
    throw UnsupportedError("give --weights (fine-tuning) or --resume (continuing), not both");
  if (!o.gpus.empty() && o.cpu_ranks > 0) throw UnsupportedError("give --gpus or --cpu-ranks, not both");
  if (!o.gpus.empty() || o.cpu_ranks > 0) {
    if (std::getenv("ESPRESSO_RANK"))
      throw UnsupportedError("--gpus/--cpu-ranks inside a rank (ESPRESSO_RANK is set)");
    std::vector<std::string> devices;
    train::CommBackend backend = train::CommBackend::tcp;
    if (!o.gpus.empty()) {
      for (int g : parse_gpus(o.gpus)) devices.push_back("cuda:" + std::to_string(g));
      backend = train::CommBackend::nccl;
      std::string why;
      if (!train::nccl_available(&why)) {
        if (devices.size() > 1) throw UnsupportedError("--gpus " + o.gpus + " needs NCCL: " + why);
        std::printf("NCCL is not available (%s): training on %s alone\n", why.c_str(), devices[0].c_str());
      } else if (devices.size() == 1) {
        // One GPU: this process is the only rank, through the same NCCL code path as several.
        setenv("ESPRESSO_RANK", "0", 1);
        setenv("ESPRESSO_WORLD_SIZE", "1", 1);
        setenv("ESPRESSO_DIST_BACKEND", "nccl", 1);
        setenv("ESPRESSO_MASTER_PORT", std::to_string(free_port()).c_str(), 1);
      }
      if (devices.size() == 1) {
        TrainVerbOptions single = o;
        single.gpus.clear();
        single.device = devices[0];
        return run_train(single);
      }
    } else {
      devices.assign(static_cast<std::size_t>(o.cpu_ranks), "cpu");
    }
    return launch(o, devices, backend);
  }
  apply_threads(o.threads);
  train::TrainerOptions options;
  options.device = Device::parse(o.device);
  options.precision = parse_precision(o.precision);
  if (const auto from_environment = train::distributed_from_environment())
    options.distributed = *from_environment;
  if (options.distributed.enabled) {
    const int local = train::local_rank_from_environment();
    // Under mpirun or torchrun `--device cuda` means this process's GPU.
    if (options.device.type == DeviceType::cuda && o.device == "cuda" && local >= 0)
      options.device = Device::cuda(local);
    if (!std::getenv("ESPRESSO_DIST_BACKEND"))
      options.distributed.backend =
          options.device.is_cpu() ? train::CommBackend::tcp : train::CommBackend::nccl;
    if (o.timeout > 0) options.distributed.timeout_seconds = o.timeout;
    if (o.bucket_kb > 0) options.distributed.bucket_bytes = static_cast<std::size_t>(o.bucket_kb) << 10;
  }
  options.progress_bar = isatty(STDERR_FILENO) != 0;
  if (!o.teacher.empty()) {
    const std::size_t comma = o.teacher.find(',');
    options.teacher.model = o.teacher.substr(0, comma);
    if (comma != std::string::npos) options.teacher.weights = o.teacher.substr(comma + 1);
    options.teacher.output = o.teacher_output;
    options.teacher.input = o.teacher_input;
  } else if (!o.teacher_output.empty()) {
    throw UnsupportedError("--teacher-output needs --teacher MODEL[,WEIGHTS]");
  }
  try {
    train(o, options);
  } catch (const Error& e) {
    // Several ranks print errors to one terminal: say whose it is.
    const std::string message = e.what();
    if (!options.distributed.enabled || options.distributed.world_size == 1 || message.starts_with("rank "))
      throw;
    throw Error("rank " + std::to_string(options.distributed.rank) + ": " + message);
  }
  return 0;
}

}  // namespace

Verb add_train_verb(CLI::App& app) {
  auto options = std::make_shared<TrainVerbOptions>();
  CLI::App* command = app.add_subcommand("train", "Train a Caffe net from a solver prototxt");
  command->add_option("solver", options->solver, "Solver prototxt (SolverParameter)")->required();
  command->add_option("--weights", options->weights,
                      "Caffemodel(s) to fine-tune from, comma-separated; layers are matched by name");
  command->add_option("--resume", options->resume, "A .solverstate snapshot to continue from");
  command->add_option("--device", options->device, "cpu, cuda or cuda:N");
  command
      ->add_option("--precision", options->precision,
                   "fp32, or mixed precision on a GPU: fp16 (dynamic loss scaling) or bf16 activations and "
                   "gradients with fp32 master weights")
      ->check(CLI::IsMember({"fp32", "fp16", "bf16"}))
      ->capture_default_str();
  add_threads_option(*command, options->threads);
  command->add_flag("--report-memory", options->report_memory,
                    "After training, print the memory it held per category, planned vs naive "
                    "(docs/training-memory.md)");
  command->add_option("--teacher", options->teacher,
                      "Distillation (docs/distillation.md): a frozen teacher MODEL[,WEIGHTS] run forward on "
                      "every training batch");
  command->add_option(
      "--teacher-output", options->teacher_output,
      "The teacher's blob the student learns from, e.g. its logits (default: its only output)");
  command->add_option(
      "--teacher-input", options->teacher_input,
      "The train net's input (an Input layer's top) that receives it (default teacher_logits)");
  command->add_option(
      "--gpus", options->gpus,
      "Data-parallel on these GPUs, e.g. 0,1: one process each, NCCL; the net's batch_size is "
      "per GPU");
  command
      ->add_option("--cpu-ranks", options->cpu_ranks,
                   "Data-parallel on the CPU with N processes (TCP ring all-reduce); batch_size is per rank")
      ->check(CLI::Range(1, 256));
  command
      ->add_option("--master-port", options->master_port,
                   "Rendezvous port for --gpus/--cpu-ranks (default: a free one)")
      ->check(CLI::Range(1, 65535));
  command
      ->add_option("--dist-timeout", options->timeout,
                   "Seconds a rank waits for another before stopping with an error naming it (default 300)")
      ->check(CLI::Range(1, 86400));
  command->add_option("--bucket-kb", options->bucket_kb, "Gradient bucket size in KiB (default 25600)")
      ->check(CLI::Range(1, 1 << 22));
  return {command, [options] { return run_train(*options); }};
}

}  // namespace espresso::cli
