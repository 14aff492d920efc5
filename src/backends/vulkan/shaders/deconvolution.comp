// Transposed 2-D convolution (1-D as height 1), gathered: each output element sums the inputs whose
// scattered filters reach it, y[n][co][oy][ox] = b[co] + Σ x[n][ci][iy][ix] · w[ci][co'][ky][kx] over
// oy = iy·stride − pad + ky·dilation (likewise x), ci in co's group.
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_w; uint off_b; uint off_y;
  uint n; uint in_c; uint in_h; uint in_w; uint out_c; uint out_h; uint out_w;
  uint kernel_h; uint kernel_w; uint stride_h; uint stride_w; int pad_h; int pad_w;
  uint dilation_h; uint dilation_w; uint group_in; uint group_out; uint has_bias;
} p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    const uint ox = i % p.out_w, oy = (i / p.out_w) % p.out_h, co = (i / (p.out_w * p.out_h)) % p.out_c;
    const uint image = i / (p.out_w * p.out_h * p.out_c);
    const uint g = co / p.group_out, co_in_group = co % p.group_out;
    const uint taps = p.kernel_h * p.kernel_w;
    float sum = p.has_bias != 0u ? bias[p.off_b + co] : 0.0;
    for (uint ky = 0u; ky < p.kernel_h; ++ky) {
      const int ty = int(oy) + p.pad_h - int(ky * p.dilation_h);
      if (ty < 0 || ty % int(p.stride_h) != 0) continue;
      const int iy = ty / int(p.stride_h);
      if (iy >= int(p.in_h)) continue;
      for (uint kx = 0u; kx < p.kernel_w; ++kx) {
        const int tx = int(ox) + p.pad_w - int(kx * p.dilation_w);
        if (tx < 0 || tx % int(p.stride_w) != 0) continue;
        const int ix = tx / int(p.stride_w);
        if (ix >= int(p.in_w)) continue;
        for (uint c = 0u; c < p.group_in; ++c) {
          const uint ci = g * p.group_in + c;
          const float v = x[p.off_x + ((image * p.in_c + ci) * p.in_h + uint(iy)) * p.in_w + uint(ix)];
          sum = fma(v, w[p.off_w + (ci * p.group_out + co_in_group) * taps + ky * p.kernel_w + kx], sum);
        }
      }
    }
    y[p.off_y + i] = sum;
  }
}
