// y = x > 0 ? x : slope * x
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform Params { uint off_x; uint off_y; uint n; float slope; } p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    const float v = float(x[p.off_x + i]);
    y[p.off_y + i] = ACT(v > 0.0 ? v : p.slope * v);
  }
}
