// Resize through the layer's per-axis taps (input indices and weights per output coordinate, uploaded
// once): each output element sums its axes' tap combinations; an index of -1 marks a coordinate
// outside a tf_crop_and_resize region, which takes `outside`.
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer I { int indices[]; };
layout(std430, binding = 2) readonly buffer W { float weights[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_i; uint off_w; uint off_y; uint n; uint rank; uint combinations; float outside;
  uint in_size[6]; uint out_size[6]; uint taps[6]; uint table[6];
} p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    uint first[6];
    uint rest = i;
    bool inside = true;
    for (int a = int(p.rank) - 1; a >= 0; --a) {
      first[a] = p.table[a] + (rest % p.out_size[a]) * p.taps[a];
      rest /= p.out_size[a];
      inside = inside && indices[p.off_i + first[a]] >= 0;
    }
    float sum = 0.0;
    for (uint c = 0u; c < p.combinations && inside; ++c) {
      uint combination = c, offset = 0u, stride = 1u;
      float w = 1.0;
      for (int a = int(p.rank) - 1; a >= 0; --a) {
        const uint tap = first[a] + combination % p.taps[a];
        combination /= p.taps[a];
        w *= weights[p.off_w + tap];
        offset += uint(indices[p.off_i + tap]) * stride;
        stride *= p.in_size[a];
      }
      if (w != 0.0) sum += w * x[p.off_x + offset];
    }
    y[p.off_y + i] = inside ? sum : p.outside;
  }
}
