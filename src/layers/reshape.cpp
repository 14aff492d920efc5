#include "layers/reshape.h"

#include <algorithm>

namespace espresso {

const LayerSchema& ReshapeLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "shape", .type = AttrType::integers, .required = true, .min = -1},
              {.name = "axis", .type = AttrType::integer, .fallback = std::int64_t{0}},
              {.name = "num_axes", .type = AttrType::integer, .fallback = std::int64_t{-1}, .min = -1},
          },
      .weights = "–",
      .notes = "Caffe semantics: 0 copies a dim, −1 is inferred",
  };
  return schema;
}

ReshapeLayer::ReshapeLayer(const LayerSpec& spec)
    : Layer(spec),
      shape_(spec.attrs.require_ints("shape")),
      axis_(spec.attrs.require_int("axis")),
      num_axes_(spec.attrs.require_int("num_axes")) {
  if (std::count(shape_.begin(), shape_.end(), -1) > 1)
    fail_model("attribute 'shape' may hold at most one -1");
}

std::vector<Shape> ReshapeLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const Shape& x = inputs[0];
  // Caffe counts a negative axis from one past the end, so -1 appends after the last axis.
  const std::int64_t start = axis_ < 0 ? axis_ + x.rank() + 1 : axis_;
  if (start < 0 || start > x.rank()) {
    fail_shape("axis " + std::to_string(axis_) + " is out of range for input shape " + x.str());
  }
  const std::int64_t end = num_axes_ == -1 ? x.rank() : start + num_axes_;
  if (end > x.rank()) {
    fail_shape("axis " + std::to_string(axis_) + " with " + std::to_string(num_axes_) +
               " axes runs past the end of input shape " + x.str());
  }
  std::vector<std::int64_t> dims(x.dims().begin(), x.dims().begin() + start);
  int inferred = -1;
  for (std::size_t i = 0; i < shape_.size(); ++i) {
    std::int64_t d = shape_[i];
    if (d == 0) {
      const std::int64_t source = start + static_cast<std::int64_t>(i);
      if (source >= x.rank()) {
        fail_shape("shape entry " + std::to_string(i) + " is 0 but input shape " + x.str() + " has no axis " +
                   std::to_string(source) + " to copy");
      }
      d = x[static_cast<int>(source)];
    } else if (d == -1) {
      inferred = static_cast<int>(dims.size());
    }
    dims.push_back(d);
  }
  dims.insert(dims.end(), x.dims().begin() + end, x.dims().end());
  if (inferred >= 0) {
    std::int64_t known = 1;
    for (std::size_t i = 0; i < dims.size(); ++i) {
      if (static_cast<int>(i) != inferred) known *= dims[i];
    }
    if (known == 0 || x.numel() % known != 0) {
      fail_shape("cannot infer the -1 dimension: " + std::to_string(x.numel()) +
                 " input elements do not divide by " + std::to_string(known));
    }
    dims[static_cast<std::size_t>(inferred)] = x.numel() / known;
  }
  Shape out(std::move(dims));
  if (out.numel() != x.numel()) {
    fail_shape("input shape " + x.str() + " (" + std::to_string(x.numel()) + " elements) cannot become " +
               out.str() + " (" + std::to_string(out.numel()) + " elements)");
  }
  return {out};
}

void ReshapeLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  std::copy(x, x + inputs[0].numel(), outputs[0].data<float>());
}

void ReshapeLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                            const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                            std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  for (std::int64_t i = 0, n = inputs[0].numel(); i < n; ++i) dx[i] += dy[i];
}

}  // namespace espresso
