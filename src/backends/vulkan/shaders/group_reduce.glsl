// Sums and maxima over a work group of 256 invocations (local_size_x = 256): every invocation calls with its
// value, all get the result. In a shader's _subgroup variant (SUBGROUP defined, chosen on devices with
// subgroup arithmetic), each subgroup reduces in registers and only its result goes through shared memory:
// one barrier pair instead of the ten of a tree in shared memory.
#ifdef SUBGROUP
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_basic : require
#endif
shared vec4 group_partial[256];

#ifdef SUBGROUP
#define GROUP_REDUCE(name, subgroup_op, combine)                                   \
  vec4 name(vec4 v) {                                                              \
    v = subgroup_op(v);                                                            \
    if (subgroupElect()) group_partial[gl_SubgroupID] = v;                         \
    barrier();                                                                     \
    vec4 result = group_partial[0];                                                \
    for (uint i = 1u; i < gl_NumSubgroups; ++i) result = combine(result, group_partial[i]); \
    barrier();                                                                     \
    return result;                                                                 \
  }
#else
#define GROUP_REDUCE(name, subgroup_op, combine)                                   \
  vec4 name(vec4 v) {                                                              \
    const uint t = gl_LocalInvocationIndex;                                        \
    group_partial[t] = v;                                                          \
    barrier();                                                                     \
    for (uint s = 128u; s > 0u; s >>= 1) {                                         \
      if (t < s) group_partial[t] = combine(group_partial[t], group_partial[t + s]); \
      barrier();                                                                   \
    }                                                                              \
    const vec4 result = group_partial[0];                                          \
    barrier();                                                                     \
    return result;                                                                 \
  }
#endif

vec4 add4(vec4 a, vec4 b) { return a + b; }
GROUP_REDUCE(group_sum, subgroupAdd, add4)
GROUP_REDUCE(group_max, subgroupMax, max)
#undef GROUP_REDUCE
