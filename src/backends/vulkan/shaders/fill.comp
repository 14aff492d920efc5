// y[i] = value
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform Params { uint off_y; uint n; float value; } p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) y[p.off_y + i] = ACT(p.value);
}
