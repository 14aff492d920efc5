#include <gtest/gtest.h>

#include "harness/layer_harness.h"

namespace espresso::testing {

TEST(Layers, Gather) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "Gather";
            const int axis = rng.integer(0, 2);
            c.spec.attrs.set("axis", static_cast<std::int64_t>(axis));
            const Shape data{rng.integer(1, 4), rng.integer(1, 5), rng.integer(1, 6)};
            const int count = rng.integer(1, 6);
            Values indices;
            for (int i = 0; i < count; ++i)
              indices.push_back(rng.integer(static_cast<int>(-data[axis]), static_cast<int>(data[axis] - 1)));
            c.input_shapes = {data, Shape{count}};
            c.non_differentiable_inputs = {1};
            c.inputs = {rng.values(static_cast<std::size_t>(data.numel())), indices};
            return c;
          },
      .naive =
          [](const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
            const int axis = static_cast<int>(c.spec.attrs.get_int("axis", 0));
            const Shape& s = c.input_shapes[0];
            Values y;
            auto pick = [&](std::int64_t i) { return i < 0 ? i + s[axis] : i; };
            std::int64_t idx[3];
            const std::int64_t count = c.input_shapes[1][0];
            std::int64_t dims[3] = {s[0], s[1], s[2]};
            dims[axis] = count;
            for (idx[0] = 0; idx[0] < dims[0]; ++idx[0])
              for (idx[1] = 0; idx[1] < dims[1]; ++idx[1])
                for (idx[2] = 0; idx[2] < dims[2]; ++idx[2]) {
                  std::int64_t src[3] = {idx[0], idx[1], idx[2]};
                  src[axis] = pick(static_cast<std::int64_t>(in[1][static_cast<std::size_t>(idx[axis])]));
                  y.push_back(in[0][static_cast<std::size_t>((src[0] * s[1] + src[1]) * s[2] + src[2])]);
                }
            return std::vector<Values>{y};
          },
  });
}

}  // namespace espresso::testing
