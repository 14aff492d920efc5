// SSD's Normalize: y = scale[channel] · x / sqrt(Σ x² + eps) over each group (layers/normalize.h's
// NormalizeExtent). Across positions (across_spatial): one work group per sample, the sum reduced over it
// (group_reduce.glsl). Per position: one invocation per (sample, position) summing its channels, so that
// neighbouring invocations read neighbouring positions.
// variants: subgroup
#version 450
#extension GL_GOOGLE_include_directive : require
#include "group_reduce.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer S { float scale[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_s; uint off_y; uint samples; uint channels; uint spatial; uint across_spatial;
  uint channel_shared; float eps;
} p;
float scale_of(uint channel) { return scale[p.off_s + (p.channel_shared != 0u ? 0u : channel)]; }
void main() {
  if (p.across_spatial != 0u) {
    const uint size = p.channels * p.spatial;
    for (uint s = gl_WorkGroupID.x; s < p.samples; s += gl_NumWorkGroups.x) {
      const uint base = s * size;
      float sum = 0.0;
      for (uint k = gl_LocalInvocationID.x; k < size; k += 256u) sum += x[p.off_x + base + k] * x[p.off_x + base + k];
      const float inv = 1.0 / sqrt(group_sum(vec4(sum)).x + p.eps);
      for (uint k = gl_LocalInvocationID.x; k < size; k += 256u)
        y[p.off_y + base + k] = scale_of(k / p.spatial) * x[p.off_x + base + k] * inv;
    }
    return;
  }
  const uint positions = p.samples * p.spatial;
  for (uint g = gl_GlobalInvocationID.x; g < positions; g += gl_NumWorkGroups.x * 256u) {
    const uint base = g / p.spatial * p.channels * p.spatial + g % p.spatial;
    float sum = 0.0;
    for (uint c = 0u; c < p.channels; ++c) sum += x[p.off_x + base + c * p.spatial] * x[p.off_x + base + c * p.spatial];
    const float inv = 1.0 / sqrt(sum + p.eps);
    for (uint c = 0u; c < p.channels; ++c)
      y[p.off_y + base + c * p.spatial] = scale_of(c) * x[p.off_x + base + c * p.spatial] * inv;
  }
}
