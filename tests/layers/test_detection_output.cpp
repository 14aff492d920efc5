// DetectionOutput against a naive double-precision implementation, on hand-checkable cases, on bad
// attributes and shapes, and inside a GPU net where it falls back to the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>

#include "espresso/espresso.h"
#include "harness/layer_harness.h"
#include "layers/layer_test_util.h"
#include "layers/registry.h"
#include "test_support.h"

namespace espresso::testing {
namespace {

using Box = std::array<double, 4>;

double naive_iou(const Box& a, const Box& b) {
  auto size = [](const Box& x) { return x[2] < x[0] || x[3] < x[1] ? 0.0 : (x[2] - x[0]) * (x[3] - x[1]); };
  if (b[0] > a[2] || b[2] < a[0] || b[1] > a[3] || b[3] < a[1]) return 0.0;
  const double inter = (std::min(a[2], b[2]) - std::max(a[0], b[0])) * (std::min(a[3], b[3]) - std::max(a[1], b[1]));
  return inter / (size(a) + size(b) - inter);
}

// The fork's algorithm written out plainly: decode, threshold, sort, greedy NMS, keep_top_k.
std::vector<Values> naive_detection(const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
  const Attributes& a = c.spec.attrs;
  const auto classes = a.get_int("num_classes", 0);
  const bool share = a.get_int("share_location", 1) != 0;
  const auto background = a.get_int("background_label_id", 0);
  const double nms = a.get_float("nms_param.nms_threshold", 0.3);
  const auto top_k = a.get_int("nms_param.top_k", -1);
  const double eta = a.get_float("nms_param.eta", 1.0);
  const std::string code = a.get_string("code_type", "corner");
  const bool in_target = a.get_int("variance_encoded_in_target", 0) != 0;
  const auto keep_top_k = a.get_int("keep_top_k", -1);
  const double threshold = a.get_float("confidence_threshold", -1e300);
  const std::int64_t images = c.input_shapes[0][0];
  const std::int64_t priors = c.input_shapes[2][2] / 4;
  const std::int64_t loc_classes = share ? 1 : classes;
  // The layer's static row bound (docs/layers.md), which the -1 padding fills.
  std::int64_t per_image =
      (classes - (background >= 0 ? 1 : 0)) * (top_k >= 0 ? std::min(priors, top_k) : priors);
  if (keep_top_k >= 0) per_image = std::min(per_image, keep_top_k);
  const std::int64_t rows = images * std::max<std::int64_t>(per_image, 1);
  Values out(static_cast<std::size_t>(rows * 7), -1.0);
  std::size_t next = 0;
  for (std::int64_t n = 0; n < images; ++n) {
    struct Detection {
      double score;
      std::int64_t label;
      Box box;
    };
    std::vector<Detection> all;
    for (std::int64_t label = 0; label < classes; ++label) {
      if (label == background) continue;
      std::vector<std::pair<double, Box>> candidates;
      for (std::int64_t p = 0; p < priors; ++p) {
        const double score = in[1][static_cast<std::size_t>((n * priors + p) * classes + label)];
        if (!(score > threshold)) continue;
        double pr[4], v[4], l[4];
        for (int k = 0; k < 4; ++k) {
          pr[k] = in[2][static_cast<std::size_t>(p * 4 + k)];
          v[k] = in_target ? 1.0 : in[2][static_cast<std::size_t>((priors + p) * 4 + k)];
          l[k] = in[0][static_cast<std::size_t>(((n * priors + p) * loc_classes + (share ? 0 : label)) * 4 + k)];
        }
        const double w = pr[2] - pr[0], h = pr[3] - pr[1];
        Box box;
        if (code == "corner") {
          for (int k = 0; k < 4; ++k) box[static_cast<std::size_t>(k)] = pr[k] + v[k] * l[k];
        } else if (code == "corner_size") {
          box = {pr[0] + v[0] * l[0] * w, pr[1] + v[1] * l[1] * h, pr[2] + v[2] * l[2] * w, pr[3] + v[3] * l[3] * h};
        } else {
          const double cx = v[0] * l[0] * w + (pr[0] + pr[2]) / 2, cy = v[1] * l[1] * h + (pr[1] + pr[3]) / 2;
          const double bw = std::exp(v[2] * l[2]) * w, bh = std::exp(v[3] * l[3]) * h;
          box = {cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2};
        }
        candidates.push_back({score, box});
      }
      std::stable_sort(candidates.begin(), candidates.end(),
                       [](const auto& x, const auto& y) { return x.first > y.first; });
      if (top_k >= 0 && static_cast<std::int64_t>(candidates.size()) > top_k)
        candidates.resize(static_cast<std::size_t>(top_k));
      std::vector<std::pair<double, Box>> kept;
      double adaptive = nms;
      for (const auto& candidate : candidates) {
        bool keep = true;
        for (const auto& k : kept) keep = keep && naive_iou(candidate.second, k.second) <= adaptive;
        if (!keep) continue;
        kept.push_back(candidate);
        if (eta < 1 && adaptive > 0.5) adaptive *= eta;
      }
      for (const auto& k : kept) all.push_back({k.first, label, k.second});
    }
    if (keep_top_k >= 0 && static_cast<std::int64_t>(all.size()) > keep_top_k) {
      std::stable_sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.score > y.score; });
      all.resize(static_cast<std::size_t>(keep_top_k));
      std::stable_sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.label < y.label; });
    }
    for (const Detection& d : all) {
      const double row[7] = {static_cast<double>(n), static_cast<double>(d.label), d.score, d.box[0], d.box[1], d.box[2], d.box[3]};
      std::copy(row, row + 7, out.begin() + static_cast<std::ptrdiff_t>(next));
      next += 7;
    }
  }
  if (next == 0) {
    for (std::int64_t n = 0; n < images; ++n) out[static_cast<std::size_t>(n * 7)] = static_cast<double>(n);
  }
  return {out};
}

// Priors as valid boxes in [0, 1] with variances, probabilities as scores.
LayerCase random_case(Rng& rng) {
  LayerCase c;
  c.spec.type = "DetectionOutput";
  const std::int64_t classes = rng.integer(1, 4), priors = rng.integer(1, 12), images = rng.integer(1, 3);
  const bool share = rng.coin();
  Attributes& a = c.spec.attrs;
  a.set("num_classes", classes);
  a.set("share_location", std::int64_t{share});
  a.set("background_label_id", std::int64_t{rng.integer(-1, static_cast<int>(classes) - 1)});
  a.set("nms_param.nms_threshold", rng.uniform(0.1, 0.7));
  if (rng.coin()) a.set("nms_param.top_k", std::int64_t{rng.integer(0, 8)});
  if (rng.coin()) a.set("nms_param.eta", rng.uniform(0.6, 1.0));
  const char* codes[] = {"corner", "center_size", "corner_size"};
  a.set("code_type", std::string(codes[rng.integer(0, 2)]));
  a.set("variance_encoded_in_target", std::int64_t{rng.coin()});
  if (rng.coin()) a.set("keep_top_k", std::int64_t{rng.integer(0, 10)});
  if (rng.coin()) a.set("confidence_threshold", rng.uniform(0.0, 0.6));
  const std::int64_t loc_classes = share ? 1 : classes;
  c.input_shapes = {Shape{images, priors * loc_classes * 4}, Shape{images, priors * classes}, Shape{1, 2, priors * 4}};
  Values prior;
  for (std::int64_t p = 0; p < priors; ++p) {
    const double x = rng.uniform(0, 0.7), y = rng.uniform(0, 0.7);
    const double w = rng.uniform(0.05, 0.3), h = rng.uniform(0.05, 0.3);
    prior.insert(prior.end(), {x, y, x + w, y + h});
  }
  for (std::int64_t p = 0; p < priors; ++p) prior.insert(prior.end(), {0.1, 0.1, 0.2, 0.2});
  c.inputs = {rng.values(static_cast<std::size_t>(images * priors * loc_classes * 4), -0.5, 0.5),
              rng.values(static_cast<std::size_t>(images * priors * classes), 0.0, 1.0), prior};
  c.non_differentiable_inputs = {0, 1, 2};
  return c;
}

LayerSpec detection_spec(std::int64_t classes) {
  LayerSpec spec = layer("det", "DetectionOutput", {"loc", "conf", "prior"}, {"out"});
  spec.attrs.set("num_classes", classes);
  return spec;
}

Shape output_shape(const LayerSpec& spec, const std::vector<Shape>& inputs) {
  return create_layer(spec)->output_shapes(inputs).at(0);
}

// Runs the layer on the given values; output rows as vectors.
std::vector<std::vector<float>> run(const LayerSpec& spec, const std::vector<Shape>& shapes,
                                    const std::vector<std::vector<float>>& values) {
  const auto det = create_layer(spec);
  std::vector<Tensor> in;
  for (std::size_t i = 0; i < shapes.size(); ++i) in.push_back(Tensor::from(shapes[i], values[i]));
  std::vector<Tensor> out = {Tensor::zeros(det->output_shapes(shapes).at(0))};
  det->forward(in, out);
  const std::vector<float> flat = out[0].to_vector();
  std::vector<std::vector<float>> rows;
  for (std::size_t r = 0; r + 7 <= flat.size(); r += 7) rows.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(r), flat.begin() + static_cast<std::ptrdiff_t>(r + 7));
  return rows;
}

}  // namespace

TEST(Layers, DetectionOutput) {
  run_layer_test({
      .make_case = random_case,
      .naive = naive_detection,
      .cases = 60,
      .gradient = Gradient::none,
  });
}

// Two boxes of one class overlapping by IoU 0.6: the weaker goes at threshold 0.5, stays at 0.7; a
// third below confidence_threshold never shows; class 0 is background.
TEST(Layers, DetectionOutputSuppressesOverlapsAndThresholds) {
  const std::vector<Shape> shapes = {Shape{1, 12}, Shape{1, 6}, Shape{1, 2, 12}};
  const std::vector<float> loc(12, 0.0f);
  // Box 1 is box 0 shifted by a quarter of its width: IoU 0.75·/1.25 = 0.6.
  const std::vector<float> prior = {0.0f, 0.0f, 0.4f, 0.4f, 0.1f, 0.0f, 0.5f, 0.4f, 0.6f, 0.6f, 0.9f, 0.9f,
                                    0.1f, 0.1f, 0.2f, 0.2f, 0.1f, 0.1f, 0.2f, 0.2f, 0.1f, 0.1f, 0.2f, 0.2f};
  // (background, class 1) per prior.
  const std::vector<float> conf = {0.1f, 0.9f, 0.2f, 0.8f, 0.95f, 0.05f};
  LayerSpec spec = detection_spec(2);
  spec.attrs.set("confidence_threshold", 0.1);
  spec.attrs.set("nms_param.nms_threshold", 0.5);
  auto rows = run(spec, shapes, {loc, conf, prior});
  ASSERT_EQ(rows.size(), 3u);  // bound: 1 class x 3 priors
  EXPECT_EQ(rows[0], (std::vector<float>{0, 1, 0.9f, 0.0f, 0.0f, 0.4f, 0.4f}));
  EXPECT_EQ(rows[1], std::vector<float>(7, -1.0f));
  EXPECT_EQ(rows[2], std::vector<float>(7, -1.0f));

  spec.attrs.set("nms_param.nms_threshold", 0.7);
  rows = run(spec, shapes, {loc, conf, prior});
  EXPECT_EQ(rows[0][2], 0.9f);
  EXPECT_EQ(rows[1], (std::vector<float>{0, 1, 0.8f, 0.1f, 0.0f, 0.5f, 0.4f}));
  EXPECT_EQ(rows[2], std::vector<float>(7, -1.0f));

  // Nothing above the threshold: the fork's one row per image, -1 but the image id.
  spec.attrs.set("confidence_threshold", 0.95);
  rows = run(spec, shapes, {loc, conf, prior});
  EXPECT_EQ(rows[0], (std::vector<float>{0, -1, -1, -1, -1, -1, -1}));
}

TEST(Layers, DetectionOutputRejectsBadSettingsAndShapes) {
  expect_model_error(layer("bad_layer", "DetectionOutput", {"loc", "conf", "prior"}, {"out"}), "num_classes");
  auto bad = [](const std::string& attribute, AttrValue value) {
    LayerSpec spec = detection_spec(3);
    spec.name = "bad_layer";
    spec.attrs.set(attribute, std::move(value));
    expect_model_error(spec, attribute);
  };
  bad("background_label_id", std::int64_t{3});
  bad("code_type", std::string("diagonal"));
  bad("nms_param.eta", 1.5);

  const auto det = create_layer(detection_spec(3));
  auto shape_error = [&](const std::vector<Shape>& shapes, const std::string& part) {
    try {
      det->output_shapes(shapes);
      ADD_FAILURE() << "no error for " << part;
    } catch (const ShapeError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  shape_error({Shape{1, 8}, Shape{1, 6}}, "input");
  shape_error({Shape{1, 8}, Shape{1, 6}, Shape{1, 8}}, "priors");
  shape_error({Shape{1, 8}, Shape{1, 5}, Shape{1, 2, 8}}, "num_classes");
  shape_error({Shape{1, 12}, Shape{1, 6}, Shape{1, 2, 8}}, "loc");
  shape_error({Shape{2, 8}, Shape{1, 6}, Shape{1, 2, 8}}, "batch");
  // 2 images x min(keep_top_k 4, 2 classes x 2 priors).
  LayerSpec kept = detection_spec(3);
  kept.attrs.set("keep_top_k", std::int64_t{4});
  EXPECT_EQ(output_shape(kept, {Shape{2, 8}, Shape{2, 6}, Shape{1, 2, 8}}), (Shape{1, 1, 8, 7}));
}

// In a GPU net DetectionOutput has no CUDA kernel: it runs on the CPU, its inputs copied across,
// and the results match the CPU net's.
TEST(Layers, DetectionOutputFallsBackToTheCpuInAGpuNet) {
  REQUIRE_GPU();
  Rng rng(7);
  const std::int64_t priors = 20, classes = 4;
  Graph g;
  g.name = "ssd_head";
  g.inputs = {{"loc", Shape{2, priors * 4}}, {"logits", Shape{2, priors, classes}}, {"prior", Shape{1, 2, priors * 4}}};
  LayerSpec softmax = layer("softmax", "Softmax", {"logits"}, {"conf"});
  softmax.attrs.set("axis", std::int64_t{2});
  LayerSpec det = layer("det", "DetectionOutput", {"loc", "conf", "prior"}, {"out"});
  det.attrs.set("num_classes", classes);
  det.attrs.set("code_type", std::string("center_size"));
  det.attrs.set("keep_top_k", std::int64_t{10});
  det.attrs.set("confidence_threshold", 0.2);
  g.layers = {softmax, det};
  g.outputs = {"out"};
  std::vector<float> prior;
  for (std::int64_t p = 0; p < priors; ++p) {
    const float x = static_cast<float>(rng.uniform(0, 0.7)), y = static_cast<float>(rng.uniform(0, 0.7));
    prior.insert(prior.end(), {x, y, x + 0.2f, y + 0.25f});
  }
  for (std::int64_t p = 0; p < priors; ++p) prior.insert(prior.end(), {0.1f, 0.1f, 0.2f, 0.2f});
  auto floats = [](const Values& v) { return std::vector<float>(v.begin(), v.end()); };
  const std::map<std::string, Tensor> inputs = {
      {"loc", Tensor::from(Shape{2, priors * 4}, floats(rng.values(2 * priors * 4)))},
      {"logits", Tensor::from(Shape{2, priors, classes}, floats(rng.values(2 * priors * classes, -3, 3)))},
      {"prior", Tensor::from(Shape{1, 2, priors * 4}, prior)}};

  Net cpu(g);
  NetOptions options;
  options.device = Device::cuda(0);
  Net gpu(g, options);
  const std::vector<float> expected = cpu.forward(inputs).at("out").to_vector();
  const std::vector<float> found = gpu.forward(inputs).at("out").to_vector();
  ASSERT_EQ(found.size(), expected.size());
  for (std::size_t i = 0; i < found.size(); ++i) EXPECT_NEAR(found[i], expected[i], 1e-5f) << i;
  bool seen = false;
  for (const LayerSummary& row : gpu.summary()) {
    if (row.type != "DetectionOutput") continue;
    seen = true;
    EXPECT_TRUE(row.device.is_cpu());
    EXPECT_FALSE(row.copied_in.empty());
  }
  EXPECT_TRUE(seen);
}

}  // namespace espresso::testing
