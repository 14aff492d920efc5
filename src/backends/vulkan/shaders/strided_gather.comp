// y[i] = x[base + Σ_k index_k(i) · stride_k] over up to 6 output axes (Transpose, StridedSlice; strides
// may be negative).
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_y; uint n; uint rank; int base; uint size[6]; int stride[6];
} p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    uint rest = i;
    int offset = p.base;
    for (int k = int(p.rank) - 1; k >= 0; --k) {
      offset += int(rest % p.size[k]) * p.stride[k];
      rest /= p.size[k];
    }
    y[p.off_y + i] = x[p.off_x + uint(offset)];
  }
}
