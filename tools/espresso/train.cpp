// `espresso train`: Caffe's `caffe train` loop on a solver prototxt.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <sstream>

#include "common.h"
#include "espresso/errors.h"
#include "espresso/trainer.h"

namespace espresso::cli {
namespace {

struct TrainVerbOptions {
  std::string solver;
  std::string weights;
  std::string resume;
  std::string device = "cpu";
  int threads = 0;
};

int run_train(const TrainVerbOptions& o) {
  if (!o.weights.empty() && !o.resume.empty())
    throw UnsupportedError("give --weights (fine-tuning) or --resume (continuing), not both");
  apply_threads(o.threads);
  train::TrainerOptions options;
  options.device = Device::parse(o.device);
  options.progress_bar = isatty(STDERR_FILENO) != 0;
  train::Trainer trainer(o.solver, options);
  // Like Caffe: several caffemodels, comma-separated, applied in order.
  std::stringstream list(o.weights);
  for (std::string weights; std::getline(list, weights, ',');) {
    if (!weights.empty()) trainer.copy_weights(weights);
  }
  if (!o.resume.empty()) trainer.restore(o.resume);
  trainer.solve();
  std::printf("Training curve: %s_log.csv, %s_curve.png\n", trainer.snapshot_prefix().c_str(),
              trainer.snapshot_prefix().c_str());
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
  add_threads_option(*command, options->threads);
  return {command, [options] { return run_train(*options); }};
}

}  // namespace espresso::cli
