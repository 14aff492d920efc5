// 2-D max or average pooling (1-D as height 1), windows as PoolGeometry::span clips them.
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_y; uint n; uint in_h; uint in_w; uint out_h; uint out_w;
  uint kernel_h; uint kernel_w; uint stride_h; uint stride_w; uint pad_h; uint pad_w;
  uint average; uint include_pad;
} p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    const uint ow = i % p.out_w, oh = (i / p.out_w) % p.out_h, plane = i / (p.out_w * p.out_h);
    const int sh = int(oh * p.stride_h) - int(p.pad_h), sw = int(ow * p.stride_w) - int(p.pad_w);
    const int ph = min(sh + int(p.kernel_h), int(p.in_h + p.pad_h)), pw = min(sw + int(p.kernel_w), int(p.in_w + p.pad_w));
    const int h0 = max(sh, 0), w0 = max(sw, 0), h1 = min(ph, int(p.in_h)), w1 = min(pw, int(p.in_w));
    const uint base = p.off_x + plane * p.in_h * p.in_w;
    float result;
    if (p.average != 0u) {
      float sum = 0.0;
      for (int hh = h0; hh < h1; ++hh)
        for (int ww = w0; ww < w1; ++ww) sum += float(x[base + uint(hh) * p.in_w + uint(ww)]);
      const int count = p.include_pad != 0u ? (ph - sh) * (pw - sw) : (h1 - h0) * (w1 - w0);
      result = count > 0 ? sum / float(count) : 0.0;
    } else {
      result = -1.0 / 0.0;
      for (int hh = h0; hh < h1; ++hh)
        for (int ww = w0; ww < w1; ++ww) result = max(result, float(x[base + uint(hh) * p.in_w + uint(ww)]));
    }
    y[p.off_y + i] = ACT(result);
  }
}
