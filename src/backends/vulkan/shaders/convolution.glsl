// 2-D convolution (1-D as height 1) as an implicit GEMM: per group, Y[m][n] = Σ_k W[m][k] · X̂[k][n]
// with m an output channel, n = (image, output row, output column) and k = (input channel, kernel row,
// kernel column); X̂ is the im2col matrix, gathered from the input while loading tiles, never stored.
// The tile is a parameter of this text: convolution.comp defines ROWS and COLS (4, or COLS 8) and includes
// it. 256 invocations in 16 x 16 each compute ROWS output channels x COLS columns of a (16 ROWS) x
// (16 COLS) output tile, 16 deep per round, reading both operands from shared memory as vec4s; with COLS 8
// an invocation's columns are tx · 4 + j and 64 + tx · 4 + j, so that a warp reads consecutive vec4s.
// 4 x 4 (64 x 64 tiles) measured fastest on NVIDIA's driver in every model and batch, against 4 x 8, 8 x 4
// and 8 x 8 (the larger for their registers), and this text compiled for 4 x 4 ran 6-9 % faster there than
// the same loop written out for 4 x 4 by hand (bench/results/2026-12-06-h100-vulkan-fp16.md).
//
// The weights come packed at load (convolution.cpp) as w4[group][k][m / 4], vec4s of 4 output channels, k
// padded to a multiple of 16 and m to the tile's height with zeros: a tile row is one coalesced vec4 load
// per invocation, stored to shared memory without bank conflicts, with no bounds checks. Each round loads
// the next tile into registers before computing on the current one. The input taps an invocation loads
// (input channel, kernel row, kernel column) are divided out of k once and then stepped with carries,
// since integer division costs more than the loads (a table of taps in memory, read per load, was slower).
//
// With k_splits > 1 (too few tiles to fill the device: small images, batch 1) work group z also picks a
// stretch of k, and each writes its partial sums, without bias, to partial[split][channel][n] (fp32) for
// split_sum.comp to add up. The epilogue (Net's fused steps) adds a residual of y's shape and clamps:
// ReLU, ReLU6, Add + ReLU in one pass.
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

const uint TILE_M = 16u * ROWS, TILE_N = 16u * COLS;
const uint W_LOADS = TILE_M / 64u;      // weight vec4s each invocation loads per round
const uint X_LOADS = TILE_N / 16u;      // input values each invocation loads per round
const uint X_STEP = 256u / TILE_N;      // between the k rows of one invocation's input loads
shared vec4 tile_w[16][TILE_M / 4u];    // [k][output channel / 4]
shared vec4 tile_x[16][TILE_N / 4u];    // [k][column / 4]

void main() {
  const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, t = ty * 16u + tx;
  const uint g = gl_WorkGroupID.z / p.k_splits, split = gl_WorkGroupID.z % p.k_splits;
  const uint m0 = gl_WorkGroupID.y * TILE_M, n0 = gl_WorkGroupID.x * TILE_N;
  const uint out_plane = p.out_h * p.out_w;
  const uint N = p.batch * out_plane;
  const uint in_plane = p.in_h * p.in_w;

  // The input column each invocation loads for its X_LOADS rows of the X̂ tile: fixed for the whole loop.
  const uint load_n = t % TILE_N, load_k = t / TILE_N;  // k rows load_k, load_k + X_STEP, ...
  const uint n = n0 + load_n;
  const bool n_valid = n < N;
  const uint image = n_valid ? n / out_plane : 0u, pos = n % out_plane;
  const int oy = int(pos / p.out_w) * int(p.stride_h) - p.pad_h, ox = int(pos % p.out_w) * int(p.stride_w) - p.pad_w;
  const uint x_base = p.off_x + (image * p.in_c + g * p.group_in) * in_plane;
  // off_w counts floats; the packed weights start on a vec4 (allocations are 256-byte aligned).
  const uint w_stride = p.packed_m / 4u;
  const uint w_base = p.off_w / 4u + g * p.packed_k * w_stride + m0 / 4u;

  vec4 acc[ROWS][COLS / 4u];  // acc[i][h][j]: output channel m0 + ty · ROWS + i, column n0 + 64 h + 4 tx + j
  [[unroll]] for (uint i = 0u; i < ROWS; ++i) {
    [[unroll]] for (uint h = 0u; h < COLS / 4u; ++h) acc[i][h] = vec4(0.0);
  }

  const uint kernel_area = p.kernel_h * p.kernel_w, K = p.group_in * kernel_area;
  const uint k_begin = split * p.k_chunk, k_end = min(K, k_begin + p.k_chunk);
  // The k rows this invocation loads, load_k + X_STEP · r, as (channel, kernel row, kernel column).
  const uint step_c = 16u / kernel_area, step_ky = (16u % kernel_area) / p.kernel_w,
             step_kx = (16u % kernel_area) % p.kernel_w;
  uint tap_c[X_LOADS], tap_y[X_LOADS], tap_x[X_LOADS];
  [[unroll]] for (uint r = 0u; r < X_LOADS; ++r) {
    const uint k = k_begin + load_k + r * X_STEP, rest = k % kernel_area;
    tap_c[r] = k / kernel_area;
    tap_y[r] = rest / p.kernel_w;
    tap_x[r] = rest % p.kernel_w;
  }
  vec4 next_w[W_LOADS];
  float next_x[X_LOADS];
  // Loads the round starting at k0 into next_w / next_x and steps the taps on to the round after.
#define LOAD_ROUND(k0)                                                                   \
  [[unroll]] for (uint r = 0u; r < W_LOADS; ++r) {                                       \
    const uint idx = t + r * 256u;                                                       \
    next_w[r] = w4[w_base + ((k0) + idx / (TILE_M / 4u)) * w_stride + idx % (TILE_M / 4u)]; \
  }                                                                                      \
  [[unroll]] for (uint r = 0u; r < X_LOADS; ++r) {                                       \
    const uint k = (k0) + load_k + r * X_STEP;                                           \
    float v = 0.0;                                                                       \
    if (n_valid && k < k_end) {                                                          \
      const int iy = oy + int(tap_y[r] * p.dilation_h), ix = ox + int(tap_x[r] * p.dilation_w); \
      if (iy >= 0 && iy < int(p.in_h) && ix >= 0 && ix < int(p.in_w))                   \
        v = float(x[x_base + tap_c[r] * in_plane + uint(iy) * p.in_w + uint(ix)]);       \
    }                                                                                    \
    next_x[r] = v;                                                                       \
    tap_x[r] += step_kx;                                                                 \
    if (tap_x[r] >= p.kernel_w) {                                                        \
      tap_x[r] -= p.kernel_w;                                                            \
      ++tap_y[r];                                                                        \
    }                                                                                    \
    tap_y[r] += step_ky;                                                                 \
    if (tap_y[r] >= p.kernel_h) {                                                        \
      tap_y[r] -= p.kernel_h;                                                            \
      ++tap_c[r];                                                                        \
    }                                                                                    \
    tap_c[r] += step_c;                                                                  \
  }

  if (k_begin < k_end) { LOAD_ROUND(k_begin) }
  for (uint k0 = k_begin; k0 < k_end; k0 += 16u) {
    [[unroll]] for (uint r = 0u; r < W_LOADS; ++r) {
      const uint idx = t + r * 256u;
      tile_w[idx / (TILE_M / 4u)][idx % (TILE_M / 4u)] = next_w[r];
    }
    [[unroll]] for (uint r = 0u; r < X_LOADS; ++r) tile_x[load_k + r * X_STEP][load_n / 4u][load_n % 4u] = next_x[r];
    barrier();
    if (k0 + 16u < k_end) { LOAD_ROUND(k0 + 16u) }
    [[unroll]] for (uint kk = 0u; kk < 16u; ++kk) {
      vec4 b[COLS / 4u];
      [[unroll]] for (uint h = 0u; h < COLS / 4u; ++h) b[h] = tile_x[kk][h * 16u + tx];
      [[unroll]] for (uint q = 0u; q < ROWS / 4u; ++q) {
        const vec4 a = tile_w[kk][ty * (ROWS / 4u) + q];
        [[unroll]] for (uint h = 0u; h < COLS / 4u; ++h) {
          acc[4u * q][h] = fma(vec4(a.x), b[h], acc[4u * q][h]);
          acc[4u * q + 1u][h] = fma(vec4(a.y), b[h], acc[4u * q + 1u][h]);
          acc[4u * q + 2u][h] = fma(vec4(a.z), b[h], acc[4u * q + 2u][h]);
          acc[4u * q + 3u][h] = fma(vec4(a.w), b[h], acc[4u * q + 3u][h]);
        }
      }
    }
    barrier();
  }
#undef LOAD_ROUND

  [[unroll]] for (uint i = 0u; i < ROWS; ++i) {
    const uint m = m0 + ty * ROWS + i;
    if (m >= p.group_out) continue;
    const uint channel = g * p.group_out + m;
    const float shift = p.has_bias != 0u ? bias[p.off_b + channel] : 0.0;
    [[unroll]] for (uint h = 0u; h < COLS / 4u; ++h) {
      [[unroll]] for (uint j = 0u; j < 4u; ++j) {
        const uint nn = n0 + h * 64u + tx * 4u + j;
        if (nn >= N) continue;
        if (p.k_splits > 1u) {
          partial[p.off_p + (split * p.out_c + channel) * N + nn] = acc[i][h][j];
        } else {
          const uint img = nn / out_plane, q = nn % out_plane;
          const uint at = (img * p.out_c + channel) * out_plane + q;
          float v = acc[i][h][j] + shift;
          if (p.has_residual != 0u) v += float(residual[p.off_r + at]);
          y[p.off_y + at] = ACT(min(max(v, p.lo), p.hi));
        }
      }
    }
  }
}
