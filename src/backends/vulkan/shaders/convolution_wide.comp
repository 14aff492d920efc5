// The implicit-GEMM convolution (convolution.glsl) with 128 x 64 tiles: 8 output channels x 4 columns
// per invocation, for layers of more than 64 output channels per group (twice the arithmetic per
// shared-memory read).
#version 450
#extension GL_GOOGLE_include_directive : require
#define ROWS 8u
#include "convolution.glsl"
