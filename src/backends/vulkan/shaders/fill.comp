// y[i] = value
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params { uint off_y; uint n; float value; } p;
void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u) y[p.off_y + i] = p.value;
}
