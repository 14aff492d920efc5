// Convolution as an implicit GEMM in 64 x 64 output tiles, 4 output channels x 4 columns per invocation:
// see convolution.glsl.
// variants: f16
#version 450
#extension GL_GOOGLE_include_directive : require
#define ROWS 4u
#define COLS 4u
#include "convolution.glsl"
