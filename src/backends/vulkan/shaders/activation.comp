// Element-wise functions of ActivationLayer; `function` is ActivationLayer::Function's order.
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#include "storage.glsl"
layout(local_size_x = 256) in;
#include "powf.glsl"
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_y; uint n; uint function;
  float alpha; float beta; float gamma; float lo; float hi;
} p;

float expm1_(float v) {
  // exp(v) - 1 without cancellation near 0 (a few terms of the series there).
  if (abs(v) < 1e-2) return v * (1.0 + v * (0.5 + v * (1.0 / 6.0 + v * (1.0 / 24.0))));
  return exp(v) - 1.0;
}

float log1p_(float v) {
  const float u = 1.0 + v;
  // log(u) · v / (u − 1) corrects the rounding of 1 + v.
  return u == 1.0 ? v : log(u) * v / (u - 1.0);
}

float apply(float v) {
  switch (p.function) {
    case 0u: return min(max(v, p.lo), p.hi);
    case 1u: return max(0.0, min(1.0, p.alpha * v + p.beta));
    case 2u: return v * max(0.0, min(1.0, v / 6.0 + 0.5));
    case 3u: return v > 0.0 ? v : p.alpha * expm1_(v);
    case 4u: return p.gamma * (v > 0.0 ? v : p.alpha * expm1_(v));
    case 5u: return v > 20.0 ? v : log1p_(exp(v));
    case 6u: return v / (1.0 + abs(v));
    case 7u: return 1.0 / (1.0 + exp(-v));
    case 8u: {
      // Stable at both ends: exp overflows to inf for large |v| and the quotient goes to ±1.
      const float a = abs(v);
      const float t = a < 0.55 ? a * (1.0 - a * a * (1.0 / 3.0 - a * a * (2.0 / 15.0 - a * a * (17.0 / 315.0 - a * a * (62.0 / 2835.0)))))
                               : 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
      return v < 0.0 ? -t : t;
    }
    case 9u: {
      const float t = p.beta + p.alpha * v;
      if (p.gamma == 1.0) return t;
      if (p.gamma == 2.0) return t * t;
      if (p.gamma == 0.5) return sqrt(t);
      return powf_(t, p.gamma);
    }
    case 10u: return exp(v);
    case 11u: return log(v);
    case 12u: return sqrt(v);
    case 13u: return -v;
    case 14u: return 1.0 / v;
    case 15u: return floor(v);
    case 16u: return ceil(v);
    case 17u: return abs(v);
  }
  return v;
}

void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) y[p.off_y + i] = ACT(apply(float(x[p.off_x + i])));
}
