// Trainer: Caffe's training loop driven by a SolverParameter. It builds the train net and test nets
// from Caffe prototxts (Data layers become prefetched graph inputs), steps the solver, tests, logs like
// Caffe, and writes snapshots (.caffemodel + .solverstate) that resume exactly.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "espresso/distributed.h"
#include "espresso/net.h"
#include "espresso/solver.h"
#include "espresso/tensor.h"

namespace espresso::train {

// Knowledge distillation (docs/distillation.md): a frozen teacher runs forward on every training batch
// (the train net's first Data layer's data, after its transform) and the values of its blob `output`
// are copied into the train net's input `input` (an Input layer's top, read by a DistillationLoss).
struct TeacherOptions {
  std::string model;    // any format load_model reads (prototxt, .onnx, .esp, .tflite); empty: no teacher
  std::string weights;  // its weights when kept apart (a Caffe prototxt's caffemodel)
  std::string output;   // the teacher's blob to learn from, e.g. its logits; empty: its only output
  std::string input = "teacher_logits";  // the train net's input that receives it
};

struct TrainerOptions {
  Device device = Device::cpu();
  std::ostream* log = nullptr;  // Caffe-style lines; nullptr for std::cout
  bool progress_bar = false;    // a one-line bar on stderr between log lines (for terminals)
  bool write_curve = true;      // the CSV log and PNG curve beside the snapshots
  // Data-parallel training (docs/distributed.md): this process is one rank of several, each with the same
  // solver and net files. Each rank reads its slice of every global batch (the net's batch_size x world
  // size), the gradients are averaged across ranks while backward runs, and every rank takes the same
  // step; only rank 0 logs, tests and snapshots. The ranks meet at start-up, where differing models or
  // solver settings are refused with a DistributedError; a rank that dies or hangs stops the others
  // with a DistributedError naming it. With `nccl`, `device` must be a GPU. Off unless `enabled`.
  DistributedOptions distributed;
  TeacherOptions teacher;
  // Mixed precision on a GPU (fp16 or bf16; fp32 by default): activations and their gradients in that
  // type, fp32 master weights, solver history and reductions. fp16 scales the loss dynamically
  // (LossScaler, started from `loss_scale`): a step whose gradients overflow is skipped and logged. Test
  // nets run in fp32.
  Precision precision = Precision::fp32;
  LossScaleConfig loss_scale;
};

struct TestOutput {
  std::string name;
  double value = 0.0;  // mean over the test iterations
  float loss_weight = 0.0f;
};

// What training holds in memory (`espresso train --report-memory`, `info --training`;
// docs/training-memory.md).
struct TrainingMemory {
  MemoryReport train;                    // the train net: weights, gradients, arena, workspace
  std::size_t solver_history_bytes = 0;  // the solver's history blobs (momentum, Adam's moments)
  std::vector<MemoryReport> tests;       // each test net; its weights are the train net's, not copies
};

class Trainer {
 public:
  // Reads a text-format SolverParameter. Paths in the solver and its nets are tried relative to the
  // current directory first, then to the solver file's folder. The solver's `weights` are copied in as
  // copy_weights() does. Throws FileError, ParseError, ModelError, DataError or UnsupportedError naming the
  // file, layer or field; with a teacher, also when its output is missing or the train net has no input
  // for it (ModelError), or its input does not take the training batches (ShapeError).
  explicit Trainer(const std::string& solver_file, TrainerOptions options = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Fine-tuning: copies the blobs of same-named layers from a caffemodel; other layers keep their fillers.
  // A same-named layer with other blob shapes throws ModelError naming it.
  void copy_weights(const std::string& caffemodel);
  // Restores iteration, solver history and weights from a .solverstate; a state from another net throws
  // ModelError naming the layer or blob that differs.
  void restore(const std::string& solverstate);

  // Runs to max_iter with tests, display and snapshots as the solver asks. Stops with an Error naming the
  // iteration and the first layer whose output is not finite when the loss becomes NaN or infinite.
  void solve();
  // Runs `iterations` solver steps (no final snapshot or test).
  void step(std::int64_t iterations);
  std::vector<std::vector<TestOutput>> test_all();
  // The results of the latest test and its iteration (-1 before any).
  const std::vector<std::vector<TestOutput>>& last_test() const;
  std::int64_t last_test_iteration() const;
  // Writes <prefix>_iter_N.caffemodel and .solverstate; returns the caffemodel's path.
  std::string snapshot();

  // Called every iteration with the parameters once their gradients are complete (iter_size accumulation
  // done), just before the solver's update: e.g. to mask or tie gradients (`espresso compress`). The
  // tensors are on the net's device.
  void set_gradient_hook(std::function<void(std::vector<Parameter>&)> hook);

  std::int64_t iteration() const;
  // This process's rank and the number of ranks (0 and 1 unless distributed).
  int rank() const;
  int world_size() const;
  // The loss of every iteration run so far in this process (averaged over iter_size).
  const std::vector<float>& losses() const;
  Net& train_net();
  TrainingMemory memory();
  // Where snapshots, the CSV log and the curve go.
  std::string snapshot_prefix() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace espresso::train
