// Softmax (or LogSoftmax) of long contiguous rows (inner = 1): one work group per row, its maximum and sum
// reduced over the group (group_reduce.glsl).
// variants: subgroup
#version 450
#extension GL_GOOGLE_include_directive : require
#include "group_reduce.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params { uint off_x; uint off_y; uint rows; uint channels; uint log_output; } p;
void main() {
  const uint t = gl_LocalInvocationID.x;
  for (uint row = gl_WorkGroupID.x; row < p.rows; row += gl_NumWorkGroups.x) {
    const uint base = row * p.channels;
    float m = -1.0 / 0.0;
    for (uint c = t; c < p.channels; c += 256u) m = max(m, x[p.off_x + base + c]);
    m = group_max(vec4(m)).x;
    float sum = 0.0;
    for (uint c = t; c < p.channels; c += 256u) sum += exp(x[p.off_x + base + c] - m);
    sum = group_sum(vec4(sum)).x;
    const float inv = 1.0 / sum, log_sum = log(sum);
    for (uint c = t; c < p.channels; c += 256u) {
      const float shifted = x[p.off_x + base + c] - m;
      y[p.off_y + base + c] = p.log_output != 0u ? shifted - log_sum : exp(shifted) * inv;
    }
  }
}
