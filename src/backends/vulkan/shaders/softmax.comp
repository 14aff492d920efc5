// Softmax (or, with log_output, LogSoftmax) along the channels of an outer x channels x inner view, one invocation per (outer, inner).
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params { uint off_x; uint off_y; uint outer; uint channels; uint inner; uint log_output; } p;
void main() {
  const uint n = p.outer * p.inner;
  for (uint i = gl_GlobalInvocationID.x; i < n; i += gl_NumWorkGroups.x * 256u) {
    const uint base = (i / p.inner) * p.channels * p.inner + i % p.inner;
    float m = x[p.off_x + base];
    for (uint c = 1u; c < p.channels; ++c) m = max(m, x[p.off_x + base + c * p.inner]);
    float sum = 0.0;
    for (uint c = 0u; c < p.channels; ++c) sum += exp(x[p.off_x + base + c * p.inner] - m);
    const float inv = 1.0 / sum, log_sum = log(sum);
    for (uint c = 0u; c < p.channels; ++c) {
      const float shifted = x[p.off_x + base + c * p.inner] - m;
      y[p.off_y + base + c * p.inner] = p.log_output != 0u ? shifted - log_sum : exp(shifted) * inv;
    }
  }
}
