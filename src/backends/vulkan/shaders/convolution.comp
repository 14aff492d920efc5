// 2-D convolution (1-D as height 1) as an implicit GEMM: per group, Y[m][n] = Σ_k W[m][k] · X̂[k][n]
// with m an output channel, n = (image, output row, output column) and k = (input channel, kernel row,
// kernel column); X̂ is the im2col matrix, gathered from the input while loading tiles, never stored.
// 64 x 64 output tiles, 16 deep, 256 invocations computing 4 x 4 each. With k_splits > 1 (too few tiles
// to fill the device: small images, batch 1) work group z also picks a stretch of k, and each writes its
// partial sums, without bias, to y[split][channel][n] for split_sum.comp to add up.
#version 450
layout(local_size_x = 16, local_size_y = 16) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_w; uint off_b; uint off_y;
  uint batch; uint in_c; uint in_h; uint in_w; uint out_c; uint out_h; uint out_w;
  uint kernel_h; uint kernel_w; uint stride_h; uint stride_w; int pad_h; int pad_w;
  uint dilation_h; uint dilation_w; uint group_in; uint group_out; uint has_bias; uint k_splits; uint k_chunk;
} p;

shared float tile_w[16][64];
shared float tile_x[16][64];

void main() {
  const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, t = ty * 16u + tx;
  const uint g = gl_WorkGroupID.z / p.k_splits, split = gl_WorkGroupID.z % p.k_splits;
  const uint m0 = gl_WorkGroupID.y * 64u, n0 = gl_WorkGroupID.x * 64u;
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

  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0;

  const uint k_begin = split * p.k_chunk, k_end = min(K, k_begin + p.k_chunk);
  for (uint k0 = k_begin; k0 < k_end; k0 += 16u) {
    for (uint r = 0u; r < 4u; ++r) {
      // Weights: 64 rows (output channels) x 16 k, four per invocation.
      const uint idx = t + r * 256u, wm = idx / 16u, wk = idx % 16u;
      const uint m = m0 + wm, k = k0 + wk;
      tile_w[wk][wm] = (m < p.group_out && k < k_end) ? w[w_base + m * K + k] : 0.0;
      // Input: 16 k x 64 n.
      const uint kk = load_k + r * 4u, k2 = k0 + kk;
      float v = 0.0;
      if (n_valid && k2 < k_end) {
        const uint c = k2 / kernel_area, rest = k2 % kernel_area;
        const int iy = oy + int((rest / p.kernel_w) * p.dilation_h), ix = ox + int((rest % p.kernel_w) * p.dilation_w);
        if (iy >= 0 && iy < int(p.in_h) && ix >= 0 && ix < int(p.in_w)) v = x[x_base + c * in_plane + uint(iy) * p.in_w + uint(ix)];
      }
      tile_x[kk][load_n] = v;
    }
    barrier();
    for (uint kk = 0u; kk < 16u; ++kk) {
      float a[4], b[4];
      for (uint i = 0u; i < 4u; ++i) a[i] = tile_w[kk][ty + 16u * i];
      for (uint j = 0u; j < 4u; ++j) b[j] = tile_x[kk][tx + 16u * j];
      for (uint i = 0u; i < 4u; ++i)
        for (uint j = 0u; j < 4u; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
    barrier();
  }

  for (uint i = 0u; i < 4u; ++i) {
    const uint m = m0 + ty + 16u * i;
    if (m >= p.group_out) continue;
    const uint channel = g * p.group_out + m;
    const float shift = p.has_bias != 0u ? bias[p.off_b + channel] : 0.0;
    for (uint j = 0u; j < 4u; ++j) {
      const uint nn = n0 + tx + 16u * j;
      if (nn >= N) continue;
      if (p.k_splits > 1u) {
        y[p.off_y + (split * p.out_c + channel) * N + nn] = acc[i][j];
      } else {
        const uint img = nn / out_plane, q = nn % out_plane;
        y[p.off_y + (img * p.out_c + channel) * out_plane + q] = acc[i][j] + shift;
      }
    }
  }
}
