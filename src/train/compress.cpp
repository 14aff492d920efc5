// Deep Compression's pipeline on our trainer: prune by magnitude with retraining under masks, share weights
// by k-means with centroid retraining, then write a Huffman-coded .esp (docs/compression.md).
#include "espresso/compress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <streambuf>

#include "esp/weight_codec.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/package.h"
#include "espresso/trainer.h"

namespace espresso::compress {

std::vector<std::uint8_t> magnitude_mask(std::span<const float> weights, double density) {
  if (!(density > 0.0 && density <= 1.0)) throw ModelError("density " + std::to_string(density) + " is not in (0, 1]");
  const std::size_t n = weights.size();
  const auto keep = std::min(n, static_cast<std::size_t>(std::ceil(density * static_cast<double>(n) - 1e-9)));
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  const auto larger = [&](std::size_t a, std::size_t b) {
    const float x = std::fabs(weights[a]), y = std::fabs(weights[b]);
    return x != y ? x > y : a < b;
  };
  if (keep < n) std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep), order.end(), larger);
  std::vector<std::uint8_t> mask(n, 0);
  for (std::size_t i = 0; i < keep; ++i) mask[order[i]] = 1;
  return mask;
}

namespace {

// The nearest of sorted centroids.
int nearest(const std::vector<float>& centroids, float v) {
  const auto it = std::lower_bound(centroids.begin(), centroids.end(), v);
  if (it == centroids.begin()) return 0;
  if (it == centroids.end()) return static_cast<int>(centroids.size()) - 1;
  const auto i = static_cast<int>(it - centroids.begin());
  return v - centroids[static_cast<std::size_t>(i - 1)] <= centroids[static_cast<std::size_t>(i)] - v ? i - 1 : i;
}

}  // namespace

Clusters kmeans_linear(std::span<const float> weights, std::span<const std::uint8_t> mask, int clusters,
                       int iterations) {
  if (mask.size() != weights.size()) throw ShapeError("kmeans: the mask and the weights differ in size");
  if (clusters < 1) throw ModelError("kmeans: at least one cluster is needed");
  Clusters out;
  out.assignment.assign(weights.size(), -1);
  float lo = INFINITY, hi = -INFINITY;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (!mask[i]) continue;
    lo = std::min(lo, weights[i]);
    hi = std::max(hi, weights[i]);
  }
  if (lo > hi) return out;  // nothing kept
  const auto k = static_cast<std::size_t>(clusters);
  out.centroids.resize(k);
  for (std::size_t j = 0; j < k; ++j) {
    out.centroids[j] = k == 1 ? 0.5f * (lo + hi)
                              : lo + (hi - lo) * static_cast<float>(j) / static_cast<float>(k - 1);
  }
  std::vector<double> sums(k);
  std::vector<std::int64_t> counts(k);
  for (int iteration = 0; iteration <= iterations; ++iteration) {
    bool changed = false;
    for (std::size_t i = 0; i < weights.size(); ++i) {
      if (!mask[i]) continue;
      const int c = nearest(out.centroids, weights[i]);
      changed = changed || c != out.assignment[i];
      out.assignment[i] = c;
    }
    if (!changed || iteration == iterations) break;
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (std::size_t i = 0; i < weights.size(); ++i) {
      if (out.assignment[i] < 0) continue;
      sums[static_cast<std::size_t>(out.assignment[i])] += weights[i];
      ++counts[static_cast<std::size_t>(out.assignment[i])];
    }
    // Means of contiguous intervals of the line stay in order.
    for (std::size_t j = 0; j < k; ++j) {
      if (counts[j] > 0) out.centroids[j] = static_cast<float>(sums[j] / static_cast<double>(counts[j]));
    }
    std::sort(out.centroids.begin(), out.centroids.end());
  }
  return out;
}

namespace {

class NullBuffer : public std::streambuf {
 protected:
  int overflow(int c) override { return c; }
};

// A parameter's values or gradients on the CPU, written back where they came from.
template <class F>
void on_host(Tensor& t, F&& edit) {
  if (t.device().is_cpu()) {
    edit(t.data<float>(), t.numel());
    return;
  }
  Tensor host = t.to(Device::cpu());
  edit(host.data<float>(), host.numel());
  t.copy_from(host);
}

std::vector<float> host_values(const Tensor& t) { return t.to(Device::cpu()).to_vector(); }

struct Planned {
  LayerPlan plan;
  std::size_t param = 0;            // index in the train net's parameters
  std::vector<std::uint8_t> mask;   // 1: kept
  std::vector<int> cluster;         // shared value of each weight, -1: pruned (sharing stage)
  int clusters = 0;
};

class Pipeline {
 public:
  explicit Pipeline(const CompressOptions& options) : options_(options), null_(&null_buffer_) {
    train::TrainerOptions trainer_options;
    trainer_options.device = options.device;
    trainer_options.log = options.log != nullptr ? options.log : &null_;
    trainer_options.write_curve = false;
    trainer_options_ = trainer_options;
  }

  // A fresh trainer (zero solver history, so that masked weights with zero gradients stay exactly zero),
  // with the weights of `from` or, for the first, the caffemodel.
  std::unique_ptr<train::Trainer> trainer(train::Trainer* from) {
    auto t = std::make_unique<train::Trainer>(options_.solver, trainer_options_);
    if (from == nullptr) {
      t->copy_weights(options_.weights);
    } else {
      std::vector<Parameter> source = from->train_net().parameters();
      std::vector<Parameter> target = t->train_net().parameters();
      for (std::size_t i = 0; i < target.size(); ++i) target[i].value.copy_from(source[i].value);
    }
    return t;
  }

  double accuracy(train::Trainer& t, std::string& metric) {
    const std::vector<std::vector<train::TestOutput>> results = t.test_all();
    if (results.empty() || results[0].empty()) throw ModelError(options_.solver + ": the solver has no test net to measure accuracy");
    const std::vector<train::TestOutput>& outputs = results[0];
    for (const train::TestOutput& o : outputs) {
      if (o.name.find("accuracy") != std::string::npos) {
        metric = o.name;
        return o.value;
      }
    }
    metric = outputs[0].name;
    return outputs[0].value;
  }

  const CompressOptions& options_;
  NullBuffer null_buffer_;
  std::ostream null_;
  train::TrainerOptions trainer_options_;
};

std::vector<Planned> plan_layers(const CompressOptions& options, Net& net) {
  std::vector<Parameter> params = net.parameters();
  std::vector<Planned> planned;
  for (const LayerPlan& plan : options.layers) {
    bool found = false;
    for (std::size_t p = 0; p < params.size(); ++p) {
      if (params[p].layer == plan.layer && params[p].index == 0) {
        planned.push_back({plan, p, {}, {}, 0});
        found = true;
      }
    }
    if (!found) throw ModelError("compress: the train net has no layer '" + plan.layer + "' with learned weights");
  }
  return planned;
}

}  // namespace

CompressReport compress_model(const CompressOptions& options) {
  if (options.prune_stages < 1) throw ModelError("compress: at least one pruning stage is needed");
  // The plan's own checks, before the trainer loads anything.
  std::set<std::string> seen;
  for (const LayerPlan& plan : options.layers) {
    if (!seen.insert(plan.layer).second) throw ModelError("compress: layer '" + plan.layer + "' is planned twice");
    if (!(plan.density > 0.0 && plan.density <= 1.0)) {
      throw ModelError("compress: layer '" + plan.layer + "': density " + std::to_string(plan.density) +
                       " is not in (0, 1]");
    }
    if (plan.bits < 0 || plan.bits > 8) {
      throw ModelError("compress: layer '" + plan.layer + "': " + std::to_string(plan.bits) +
                       " bits for shared weights (1 to 8, or 0 for none)");
    }
  }
  Pipeline pipeline(options);
  CompressReport report;
  std::unique_ptr<train::Trainer> trainer = pipeline.trainer(nullptr);
  std::vector<Planned> planned = plan_layers(options, trainer->train_net());
  report.accuracy_before = pipeline.accuracy(*trainer, report.metric);

  // 1. Pruning, in stages, each retrained with the pruned gradients masked to zero.
  for (int stage = 1; stage <= options.prune_stages; ++stage) {
    if (stage > 1) trainer = pipeline.trainer(trainer.get());
    std::vector<Parameter> params = trainer->train_net().parameters();
    for (Planned& p : planned) {
      const double density = 1.0 - (1.0 - p.plan.density) * stage / options.prune_stages;
      const std::vector<float> values = host_values(params[p.param].value);
      p.mask = magnitude_mask(values, density);
      on_host(params[p.param].value, [&](float* w, std::int64_t n) {
        for (std::int64_t i = 0; i < n; ++i) {
          if (!p.mask[static_cast<std::size_t>(i)]) w[i] = 0.0f;
        }
      });
    }
    trainer->set_gradient_hook([&planned](std::vector<Parameter>& ps) {
      for (Planned& p : planned) {
        on_host(ps[p.param].grad, [&](float* g, std::int64_t n) {
          for (std::int64_t i = 0; i < n; ++i) {
            if (!p.mask[static_cast<std::size_t>(i)]) g[i] = 0.0f;
          }
        });
      }
    });
    if (options.prune_iterations > 0) trainer->step(options.prune_iterations);
  }
  report.accuracy_pruned = pipeline.accuracy(*trainer, report.metric);

  // 2. Weight sharing: k-means per layer, then retraining of the centroids (gradients summed per cluster).
  bool sharing = false;
  for (const Planned& p : planned) sharing = sharing || p.plan.bits > 0;
  if (sharing) {
    trainer = pipeline.trainer(trainer.get());
    std::vector<Parameter> params = trainer->train_net().parameters();
    for (Planned& p : planned) {
      if (p.plan.bits == 0) continue;
      const std::vector<float> values = host_values(params[p.param].value);
      // 2^bits codes, one of them zero.
      p.clusters = (1 << p.plan.bits) - 1;
      const Clusters c = kmeans_linear(values, p.mask, p.clusters, options.kmeans_iterations);
      p.cluster = c.assignment;
      on_host(params[p.param].value, [&](float* w, std::int64_t n) {
        for (std::int64_t i = 0; i < n; ++i) {
          const int a = p.cluster[static_cast<std::size_t>(i)];
          w[i] = a < 0 ? 0.0f : c.centroids[static_cast<std::size_t>(a)];
        }
      });
    }
    trainer->set_gradient_hook([&planned](std::vector<Parameter>& ps) {
      for (Planned& p : planned) {
        on_host(ps[p.param].grad, [&](float* g, std::int64_t n) {
          if (p.plan.bits == 0) {
            for (std::int64_t i = 0; i < n; ++i) {
              if (!p.mask[static_cast<std::size_t>(i)]) g[i] = 0.0f;
            }
            return;
          }
          std::vector<double> sums(static_cast<std::size_t>(p.clusters), 0.0);
          for (std::int64_t i = 0; i < n; ++i) {
            const int a = p.cluster[static_cast<std::size_t>(i)];
            if (a >= 0) sums[static_cast<std::size_t>(a)] += g[i];
          }
          for (std::int64_t i = 0; i < n; ++i) {
            const int a = p.cluster[static_cast<std::size_t>(i)];
            g[i] = a < 0 ? 0.0f : static_cast<float>(sums[static_cast<std::size_t>(a)]);
          }
        });
      }
    });
    if (options.share_iterations > 0) trainer->step(options.share_iterations);
    // Every member of a cluster took the same steps from the same value; make sure of it.
    for (Planned& p : planned) {
      if (p.plan.bits == 0) continue;
      on_host(params[p.param].value, [&](float* w, std::int64_t n) {
        std::vector<float> value(static_cast<std::size_t>(p.clusters), NAN);
        for (std::int64_t i = 0; i < n; ++i) {
          const int a = p.cluster[static_cast<std::size_t>(i)];
          if (a < 0) continue;
          float& v = value[static_cast<std::size_t>(a)];
          if (std::isnan(v)) v = w[i];
          w[i] = v;
        }
      });
    }
  }
  report.accuracy_after = pipeline.accuracy(*trainer, report.metric);

  // 3. The deploy net with the compressed weights, Huffman-coded into the package.
  Graph graph = load_caffe(options.deploy);
  Net& net = trainer->train_net();
  for (LayerSpec& spec : graph.layers) {
    const std::vector<Tensor> trained = net.weights(spec.name);
    if (trained.empty()) continue;
    spec.weights.clear();
    for (const Tensor& t : trained) spec.weights.push_back(Tensor::from(t.shape(), host_values(t)));
  }
  graph.metadata.name = std::filesystem::path(options.output).stem().string();
  graph.metadata.source_format = "caffe";
  graph.metadata.metrics[report.metric] = report.accuracy_after;
  save_package(graph, options.output, {.compress = true});
  report.file_bytes = std::filesystem::file_size(options.output);

  for (const LayerSpec& spec : graph.layers) {
    if (spec.weights.empty()) continue;
    LayerReport row;
    row.layer = spec.name;
    for (std::size_t b = 0; b < spec.weights.size(); ++b) {
      const Tensor& t = spec.weights[b];
      const std::span<const float> values(t.data<float>(), static_cast<std::size_t>(t.numel()));
      row.dense_bytes += t.bytes();
      codec::EncodingStats stats;
      const std::optional<codec::Encoded> e = codec::encode(values, &stats);
      row.bytes += e ? e->bytes.size() : t.bytes();
      if (b == 0) {
        row.weights = t.numel();
        std::set<float> distinct;
        for (float v : values) {
          row.nonzero += v != 0.0f;
          if (v != 0.0f && distinct.size() <= 256) distinct.insert(v);
        }
        for (const Planned& p : planned) {
          if (p.plan.layer == spec.name && p.plan.bits > 0) row.shared_values = static_cast<int>(distinct.size());
        }
        if (e) {
          row.bits_index = stats.bits_per_index;
          row.bits_gap = stats.bits_per_gap;
        } else {
          row.bits_index = 32;
        }
      }
    }
    report.dense_bytes += row.dense_bytes;
    report.bytes += row.bytes;
    report.layers.push_back(row);
  }
  return report;
}

std::string format_report(const CompressReport& r) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-12s %10s %8s %7s %9s %8s %11s %11s %8s\n", "layer", "weights", "density",
                "shared", "idx bits", "gap bits", "f32 bytes", "bytes", "ratio");
  out += line;
  std::int64_t weights = 0, nonzero = 0;
  for (const LayerReport& l : r.layers) {
    std::snprintf(line, sizeof line, "%-12s %10lld %7.2f%% %7s %9.2f %8.2f %11llu %11llu %7.1fx\n", l.layer.c_str(),
                  static_cast<long long>(l.weights), 100.0 * static_cast<double>(l.nonzero) / static_cast<double>(l.weights),
                  l.shared_values > 0 ? std::to_string(l.shared_values).c_str() : "-", l.bits_index, l.bits_gap,
                  static_cast<unsigned long long>(l.dense_bytes), static_cast<unsigned long long>(l.bytes),
                  static_cast<double>(l.dense_bytes) / static_cast<double>(std::max<std::uint64_t>(l.bytes, 1)));
    out += line;
    weights += l.weights;
    nonzero += l.nonzero;
  }
  std::snprintf(line, sizeof line, "%-12s %10lld %7.2f%% %7s %9s %8s %11llu %11llu %7.1fx\n", "total",
                static_cast<long long>(weights), 100.0 * static_cast<double>(nonzero) / static_cast<double>(std::max<std::int64_t>(weights, 1)),
                "", "", "", static_cast<unsigned long long>(r.dense_bytes), static_cast<unsigned long long>(r.bytes),
                r.ratio());
  out += line;
  std::snprintf(line, sizeof line,
                "package: %llu bytes (manifest included), %.1fx smaller than the f32 weights\n"
                "%s: %.4f before, %.4f after pruning, %.4f after weight sharing\n",
                static_cast<unsigned long long>(r.file_bytes),
                static_cast<double>(r.dense_bytes) / static_cast<double>(std::max<std::uint64_t>(r.file_bytes, 1)),
                r.metric.c_str(), r.accuracy_before, r.accuracy_pruned, r.accuracy_after);
  out += line;
  return out;
}

}  // namespace espresso::compress
