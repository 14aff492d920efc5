#include "layers/matmul.h"

#include <algorithm>

namespace espresso {

const LayerSchema& MatMulLayer::schema() {
  static const LayerSchema schema{
      .attributes = {},
      .weights = "–",
      .notes =
          "numpy.matmul of two inputs (1-D operands, broadcast batch axes); a broadcast operand's gradient "
          "sums over the batches it takes part in",
  };
  return schema;
}

MatMulLayer::Plan MatMulLayer::plan(const Shape& a_shape, const Shape& b_shape) const {
  if (a_shape.rank() == 0 || b_shape.rank() == 0) fail_shape("operands must have at least one axis");
  std::vector<std::int64_t> a = a_shape.dims(), b = b_shape.dims();
  const bool a_vector = a.size() == 1, b_vector = b.size() == 1;
  if (a_vector) a.insert(a.begin(), 1);
  if (b_vector) b.push_back(1);
  Plan p;
  p.m = a[a.size() - 2];
  p.k = a.back();
  p.n = b.back();
  if (b[b.size() - 2] != p.k) {
    fail_shape("inner dimensions differ: " + a_shape.str() + " times " + b_shape.str());
  }
  const std::size_t ra = a.size() - 2, rb = b.size() - 2, rank = std::max(ra, rb);
  p.batch.assign(rank, 1);
  p.a_strides.assign(rank, 0);
  p.b_strides.assign(rank, 0);
  std::int64_t sa = 1, sb = 1;
  for (std::size_t o = rank; o-- > 0;) {
    const std::int64_t da = o + ra >= rank ? a[o + ra - rank] : 1;
    const std::int64_t db = o + rb >= rank ? b[o + rb - rank] : 1;
    if (da != db && da != 1 && db != 1) {
      fail_shape("batch dimensions do not broadcast: " + a_shape.str() + " times " + b_shape.str());
    }
    p.batch[o] = std::max(da, db);
    if (da != 1) p.a_strides[o] = sa;
    if (db != 1) p.b_strides[o] = sb;
    sa *= da;
    sb *= db;
  }
  std::vector<std::int64_t> out = p.batch;
  if (!a_vector) out.push_back(p.m);
  if (!b_vector) out.push_back(p.n);
  p.out = Shape(out);
  return p;
}

std::vector<Shape> MatMulLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 2, 2);
  return {plan(inputs[0], inputs[1]).out};
}

std::int64_t MatMulLayer::macs(const std::vector<Shape>& inputs) const {
  const Plan p = plan(inputs[0], inputs[1]);
  return p.out.numel() * p.k;
}

namespace {

// Calls visit(t, ia, ib) for every batch t of the output with the matrices of a and b it multiplies.
template <class Visit>
void each_batch(const MatMulLayer::Plan& p, Visit&& visit) {
  std::vector<std::int64_t> index(p.batch.size(), 0);
  const std::int64_t batches = Shape(p.batch).numel();
  for (std::int64_t t = 0; t < batches; ++t) {
    std::int64_t ia = 0, ib = 0;
    for (std::size_t d = 0; d < index.size(); ++d) {
      ia += index[d] * p.a_strides[d];
      ib += index[d] * p.b_strides[d];
    }
    visit(t, ia, ib);
    for (std::size_t d = index.size(); d-- > 0;) {
      if (++index[d] < p.batch[d]) break;
      index[d] = 0;
    }
  }
}

}  // namespace

void MatMulLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const Plan p = plan(inputs[0].shape(), inputs[1].shape());
  const float* a = inputs[0].data<float>();
  const float* b = inputs[1].data<float>();
  float* y = outputs[0].data<float>();
  each_batch(p, [&](std::int64_t t, std::int64_t ia, std::int64_t ib) {
    const float* am = a + ia * p.m * p.k;
    const float* bm = b + ib * p.k * p.n;
    float* ym = y + t * p.m * p.n;
    for (std::int64_t i = 0; i < p.m; ++i) {
      for (std::int64_t j = 0; j < p.n; ++j) {
        float sum = 0;
        for (std::int64_t q = 0; q < p.k; ++q) sum += am[i * p.k + q] * bm[q * p.n + j];
        ym[i * p.n + j] = sum;
      }
    }
  });
}

void MatMulLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                           const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                           std::vector<Tensor>&) const {
  const Plan p = plan(inputs[0].shape(), inputs[1].shape());
  const float* a = inputs[0].data<float>();
  const float* b = inputs[1].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* da = input_grads[0].defined() ? input_grads[0].data<float>() : nullptr;
  float* db = input_grads[1].defined() ? input_grads[1].data<float>() : nullptr;
  each_batch(p, [&](std::int64_t t, std::int64_t ia, std::int64_t ib) {
    const float* am = a + ia * p.m * p.k;
    const float* bm = b + ib * p.k * p.n;
    const float* dym = dy + t * p.m * p.n;
    for (std::int64_t i = 0; i < p.m; ++i) {
      for (std::int64_t q = 0; q < p.k; ++q) {
        for (std::int64_t j = 0; j < p.n; ++j) {
          const float g = dym[i * p.n + j];
          if (da) da[ia * p.m * p.k + i * p.k + q] += g * bm[q * p.n + j];
          if (db) db[ib * p.k * p.n + q * p.n + j] += g * am[i * p.k + q];
        }
      }
    }
  });
}

}  // namespace espresso
