// y = x > 0 ? x : slope[c] · x, c the channel of an outer x channels x inner view (channels = 1: one
// slope for all).
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer S { float slope[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params { uint off_x; uint off_s; uint off_y; uint n; uint channels; uint inner; } p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    const float v = x[p.off_x + i];
    y[p.off_y + i] = v > 0.0 ? v : slope[p.off_s + (i / p.inner) % p.channels] * v;
  }
}
