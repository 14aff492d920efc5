// The sparse codebook product of pruned, weight-shared fully connected layers
// (backends/cpu/sparse_inner_product.h) against a naive double product, and the planner's choice of it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/sparse_inner_product.h"
#include "espresso/espresso.h"

namespace espresso {
namespace {

struct Pruned {
  std::vector<float> w;  // outputs × inner, or inner × outputs when transposed
  std::vector<float> x, bias;
};

Pruned pruned(std::int64_t outputs, std::int64_t inner, std::int64_t rows, double density, int shared,
              unsigned seed) {
  std::mt19937 engine(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> codebook(static_cast<std::size_t>(shared));
  for (float& v : codebook) v = value(engine);
  std::bernoulli_distribution keep(density);
  std::uniform_int_distribution<std::size_t> pick(0, codebook.size() - 1);
  Pruned p;
  p.w.resize(static_cast<std::size_t>(outputs * inner));
  for (float& v : p.w) v = keep(engine) ? codebook[pick(engine)] : 0.0f;
  p.x.resize(static_cast<std::size_t>(rows * inner));
  for (float& v : p.x) v = value(engine);
  p.bias.resize(static_cast<std::size_t>(outputs));
  for (float& v : p.bias) v = value(engine);
  return p;
}

// Largest |a − b| over max |b|, b from a direct double-precision product.
double product_error(const Pruned& p, const std::vector<float>& y, std::int64_t rows, std::int64_t outputs,
                     std::int64_t inner, bool transposed, bool bias) {
  double worst = 0, scale = 1e-30;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t n = 0; n < outputs; ++n) {
      double sum = bias ? p.bias[static_cast<std::size_t>(n)] : 0.0;
      for (std::int64_t k = 0; k < inner; ++k) {
        sum += static_cast<double>(p.x[static_cast<std::size_t>(r * inner + k)]) *
               p.w[static_cast<std::size_t>(transposed ? k * outputs + n : n * inner + k)];
      }
      worst = std::max(worst, std::abs(sum - y[static_cast<std::size_t>(r * outputs + n)]));
      scale = std::max(scale, std::abs(sum));
    }
  }
  return worst / scale;
}

TEST(SparseInnerProduct, MatchesADoubleProductForEveryRowCountAndLayout) {
  struct Case {
    std::int64_t outputs, inner, rows;
    bool transposed, bias;
  };
  // Row counts on both sides of the gathered (≤ 4 rows) and transposed paths and of the 16-row blocks;
  // an input wider than 16-bit columns reach.
  const Case cases[] = {{37, 101, 1, false, true},  {37, 101, 4, true, false},  {64, 300, 5, false, true},
                        {10, 200, 16, true, true},  {33, 77, 35, false, false}, {50, 120, 64, true, true},
                        {3, 70000, 2, false, true}, {3, 70000, 20, true, true}};
  unsigned seed = 1;
  for (const Case& c : cases) {
    const Pruned p = pruned(c.outputs, c.inner, c.rows, 0.1, 31, seed++);
    const auto m = cpu::SparseCodebookMatrix::from_dense(p.w.data(), c.transposed, c.outputs, c.inner);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->nonzeros(), cpu::count_nonzeros(p.w.data(), c.outputs * c.inner));
    EXPECT_LE(m->codebook_size(), 31);
    std::vector<float> y(static_cast<std::size_t>(c.rows * c.outputs), std::nanf(""));
    std::vector<float> scratch;
    m->multiply(p.x.data(), c.bias ? p.bias.data() : nullptr, y.data(), c.rows, scratch);
    EXPECT_LE(product_error(p, y, c.rows, c.outputs, c.inner, c.transposed, c.bias), 1e-5)
        << c.outputs << "x" << c.inner << " rows " << c.rows << (c.transposed ? " transposed" : "");
  }
}

TEST(SparseInnerProduct, MoreThan256DistinctValuesHaveNoCodebookForm) {
  const Pruned p = pruned(40, 100, 1, 0.3, 1000, 9);
  EXPECT_FALSE(cpu::SparseCodebookMatrix::from_dense(p.w.data(), false, 40, 100).has_value());
  const Pruned shared = pruned(40, 100, 1, 0.3, 256, 9);
  EXPECT_TRUE(cpu::SparseCodebookMatrix::from_dense(shared.w.data(), false, 40, 100).has_value());
}

Graph one_inner_product(const Pruned& p, std::int64_t outputs, std::int64_t inner, std::int64_t rows) {
  Graph g;
  g.inputs = {{"x", Shape{rows, inner}}};
  LayerSpec ip;
  ip.name = "ip";
  ip.type = "InnerProduct";
  ip.inputs = {"x"};
  ip.outputs = {"y"};
  ip.attrs.set("num_output", outputs);
  ip.weights = {Tensor::from(Shape{outputs, inner}, p.w), Tensor::from(Shape{outputs}, p.bias)};
  g.layers = {ip};
  g.outputs = {"y"};
  return g;
}

std::string kernel_of(Net& net) {
  for (const LayerSummary& layer : net.summary()) {
    if (layer.name == "ip") return layer.kernel;
  }
  return "";
}

TEST(SparseInnerProduct, ThePlannerPicksItForPrunedWeightsAndFollowsWeightChanges) {
  const std::int64_t outputs = 120, inner = 400;
  for (const std::int64_t rows : {1, 32}) {
    const Pruned p = pruned(outputs, inner, rows, 0.05, 15, 4);
    Net net(one_inner_product(p, outputs, inner, rows));
    EXPECT_EQ(kernel_of(net), "sparse-codebook") << rows;
    const Tensor x = Tensor::from(Shape{rows, inner}, p.x);
    const Tensor first = net.forward({{"x", x}}).at("y");
    std::vector<float> y(first.data<float>(), first.data<float>() + rows * outputs);
    EXPECT_LE(product_error(p, y, rows, outputs, inner, false, true), 1e-5);
    // Densified in place through Net::weights: the next forward computes with the new weights.
    Pruned dense = p;
    std::mt19937 engine(11);
    std::uniform_real_distribution<float> value(-1.0f, 1.0f);
    for (float& v : dense.w) v = value(engine);
    Tensor w = net.weights("ip")[0];
    std::copy(dense.w.begin(), dense.w.end(), w.data<float>());
    const Tensor out = net.forward({{"x", x}}).at("y");
    y.assign(out.data<float>(), out.data<float>() + rows * outputs);
    EXPECT_LE(product_error(dense, y, rows, outputs, inner, false, true), 1e-5) << rows;
    EXPECT_EQ(kernel_of(net), "sgemm") << rows;
  }
  // Dense weights, or too many distinct values: sgemm.
  const Pruned dense = pruned(outputs, inner, 8, 1.0, 15, 5);
  Net dense_net(one_inner_product(dense, outputs, inner, 8));
  EXPECT_EQ(kernel_of(dense_net), "sgemm");
  const Pruned unshared = pruned(outputs, inner, 8, 0.05, 5000, 6);
  Net unshared_net(one_inner_product(unshared, outputs, inner, 8));
  EXPECT_EQ(kernel_of(unshared_net), "sgemm");
}

}  // namespace
}  // namespace espresso
