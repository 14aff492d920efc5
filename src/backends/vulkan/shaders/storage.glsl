// The storage type of activations: float, or float16_t in a shader's _f16 variant (compiled a second time
// with F16 defined, cmake/vulkan_shaders.cmake): 16-bit storage, arithmetic in fp32. Shaders read
// activations as float(x[i]) and write them as y[i] = ACT(v), never computing on float16_t values (that
// would need the shaderFloat16 feature, which the backend does not ask for). Weights, biases and partial
// sums stay fp32.
#ifdef F16
#extension GL_EXT_shader_16bit_storage : require
#define ACT float16_t
#else
#define ACT float
#endif
