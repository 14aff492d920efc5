// Reduce: one invocation per output element walks the reduced axes (any subset, up to 6 axes in all).
// `op` is ReduceLayer::Op's order.
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_y; uint n; uint group; uint op; uint kept_rank; uint reduced_rank;
  uint kept_size[6]; uint kept_stride[6]; uint reduced_size[6]; uint reduced_stride[6];
} p;

float term(float v) {
  if (p.op == 5u || p.op == 7u) return v * v;  // sum_square, l2
  if (p.op == 6u) return abs(v);               // l1
  if (p.op == 9u) return exp(v);               // log_sum_exp
  return v;
}

void main() {
  for (uint o = gl_GlobalInvocationID.x; o < p.n; o += gl_NumWorkGroups.x * 64u) {
    uint rest = o, base = p.off_x;
    for (int k = int(p.kept_rank) - 1; k >= 0; --k) {
      base += (rest % p.kept_size[k]) * p.kept_stride[k];
      rest /= p.kept_size[k];
    }
    float acc = p.op == 2u ? -1.0 / 0.0 : (p.op == 3u ? 1.0 / 0.0 : (p.op == 4u ? 1.0 : 0.0));
    for (uint j = 0u; j < p.group; ++j) {
      uint r = j, at = base;
      for (int k = int(p.reduced_rank) - 1; k >= 0; --k) {
        at += (r % p.reduced_size[k]) * p.reduced_stride[k];
        r /= p.reduced_size[k];
      }
      const float v = term(x[at]);
      if (p.op == 2u) acc = max(acc, v);
      else if (p.op == 3u) acc = min(acc, v);
      else if (p.op == 4u) acc *= v;
      else acc += v;
    }
    if (p.op == 0u) acc /= float(p.group);
    if (p.op == 7u) acc = sqrt(acc);
    if (p.op == 8u || p.op == 9u) acc = log(acc);
    y[p.off_y + o] = acc;
  }
}
