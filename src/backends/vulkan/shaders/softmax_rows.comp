// Softmax (or LogSoftmax) of long contiguous rows (inner = 1): one work group per row, reductions in shared memory.
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params { uint off_x; uint off_y; uint rows; uint channels; uint log_output; } p;
shared float partial[256];
void main() {
  const uint t = gl_LocalInvocationID.x;
  for (uint row = gl_WorkGroupID.x; row < p.rows; row += gl_NumWorkGroups.x) {
    const uint base = row * p.channels;
    float m = -1.0 / 0.0;
    for (uint c = t; c < p.channels; c += 256u) m = max(m, x[p.off_x + base + c]);
    partial[t] = m;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1) {
      if (t < s) partial[t] = max(partial[t], partial[t + s]);
      barrier();
    }
    m = partial[0];
    barrier();
    float sum = 0.0;
    for (uint c = t; c < p.channels; c += 256u) sum += exp(x[p.off_x + base + c] - m);
    partial[t] = sum;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1) {
      if (t < s) partial[t] += partial[t + s];
      barrier();
    }
    const float inv = 1.0 / partial[0], log_sum = log(partial[0]);
    barrier();
    for (uint c = t; c < p.channels; c += 256u) {
      const float shifted = x[p.off_x + base + c] - m;
      y[p.off_y + base + c] = p.log_output != 0u ? shifted - log_sum : exp(shifted) * inv;
    }
  }
}
