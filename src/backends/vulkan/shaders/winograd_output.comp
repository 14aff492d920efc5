// Winograd F(2x2, 3x3), step 3 of 3 (convolution.cpp's WinogradConvolution): each invocation takes one
// output channel of one 2 x 2 output tile, reads its 16 products M (step 2's GEMMs, m[e][channel][tile])
// and writes Y = Aᵀ M A with the convolution's epilogue: bias, a residual of y's shape, the clamp.
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "storage.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer M { float m[]; };
layout(std430, binding = 1) readonly buffer B { float bias[]; };
layout(std430, binding = 2) writeonly buffer Y { ACT y[]; };
layout(std430, binding = 3) readonly buffer R { ACT residual[]; };
layout(push_constant) uniform Params {
  uint off_m; uint off_b; uint off_y; uint off_r;
  uint channels; uint out_h; uint out_w; uint tiles_h; uint tiles_w; uint tiles; uint has_bias; uint has_residual;
  float lo; float hi;
} p;
void main() {
  const uint n = p.channels * p.tiles, image_tiles = p.tiles_h * p.tiles_w, stride = p.channels * p.tiles;
  for (uint i = gl_GlobalInvocationID.x; i < n; i += gl_NumWorkGroups.x * 256u) {
    const uint c = i / p.tiles, tile = i % p.tiles;
    const uint at = p.off_m + c * p.tiles + tile;
    vec4 rows[4];
    [[unroll]] for (uint r = 0u; r < 4u; ++r) {
      rows[r] = vec4(m[at + (r * 4u) * stride], m[at + (r * 4u + 1u) * stride], m[at + (r * 4u + 2u) * stride],
                     m[at + (r * 4u + 3u) * stride]);
    }
    // Aᵀ M: rows m0 + m1 + m2 and m1 - m2 - m3; then the same on the columns.
    const vec4 s0 = rows[0] + rows[1] + rows[2], s1 = rows[1] - rows[2] - rows[3];
    const vec2 out_rows[2] = vec2[2](vec2(s0.x + s0.y + s0.z, s0.y - s0.z - s0.w),
                                     vec2(s1.x + s1.y + s1.z, s1.y - s1.z - s1.w));
    const uint image = tile / image_tiles, within = tile % image_tiles;
    const uint oy = (within / p.tiles_w) * 2u, ox = (within % p.tiles_w) * 2u;
    const uint plane = (image * p.channels + c) * p.out_h * p.out_w;
    const float shift = p.has_bias != 0u ? bias[p.off_b + c] : 0.0;
    [[unroll]] for (uint dy = 0u; dy < 2u; ++dy) {
      if (oy + dy >= p.out_h) continue;
      [[unroll]] for (uint dx = 0u; dx < 2u; ++dx) {
        if (ox + dx >= p.out_w) continue;
        const uint q = plane + (oy + dy) * p.out_w + ox + dx;
        float value = out_rows[dy][dx] + shift;
        if (p.has_residual != 0u) value += float(residual[p.off_r + q]);
        y[p.off_y + q] = ACT(min(max(value, p.lo), p.hi));
      }
    }
  }
}
