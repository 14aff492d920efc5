// 2-D convolution (1-D as height 1) as an implicit GEMM: per group, Y[m][n] = Σ_k W[m][k] · X̂[k][n]
// with m an output channel, n = (image, output row, output column) and k = (input channel, kernel row,
// kernel column); X̂ is the im2col matrix, gathered from the input while loading tiles, never stored.
// 64 x 64 output tiles, 16 deep per round, 256 invocations computing 4 output channels x 4 adjacent
// columns each, reading both operands from shared memory as vec4s.
//
// The weights come packed at load (convolution.cpp) as w4[group][k][m / 4], vec4s of 4 output channels, k
// padded to a multiple of 16 and m to a multiple of 64 with zeros: a tile row is one coalesced vec4 load
// per invocation, stored to shared memory without bank conflicts, with no bounds checks. Each round loads
// the next tile into registers before computing on the current one. The input taps an invocation loads
// (input channel, kernel row, kernel column) are divided out of k once and then stepped with carries, since
// integer division costs more than the loads. (Measured on NVIDIA's driver, bench/results/
// 2026-12-06-h100-vulkan-fp16.md: a table of taps in memory read per load was slower, and so were 64 x 128,
// 128 x 64 and 128 x 128 tiles, the larger ones for their registers.)
//
// With k_splits > 1 (too few tiles to fill the device: small images, batch 1) work group z also picks a
// stretch of k, and each writes its partial sums, without bias, to partial[split][channel][n] (fp32) for
// split_sum.comp to add up. The epilogue (Net's fused steps) adds a residual of y's shape and clamps:
// ReLU, ReLU6, Add + ReLU in one pass.
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "storage.glsl"
layout(local_size_x = 16, local_size_y = 16) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer W { vec4 w4[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };
layout(std430, binding = 4) readonly buffer R { ACT residual[]; };
layout(std430, binding = 5) writeonly buffer P { float partial[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_w; uint off_b; uint off_y; uint off_r; uint off_p;
  uint batch; uint in_c; uint in_h; uint in_w; uint out_c; uint out_h; uint out_w;
  uint kernel_h; uint kernel_w; uint stride_h; uint stride_w; int pad_h; int pad_w; uint dilation_h; uint dilation_w;
  uint group_in; uint group_out;
  uint has_bias; uint k_splits; uint k_chunk; uint has_residual; float lo; float hi; uint packed_k; uint packed_m;
} p;

shared vec4 tile_w[16][16];  // [k][output channel / 4]
shared vec4 tile_x[16][16];  // [k][column / 4]

void main() {
  const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, t = ty * 16u + tx;
  const uint g = gl_WorkGroupID.z / p.k_splits, split = gl_WorkGroupID.z % p.k_splits;
  const uint m0 = gl_WorkGroupID.y * 64u, n0 = gl_WorkGroupID.x * 64u;
  const uint out_plane = p.out_h * p.out_w;
  const uint N = p.batch * out_plane;
  const uint in_plane = p.in_h * p.in_w;

  // The input column each invocation loads for its 4 rows of the X̂ tile: fixed for the whole loop.
  const uint load_n = t % 64u, load_k = t / 64u;  // k rows load_k, load_k + 4, ...
  const uint n = n0 + load_n;
  const bool n_valid = n < N;
  const uint image = n_valid ? n / out_plane : 0u, pos = n % out_plane;
  const int oy = int(pos / p.out_w) * int(p.stride_h) - p.pad_h, ox = int(pos % p.out_w) * int(p.stride_w) - p.pad_w;
  const uint x_base = p.off_x + (image * p.in_c + g * p.group_in) * in_plane;
  // off_w counts floats; the packed weights start on a vec4 (allocations are 256-byte aligned). The
  // weight row an invocation loads each round: k row t / 16, channels 4 (t % 16) on.
  const uint w_stride = p.packed_m / 4u;
  const uint w_at = p.off_w / 4u + g * p.packed_k * w_stride + m0 / 4u + (t / 16u) * w_stride + t % 16u;

  vec4 acc[4];  // acc[i][j]: output channel m0 + 4 ty + i, column n0 + 4 tx + j
  [[unroll]] for (uint i = 0u; i < 4u; ++i) acc[i] = vec4(0.0);

  const uint kernel_area = p.kernel_h * p.kernel_w, K = p.group_in * kernel_area;
  const uint k_begin = split * p.k_chunk, k_end = min(K, k_begin + p.k_chunk);
  // The k rows this invocation loads, load_k + 4r, as (channel, kernel row, kernel column).
  const uint step_c = 16u / kernel_area, step_ky = (16u % kernel_area) / p.kernel_w,
             step_kx = (16u % kernel_area) % p.kernel_w;
  uint tap_c[4], tap_y[4], tap_x[4];
  [[unroll]] for (uint r = 0u; r < 4u; ++r) {
    const uint k = k_begin + load_k + r * 4u, rest = k % kernel_area;
    tap_c[r] = k / kernel_area;
    tap_y[r] = rest / p.kernel_w;
    tap_x[r] = rest % p.kernel_w;
  }
  vec4 next_w;
  float next_x[4];
  // Loads the round starting at k0 into next_w / next_x and steps the taps on to the round after.
#define LOAD_ROUND(k0)                                                                           \
  next_w = w4[w_at + (k0) * w_stride];                                                           \
  [[unroll]] for (uint r = 0u; r < 4u; ++r) {                                                    \
    float v = 0.0;                                                                               \
    if (n_valid && (k0) + load_k + r * 4u < k_end) {                                             \
      const int iy = oy + int(tap_y[r] * p.dilation_h), ix = ox + int(tap_x[r] * p.dilation_w);  \
      if (iy >= 0 && iy < int(p.in_h) && ix >= 0 && ix < int(p.in_w))                            \
        v = float(x[x_base + tap_c[r] * in_plane + uint(iy) * p.in_w + uint(ix)]);               \
    }                                                                                            \
    next_x[r] = v;                                                                               \
    tap_x[r] += step_kx;                                                                         \
    if (tap_x[r] >= p.kernel_w) {                                                                \
      tap_x[r] -= p.kernel_w;                                                                    \
      ++tap_y[r];                                                                                \
    }                                                                                            \
    tap_y[r] += step_ky;                                                                         \
    if (tap_y[r] >= p.kernel_h) {                                                                \
      tap_y[r] -= p.kernel_h;                                                                    \
      ++tap_c[r];                                                                                \
    }                                                                                            \
    tap_c[r] += step_c;                                                                          \
  }

  if (k_begin < k_end) { LOAD_ROUND(k_begin) }
  for (uint k0 = k_begin; k0 < k_end; k0 += 16u) {
    tile_w[t / 16u][t % 16u] = next_w;
    [[unroll]] for (uint r = 0u; r < 4u; ++r) tile_x[load_k + r * 4u][load_n / 4u][load_n % 4u] = next_x[r];
    barrier();
    if (k0 + 16u < k_end) { LOAD_ROUND(k0 + 16u) }
    [[unroll]] for (uint kk = 0u; kk < 16u; ++kk) {
      const vec4 a = tile_w[kk][ty], b = tile_x[kk][tx];
      acc[0] = fma(vec4(a.x), b, acc[0]);
      acc[1] = fma(vec4(a.y), b, acc[1]);
      acc[2] = fma(vec4(a.z), b, acc[2]);
      acc[3] = fma(vec4(a.w), b, acc[3]);
    }
    barrier();
  }
#undef LOAD_ROUND

  [[unroll]] for (uint i = 0u; i < 4u; ++i) {
    const uint m = m0 + ty * 4u + i;
    if (m >= p.group_out) continue;
    const uint channel = g * p.group_out + m;
    const float shift = p.has_bias != 0u ? bias[p.off_b + channel] : 0.0;
    [[unroll]] for (uint j = 0u; j < 4u; ++j) {
      const uint nn = n0 + tx * 4u + j;
      if (nn >= N) continue;
      if (p.k_splits > 1u) {
        partial[p.off_p + (split * p.out_c + channel) * N + nn] = acc[i][j];
      } else {
        const uint img = nn / out_plane, q = nn % out_plane;
        const uint at = (img * p.out_c + channel) * out_plane + q;
        float v = acc[i][j] + shift;
        if (p.has_residual != 0u) v += float(residual[p.off_r + at]);
        y[p.off_y + at] = ACT(min(max(v, p.lo), p.hi));
      }
    }
  }
}
