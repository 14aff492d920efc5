#include <gtest/gtest.h>

#include "layers/labels_case.h"

namespace espresso::testing {

TEST(Layers, Accuracy) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c = random_labels_case(rng, "Accuracy");
            const int classes =
                static_cast<int>(c.input_shapes[0].dim(static_cast<int>(c.spec.attrs.get_int("axis", 1))));
            if (rng.coin()) c.spec.attrs.set("top_k", std::int64_t{rng.integer(1, classes)});
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const Shape& s = c.input_shapes[0];
            const int axis = s.canonical_axis(static_cast<int>(c.spec.attrs.get_int("axis", 1)));
            const std::int64_t classes = s[axis], inner = product(s, axis + 1, s.rank());
            const std::int64_t top_k = c.spec.attrs.get_int("top_k", 1);
            double counted = 0, correct = 0;
            for_each_label(c, in[1], [&](std::int64_t o, std::int64_t i, std::int64_t label) {
              auto score = [&](std::int64_t k) {
                return in[0][static_cast<std::size_t>((o * classes + k) * inner + i)];
              };
              // Correct when fewer than top_k classes score strictly higher than the label.
              std::int64_t higher = 0;
              for (std::int64_t k = 0; k < classes; ++k) higher += score(k) > score(label) ? 1 : 0;
              counted += 1;
              correct += higher < top_k ? 1 : 0;
            });
            return std::vector<Values>{{counted == 0 ? 0.0 : correct / counted}};
          },
      .gradient = Gradient::none,
  });
}

TEST(Layers, AccuracyErrors) {
  LayerSpec spec = spec_of("Accuracy", 2);
  spec.attrs.set("top_k", std::int64_t{0});
  expect_model_error(spec, "'top_k'");
  spec.attrs.set("top_k", std::int64_t{6});
  expect_shape_error(spec, {Shape{4, 5}, Shape{4}}, "'top_k'");
  expect_shape_error(spec_of("Accuracy", 2), {Shape{4, 5}, Shape{5}}, "labels");
  expect_shape_error(spec_of("Accuracy", 1), {Shape{4, 5}}, "input");
  EXPECT_EQ(create_layer(spec_of("Accuracy", 2))->output_shapes({Shape{4, 5, 2}, Shape{4, 2}}),
            std::vector<Shape>{Shape{}});

  // Labels that are not class indices are data errors at run time.
  std::unique_ptr<Layer> layer = create_layer(spec_of("Accuracy", 2));
  for (float bad : {5.0f, -1.0f, 1.5f}) {
    std::vector<Tensor> inputs{Tensor::zeros(Shape{2, 5}), Tensor::from(Shape{2}, {0.0f, bad})};
    std::vector<Tensor> outputs{Tensor::empty(Shape{})};
    expect_error<DataError>([&] { layer->forward(inputs, outputs); }, "label 1");
  }
}

}  // namespace espresso::testing
