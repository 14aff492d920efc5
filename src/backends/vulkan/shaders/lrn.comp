// Local response normalisation, Caffe's: y = x · (base + norm · Σ x²)^-beta over `size` neighbouring
// channels (across = 1) or a size x size window of the channel (across = 0), zero padded.
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
  uint off_x; uint off_y; uint n; uint channels; uint height; uint width; uint size; uint before; uint across;
  float base; float norm; float beta;
} p;
void main() {
  const uint plane = p.height * p.width;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) {
    const uint w = i % p.width, h = (i / p.width) % p.height, c = (i / plane) % p.channels;
    float sum = 0.0;
    if (p.across != 0u) {
      const int first = int(c) - int(p.before);
      const uint start = i - c * plane;
      for (int k = max(first, 0); k < min(first + int(p.size), int(p.channels)); ++k) {
        const float v = x[p.off_x + start + uint(k) * plane];
        sum += v * v;
      }
    } else {
      const int top = int(h) - int(p.before), left = int(w) - int(p.before);
      const uint start = i - h * p.width - w;
      for (int yy = max(top, 0); yy < min(top + int(p.size), int(p.height)); ++yy) {
        for (int xx = max(left, 0); xx < min(left + int(p.size), int(p.width)); ++xx) {
          const float v = x[p.off_x + start + uint(yy) * p.width + uint(xx)];
          sum += v * v;
        }
      }
    }
    y[p.off_y + i] = x[p.off_x + i] * pow(p.base + p.norm * sum, -p.beta);
  }
}
