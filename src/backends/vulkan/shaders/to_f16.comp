// y = x rounded to fp16 by the device's conversion: Stream::convert from an fp32 tensor to an fp16 one.
#version 450
#extension GL_EXT_shader_16bit_storage : require
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float16_t y[]; };
layout(push_constant) uniform Params { uint off_x; uint off_y; uint n; } p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) y[p.off_y + i] = float16_t(x[p.off_x + i]);
}
