#include "layers/pad.h"

namespace espresso {

const LayerSchema& PadLayer::schema() {
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "pads", .type = AttrType::integers, .required = true},
              {.name = "mode",
               .type = AttrType::text,
               .fallback = std::string("constant"),
               .choices = {"constant", "reflect", "edge"}},
              {.name = "value", .type = AttrType::number, .fallback = 0.0},
          },
      .weights = "–",
      .notes = "`pads`: the begins of all axes, then the ends (ONNX order); negative amounts crop",
  };
  return schema;
}

PadLayer::PadLayer(const LayerSpec& spec)
    : Layer(spec),
      pads_(spec.attrs.require_ints("pads")),
      value_(static_cast<float>(spec.attrs.require_float("value"))) {
  // The schema admits only these three.
  const std::string mode = spec.attrs.require_string("mode");
  mode_ = mode == "reflect" ? Mode::reflect : mode == "edge" ? Mode::edge : Mode::constant;
}

std::vector<Shape> PadLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const Shape& in = inputs[0];
  if (static_cast<int>(pads_.size()) != 2 * in.rank()) {
    fail_shape("'pads' needs " + std::to_string(2 * in.rank()) + " values for input " + in.str() + ", has " +
               std::to_string(pads_.size()));
  }
  std::vector<std::int64_t> dims;
  for (int i = 0; i < in.rank(); ++i) {
    const std::int64_t d =
        in[i] + pads_[static_cast<std::size_t>(i)] + pads_[static_cast<std::size_t>(i + in.rank())];
    if (d < 0) fail_shape("padding makes axis " + std::to_string(i) + " of " + in.str() + " negative");
    if (mode_ != Mode::constant && d > 0 && in[i] == 0)
      fail_shape("cannot " + spec().attrs.require_string("mode") + "-pad an empty axis");
    if (mode_ == Mode::reflect && (pads_[static_cast<std::size_t>(i)] >= in[i] ||
                                   pads_[static_cast<std::size_t>(i + in.rank())] >= in[i])) {
      fail_shape("reflect padding must be smaller than the axis it pads (" + in.str() + ")");
    }
    dims.push_back(d);
  }
  return {Shape(dims)};
}

// Calls visit(i, source) for every output element i, in order, with the input element it reads, or
// -1 where constant padding fills it: the forward's index map, which the backward runs in reverse.
template <class Visit>
void PadLayer::map_outputs(const Shape& in, const Shape& out, Visit&& visit) const {
  const int rank = in.rank();
  std::vector<std::int64_t> index(static_cast<std::size_t>(rank), 0);
  for (std::int64_t i = 0, n = out.numel(); i < n; ++i) {
    std::int64_t offset = 0;
    bool outside = false;
    for (int k = 0; k < rank; ++k) {
      const std::int64_t size = in[k];
      std::int64_t source = index[static_cast<std::size_t>(k)] - pads_[static_cast<std::size_t>(k)];
      if (source < 0 || source >= size) {
        if (mode_ == Mode::constant) {
          outside = true;
        } else if (mode_ == Mode::edge) {
          source = source < 0 ? 0 : size - 1;
        } else {
          source = source < 0 ? -source : 2 * (size - 1) - source;
        }
      }
      offset = offset * size + source;
    }
    visit(i, outside ? std::int64_t{-1} : offset);
    for (int k = rank - 1; k >= 0; --k) {
      if (++index[static_cast<std::size_t>(k)] < out[k]) break;
      index[static_cast<std::size_t>(k)] = 0;
    }
  }
}

void PadLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  map_outputs(inputs[0].shape(), outputs[0].shape(),
              [&](std::int64_t i, std::int64_t source) { y[i] = source < 0 ? value_ : x[source]; });
}

void PadLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                        const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                        std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  // Each output adds its gradient to the element it read.
  map_outputs(inputs[0].shape(), outputs[0].shape(), [&](std::int64_t i, std::int64_t source) {
    if (source >= 0) dx[source] += dy[i];
  });
}

}  // namespace espresso
