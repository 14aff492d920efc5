// y = a op b with broadcasting: the output is seen as up to 6 dims, each input with its own strides
// (0 along broadcast dims). `op` is BinaryLayer::Op's order.
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 256) in;
#include "powf.glsl"
layout(std430, binding = 0) readonly buffer A { ACT a[]; };
layout(std430, binding = 1) readonly buffer B { ACT b[]; };
layout(std430, binding = 2) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform Params {
  uint off_a; uint off_b; uint off_y; uint n; uint op; uint rank;
  uint dims[6]; uint stride_a[6]; uint stride_b[6];
} p;

float apply(float u, float v) {
  switch (p.op) {
    case 0u: return u + v;
    case 1u: return u - v;
    case 2u: return u * v;
    case 3u: return u / v;
    case 4u: return u < v ? v : u;
    case 5u: return v < u ? v : u;
    case 6u: return powf_(u, v);
  }
  return 0.0;
}

void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    uint rest = i, ia = 0u, ib = 0u;
    for (int d = int(p.rank) - 1; d >= 0; --d) {
      const uint c = rest % p.dims[d];
      rest /= p.dims[d];
      ia += c * p.stride_a[d];
      ib += c * p.stride_b[d];
    }
    y[p.off_y + i] = ACT(apply(float(a[p.off_a + ia]), float(b[p.off_b + ib])));
  }
}
