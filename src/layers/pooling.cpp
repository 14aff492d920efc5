#include "layers/pooling.h"

#include <algorithm>
#include <limits>

namespace espresso {

PoolGeometry::Span PoolGeometry::span(int a, std::int64_t o, bool count_include_pad) const {
  const auto i = static_cast<std::size_t>(a);
  const std::int64_t start = o * stride[i] - pad[i];
  // Caffe clips the window to the padded input before counting it.
  const std::int64_t padded_end = std::min(start + kernel[i], in_size[i] + pad[i]);
  const std::int64_t begin = std::max<std::int64_t>(start, 0);
  const std::int64_t end = std::min(padded_end, in_size[i]);
  return {begin, end, count_include_pad ? padded_end - start : end - begin};
}

const LayerSchema& PoolingLayer::schema() {
  using Ints = std::vector<std::int64_t>;
  static const LayerSchema schema{
      .attributes =
          {
              {.name = "method",
               .type = AttrType::text,
               .fallback = std::string("max"),
               .choices = {"max", "ave"}},
              // No fallback: a filled-in kernel would read as given, which global pooling rejects.
              {.name = "kernel",
               .type = AttrType::integers,
               .min = 1,
               .default_text = "required unless global"},
              {.name = "stride", .type = AttrType::integers, .fallback = Ints{1}, .min = 1},
              {.name = "pad", .type = AttrType::integers, .fallback = Ints{0}, .min = 0},
              flag("global", false),
              {.name = "round",
               .type = AttrType::text,
               .fallback = std::string("ceil"),
               .choices = {"ceil", "floor"}},
              flag("count_include_pad", true),
          },
      .weights = "–",
      .notes =
          "Caffe: ceil rounding, and the last window must start inside the padded input; AVE divides by the "
          "window clipped to the padded input (`count_include_pad` 1) or by the valid elements (0); "
          "pad < kernel; `global` takes no kernel",
  };
  return schema;
}

PoolingLayer::PoolingLayer(const LayerSpec& spec)
    : Layer(spec),
      method_(spec.attrs.require_string("method") == "ave" ? PoolMethod::average : PoolMethod::max),
      global_(spec.attrs.require_int("global") != 0),
      ceil_(spec.attrs.require_string("round") == "ceil"),
      count_include_pad_(spec.attrs.require_int("count_include_pad") != 0),
      kernel_(spec.attrs, "kernel", global_ ? std::vector<std::int64_t>{1} : std::vector<std::int64_t>{}, 1),
      stride_(spec.attrs, "stride", {}, 1),
      pad_(spec.attrs, "pad", {}, 0) {
  if (global_) {
    if (kernel_.given()) fail_model("global pooling takes no 'kernel'; the window is the whole input");
    const int axes = common_axis_count({&stride_, &pad_});
    for (int a = 0; a < std::max(axes, 1); ++a) {
      if (stride_[a] != 1 || pad_[a] != 0) fail_model("global pooling needs stride 1 and pad 0");
    }
    return;
  }
  const int axes = common_axis_count({&kernel_, &stride_, &pad_});
  if (axes < 0) fail_model("attributes 'kernel', 'stride' and 'pad' give different numbers of axes");
  for (int a = 0; a < axes; ++a) {
    // Otherwise a window could lie wholly in the padding.
    if (pad_[a] >= kernel_[a]) {
      fail_model("pad " + std::to_string(pad_[a]) + " must be smaller than the kernel " +
                 std::to_string(kernel_[a]));
    }
  }
}

PoolGeometry PoolingLayer::geometry(const Shape& input) const {
  if (input.rank() < 3) fail_shape("expects N x C x spatial... (rank 3 or more), got " + input.str());
  const int axes = input.rank() - 2;
  PoolGeometry g;
  g.batch = input[0];
  g.channels = input[1];
  g.in_size.assign(input.dims().begin() + 2, input.dims().end());
  if (global_) {
    g.kernel = g.in_size;
    g.stride.assign(static_cast<std::size_t>(axes), 1);
    g.pad.assign(static_cast<std::size_t>(axes), 0);
    g.out_size.assign(static_cast<std::size_t>(axes), 1);
    return g;
  }
  for (const AxisValues* list : {&kernel_, &stride_, &pad_}) {
    if (!list->fits(axes)) {
      fail_shape("attribute '" + list->name() + "' has " + std::to_string(list->count()) + " values for " +
                 std::to_string(axes) + " spatial axes of input " + input.str());
    }
  }
  g.kernel = kernel_.expand(axes);
  g.stride = stride_.expand(axes);
  g.pad = pad_.expand(axes);
  for (int a = 0; a < axes; ++a) {
    const auto i = static_cast<std::size_t>(a);
    const std::int64_t room = g.in_size[i] + 2 * g.pad[i] - g.kernel[i];
    if (room < 0) {
      fail_shape("kernel " + std::to_string(g.kernel[i]) + " exceeds the padded input " +
                 std::to_string(g.in_size[i] + 2 * g.pad[i]) + " on spatial axis " + std::to_string(a) +
                 " of " + input.str());
    }
    std::int64_t out = (ceil_ ? (room + g.stride[i] - 1) / g.stride[i] : room / g.stride[i]) + 1;
    // Caffe applies this only with padding; without it the condition can only hold for windows
    // that start past the input, which Caffe would pool over nothing.
    if (ceil_ && (out - 1) * g.stride[i] >= g.in_size[i] + g.pad[i]) --out;
    g.out_size.push_back(out);
  }
  return g;
}

std::vector<Shape> PoolingLayer::output_shapes(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, 1);
  const PoolGeometry g = geometry(inputs[0]);
  std::vector<std::int64_t> dims{g.batch, g.channels};
  dims.insert(dims.end(), g.out_size.begin(), g.out_size.end());
  return {Shape(dims)};
}

// Calls visit(plane, output, window, divisor) for every output position in order: `output` is its index in
// the output tensor, `window` the offsets within the input plane that it covers, in window order, and
// `divisor` what an average divides by. Forward and backward share this walk.
template <class Visit>
void PoolingLayer::for_each_window(const PoolGeometry& g, Visit visit) const {
  const auto out_coords = box_coordinates(g.out_size);
  const int axes = g.axes();
  std::vector<std::int64_t> window;
  for (std::int64_t plane = 0; plane < g.batch * g.channels; ++plane) {
    for (std::size_t o = 0; o < out_coords.size(); ++o) {
      std::vector<std::int64_t> window_size;
      std::vector<std::int64_t> first;
      std::int64_t divisor = 1;
      for (int a = 0; a < axes; ++a) {
        const PoolGeometry::Span s =
            g.span(a, out_coords[o][static_cast<std::size_t>(a)], count_include_pad_);
        first.push_back(s.begin);
        window_size.push_back(s.end - s.begin);
        divisor *= s.divisor;
      }
      window.clear();
      for (const auto& offset : box_coordinates(window_size)) {
        std::int64_t index = 0;
        for (int a = 0; a < axes; ++a) {
          const auto i = static_cast<std::size_t>(a);
          index = index * g.in_size[i] + first[i] + offset[i];
        }
        window.push_back(index);
      }
      visit(plane, plane * static_cast<std::int64_t>(out_coords.size()) + static_cast<std::int64_t>(o), window,
            divisor);
    }
  }
}

void PoolingLayer::forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) const {
  const PoolGeometry g = geometry(inputs[0].shape());
  const float* x = inputs[0].data<float>();
  float* y = outputs[0].data<float>();
  const std::int64_t in_spatial = dims_product(g.in_size);
  for_each_window(g, [&](std::int64_t plane, std::int64_t output, const std::vector<std::int64_t>& window,
                         std::int64_t divisor) {
    const float* in = x + plane * in_spatial;
    float max = -std::numeric_limits<float>::infinity();
    float sum = 0.0f;
    for (std::int64_t index : window) {
      max = std::max(max, in[index]);
      sum += in[index];
    }
    y[output] = method_ == PoolMethod::max ? max : sum / static_cast<float>(divisor);
  });
}

void PoolingLayer::backward(const std::vector<Tensor>& inputs, const std::vector<Tensor>&,
                            const std::vector<Tensor>& output_grads, std::vector<Tensor>& input_grads,
                            std::vector<Tensor>&) const {
  if (!input_grads[0].defined()) return;
  const PoolGeometry g = geometry(inputs[0].shape());
  const float* x = inputs[0].data<float>();
  const float* dy = output_grads[0].data<float>();
  float* dx = input_grads[0].data<float>();
  const std::int64_t in_spatial = dims_product(g.in_size);
  for_each_window(g, [&](std::int64_t plane, std::int64_t output, const std::vector<std::int64_t>& window,
                         std::int64_t divisor) {
    if (window.empty()) return;
    const float* in = x + plane * in_spatial;
    float* grad_in = dx + plane * in_spatial;
    if (method_ == PoolMethod::max) {
      // The first maximum in window order, the one the forward's running max keeps.
      std::int64_t best = window.front();
      for (std::int64_t index : window) {
        if (in[index] > in[best]) best = index;
      }
      grad_in[best] += dy[output];
    } else {
      for (std::int64_t index : window) grad_in[index] += dy[output] / static_cast<float>(divisor);
    }
  });
}

}  // namespace espresso
