// Random cases for Scale and Bias: a parameter covering a run of input 0's axes.
#pragma once

#include "layers/layer_test_util.h"

namespace espresso::testing {

// `two_inputs`: the parameter comes as input 1 instead of a learned blob.
inline LayerCase random_broadcast_case(Rng& rng, const std::string& type, bool two_inputs) {
  struct {
    LayerCase c;
    int first, end;
  } b;
  b.c.spec.type = type;
  b.c.input_shapes = {random_shape(rng)};
  const int rank = b.c.input_shapes[0].rank();
  int axis = 1;
  if (rng.integer(0, 3) != 0) b.c.spec.attrs.set("axis", std::int64_t{random_axis(rng, rank, axis)});
  b.first = axis;
  b.end = rng.integer(axis, rank);
  if (b.end == b.first) b.first = b.end = 0;  // a scalar parameter covers no axis
  if (two_inputs) {
    const auto& dims = b.c.input_shapes[0].dims();
    b.c.input_shapes.push_back(
        Shape(std::vector<std::int64_t>(dims.begin() + b.first, dims.begin() + b.end)));
  } else if (b.end == rank && rng.coin()) {
    b.c.spec.attrs.set("num_axes", std::int64_t{-1});
  } else if (b.end - b.first != 1 || rng.coin()) {
    b.c.spec.attrs.set("num_axes", std::int64_t{b.end - b.first});
  }
  return b.c;
}

// The covered axes [first, end) of input 0, from the definition of `axis` and `num_axes`.
inline void broadcast_span(const LayerCase& c, int& first, int& end) {
  const Shape& s = c.input_shapes[0];
  const std::int64_t covered =
      c.input_shapes.size() == 2 ? c.input_shapes[1].rank() : c.spec.attrs.get_int("num_axes", 1);
  if (covered == 0) {
    first = end = 0;
    return;
  }
  first = s.canonical_axis(static_cast<int>(c.spec.attrs.get_int("axis", 1)));
  end = covered == -1 ? s.rank() : first + static_cast<int>(covered);
}

// y[o, c, i] = op(x[o, c, i], c) over input 0 seen as outer x covered x inner.
template <class Op>
Values broadcast_naive(const Shape& s, int first, int end, const Values& x, Op op) {
  const std::int64_t outer = product(s, 0, first), covered = product(s, first, end),
                     inner = product(s, end, s.rank());
  Values y(x.size());
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t k = 0; k < covered; ++k) {
      for (std::int64_t i = 0; i < inner; ++i) {
        const auto at = static_cast<std::size_t>((o * covered + k) * inner + i);
        y[at] = op(x[at], static_cast<std::size_t>(k));
      }
    }
  }
  return y;
}

}  // namespace espresso::testing
