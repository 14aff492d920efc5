// C[m][n] = Σ_k A[m][k] · B(k, n) + bias[n]: A row-major M x K; B stored N x K (b_k_by_n = 0, the
// InnerProduct weight layout) or K x N (1). 64 x 64 tiles, 16 deep, 4 x 4 per invocation. Work group z
// is a batch of matrices (MatMul): up to 4 broadcast batch dims, strides in matrices (0 where broadcast).
// In the _f16 variant A and C are fp16 activations and B stays fp32 (InnerProduct's weights).
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 16, local_size_y = 16) in;
layout(std430, binding = 0) readonly buffer A { ACT a[]; };
layout(std430, binding = 1) readonly buffer Bm { float b[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer C { ACT c[]; };
layout(push_constant) uniform Params {
  uint off_a; uint off_b; uint off_bias; uint off_c; uint M; uint N; uint K; uint b_k_by_n; uint has_bias;
  uint batch_rank; uint batch[4]; uint a_stride[4]; uint b_stride[4];
} p;

shared float tile_a[16][64];
shared float tile_b[16][64];

void main() {
  const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, t = ty * 16u + tx;
  const uint m0 = gl_WorkGroupID.y * 64u, n0 = gl_WorkGroupID.x * 64u;
  uint rest = gl_WorkGroupID.z, a_matrix = 0u, b_matrix = 0u;
  for (int d = int(p.batch_rank) - 1; d >= 0; --d) {
    const uint i = rest % p.batch[d];
    rest /= p.batch[d];
    a_matrix += i * p.a_stride[d];
    b_matrix += i * p.b_stride[d];
  }
  const uint off_a = p.off_a + a_matrix * p.M * p.K, off_b = p.off_b + b_matrix * p.K * p.N;
  const uint off_c = p.off_c + gl_WorkGroupID.z * p.M * p.N;
  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0;
  for (uint k0 = 0u; k0 < p.K; k0 += 16u) {
    for (uint r = 0u; r < 4u; ++r) {
      const uint idx = t + r * 256u;
      {
        const uint row = idx / 16u, kk = idx % 16u, m = m0 + row, k = k0 + kk;
        tile_a[kk][row] = (m < p.M && k < p.K) ? float(a[off_a + m * p.K + k]) : 0.0;
      }
      if (p.b_k_by_n != 0u) {
        const uint kk = idx / 64u, col = idx % 64u, k = k0 + kk, n = n0 + col;
        tile_b[kk][col] = (n < p.N && k < p.K) ? b[off_b + k * p.N + n] : 0.0;
      } else {
        const uint col = idx / 16u, kk = idx % 16u, k = k0 + kk, n = n0 + col;
        tile_b[kk][col] = (n < p.N && k < p.K) ? b[off_b + n * p.K + k] : 0.0;
      }
    }
    barrier();
    for (uint kk = 0u; kk < 16u; ++kk) {
      float av[4], bv[4];
      for (uint i = 0u; i < 4u; ++i) av[i] = tile_a[kk][ty + 16u * i];
      for (uint j = 0u; j < 4u; ++j) bv[j] = tile_b[kk][tx + 16u * j];
      for (uint i = 0u; i < 4u; ++i)
        for (uint j = 0u; j < 4u; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    barrier();
  }
  for (uint i = 0u; i < 4u; ++i) {
    const uint m = m0 + ty + 16u * i;
    if (m >= p.M) continue;
    for (uint j = 0u; j < 4u; ++j) {
      const uint n = n0 + tx + 16u * j;
      if (n >= p.N) continue;
      c[off_c + m * p.N + n] = ACT(acc[i][j] + (p.has_bias != 0u ? bias[p.off_bias + n] : 0.0));
    }
  }
}
