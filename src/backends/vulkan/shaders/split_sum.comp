// Adds up the partial sums of a convolution split along k (convolution.comp with k_splits > 1):
// y[image][c][q] = bias[c] + Σ_s partial[s][c][image · plane + q].
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer P { float partial[]; };
layout(std430, binding = 1) readonly buffer B { float bias[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
  uint off_p; uint off_b; uint off_y; uint n; uint channels; uint plane; uint splits; uint has_bias;
} p;
void main() {
  const uint columns = p.n / p.channels;  // batch · plane
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    const uint q = i % p.plane, c = (i / p.plane) % p.channels, image = i / (p.plane * p.channels);
    const uint column = image * p.plane + q;
    float sum = p.has_bias != 0u ? bias[p.off_b + c] : 0.0;
    for (uint s = 0u; s < p.splits; ++s) sum += partial[p.off_p + (s * p.channels + c) * columns + column];
    y[p.off_y + i] = sum;
  }
}
