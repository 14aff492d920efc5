// Copies `rows` runs of `run` elements: y[r·y_stride + y_start + j] = x[r·x_stride + x_start + j]
// (Concat and Slice along one axis).
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_y; uint rows; uint run; uint x_stride; uint x_start; uint y_stride; uint y_start;
} p;
void main() {
  const uint n = p.rows * p.run;
  for (uint i = gl_GlobalInvocationID.x; i < n; i += gl_NumWorkGroups.x * 256u) {
    const uint r = i / p.run, j = i % p.run;
    y[p.off_y + r * p.y_stride + p.y_start + j] = x[p.off_x + r * p.x_stride + p.x_start + j];
  }
}
