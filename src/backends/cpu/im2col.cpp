#include "backends/cpu/im2col.h"

#include <algorithm>
#include <cstring>

#include "layers/window.h"

namespace espresso::cpu {
namespace {

// Smallest q with q · d >= a, for d > 0 and any sign of a.
std::int64_t ceil_div(std::int64_t a, std::int64_t d) { return a >= 0 ? (a + d - 1) / d : -((-a) / d); }

// Walks every (channel, tap) row and every run of window positions along the last axis; the
// position range [lo, hi) of each run reads inside the image, the rest reads padding. `run`
// gets the row segment's offset in col, whether the outer axes read inside the image, the image
// offset that position 0 of the run would read (possibly outside the image) and the range.
template <class Run>
void for_each_run(const WindowLayout& L, std::int64_t image_plane, Run run) {
  const std::size_t axes = L.image.size();
  const std::size_t last = axes - 1;
  const std::int64_t taps = dims_product(L.kernel);
  const std::int64_t positions = dims_product(L.columns);
  const std::int64_t row_length = L.columns[last];
  const std::int64_t runs = positions / row_length;
  std::vector<std::int64_t> tap(axes), outer(axes);
  for (std::int64_t c = 0; c < L.channels; ++c) {
    for (std::int64_t t = 0; t < taps; ++t) {
      for (std::size_t a = axes, rest = static_cast<std::size_t>(t); a-- > 0;) {
        tap[a] = static_cast<std::int64_t>(rest) % L.kernel[a];
        rest /= static_cast<std::size_t>(L.kernel[a]);
      }
      const std::int64_t shift = tap[last] * L.dilation[last] - L.pad[last];
      const std::int64_t lo = std::clamp<std::int64_t>(ceil_div(-shift, L.stride[last]), 0, row_length);
      const std::int64_t hi =
          std::clamp<std::int64_t>(ceil_div(L.image[last] - shift, L.stride[last]), lo, row_length);
      std::fill(outer.begin(), outer.end(), 0);
      const std::int64_t row = (c * taps + t) * positions;
      for (std::int64_t r = 0; r < runs; ++r) {
        std::int64_t base = 0;
        bool inside = true;
        for (std::size_t a = 0; a < last; ++a) {
          const std::int64_t pos = outer[a] * L.stride[a] + tap[a] * L.dilation[a] - L.pad[a];
          inside = inside && pos >= 0 && pos < L.image[a];
          base = base * L.image[a] + pos;
        }
        run(row + r * row_length, inside, c * image_plane + base * L.image[last] + shift, lo, hi);
        for (std::size_t a = last; a-- > 0;) {
          if (++outer[a] < L.columns[a]) break;
          outer[a] = 0;
        }
      }
    }
  }
}

}  // namespace

void im2col(const float* image, const WindowLayout& layout, float* col) {
  const std::int64_t plane = dims_product(layout.image);
  const std::int64_t stride = layout.stride.back();
  const std::int64_t row_length = layout.columns.back();
  for_each_run(layout, plane,
               [&](std::int64_t at, bool inside, std::int64_t origin, std::int64_t lo, std::int64_t hi) {
                 float* out = col + at;
                 if (!inside) {
                   std::fill(out, out + row_length, 0.0f);
                   return;
                 }
                 std::fill(out, out + lo, 0.0f);
                 if (stride == 1 && hi > lo) {
                   std::memcpy(out + lo, image + origin + lo,
                               static_cast<std::size_t>(hi - lo) * sizeof(float));
                 } else {
                   for (std::int64_t o = lo; o < hi; ++o) out[o] = image[origin + o * stride];
                 }
                 std::fill(out + hi, out + row_length, 0.0f);
               });
}

void col2im(const float* col, const WindowLayout& layout, float* image) {
  const std::int64_t plane = dims_product(layout.image);
  const std::int64_t stride = layout.stride.back();
  for_each_run(layout, plane,
               [&](std::int64_t at, bool inside, std::int64_t origin, std::int64_t lo, std::int64_t hi) {
                 if (!inside) return;
                 for (std::int64_t o = lo; o < hi; ++o) image[origin + o * stride] += col[at + o];
               });
}

}  // namespace espresso::cpu
