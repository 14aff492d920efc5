// Fillers: statistical checks of each random filler against Caffe's variance for the fan; bilinear
// exactly; and a training Net filling the blobs a model lacks.
#include <gtest/gtest.h>

#include <cmath>

#include "espresso/espresso.h"
#include "layers/filler.h"

namespace espresso {
namespace {

struct Moments {
  double mean = 0, variance = 0, zeros = 0;  // zeros as a fraction
};

Moments moments(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  Moments m;
  for (float x : v) m.mean += x;
  m.mean /= static_cast<double>(v.size());
  for (float x : v) {
    m.variance += (x - m.mean) * (x - m.mean);
    m.zeros += x == 0.0f ? 1 : 0;
  }
  m.variance /= static_cast<double>(v.size());
  m.zeros /= static_cast<double>(v.size());
  return m;
}

Tensor filled(const Filler& f, const Shape& shape, std::uint64_t seed = 3) {
  Tensor t = Tensor::zeros(shape);
  std::mt19937_64 engine(seed);
  fill(f, t, engine);
  return t;
}

}  // namespace

TEST(Filler, ConstantAndUniform) {
  for (float v : filled({.type = FillerType::constant, .value = 0.25}, Shape{7, 3}).to_vector())
    EXPECT_EQ(v, 0.25f);
  const Tensor u = filled({.type = FillerType::uniform, .min = -2, .max = 4}, Shape{200, 300});
  for (float v : u.to_vector()) {
    EXPECT_GE(v, -2.0f);
    EXPECT_LE(v, 4.0f);
  }
  const Moments m = moments(u);
  EXPECT_NEAR(m.mean, 1.0, 0.03);
  EXPECT_NEAR(m.variance, 36.0 / 12, 0.05);
}

TEST(Filler, Gaussian) {
  const Moments m = moments(filled({.type = FillerType::gaussian, .mean = 0.5, .std = 2}, Shape{300, 200}));
  EXPECT_NEAR(m.mean, 0.5, 0.03);
  EXPECT_NEAR(m.variance, 4.0, 0.08);
  // Sparse: about `sparse` non-zeros per output, i.e. a fraction sparse / shape[0] kept.
  const Moments s = moments(filled({.type = FillerType::gaussian, .std = 1, .sparse = 15}, Shape{60, 1000}));
  EXPECT_NEAR(1 - s.zeros, 0.25, 0.01);
}

TEST(Filler, XavierAndMsraFollowTheFan) {
  // 64 x 32 x 3 x 3: fan_in 288, fan_out 576.
  const Shape shape{64, 32, 3, 3};
  const struct {
    VarianceNorm norm;
    double n;
  } fans[] = {{VarianceNorm::fan_in, 288}, {VarianceNorm::fan_out, 576}, {VarianceNorm::average, 432}};
  for (const auto& [norm, n] : fans) {
    const Tensor x = filled({.type = FillerType::xavier, .variance_norm = norm}, shape);
    const double limit = std::sqrt(3 / n);
    for (float v : x.to_vector()) EXPECT_LE(std::abs(v), limit + 1e-7);
    const Moments mx = moments(x);
    EXPECT_NEAR(mx.mean, 0.0, 0.01 * limit);
    EXPECT_NEAR(mx.variance, 1 / n, 0.05 / n) << "xavier, n = " << n;  // uniform(-a, a): a² / 3
    const Moments mm = moments(filled({.type = FillerType::msra, .variance_norm = norm}, shape));
    EXPECT_NEAR(mm.mean, 0.0, 0.01 * std::sqrt(2 / n));
    EXPECT_NEAR(mm.variance, 2 / n, 0.1 / n) << "msra, n = " << n;
  }
}

TEST(Filler, BilinearIsExact) {
  // Kernel 4 (factor 2, centre 0.75): per axis 0.25, 0.75, 0.75, 0.25.
  const std::vector<float> v = filled({.type = FillerType::bilinear}, Shape{2, 1, 4, 4}).to_vector();
  const double axis[] = {0.25, 0.75, 0.75, 0.25};
  for (std::size_t i = 0; i < v.size(); ++i) EXPECT_FLOAT_EQ(v[i], axis[(i / 4) % 4] * axis[i % 4]);
  // Kernel 5 (factor 3, centre 2/3): 1/3, 2/3, 1, 2/3, 1/3.
  const std::vector<float> odd = filled({.type = FillerType::bilinear}, Shape{1, 1, 5, 5}).to_vector();
  const double odd_axis[] = {1.0 / 3, 2.0 / 3, 1.0, 2.0 / 3, 1.0 / 3};
  for (std::size_t i = 0; i < odd.size(); ++i) EXPECT_FLOAT_EQ(odd[i], odd_axis[i / 5] * odd_axis[i % 5]);
  EXPECT_THROW(filled({.type = FillerType::bilinear}, Shape{2, 3}), ShapeError);
}

TEST(Filler, ReadsAttributes) {
  Attributes attrs;
  attrs.set("weight_filler.type", std::string("msra"));
  attrs.set("weight_filler.variance_norm", std::string("average"));
  const Filler f = read_filler(attrs, "weight_filler");
  EXPECT_EQ(f.type, FillerType::msra);
  EXPECT_EQ(f.variance_norm, VarianceNorm::average);
  EXPECT_EQ(read_filler(attrs, "bias_filler").type, FillerType::constant);
  attrs.set("bias_filler.type", std::string("orthogonal"));
  EXPECT_THROW(read_filler(attrs, "bias_filler"), ModelError);
}

TEST(Filler, TrainingNetFillsMissingWeightsRepeatably) {
  Graph g;
  g.inputs = {{"x", Shape{2, 50}}};
  LayerSpec ip;
  ip.name = "ip";
  ip.type = "InnerProduct";
  ip.inputs = {"x"};
  ip.outputs = {"y"};
  ip.attrs.set("num_output", std::int64_t{40});
  ip.attrs.set("weight_filler.type", std::string("xavier"));
  ip.attrs.set("bias_filler.type", std::string("constant"));
  ip.attrs.set("bias_filler.value", 0.5);
  g.layers = {ip};
  Net a(g, {.training = true, .seed = 5}), b(g, {.training = true, .seed = 5}),
      c(g, {.training = true, .seed = 6});
  const std::vector<float> wa = a.parameters()[0].value.to_vector();
  EXPECT_EQ(wa, b.parameters()[0].value.to_vector());
  EXPECT_NE(wa, c.parameters()[0].value.to_vector());
  const double limit = std::sqrt(3.0 / 50);
  for (float v : wa) EXPECT_LE(std::abs(v), limit + 1e-7);
  EXPECT_GT(moments(a.parameters()[0].value).variance, 0.5 / 50);
  for (float v : a.parameters()[1].value.to_vector()) EXPECT_EQ(v, 0.5f);
  // Inference keeps zeros for a model without weights.
  Net inference(g);
  for (float v : inference.parameters()[0].value.to_vector()) EXPECT_EQ(v, 0.0f);
}

}  // namespace espresso
