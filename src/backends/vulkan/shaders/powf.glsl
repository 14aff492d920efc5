// C's powf for every sign of the base (GLSL's pow is undefined for x < 0, and for x = 0 with y <= 0):
// negative bases take integral exponents, the sign following the exponent's parity.
float powf_(float x, float y) {
  if (y == 0.0) return 1.0;
  if (x == 0.0) return y > 0.0 ? 0.0 : 1.0 / 0.0;
  if (x > 0.0) return pow(x, y);
  if (floor(y) != y) return 0.0 / 0.0;
  const float r = pow(-x, y);
  return mod(y, 2.0) == 1.0 ? -r : r;
}
