// Adds up the partial sums of a convolution split along k (convolution.comp with k_splits > 1):
// y[image][c][q] = clamp(bias[c] + Σ_s partial[s][c][image · plane + q] + residual[image][c][q], lo, hi)
// (the epilogue as in convolution.comp).
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer P { float partial[]; };
layout(std430, binding = 1) readonly buffer B { float bias[]; };
layout(std430, binding = 2) writeonly buffer Y { ACT y[]; };
layout(std430, binding = 3) readonly buffer R { ACT residual[]; };
layout(push_constant) uniform Params {
  uint off_p; uint off_b; uint off_y; uint off_r; uint n; uint channels; uint plane; uint splits; uint has_bias;
  uint has_residual; float lo; float hi;
} p;
void main() {
  const uint columns = p.n / p.channels;  // batch · plane
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    const uint q = i % p.plane, c = (i / p.plane) % p.channels, image = i / (p.plane * p.channels);
    const uint column = image * p.plane + q;
    float sum = p.has_bias != 0u ? bias[p.off_b + c] : 0.0;
    for (uint s = 0u; s < p.splits; ++s) sum += partial[p.off_p + (s * p.channels + c) * columns + column];
    if (p.has_residual != 0u) sum += float(residual[p.off_r + i]);
    y[p.off_y + i] = ACT(min(max(sum, p.lo), p.hi));
  }
}
