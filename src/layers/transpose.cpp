#include "layers/transpose.h"

#include <algorithm>

namespace espresso {

const LayerSchema& TransposeLayer::schema() {
  static const LayerSchema schema{
      .attributes = {{.name = "perm", .type = AttrType::integers, .default_text = "reversed axes"}},
      .weights = "–",
      .notes =
          "a `perm` shorter than the rank continues with the remaining axes in increasing order; Caffe's "
          "Permute (SSD fork) imports as Transpose with `perm` = its `order`",
  };
  return schema;
}

TransposeLayer::TransposeLayer(const LayerSpec& spec) : Layer(spec) {
  if (spec.attrs.has("perm")) perm_ = spec.attrs.require_ints("perm");
}

std::vector<int> TransposeLayer::permutation(int rank) const {
  std::vector<int> perm(static_cast<std::size_t>(rank));
  if (perm_.empty()) {
    for (int i = 0; i < rank; ++i) perm[static_cast<std::size_t>(i)] = rank - 1 - i;
    return perm;
  }
  if (static_cast<int>(perm_.size()) > rank) {
    fail_shape("'perm' has " + std::to_string(perm_.size()) + " entries for a rank-" + std::to_string(rank) +
               " input");
  }
  const int given = static_cast<int>(perm_.size());
  std::vector<bool> seen(static_cast<std::size_t>(rank), false);
  for (int i = 0; i < given; ++i) {
    std::int64_t axis = perm_[static_cast<std::size_t>(i)];
    if (axis < 0) axis += rank;
    if (axis < 0 || axis >= rank || seen[static_cast<std::size_t>(axis)])
      fail_shape("'perm' is not a permutation");
    seen[static_cast<std::size_t>(axis)] = true;
    perm[static_cast<std::size_t>(i)] = static_cast<int>(axis);
  }
  // A short `perm` (Caffe's Permute) continues with the axes it leaves out, in increasing order.
  for (int axis = 0, i = given; axis < rank; ++axis) {
    if (!seen[static_cast<std::size_t>(axis)]) perm[static_cast<std::size_t>(i++)] = axis;
  }
  return perm;
}

std::vector<Shape> TransposeLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const std::vector<int> perm = permutation(inputs[0].rank());
  std::vector<std::int64_t> dims;
  for (int axis : perm) dims.push_back(inputs[0][axis]);
  return {Shape(dims)};
}

namespace {

// Calls visit(i, offset) for every output element i in order, with the offset of the input element it
// copies: the one walk that forward (gather) and backward (scatter-add) share.
template <class Visit>
void walk_transposed(const Shape& in, const Shape& out, const std::vector<int>& perm, Visit visit) {
  std::vector<std::int64_t> in_strides(static_cast<std::size_t>(in.rank()), 1);
  for (int i = in.rank() - 2; i >= 0; --i) {
    in_strides[static_cast<std::size_t>(i)] = in_strides[static_cast<std::size_t>(i) + 1] * in[i + 1];
  }
  std::vector<std::int64_t> index(static_cast<std::size_t>(out.rank()), 0);
  for (std::int64_t i = 0, n = out.numel(); i < n; ++i) {
    std::int64_t offset = 0;
    for (std::size_t k = 0; k < index.size(); ++k)
      offset += index[k] * in_strides[static_cast<std::size_t>(perm[k])];
    visit(i, offset);
    for (int k = out.rank() - 1; k >= 0; --k) {
      if (++index[static_cast<std::size_t>(k)] < out[k]) break;
      index[static_cast<std::size_t>(k)] = 0;
    }
  }
}

}  // namespace

void TransposeLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  walk_transposed(inputs[0].shape(), outputs[0].shape(), permutation(inputs[0].shape().rank()),
                  [&](std::int64_t i, std::int64_t offset) { y[i] = x[offset]; });
}

void TransposeLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                              const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                              std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  walk_transposed(inputs[0].shape(), outputs[0].shape(), permutation(inputs[0].shape().rank()),
                  [&](std::int64_t i, std::int64_t offset) { dx[offset] += dy[i]; });
}

}  // namespace espresso
