#include "layers/strided_slice.h"

#include <algorithm>

namespace espresso {

const LayerSchema& StridedSliceLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "starts", .type = AttrType::integers, .required = true},
              {.name = "ends", .type = AttrType::integers, .required = true},
              {.name = "axes", .type = AttrType::integers, .default_text = "0, 1, ..."},
              {.name = "steps", .type = AttrType::integers, .default_text = "all 1"},
          },
      .weights = "–",
      .notes = "numpy slicing with clamping and negative steps",
  };
  return schema;
}

StridedSliceLayer::StridedSliceLayer(const LayerSpec& spec)
    : Layer(spec), starts_(spec.attrs.require_ints("starts")), ends_(spec.attrs.require_ints("ends")) {
  if (spec.attrs.has("axes")) axes_ = spec.attrs.require_ints("axes");
  if (spec.attrs.has("steps")) steps_ = spec.attrs.require_ints("steps");
  // Both defaults depend on the number of starts.
  if (axes_.empty()) {
    for (std::size_t i = 0; i < starts_.size(); ++i) axes_.push_back(static_cast<std::int64_t>(i));
  }
  if (steps_.empty()) steps_.assign(starts_.size(), 1);
  if (ends_.size() != starts_.size() || axes_.size() != starts_.size() || steps_.size() != starts_.size()) {
    fail_model("'starts', 'ends', 'axes' and 'steps' must have the same length");
  }
  if (std::find(steps_.begin(), steps_.end(), 0) != steps_.end()) fail_model("a step of 0 is not allowed");
}

void StridedSliceLayer::resolve(const Shape& in, std::vector<std::int64_t>& first,
                                std::vector<std::int64_t>& step, std::vector<std::int64_t>& count) const {
  first.assign(static_cast<std::size_t>(in.rank()), 0);
  step.assign(static_cast<std::size_t>(in.rank()), 1);
  count = in.dims();
  std::vector<bool> seen(static_cast<std::size_t>(in.rank()), false);
  for (std::size_t i = 0; i < starts_.size(); ++i) {
    std::int64_t axis = axes_[i];
    if (axis < -in.rank() || axis >= in.rank())
      fail_shape("axis " + std::to_string(axis) + " is out of range for " + in.str());
    if (axis < 0) axis += in.rank();
    const auto a = static_cast<std::size_t>(axis);
    if (seen[a]) fail_shape("axis " + std::to_string(axis) + " is sliced twice");
    seen[a] = true;
    const std::int64_t dim = in[static_cast<int>(axis)], s = steps_[i];
    std::int64_t start = starts_[i], end = ends_[i];
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    if (s > 0) {
      start = std::clamp<std::int64_t>(start, 0, dim);
      end = std::clamp<std::int64_t>(end, 0, dim);
      count[a] = end > start ? (end - start + s - 1) / s : 0;
    } else {
      // As numpy: a start or end still negative after adding the size means "before the first".
      start = std::clamp<std::int64_t>(start, -1, dim - 1);
      end = std::clamp<std::int64_t>(end, -1, dim - 1);
      count[a] = start > end ? (start - end - s - 1) / -s : 0;
    }
    first[a] = start;
    step[a] = s;
  }
}

std::vector<Shape> StridedSliceLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  std::vector<std::int64_t> first, step, count;
  resolve(inputs[0], first, step, count);
  return {Shape(count)};
}

// Calls visit(i, offset) for every output element i in order, with the offset of the input element it
// copies: the one walk that forward (gather) and backward (scatter-add) share.
template <class Visit>
void StridedSliceLayer::walk(const Shape& in, Visit visit) const {
  std::vector<std::int64_t> first, step, count;
  resolve(in, first, step, count);
  std::vector<std::int64_t> index(count.size(), 0);
  for (std::int64_t i = 0, n = Shape(count).numel(); i < n; ++i) {
    std::int64_t offset = 0;
    for (int k = 0; k < in.rank(); ++k) {
      const auto a = static_cast<std::size_t>(k);
      offset = offset * in[k] + first[a] + index[a] * step[a];
    }
    visit(i, offset);
    for (int k = in.rank() - 1; k >= 0; --k) {
      if (++index[static_cast<std::size_t>(k)] < count[static_cast<std::size_t>(k)]) break;
      index[static_cast<std::size_t>(k)] = 0;
    }
  }
}

void StridedSliceLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  walk(inputs[0].shape(), [&](std::int64_t i, std::int64_t offset) { y[i] = x[offset]; });
}

void StridedSliceLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                                 const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                                 std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  walk(inputs[0].shape(), [&](std::int64_t i, std::int64_t offset) { dx[offset] += dy[i]; });
}

}  // namespace espresso
