// Per-channel affine map over an outer x channels x inner view: y = x · scale[c] + shift[c]; either
// parameter may be absent (flags bit 0: scale, bit 1: shift).
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer S { float scale[]; };
layout(std430, binding = 2) readonly buffer T { float shift[]; };
layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_s; uint off_t; uint off_y; uint n; uint channels; uint inner; uint flags;
} p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    const uint c = (i / p.inner) % p.channels;
    float v = float(x[p.off_x + i]);
    if ((p.flags & 1u) != 0u) v *= scale[p.off_s + c];
    if ((p.flags & 2u) != 0u) v += shift[p.off_t + c];
    y[p.off_y + i] = ACT(v);
  }
}
