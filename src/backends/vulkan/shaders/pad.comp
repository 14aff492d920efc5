// Pad: each output element reads its source per axis (constant fills `value`, edge repeats, reflect
// mirrors), up to 6 axes.
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_y; uint n; uint rank; uint mode; float value;
  int in_size[6]; int out_size[6]; int begin[6];
} p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    int rest = int(i), offset = 0, stride = 1;
    bool fill = false;
    for (int k = int(p.rank) - 1; k >= 0; --k) {
      int source = rest % p.out_size[k] - p.begin[k];
      rest /= p.out_size[k];
      const int size = p.in_size[k];
      if (source < 0 || source >= size) {
        if (p.mode == 0u) fill = true;
        else if (p.mode == 2u) source = source < 0 ? 0 : size - 1;
        else source = source < 0 ? -source : 2 * (size - 1) - source;
      }
      offset += source * stride;
      stride *= size;
    }
    const float v = fill ? p.value : float(x[p.off_x + uint(offset)]);
    y[p.off_y + i] = ACT(v);
  }
}
