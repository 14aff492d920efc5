#include "espresso/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <streambuf>
#include <type_traits>
#include <variant>

#include "core/half.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "import/caffe/caffe.pb.h"
#include "import/caffe/caffe_format.h"
#include "train/communicator.h"
#include "train/data_source.h"
#include "train/gradient_buckets.h"
#include "train/solver_config.h"
#include "train/training_log.h"

namespace espresso::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

caffe::BlobProto to_blob(const Tensor& tensor) {
  caffe::BlobProto blob;
  for (std::int64_t d : tensor.shape().dims()) blob.mutable_shape()->add_dim(d);
  const Tensor host = tensor.device().is_cpu() ? tensor : tensor.to(Device::cpu());
  const float* values = host.data<float>();
  blob.mutable_data()->Add(values, values + host.numel());
  return blob;
}

// A blob's values, or a ModelError naming `where` when its element count is not `expected`.
std::vector<float> blob_values(const caffe::BlobProto& blob, std::int64_t expected, const std::string& where,
                               const Shape& expected_shape) {
  std::vector<std::int64_t> dims;
  if (blob.has_shape()) {
    dims.assign(blob.shape().dim().begin(), blob.shape().dim().end());
  } else {
    dims = {blob.num(), blob.channels(), blob.height(), blob.width()};
  }
  std::vector<float> values;
  if (blob.data_size() > 0) {
    values.assign(blob.data().begin(), blob.data().end());
  } else {
    for (double v : blob.double_data()) values.push_back(static_cast<float>(v));
  }
  // Old caffemodels store 4-D shapes of the same count (1x1x500x800 for 500x800): compare counts there.
  const bool same_shape = blob.has_shape() ? Shape(dims) == expected_shape : Shape(dims).numel() == expected;
  if (!same_shape || static_cast<std::int64_t>(values.size()) != expected) {
    throw ModelError(where + " has shape " + Shape(dims).str() + " but the net's is " + expected_shape.str());
  }
  return values;
}

// Writes `bytes` to a temporary file beside `path`, then renames it into place, so a crash never leaves a
// half-written file under the final name.
void write_atomically(const std::string& path, const std::string& bytes) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) throw FileError(temporary + ": cannot write the snapshot");
  }
  std::error_code ec;
  fs::rename(temporary, path, ec);
  if (ec) throw FileError(path + ": cannot move the snapshot into place (" + ec.message() + ")");
}

// Activations in f32, or f16 / bf16 in mixed precision training (an fp16 overflow is the usual failure).
bool is_finite_tensor(const Tensor& tensor) {
  const Tensor host = tensor.device().is_cpu() ? tensor : tensor.to(Device::cpu());
  const auto all_finite = [&](auto value_of) {
    for (std::int64_t i = 0; i < host.numel(); ++i) {
      if (!std::isfinite(value_of(i))) return false;
    }
    return true;
  };
  switch (host.dtype()) {
    case DType::f32:
      return all_finite([values = host.data<float>()](std::int64_t i) { return values[i]; });
    case DType::f16:
      return all_finite([values = static_cast<const std::uint16_t*>(host.raw())](std::int64_t i) {
        return half_to_float(values[i]);
      });
    case DType::bf16:
      return all_finite([values = static_cast<const std::uint16_t*>(host.raw())](std::int64_t i) {
        return bf16_to_float(values[i]);
      });
    default:
      return true;  // integers (labels) are finite
  }
}

// The loss weight a graph output carries: the model's loss_weight, else 1 for the first top of loss layers.
float output_loss_weight(const Graph& graph, const std::string& output) {
  for (const LayerSpec& spec : graph.layers) {
    for (std::size_t k = 0; k < spec.outputs.size(); ++k) {
      if (spec.outputs[k] != output) continue;
      const std::vector<double> given = spec.attrs.get_floats("loss_weight", {});
      if (k < given.size()) return static_cast<float>(given[k]);
      return spec.type.ends_with("Loss") && k == 0 ? 1.0f : 0.0f;
    }
  }
  return 0.0f;
}

// Discards what it is given: the log of ranks other than 0.
class NullBuffer : public std::streambuf {
 protected:
  int overflow(int c) override { return c; }
  std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

std::string attribute_text(const AttrValue& value) {
  std::ostringstream text;
  text.precision(9);
  std::visit(
      [&](const auto& v) {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, std::vector<std::int64_t>> ||
                      std::is_same_v<V, std::vector<double>>) {
          for (const auto& x : v) text << x << ",";
        } else {
          text << v;
        }
      },
      value);
  return text.str();
}

struct TestNet {
  std::string path;
  Graph graph;
  std::vector<DataFeed> feeds;
  std::int64_t iterations = 0;
  std::unique_ptr<Net> net;
};

}  // namespace

struct Trainer::Impl {
  // First, so that it goes last: the ranks stay connected until everything else is torn down.
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<GradientBuckets> buckets;
  bool ranks_in_step = false;  // weights and iteration checked equal across ranks
  NullBuffer null_buffer;
  std::ostream null_log{&null_buffer};
  caffe::SolverParameter param;
  fs::path solver_dir;
  TrainerOptions options;
  std::ostream* log = nullptr;
  std::uint64_t seed = 0;
  Solver solver{SolverConfig{}};

  std::string train_net_path;
  Graph train_graph;
  std::vector<DataFeed> train_feeds;
  std::unique_ptr<Net> net;
  std::vector<Parameter> params;
  std::vector<Tensor> accumulated;  // gradient sums over iter_size batches
  std::vector<TestNet> tests;
  // Distillation: the frozen teacher, its input, and the blob of it the train net reads.
  std::unique_ptr<Net> teacher;
  std::string teacher_input;
  std::string teacher_output;

  std::int64_t iter = 0;
  std::vector<float> losses;
  std::deque<float> recent_losses;  // for average_loss
  std::vector<std::vector<TestOutput>> last_test;
  std::int64_t last_test_iter = -1;
  std::string prefix;
  std::unique_ptr<TrainingLog> curve;
  Clock::time_point last_display = Clock::now();
  std::int64_t last_display_iter = 0;
  Clock::time_point last_bar;

  // Tries `path` as given (relative to the current directory, like Caffe), then relative to the solver's
  // folder, and says when the second was used.
  std::string resolve(const std::string& path) {
    std::error_code ec;
    if (path.empty() || fs::exists(path, ec)) return path;
    const fs::path beside = solver_dir / path;
    if (fs::path(path).is_relative() && fs::exists(beside, ec)) {
      out() << "Using " << beside.string() << " (" << path << " relative to the solver's folder)\n";
      return beside.string();
    }
    throw FileError(path + ": not found (tried relative to the current directory and to " +
                    (solver_dir.empty() ? std::string(".") : solver_dir.string()) + ")");
  }

  std::ostream& out() {
    if (options.progress_bar) std::fputs("\r\033[K", stderr);
    return *log;
  }

  std::function<void(std::vector<Parameter>&)> gradient_hook;
  std::optional<LossScaler> scaler;  // fp16 training

  void build();
  void connect();
  void check_same_setup();
  void synchronize_ranks();
  // What every rank must agree on: the solver settings, the train net's inputs, layers and parameters.
  std::string fingerprint() const;
  bool leader() const { return !comm || comm->rank() == 0; }
  void build_test_nets();
  void build_teacher();
  // Runs the teacher on the batch just copied into the train net and fills the train net's input.
  void run_teacher();
  void set_prefix();
  float forward_backward();
  void apply_update();
  void check_finite(float loss);
  void display(float smoothed);
  void progress();
  std::vector<std::vector<TestOutput>> test_all();
  // Points a test graph's layers at the train net's blobs of the same layer name and shapes, so tests
  // always see the latest weights without copying them (on the GPU too).
  void share_weights_with(Graph& test_graph);
};

void Trainer::Impl::build() {
  SolverConfig config = solver_config(param);
  solver = Solver(config);
  if (param.has_net_param() || param.has_train_net_param() || param.test_net_param_size() > 0) {
    throw UnsupportedError(
        "solver: inline net_param/train_net_param/test_net_param are not supported; put the net "
        "in a prototxt file and name it with `net:`");
  }
  if (param.has_net() == param.has_train_net())
    throw ModelError("solver: give exactly one of `net` and `train_net`");
  if (param.max_iter() <= 0) throw ModelError("solver: max_iter must be positive");
  seed = param.random_seed() >= 0 ? static_cast<std::uint64_t>(param.random_seed())
                                  : static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  Shard shard;
  if (comm) {
    // Same fillers, dropout streams and record order on every rank.
    comm->broadcast(&seed, sizeof seed, 0);
    shard = {comm->rank(), comm->world_size()};
  }
  train_net_path = resolve(param.has_net() ? param.net() : param.train_net());
  train_graph = load_caffe(train_net_path, "", Phase::train);
  train_feeds = attach_data_sources(
      train_graph, Phase::train, seed, [this](const std::string& p) { return resolve(p); }, shard);
  if (train_feeds.empty()) throw ModelError(train_net_path + ": the train net has no Data layer to feed it");
  NetOptions net_options;
  net_options.device = options.device;
  net_options.training = true;
  net_options.seed = seed;
  net_options.precision = options.precision;
  if (options.precision == Precision::fp16) {
    if (comm) {
      throw UnsupportedError(
          "fp16 training with loss scaling runs on one GPU; train data-parallel in bf16 or fp32");
    }
    scaler.emplace(options.loss_scale);
  }
  net = std::make_unique<Net>(train_graph, net_options);
  if (scaler) net->set_loss_scale(scaler->scale());
  for (const DataFeed& feed : train_feeds) {
    out() << "Data layer '" << feed.layer << "': " << feed.source->records().describe() << ", "
          << feed.source->records().size() << " records, batches of " << feed.source->data_shape().str()
          << "\n";
  }
  build_teacher();
  params = net->parameters();
  if (config.iter_size > 1) {
    for (const Parameter& p : params) accumulated.push_back(Tensor::zeros(p.grad.shape()));
  }
  if (leader()) build_test_nets();
  set_prefix();
  if (comm) {
    check_same_setup();
    if (!params.empty() && params.front().grad.device().is_cpu() != (comm->name() == "tcp")) {
      throw UnsupportedError("data-parallel training on " + options.device.str() + " needs the " +
                             (options.device.is_cpu() ? "tcp" : "nccl") + " communicator, not " +
                             comm->name());
    }
    const bool on_gpu = !options.device.is_cpu();
    buckets =
        std::make_unique<GradientBuckets>(params, options.distributed.bucket_bytes, *comm, [this, on_gpu] {
          if (on_gpu) net->synchronize();
        });
    // Overlap: each bucket leaves as soon as backward has completed it. With iter_size > 1 the sum over
    // the iteration's batches is averaged once, after the last.
    if (config.iter_size == 1)
      net->set_backward_observer([this](const std::string& layer) { buckets->layer_done(layer); });
    std::int64_t per_rank = 0;
    for (const DataFeed& feed : train_feeds) per_rank = std::max(per_rank, feed.source->batch_size());
    out() << "Data-parallel training: " << comm->world_size() << " ranks over " << comm->name()
          << ", global batch " << per_rank * comm->world_size() << " (" << per_rank << " per rank), "
          << buckets->bucket_count() << " gradient buckets\n";
  }
}

void Trainer::Impl::connect() {
  const DistributedOptions& d = options.distributed;
  if (d.backend == CommBackend::nccl) {
    if (options.device.type != DeviceType::cuda)
      throw UnsupportedError("the nccl communicator needs a CUDA device, not " + options.device.str() +
                             " (use tcp on the CPU)");
    comm = connect_nccl(d, options.device.index);
  } else {
    comm = connect_tcp(d);
  }
  if (comm->rank() != 0) {
    log = &null_log;
    options.progress_bar = false;
    options.write_curve = false;
  }
}

std::string Trainer::Impl::fingerprint() const {
  std::ostringstream text;
  text.precision(17);
  const SolverConfig& c = solver.config();
  text << "solver type " << solver_type_name(c.type) << ", base_lr " << c.base_lr << ", lr_policy "
       << c.lr_policy << ", gamma " << c.gamma << ", power " << c.power << ", stepsize " << c.stepsize
       << ", stepvalue";
  for (std::int64_t v : c.stepvalue) text << " " << v;
  text << ", max_iter " << c.max_iter << ", momentum " << c.momentum << ", momentum2 " << c.momentum2
       << ", delta " << c.delta << ", rms_decay " << c.rms_decay << ", weight_decay " << c.weight_decay
       << ", regularization " << (c.regularization == Regularization::l1 ? "L1" : "L2") << ", clip_gradients "
       << c.clip_gradients << ", iter_size " << c.iter_size << ", random_seed " << param.random_seed()
       << "\n";
  for (const InputSpec& input : train_graph.inputs)
    text << "input " << input.name << " " << input.shape.str() << "\n";
  for (const LayerSpec& spec : train_graph.layers) {
    text << "layer " << spec.name << " (" << spec.type << ")";
    for (const std::string& i : spec.inputs) text << " in " << i;
    for (const std::string& o : spec.outputs) text << " out " << o;
    for (const auto& [name, value] : spec.attrs.all()) text << " " << name << "=" << attribute_text(value);
    text << "\n";
  }
  for (const Parameter& p : params) {
    text << "parameter " << p.layer << "[" << p.index << "] " << p.value.shape().str() << " lr_mult "
         << p.spec.lr_mult << " decay_mult " << p.spec.decay_mult << "\n";
  }
  return text.str();
}

void Trainer::Impl::check_same_setup() {
  const std::string mine = fingerprint();
  const std::vector<std::string> all = comm->gather_text(mine);
  std::string verdict;
  for (std::size_t r = 1; r < all.size() && verdict.empty(); ++r) {
    if (all[r] == mine) continue;
    std::istringstream ours(mine), theirs(all[r]);
    std::string a, b;
    while (true) {
      const bool more_a = static_cast<bool>(std::getline(ours, a));
      const bool more_b = static_cast<bool>(std::getline(theirs, b));
      if (!more_a) a = "(nothing more)";
      if (!more_b) b = "(nothing more)";
      if (a != b || (!more_a && !more_b)) break;
    }
    verdict = "rank " + std::to_string(r) + " was started with another " +
              (a.starts_with("solver") ? "solver" : "model") + " than rank 0: rank 0 has \"" + a +
              "\", rank " + std::to_string(r) + " has \"" + b +
              "\"; every rank needs the same solver and net files";
  }
  verdict = comm->broadcast_text(verdict);
  if (!verdict.empty())
    throw DistributedError("rank " + std::to_string(comm->rank()) + ": refusing to train: " + verdict);
}

void Trainer::Impl::synchronize_ranks() {
  // Rank 0's weights (its fillers, fine-tuning or snapshot) for everyone, once, so that identical
  // averaged gradients keep the ranks identical; and all must resume at the same iteration.
  std::int64_t first = iter;
  comm->broadcast(&first, sizeof first, 0);
  if (first != iter) {
    throw DistributedError("rank " + std::to_string(comm->rank()) + " is at iteration " +
                           std::to_string(iter) + " but rank 0 at " + std::to_string(first) +
                           "; resume every rank from the same snapshot");
  }
  for (Parameter& p : params) {
    Tensor host = p.value.device().is_cpu() ? p.value : p.value.to(Device::cpu());
    comm->broadcast(host.raw(), host.bytes(), 0);
    if (!p.value.device().is_cpu()) p.value.copy_from(host);
  }
  const std::vector<Tensor>& history = solver.history();
  if (!history.empty()) {
    std::vector<Tensor> copies;
    for (const Tensor& h : history) {
      Tensor host = h.to(Device::cpu());
      comm->broadcast(host.raw(), host.bytes(), 0);
      copies.push_back(std::move(host));
    }
    solver.set_history(params, std::move(copies));
  }
  ranks_in_step = true;
}

void Trainer::Impl::build_test_nets() {
  std::vector<std::string> paths;
  if (param.has_net()) {
    if (param.test_iter_size() > 0) paths.push_back(param.net());
  } else {
    paths.assign(param.test_net().begin(), param.test_net().end());
  }
  if (static_cast<std::size_t>(param.test_iter_size()) != paths.size()) {
    throw ModelError("solver: " + std::to_string(param.test_iter_size()) + " test_iter values for " +
                     std::to_string(paths.size()) + " test nets");
  }
  if (!paths.empty() && param.test_interval() <= 0)
    throw ModelError("solver: test nets need a positive test_interval");
  for (std::size_t i = 0; i < paths.size(); ++i) {
    TestNet test;
    test.path = resolve(paths[i]);
    test.graph = load_caffe(test.path, "", Phase::test);
    test.feeds = attach_data_sources(test.graph, Phase::test, seed,
                                     [this](const std::string& p) { return resolve(p); });
    if (test.feeds.empty()) throw ModelError(test.path + ": the test net has no Data layer to feed it");
    test.iterations = param.test_iter(static_cast<int>(i));
    share_weights_with(test.graph);
    NetOptions net_options;
    net_options.device = options.device;
    test.net = std::make_unique<Net>(test.graph, net_options);
    tests.push_back(std::move(test));
  }
}

void Trainer::Impl::build_teacher() {
  const TeacherOptions& t = options.teacher;
  const std::vector<std::string> inputs = net->input_names();
  const auto is_fed = [&](const std::string& name) {
    for (const DataFeed& feed : train_feeds) {
      if (feed.data_input == name || feed.label_input == name) return true;
    }
    return false;
  };
  if (t.model.empty()) {
    // A DistillationLoss reading an input nothing fills would learn from zeros: say what is missing.
    for (const LayerSpec& spec : train_graph.layers) {
      if (spec.type != "DistillationLoss" || spec.inputs.size() < 2) continue;
      const std::string& soft = spec.inputs[1];
      if (std::find(inputs.begin(), inputs.end(), soft) != inputs.end() && !is_fed(soft)) {
        throw ModelError(train_net_path + ": layer '" + spec.name + "' (DistillationLoss) reads '" + soft +
                         "', which only a teacher fills: give one (`espresso train --teacher MODEL[,WEIGHTS] "
                         "--teacher-output BLOB`, docs/distillation.md)");
      }
    }
    return;
  }
  const std::string model_path = resolve(t.model);
  Graph graph = load_model(model_path, t.weights.empty() ? std::string() : resolve(t.weights));
  if (graph.inputs.size() != 1) {
    throw UnsupportedError("teacher " + model_path + ": has " + std::to_string(graph.inputs.size()) +
                           " inputs; a teacher takes the training images as its only input");
  }
  std::set<std::string> blobs(graph.outputs.begin(), graph.outputs.end());
  for (const LayerSpec& spec : graph.layers) blobs.insert(spec.outputs.begin(), spec.outputs.end());
  std::string output = t.output;
  if (output.empty()) {
    if (graph.outputs.size() != 1)
      throw ModelError("teacher " + model_path + ": has " + std::to_string(graph.outputs.size()) +
                       " outputs; name the one to learn from (--teacher-output)");
    output = graph.outputs.front();
  }
  if (!blobs.count(output)) {
    std::string outputs;
    for (const std::string& o : graph.outputs) outputs += (outputs.empty() ? "" : ", ") + o;
    throw ModelError("teacher " + model_path + ": has no blob '" + output + "' (its outputs: " + outputs +
                     ")");
  }
  if (std::find(inputs.begin(), inputs.end(), t.input) == inputs.end() || is_fed(t.input)) {
    throw ModelError(train_net_path + ": the train net has no input '" + t.input + "' for the teacher's '" +
                     output +
                     "'; declare one with an Input layer in the TRAIN phase and read it in a "
                     "DistillationLoss (docs/distillation.md)");
  }
  const DataFeed& feed = train_feeds.front();
  const Shape batch = feed.source->data_shape();
  const InputSpec& takes = graph.inputs.front();
  std::vector<std::int64_t> wanted = takes.shape.dims();
  if (!wanted.empty()) wanted[0] = batch[0];
  if (takes.shape.rank() > 0 && Shape(wanted) != batch) {
    throw ShapeError("teacher " + model_path + ": its input '" + takes.name + "' takes " + takes.shape.str() +
                     " but the Data layer '" + feed.layer + "' gives batches of " + batch.str());
  }
  graph.outputs = {output};
  NetOptions teacher_options;
  teacher_options.device = options.device;
  teacher_options.seed = seed;
  teacher = std::make_unique<Net>(std::move(graph), teacher_options);
  teacher->reshape(takes.name, batch);
  teacher_input = takes.name;
  teacher_output = output;
  out() << "Teacher " << model_path << (t.weights.empty() ? "" : " (" + t.weights + ")") << ": its '"
        << output << "' fills the train net's '" << t.input << "' on every batch of '" << feed.layer << "'\n";
}

void Trainer::Impl::run_teacher() {
  const DataFeed& feed = train_feeds.front();
  teacher->input(teacher_input).copy_from(net->input(feed.data_input));
  teacher->forward();
  const Tensor& soft = teacher->tensor(teacher_output);
  const std::string& into = options.teacher.input;
  // The student's layer reading it checks the shape and names itself when it does not fit.
  if (net->input_shape(into) != soft.shape()) net->reshape(into, soft.shape());
  net->input(into).copy_from(soft);
}

void Trainer::Impl::set_prefix() {
  std::string chosen = param.snapshot_prefix();
  if (chosen.empty()) chosen = (solver_dir / fs::path(train_net_path).stem()).string();
  const fs::path folder = fs::path(chosen).parent_path();
  std::error_code ec;
  if (!folder.empty() && !fs::is_directory(folder, ec)) {
    const fs::path beside = solver_dir / folder;
    if (fs::path(chosen).is_relative() && fs::is_directory(beside, ec)) {
      chosen = (solver_dir / chosen).string();
      out() << "Snapshots go to " << chosen << " (snapshot_prefix relative to the solver's folder)\n";
    } else {
      fs::create_directories(folder, ec);
      if (ec) throw FileError(folder.string() + ": cannot create the snapshot folder (" + ec.message() + ")");
    }
  }
  prefix = chosen;
  if (options.write_curve) {
    std::vector<std::string> columns;
    for (std::size_t i = 0; i < tests.size(); ++i) {
      for (const std::string& output : tests[i].graph.outputs)
        columns.push_back("test" + std::to_string(i) + "/" + output);
    }
    curve = std::make_unique<TrainingLog>(prefix + "_log.csv", columns);
  }
}

void Trainer::Impl::check_finite(float loss) {
  if (std::isfinite(loss)) return;
  for (const DataFeed& feed : train_feeds) {
    if (!is_finite_tensor(net->tensor(feed.data_input))) {
      throw DataError("Iteration " + std::to_string(iter) + ": the input '" + feed.data_input +
                      "' of layer '" + feed.layer + "' holds non-finite values");
    }
  }
  for (const LayerSpec& spec : train_graph.layers) {
    for (const std::string& output : spec.outputs) {
      // Tensors whose buffers an in-place layer reused are gone; the layer after tells.
      const Tensor* value = nullptr;
      try {
        value = &net->tensor(output);
      } catch (const UnsupportedError&) {
        continue;
      }
      if (!is_finite_tensor(*value)) {
        throw Error("Iteration " + std::to_string(iter) + ": the loss is " + format_number(loss) +
                    "; layer '" + spec.name + "' (" + spec.type + ") is the first whose output ('" + output +
                    "') is not finite. Lower base_lr or clip gradients (clip_gradients)");
      }
    }
  }
  throw Error("Iteration " + std::to_string(iter) + ": the loss is " + format_number(loss));
}

float Trainer::Impl::forward_backward() {
  for (const DataFeed& feed : train_feeds) {
    Batch batch = feed.source->next();
    net->input(feed.data_input).copy_from(batch.data);
    if (!feed.label_input.empty()) net->input(feed.label_input).copy_from(batch.labels);
  }
  if (teacher) run_teacher();
  if (buckets) {
    net->forward();
    const float loss = net->loss();
    check_finite(loss);
    buckets->reset();
    net->backward();
    return loss;
  }
  // One recorded step on a GPU (Net::forward_backward); a loss that is not finite is looked into with
  // the activations of a forward() again, which backward may have overwritten.
  net->forward_backward();
  const float loss = net->loss();
  if (!std::isfinite(loss)) {
    net->forward();
    check_finite(loss);  // throws, naming the first layer whose output is not finite where one is
  }
  return loss;
}

void Trainer::Impl::apply_update() {
  if (!accumulated.empty()) {
    for (std::size_t i = 0; i < params.size(); ++i) params[i].grad.copy_from(accumulated[i]);
  }
  // The averaged gradients: identical on every rank, so the step is too.
  if (buckets) buckets->finish();
  if (gradient_hook) gradient_hook(params);
  solver.update(params, iter, net->loss_scale());
}

void Trainer::Impl::display(float smoothed) {
  const Clock::time_point now = Clock::now();
  const double seconds = std::chrono::duration<double>(now - last_display).count();
  const std::int64_t done = iter - last_display_iter;
  std::ostream& o = out();
  o << "Iteration " << iter << ", loss = " << format_number(smoothed);
  if (done > 0 && seconds > 0) o << " (" << format_number(done / seconds) << " iter/s)";
  o << "\n";
  int index = 0;
  for (const std::string& output : train_graph.outputs) {
    const Tensor value = net->tensor(output).to(Device::cpu());
    const std::vector<float> values = value.to_vector();
    const float weight = output_loss_weight(train_graph, output);
    for (float v : values) {
      o << "    Train net output #" << index++ << ": " << output << " = " << format_number(v);
      if (weight != 0.0f)
        o << " (* " << format_number(weight) << " = " << format_number(weight * v) << " loss)";
      o << "\n";
    }
  }
  const double lr = learning_rate(solver.config(), iter);
  o << "Iteration " << iter << ", lr = " << format_number(lr) << "\n";
  o.flush();
  if (curve) curve->add({iter, smoothed, lr, {}});
  last_display = now;
  last_display_iter = iter;
}

void Trainer::Impl::progress() {
  if (!options.progress_bar) return;
  const Clock::time_point now = Clock::now();
  if (now - last_bar < std::chrono::milliseconds(200) && iter != param.max_iter()) return;
  last_bar = now;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * iter / std::max<std::int64_t>(param.max_iter(), 1));
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r[%s] %lld/%d loss %.4g", bar.c_str(), static_cast<long long>(iter),
               param.max_iter(), losses.empty() ? 0.0 : static_cast<double>(losses.back()));
  std::fflush(stderr);
}

void Trainer::Impl::share_weights_with(Graph& test_graph) {
  for (LayerSpec& spec : test_graph.layers) {
    const std::vector<Tensor> trained = net->weights(spec.name);
    if (trained.empty()) continue;
    const bool same = spec.weights.empty() ||
                      (spec.weights.size() == trained.size() &&
                       std::equal(spec.weights.begin(), spec.weights.end(), trained.begin(),
                                  [](const Tensor& a, const Tensor& b) { return a.shape() == b.shape(); }));
    if (same) spec.weights = trained;
  }
}

std::vector<std::vector<TestOutput>> Trainer::Impl::test_all() {
  std::vector<std::vector<TestOutput>> results;
  std::vector<double> row;
  for (std::size_t t = 0; t < tests.size(); ++t) {
    TestNet& test = tests[t];
    out() << "Iteration " << iter << ", Testing net (#" << t << ")\n";
    for (const DataFeed& feed : test.feeds) feed.source->seek(0);
    std::vector<double> sums;
    for (std::int64_t i = 0; i < test.iterations; ++i) {
      for (const DataFeed& feed : test.feeds) {
        Batch batch = feed.source->next();
        test.net->input(feed.data_input).copy_from(batch.data);
        if (!feed.label_input.empty()) test.net->input(feed.label_input).copy_from(batch.labels);
      }
      test.net->forward();
      std::size_t k = 0;
      for (const std::string& output : test.graph.outputs) {
        for (float v : test.net->tensor(output).to(Device::cpu()).to_vector()) {
          if (sums.size() <= k) sums.push_back(0.0);
          sums[k++] += v;
        }
      }
    }
    std::vector<TestOutput> outputs;
    std::size_t k = 0;
    for (const std::string& output : test.graph.outputs) {
      const std::int64_t count = test.net->tensor(output).numel();
      const float weight = output_loss_weight(test.graph, output);
      for (std::int64_t j = 0; j < count; ++j, ++k) {
        const double mean = sums[k] / static_cast<double>(std::max<std::int64_t>(test.iterations, 1));
        outputs.push_back({output, mean, weight});
        std::ostream& o = out();
        o << "    Test net output #" << k << ": " << output << " = " << format_number(mean);
        if (weight != 0.0f)
          o << " (* " << format_number(weight) << " = " << format_number(weight * mean) << " loss)";
        o << "\n";
        if (count == 1) row.push_back(mean);
      }
    }
    results.push_back(std::move(outputs));
  }
  log->flush();
  if (curve) {
    curve->add({iter, std::nullopt, std::nullopt, row});
    int accuracy_column = -1;
    for (std::size_t i = 0; i < curve->test_columns().size(); ++i) {
      if (curve->test_columns()[i].find("accuracy") != std::string::npos) {
        accuracy_column = static_cast<int>(i);
        break;
      }
    }
    write_curve_png(prefix + "_curve.png", curve->points(), accuracy_column);
  }
  last_test = results;
  last_test_iter = iter;
  return results;
}

Trainer::Trainer(const std::string& solver_file, TrainerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->param = caffe_format::read_solver(solver_file);
  impl_->solver_dir = fs::path(solver_file).parent_path();
  impl_->options = options;
  impl_->log = options.log ? options.log : &std::cout;
  if (options.distributed.enabled) impl_->connect();
  impl_->build();
  for (const std::string& weights : impl_->param.weights()) copy_weights(weights);
}

Trainer::~Trainer() = default;

void Trainer::copy_weights(const std::string& caffemodel) {
  const std::string path = impl_->resolve(caffemodel);
  caffe::NetParameter model = caffe_format::read_caffemodel(path);
  caffe_format::upgrade_v1_layers(model, path);
  std::map<std::string, const caffe::LayerParameter*> source;
  for (const caffe::LayerParameter& layer : model.layer()) {
    if (layer.blobs_size() > 0) source.emplace(layer.name(), &layer);
  }
  std::set<std::string> copied;
  for (Parameter& p : impl_->params) {
    auto it = source.find(p.layer);
    if (it == source.end()) continue;
    const caffe::LayerParameter& layer = *it->second;
    if (p.index >= layer.blobs_size()) {
      throw ModelError(
          path + ": layer '" + p.layer + "' has " + std::to_string(layer.blobs_size()) +
          " blobs but the net's layer has more; rename the layer in the net to train it from scratch");
    }
    const std::string where = path + ": layer '" + p.layer + "' blob " + std::to_string(p.index);
    std::vector<float> values;
    try {
      values = blob_values(layer.blobs(p.index), p.value.numel(), where, p.value.shape());
    } catch (const ModelError& e) {
      throw ModelError(std::string(e.what()) + "; rename the layer in the net to train it from scratch");
    }
    p.value.copy_from(Tensor::from(p.value.shape(), values));
    if (copied.insert(p.layer).second)
      impl_->out() << "Copying layer " << p.layer << " from " << path << "\n";
  }
  impl_->ranks_in_step = false;
  if (copied.empty())
    impl_->out() << "Warning: no layer of " << path << " matches a layer of the net by name\n";
}

void Trainer::restore(const std::string& solverstate) {
  const std::string path = impl_->resolve(solverstate);
  caffe::SolverState state;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw FileError(path + ": cannot open the solver state");
    if (!state.ParseFromIstream(&in)) throw ParseError(path + ": not a valid .solverstate");
  }
  std::string weights = state.learned_net();
  std::error_code ec;
  if (!fs::exists(weights, ec)) {
    // Snapshots are found beside their state when the folder has moved.
    const fs::path beside = fs::path(path).parent_path() / fs::path(weights).filename();
    if (!fs::exists(beside, ec)) throw FileError(path + ": its weights " + weights + " are missing");
    weights = beside.string();
  }
  caffe::NetParameter model = caffe_format::read_caffemodel(weights);
  caffe_format::upgrade_v1_layers(model, weights);
  std::map<std::string, const caffe::LayerParameter*> stored;
  for (const caffe::LayerParameter& layer : model.layer()) {
    if (layer.blobs_size() > 0) stored.emplace(layer.name(), &layer);
  }
  std::set<std::string> used;
  std::vector<std::pair<Parameter*, std::vector<float>>> loaded;
  for (Parameter& p : impl_->params) {
    auto it = stored.find(p.layer);
    if (it == stored.end() || p.index >= it->second->blobs_size()) {
      throw ModelError(path + ": the snapshot was made from another net: it has no blob " +
                       std::to_string(p.index) + " for layer '" + p.layer + "'");
    }
    used.insert(p.layer);
    loaded.emplace_back(&p, blob_values(it->second->blobs(p.index), p.value.numel(),
                                        path + ": the snapshot's layer '" + p.layer + "' blob " +
                                            std::to_string(p.index) + " (from another net?)",
                                        p.value.shape()));
  }
  for (const auto& [name, layer] : stored) {
    if (!used.count(name))
      throw ModelError(path + ": the snapshot was made from another net: its layer '" + name +
                       "' is not in this net");
  }
  std::vector<Tensor> history;
  for (const caffe::BlobProto& blob : state.history()) {
    std::vector<float> values(blob.data().begin(), blob.data().end());
    history.push_back(Tensor::from(Shape{static_cast<std::int64_t>(values.size())}, values));
  }
  // fp16: the loss scale goes on from the snapshot's (a state from fp32 or bf16 training has none, and
  // fp32 or bf16 training needs none).
  std::optional<LossScaler> scaler = impl_->scaler;
  if (scaler && state.has_espresso_loss_scale()) {
    try {
      scaler->resume(state.espresso_loss_scale(), state.espresso_loss_scale_clean_steps());
    } catch (const UnsupportedError& e) {
      throw ModelError(path + ": " + e.what());
    }
  }
  // The solver's history last of all the checks: set_history replaces it once the blobs fit.
  try {
    impl_->solver.set_history(impl_->params, std::move(history));
  } catch (const ModelError& e) {
    throw ModelError(path + ": " + e.what());
  }
  // Only now, with everything checked, change the net.
  for (auto& [param, values] : loaded) param->value.copy_from(Tensor::from(param->value.shape(), values));
  impl_->iter = state.iter();
  if (scaler) {
    impl_->scaler = scaler;
    impl_->net->set_loss_scale(scaler->scale());
  }
  impl_->ranks_in_step = false;
  const std::int64_t batches = impl_->iter * impl_->solver.config().iter_size;
  for (const DataFeed& feed : impl_->train_feeds) feed.source->seek(batches);
  impl_->last_display_iter = impl_->iter;
  impl_->out() << "Resuming from " << path << " at iteration " << impl_->iter << "\n";
}

void Trainer::set_gradient_hook(std::function<void(std::vector<Parameter>&)> hook) {
  impl_->gradient_hook = std::move(hook);
}

void Trainer::step(std::int64_t iterations) {
  Impl& s = *impl_;
  const std::int64_t stop = s.iter + iterations;
  const int iter_size = s.solver.config().iter_size;
  if (s.comm && !s.ranks_in_step) s.synchronize_ranks();
  const int average = std::max(s.param.average_loss(), 1);
  while (s.iter < stop) {
    if (s.param.test_interval() > 0 && s.iter % s.param.test_interval() == 0 &&
        (s.iter > 0 || s.param.test_initialization()) && !s.tests.empty()) {
      s.test_all();
    }
    for (Tensor& a : s.accumulated) std::fill_n(a.data<float>(), a.numel(), 0.0f);
    double loss = 0.0;
    std::string overflowed;  // fp16: a layer whose gradient overflowed in one of the iteration's passes
    for (int i = 0; i < iter_size; ++i) {
      loss += s.forward_backward();
      if (s.scaler && overflowed.empty()) overflowed = s.net->non_finite_gradient();
      for (std::size_t p = 0; p < s.accumulated.size(); ++p) {
        float* sum = s.accumulated[p].data<float>();
        const Tensor grad =
            s.params[p].grad.device().is_cpu() ? s.params[p].grad : s.params[p].grad.to(Device::cpu());
        const float* g = grad.data<float>();
        for (std::int64_t j = 0; j < grad.numel(); ++j) sum[j] += g[j];
      }
    }
    float mean_loss = static_cast<float>(loss / iter_size);
    if (s.comm) s.comm->all_reduce(&mean_loss, 1, true);  // the global batch's loss, as one process sees it
    s.losses.push_back(mean_loss);
    s.recent_losses.push_back(mean_loss);
    if (static_cast<int>(s.recent_losses.size()) > average) s.recent_losses.pop_front();
    double smoothed = 0.0;
    for (float l : s.recent_losses) smoothed += l;
    smoothed /= static_cast<double>(s.recent_losses.size());
    if (s.param.display() > 0 && s.iter % s.param.display() == 0) s.display(static_cast<float>(smoothed));
    if (!s.scaler) {
      s.apply_update();
    } else {
      const float scale = s.net->loss_scale();
      if (s.scaler->update(overflowed, s.iter)) {
        s.apply_update();
      } else {
        s.out() << "Iteration " << s.iter << ": gradient overflow in layer '" << overflowed
                << "' at loss scale " << format_number(scale) << "; update skipped, loss scale now "
                << format_number(s.scaler->scale()) << "\n";
      }
      s.net->set_loss_scale(s.scaler->scale());
    }
    ++s.iter;
    s.progress();
    if (s.param.snapshot() > 0 && s.iter % s.param.snapshot() == 0) snapshot();
  }
}

void Trainer::solve() {
  Impl& s = *impl_;
  s.out() << "Solving " << s.train_graph.name << " with " << solver_type_name(s.solver.config().type)
          << ", lr_policy " << s.solver.config().lr_policy << ", seed " << s.seed << "\n";
  step(s.param.max_iter() - s.iter);
  if (s.param.snapshot_after_train() && (s.param.snapshot() <= 0 || s.iter % s.param.snapshot() != 0))
    snapshot();
  if (s.param.test_interval() > 0 && s.iter % s.param.test_interval() == 0 && !s.tests.empty()) s.test_all();
  // No rank leaves while rank 0 still writes the last snapshot or tests.
  if (s.comm) s.comm->barrier();
  s.out() << "Optimization Done.\n";
  s.log->flush();
}

std::vector<std::vector<TestOutput>> Trainer::test_all() { return impl_->test_all(); }

std::string Trainer::snapshot() {
  Impl& s = *impl_;
  const std::string base = s.prefix + "_iter_" + std::to_string(s.iter);
  if (!s.leader()) return base + ".caffemodel";  // rank 0 writes it
  caffe::NetParameter prototxt = caffe_format::read_prototxt(s.train_net_path);
  caffe_format::upgrade_v1_layers(prototxt, s.train_net_path);
  std::map<std::string, std::vector<const Parameter*>> by_layer;
  for (const Parameter& p : s.params) by_layer[p.layer].push_back(&p);
  caffe::NetParameter model;
  model.set_name(prototxt.name());
  std::set<std::string> written;
  for (const caffe::LayerParameter& layer : prototxt.layer()) {
    // The train phase's layers, each once (train and test copies of a data layer share a name).
    bool test_only = layer.include_size() > 0;
    for (const caffe::NetStateRule& rule : layer.include())
      test_only &= rule.has_phase() && rule.phase() == caffe::TEST;
    if (test_only || !written.insert(layer.name()).second) continue;
    caffe::LayerParameter* copy = model.add_layer();
    *copy = layer;
    copy->clear_blobs();
    auto it = by_layer.find(layer.name());
    if (it == by_layer.end()) continue;
    std::vector<const Parameter*> blobs = it->second;
    std::sort(blobs.begin(), blobs.end(),
              [](const Parameter* a, const Parameter* b) { return a->index < b->index; });
    for (const Parameter* p : blobs) *copy->add_blobs() = to_blob(p->value);
  }
  const std::string weights = base + ".caffemodel";
  write_atomically(weights, model.SerializeAsString());
  caffe::SolverState state;
  state.set_iter(static_cast<int>(s.iter));
  state.set_learned_net(weights);
  int passed = 0;
  for (std::int64_t value : s.solver.config().stepvalue) passed += s.iter >= value ? 1 : 0;
  state.set_current_step(passed);
  for (const Tensor& h : s.solver.history()) *state.add_history() = to_blob(h);
  if (s.scaler) {
    state.set_espresso_loss_scale(s.scaler->scale());
    state.set_espresso_loss_scale_clean_steps(s.scaler->clean_steps());
  }
  write_atomically(base + ".solverstate", state.SerializeAsString());
  s.out() << "Snapshotting to binary proto file " << weights << "\n"
          << "Snapshotting solver state to binary proto file " << base << ".solverstate\n";
  return weights;
}

std::int64_t Trainer::iteration() const { return impl_->iter; }
int Trainer::rank() const { return impl_->comm ? impl_->comm->rank() : 0; }
int Trainer::world_size() const { return impl_->comm ? impl_->comm->world_size() : 1; }
const std::vector<std::vector<TestOutput>>& Trainer::last_test() const { return impl_->last_test; }
std::int64_t Trainer::last_test_iteration() const { return impl_->last_test_iter; }
const std::vector<float>& Trainer::losses() const { return impl_->losses; }
Net& Trainer::train_net() { return *impl_->net; }

TrainingMemory Trainer::memory() {
  TrainingMemory memory;
  memory.train = impl_->net->memory();
  // The solver keeps history_sets() blobs the size of each parameter (sized at the first update).
  memory.solver_history_bytes =
      static_cast<std::size_t>(impl_->solver.history_sets()) * memory.train.weight_grad_bytes;
  for (TestNet& test : impl_->tests) memory.tests.push_back(test.net->memory());
  return memory;
}
std::string Trainer::snapshot_prefix() const { return impl_->prefix; }

}  // namespace espresso::train
