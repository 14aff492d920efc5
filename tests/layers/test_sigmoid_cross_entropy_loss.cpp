#include <gtest/gtest.h>

#include <cmath>

#include "layers/layer_test_util.h"

namespace espresso::testing {

TEST(Layers, SigmoidCrossEntropyLoss) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "SigmoidCrossEntropyLoss";
            const char* normalizations[] = {"valid", "batch_size", "full", "none"};
            if (rng.integer(0, 4) != 0)
              c.spec.attrs.set("normalization", std::string(normalizations[rng.integer(0, 3)]));
            const bool ignore = rng.coin();
            if (ignore) c.spec.attrs.set("ignore_label", std::int64_t{-1});
            const Shape logits = random_shape(rng, 1, 4);
            c.input_shapes = {logits, logits};
            c.inputs.push_back(rng.values(static_cast<std::size_t>(logits.numel()), -6.0, 6.0));
            Values& targets = c.inputs.emplace_back(static_cast<std::size_t>(logits.numel()));
            for (double& t : targets) t = ignore && rng.integer(0, 3) == 0 ? -1.0 : rng.uniform(0.0, 1.0);
            c.non_differentiable_inputs = {1};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const bool ignore = c.spec.attrs.has("ignore_label");
            double loss = 0, valid = 0;
            for (std::size_t i = 0; i < in[0].size(); ++i) {
              const double t = in[1][i];
              if (ignore && t == -1.0) continue;
              const double p = 1.0 / (1.0 + std::exp(-in[0][i]));
              loss -= t * std::log(p) + (1 - t) * std::log(1 - p);
              valid += 1;
            }
            const std::string normalization = c.spec.attrs.get_string("normalization", "batch_size");
            double normalizer = 1;
            if (normalization == "valid") normalizer = valid;
            if (normalization == "batch_size") normalizer = static_cast<double>(c.input_shapes[0][0]);
            if (normalization == "full") normalizer = static_cast<double>(in[0].size());
            return std::vector<Values>{{loss / std::max(1.0, normalizer)}};
          },
  });
}

TEST(Layers, SigmoidCrossEntropyLossErrors) {
  LayerSpec spec = spec_of("SigmoidCrossEntropyLoss", 2);
  spec.attrs.set("normalization", std::string("mean"));
  expect_model_error(spec, "'normalization'");
  expect_shape_error(spec_of("SigmoidCrossEntropyLoss", 2), {Shape{2, 3}, Shape{5}}, "element counts");
}

}  // namespace espresso::testing
