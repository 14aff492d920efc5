#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <utility>

#include "harness/layer_harness.h"

namespace espresso::testing {
namespace {

std::vector<Values> naive(const LayerCase& c, const std::vector<Values>& in, const std::vector<Values>&) {
  // Both operands as matrices (a 1-D a as 1 x k, a 1-D b as k x 1) padded to two batch axes with
  // leading 1s; dropping the vectors' axes leaves the output's values in this order.
  auto padded = [](const Shape& s, bool row) {
    std::vector<std::int64_t> d = s.dims();
    if (d.size() == 1) d.insert(row ? d.begin() : d.end(), 1);
    while (d.size() < 4) d.insert(d.begin(), 1);
    return d;
  };
  const std::vector<std::int64_t> a = padded(c.input_shapes[0], true), b = padded(c.input_shapes[1], false);
  const std::int64_t m = a[2], k = a[3], n = b[3];
  const std::int64_t batch0 = std::max(a[0], b[0]), batch1 = std::max(a[1], b[1]);
  Values y;
  for (std::int64_t t0 = 0; t0 < batch0; ++t0)
    for (std::int64_t t1 = 0; t1 < batch1; ++t1) {
      const std::int64_t ma = (a[0] == 1 ? 0 : t0) * a[1] + (a[1] == 1 ? 0 : t1);
      const std::int64_t mb = (b[0] == 1 ? 0 : t0) * b[1] + (b[1] == 1 ? 0 : t1);
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (std::int64_t q = 0; q < k; ++q) {
            s += in[0][static_cast<std::size_t>((ma * m + i) * k + q)] *
                 in[1][static_cast<std::size_t>((mb * k + q) * n + j)];
          }
          y.push_back(s);
        }
    }
  return {y};
}

}  // namespace

TEST(Layers, MatMul) {
  run_layer_test({
      .make_case =
          [](Rng& rng) {
            LayerCase c;
            c.spec.type = "MatMul";
            const std::int64_t batch0 = rng.integer(1, 2), batch1 = rng.integer(1, 3), m = rng.integer(1, 9),
                               k = rng.integer(1, 17), n = rng.integer(1, 11);
            // Each operand keeps 0, 1 or 2 batch axes, each either full or broadcast (1), so shared
            // matrices, a batch folded into rows and two-sided broadcasting all occur.
            auto operand = [&](std::int64_t rows, std::int64_t cols) {
              std::vector<std::int64_t> dims;
              const int kept = static_cast<int>(rng.integer(0, 2));
              if (kept == 2) dims.push_back(rng.coin() ? batch0 : 1);
              if (kept >= 1) dims.push_back(rng.coin() ? batch1 : 1);
              dims.push_back(rows);
              dims.push_back(cols);
              return Shape(dims);
            };
            // A 1-D operand is a row vector (first) or a column vector (second), as in numpy.
            c.input_shapes = {rng.integer(0, 7) == 0 ? Shape{k} : operand(m, k),
                              rng.integer(0, 7) == 0 ? Shape{k} : operand(k, n)};
            return c;
          },
      .naive = naive,
      .cases = 40,
      .gradient_cases = 40,
  });
}

// Each way a gradient can gather over broadcast batches, named, since the random cases meet some of
// them only by chance: broadcast over the last batch axis or an outer one, on either side or both.
TEST(Layers, MatMulBroadcastGradients) {
  static const std::pair<Shape, Shape> kShapes[] = {
      {Shape{2, 3, 4, 5}, Shape{2, 1, 5, 6}},  // b broadcast over the last batch axis only
      {Shape{1, 3, 4, 5}, Shape{2, 3, 5, 6}},  // a broadcast over the outer batch axis only
      {Shape{2, 1, 4, 5}, Shape{1, 3, 5, 6}},  // both, over different axes
      {Shape{3, 1, 4, 5}, Shape{2, 5, 6}},     // a over the last axis, b over the outer one
      {Shape{4, 5}, Shape{2, 3, 5, 6}},        // a shared by every batch
      {Shape{5}, Shape{2, 3, 5, 6}},           // a shared row vector
      {Shape{2, 3, 4, 5}, Shape{5, 6}},        // b shared: the batch folds into the rows
      {Shape{2, 3, 4, 5}, Shape{5}},           // b a shared column vector
      {Shape{3, 1, 5}, Shape{5, 1}},           // 1 x 1 results
  };
  std::size_t next = 0;
  run_layer_test({
      .make_case =
          [&next](Rng&) {
            LayerCase c;
            c.spec.type = "MatMul";
            const auto& [a, b] = kShapes[next++];
            c.input_shapes = {a, b};
            return c;
          },
      .naive = naive,
      .cases = static_cast<int>(std::size(kShapes)),
      .gradient_cases = static_cast<int>(std::size(kShapes)),
  });
}

}  // namespace espresso::testing
