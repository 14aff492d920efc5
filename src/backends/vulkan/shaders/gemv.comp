// C[m][n] = Σ_k A[m][k] · B(k, n) + bias[n] for a few rows (M ≤ 4: an InnerProduct at batch 1 to 4), one work
// group per output column n: 256 invocations stride along k, then add up (group_reduce.glsl). (gemm.comp's
// 64 x 64 tiles would leave 63 of 64 rows empty and walk k in a few work groups only.) B is stored N x K
// (b_k_by_n = 0, the InnerProduct weight layout) or K x N (1).
// variants: f16 subgroup
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
#include "group_reduce.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer A { ACT a[]; };
layout(std430, binding = 1) readonly buffer Bm { float b[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer C { ACT c[]; };
layout(push_constant) uniform Params {
  uint off_a; uint off_b; uint off_bias; uint off_c; uint M; uint N; uint K; uint b_k_by_n; uint has_bias;
} p;
void main() {
  const uint t = gl_LocalInvocationID.x;
  for (uint n = gl_WorkGroupID.x; n < p.N; n += gl_NumWorkGroups.x) {
    vec4 sum = vec4(0.0);  // rows 0..M-1
    for (uint k = t; k < p.K; k += 256u) {
      const float w = p.b_k_by_n != 0u ? b[p.off_b + k * p.N + n] : b[p.off_b + n * p.K + k];
      for (uint m = 0u; m < p.M; ++m) sum[m] = fma(float(a[p.off_a + m * p.K + k]), w, sum[m]);
    }
    sum = group_sum(sum);
    if (t < p.M) c[p.off_c + t * p.N + n] = ACT(sum[t] + (p.has_bias != 0u ? bias[p.off_bias + n] : 0.0));
  }
}
