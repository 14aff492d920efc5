// The implicit-GEMM convolution (convolution.glsl) with 64 x 64 tiles: 4 output channels x 4 columns
// per invocation.
#version 450
#extension GL_GOOGLE_include_directive : require
#define ROWS 4u
#include "convolution.glsl"
