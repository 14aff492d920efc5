// Winograd F(2x2, 3x3), step 1 of 3 (convolution.cpp's WinogradConvolution): each invocation takes one
// input channel of one 2 x 2 output tile, reads the 4 x 4 input patch under it (zeros outside the image)
// and writes V = Bᵀ d B, its 16 values to v[e][channel][tile] (e = row · 4 + column): sixteen matrices of
// channels x tiles, the right-hand sides of step 2's GEMMs.
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "storage.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer V { float v[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_v;
  uint channels; uint in_h; uint in_w; int pad_h; int pad_w; uint tiles_h; uint tiles_w; uint tiles;
} p;
void main() {
  const uint n = p.channels * p.tiles, image_tiles = p.tiles_h * p.tiles_w;
  for (uint i = gl_GlobalInvocationID.x; i < n; i += gl_NumWorkGroups.x * 256u) {
    const uint c = i / p.tiles, tile = i % p.tiles;
    const uint image = tile / image_tiles, within = tile % image_tiles;
    const int y0 = int(within / p.tiles_w) * 2 - p.pad_h, x0 = int(within % p.tiles_w) * 2 - p.pad_w;
    const uint base = p.off_x + (image * p.channels + c) * p.in_h * p.in_w;
    vec4 d[4];
    [[unroll]] for (int r = 0; r < 4; ++r) {
      const int iy = y0 + r;
      const bool row = iy >= 0 && iy < int(p.in_h);
      [[unroll]] for (int s = 0; s < 4; ++s) {
        const int ix = x0 + s;
        d[r][s] = row && ix >= 0 && ix < int(p.in_w) ? float(x[base + uint(iy) * p.in_w + uint(ix)]) : 0.0;
      }
    }
    // Bᵀ d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3; then the same on the columns.
    const vec4 t[4] = vec4[4](d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]);
    const uint stride = p.channels * p.tiles, at = p.off_v + c * p.tiles + tile;
    [[unroll]] for (uint r = 0u; r < 4u; ++r) {
      v[at + (r * 4u + 0u) * stride] = t[r].x - t[r].z;
      v[at + (r * 4u + 1u) * stride] = t[r].y + t[r].z;
      v[at + (r * 4u + 2u) * stride] = t[r].z - t[r].y;
      v[at + (r * 4u + 3u) * stride] = t[r].y - t[r].w;
    }
  }
}
