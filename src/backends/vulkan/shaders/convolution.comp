// 2-D convolution (1-D as height 1) as an implicit GEMM: per group, Y[m][n] = Σ_k W[m][k] · X̂[k][n]
// with m an output channel, n = (image, output row, output column) and k = (input channel, kernel row,
// kernel column); X̂ is the im2col matrix, gathered from the input while loading tiles, never stored.
// 64 x 64 output tiles, 16 deep, 256 invocations computing 4 output channels x 4 adjacent columns
// each, so that every step reads its operands from shared memory as vec4s. (128 x 64 tiles, 8 x 4 per
// invocation, were slower on NVIDIA's driver for NIN and MobileNetV2 and at batch 1, and 4 % faster only
// for ResNet-18 at batch 64: bench/results/2026-12-06-h100-fusion-autotune-vulkan.md.) With k_splits > 1
// (too few tiles to fill the device: small images, batch 1) work group z also picks a stretch of k, and
// each writes its partial sums, without bias, to y[split][channel][n] for split_sum.comp to add up. The epilogue (Net's fused steps) adds a residual
// of y's shape and clamps: ReLU, ReLU6, Add + ReLU in one pass.
#version 450
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x = 16, local_size_y = 16) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(std430, binding = 4) readonly buffer R { float residual[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_w; uint off_b; uint off_y; uint off_r;
  uint batch; uint in_c; uint in_h; uint in_w; uint out_c; uint out_h; uint out_w;
  uint kernel_h; uint kernel_w; uint stride_h; uint stride_w; int pad_h; int pad_w;
  uint dilation_h; uint dilation_w; uint group_in; uint group_out; uint has_bias; uint k_splits; uint k_chunk;
  uint has_residual; float lo; float hi;
} p;

const uint ROWS = 4u, TILE_M = 64u;
shared vec4 tile_w[16][TILE_M / 4u];  // [k][output channel / 4]
shared vec4 tile_x[16][16];           // [k][column / 4]

void main() {
  const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, t = ty * 16u + tx;
  const uint g = gl_WorkGroupID.z / p.k_splits, split = gl_WorkGroupID.z % p.k_splits;
  const uint m0 = gl_WorkGroupID.y * TILE_M, n0 = gl_WorkGroupID.x * 64u;
  const uint kernel_area = p.kernel_h * p.kernel_w;
  const uint K = p.group_in * kernel_area;
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
  const uint w_base = p.off_w + g * p.group_out * K;

  vec4 acc[ROWS];  // acc[i][j]: output channel m0 + ty · ROWS + i, column n0 + tx · 4 + j
  [[unroll]] for (uint i = 0u; i < ROWS; ++i) acc[i] = vec4(0.0);

  const uint k_begin = split * p.k_chunk, k_end = min(K, k_begin + p.k_chunk);
  // The k rows this invocation loads, load_k + 4r (r = 0..3), as (channel, kernel row, kernel column):
  // divided out once here, then stepped by 16 with carries each round, since integer division costs
  // more than the loads themselves.
  const uint step_c = 16u / kernel_area, step_ky = (16u % kernel_area) / p.kernel_w,
             step_kx = (16u % kernel_area) % p.kernel_w;
  uint tap_c[4], tap_y[4], tap_x[4];
  [[unroll]] for (uint r = 0u; r < 4u; ++r) {
    const uint k = k_begin + load_k + r * 4u, rest = k % kernel_area;
    tap_c[r] = k / kernel_area;
    tap_y[r] = rest / p.kernel_w;
    tap_x[r] = rest % p.kernel_w;
  }
  for (uint k0 = k_begin; k0 < k_end; k0 += 16u) {
    // Weights: TILE_M rows (output channels) x 16 k, ROWS per invocation.
    [[unroll]] for (uint r = 0u; r < ROWS; ++r) {
      const uint idx = t + r * 256u, wm = idx / 16u, wk = idx % 16u;
      const uint m = m0 + wm, k = k0 + wk;
      tile_w[wk][wm / 4u][wm % 4u] = (m < p.group_out && k < k_end) ? w[w_base + m * K + k] : 0.0;
    }
    // Input: 16 k x 64 n, 4 per invocation.
    [[unroll]] for (uint r = 0u; r < 4u; ++r) {
      const uint kk = load_k + r * 4u;
      float v = 0.0;
      if (n_valid && k0 + kk < k_end) {
        const int iy = oy + int(tap_y[r] * p.dilation_h), ix = ox + int(tap_x[r] * p.dilation_w);
        if (iy >= 0 && iy < int(p.in_h) && ix >= 0 && ix < int(p.in_w))
          v = x[x_base + tap_c[r] * in_plane + uint(iy) * p.in_w + uint(ix)];
      }
      tile_x[kk][load_n / 4u][load_n % 4u] = v;
      tap_x[r] += step_kx;
      if (tap_x[r] >= p.kernel_w) {
        tap_x[r] -= p.kernel_w;
        ++tap_y[r];
      }
      tap_y[r] += step_ky;
      if (tap_y[r] >= p.kernel_h) {
        tap_y[r] -= p.kernel_h;
        ++tap_c[r];
      }
      tap_c[r] += step_c;
    }
    barrier();
    [[unroll]] for (uint kk = 0u; kk < 16u; ++kk) {
      const vec4 b = tile_x[kk][tx];
      [[unroll]] for (uint q = 0u; q < ROWS / 4u; ++q) {
        const vec4 a = tile_w[kk][ty * (ROWS / 4u) + q];
        acc[4u * q] = fma(vec4(a.x), b, acc[4u * q]);
        acc[4u * q + 1u] = fma(vec4(a.y), b, acc[4u * q + 1u]);
        acc[4u * q + 2u] = fma(vec4(a.z), b, acc[4u * q + 2u]);
        acc[4u * q + 3u] = fma(vec4(a.w), b, acc[4u * q + 3u]);
      }
    }
    barrier();
  }

  [[unroll]] for (uint i = 0u; i < ROWS; ++i) {
    const uint m = m0 + ty * ROWS + i;
    if (m >= p.group_out) continue;
    const uint channel = g * p.group_out + m;
    const float shift = p.has_bias != 0u ? bias[p.off_b + channel] : 0.0;
    [[unroll]] for (uint j = 0u; j < 4u; ++j) {
      const uint nn = n0 + tx * 4u + j;
      if (nn >= N) continue;
      if (p.k_splits > 1u) {
        y[p.off_y + (split * p.out_c + channel) * N + nn] = acc[i][j];
      } else {
        const uint img = nn / out_plane, q = nn % out_plane;
        const uint at = (img * p.out_c + channel) * out_plane + q;
        float v = acc[i][j] + shift;
        if (p.has_residual != 0u) v += residual[p.off_r + at];
        y[p.off_y + at] = min(max(v, p.lo), p.hi);
      }
    }
  }
}
