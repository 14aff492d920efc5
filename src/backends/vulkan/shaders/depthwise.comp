// Depthwise 2-D convolution (one filter per channel, group = channels = outputs): one invocation per
// output element; the result clamped to [lo, hi] (a fused ReLU or ReLU6, else ±infinity).
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_w; uint off_b; uint off_y;
  uint n; uint channels; uint in_h; uint in_w; uint out_h; uint out_w;
  uint kernel_h; uint kernel_w; uint stride_h; uint stride_w; int pad_h; int pad_w;
  uint dilation_h; uint dilation_w; uint has_bias; float lo; float hi;
} p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    const uint ow = i % p.out_w, oh = (i / p.out_w) % p.out_h, plane = i / (p.out_w * p.out_h);
    const uint c = plane % p.channels;
    const int y0 = int(oh * p.stride_h) - p.pad_h, x0 = int(ow * p.stride_w) - p.pad_w;
    const uint x_base = p.off_x + plane * p.in_h * p.in_w, w_base = p.off_w + c * p.kernel_h * p.kernel_w;
    float sum = 0.0;
    for (uint ky = 0u; ky < p.kernel_h; ++ky) {
      const int iy = y0 + int(ky * p.dilation_h);
      if (iy < 0 || iy >= int(p.in_h)) continue;
      for (uint kx = 0u; kx < p.kernel_w; ++kx) {
        const int ix = x0 + int(kx * p.dilation_w);
        if (ix < 0 || ix >= int(p.in_w)) continue;
        sum = fma(w[w_base + ky * p.kernel_w + kx], float(x[x_base + uint(iy) * p.in_w + uint(ix)]), sum);
      }
    }
    y[p.off_y + i] = ACT(min(max(sum + (p.has_bias != 0u ? bias[p.off_b + c] : 0.0), p.lo), p.hi));
  }
}
